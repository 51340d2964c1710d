// frame_fuzz_seeds: writes a small seed corpus for frame_fuzzer — one valid
// frame per opcode and direction (frame version 2: pages carry a store
// version), a batch, and a few near-misses — into the
// directory given as argv[1] (created by ctest's fixture before fuzzing).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "farswap/transport/frame.h"

using namespace farswap::transport;  // NOLINT

namespace {

std::vector<uint8_t> Frame(FrameHeader h, const std::vector<uint8_t>& payload) {
  h.payload_length = uint32_t(payload.size());
  auto w = EncodeHeader(h);
  std::vector<uint8_t> out(w.begin(), w.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  std::filesystem::create_directories(argv[1]);
  std::vector<std::vector<uint8_t>> seeds;
  std::vector<uint8_t> page(300);
  for (size_t i = 0; i < page.size(); ++i) page[i] = uint8_t(i * 31);
  auto u64 = [](uint64_t v) {
    auto a = EncodeU64Payload(v);
    return std::vector<uint8_t>(a.begin(), a.end());
  };
  seeds.push_back(Frame({.opcode = Opcode::kHello, .request_id = 1}, {'t', 'o', 'k'}));
  seeds.push_back(Frame({.opcode = Opcode::kHello, .flags = kFlagReply, .request_id = 1}, {}));
  seeds.push_back(Frame({.opcode = Opcode::kStore,
                         .page = 7,
                         .codec = Codec::kLz4,
                         .checksum = 9,
                         .version = 0x17f0000000000001},
                        page));
  seeds.push_back(
      Frame({.opcode = Opcode::kStore, .flags = kFlagSameFilled, .page = 8, .version = 2}, u64(0)));
  seeds.push_back(Frame({.opcode = Opcode::kLoad, .page = 7}, {}));
  seeds.push_back(Frame({.opcode = Opcode::kLoad,
                         .flags = kFlagReply,
                         .codec = Codec::kZstd,
                         .checksum = 3,
                         .version = 5},
                        page));
  seeds.push_back(
      Frame({.opcode = Opcode::kStore, .flags = kFlagReply, .status = absl::StatusCode::kAborted},
            {'s', 't', 'a', 'l', 'e'}));
  seeds.push_back(
      Frame({.opcode = Opcode::kLoad, .flags = kFlagReply, .status = absl::StatusCode::kNotFound},
            {'n', 'o'}));
  seeds.push_back(Frame({.opcode = Opcode::kInvalidate, .page = 1}, {}));
  // A conditional INVALIDATE: drop the page only at or below version 6.
  seeds.push_back(Frame({.opcode = Opcode::kInvalidate, .page = 1, .version = 6}, {}));
  seeds.push_back(Frame({.opcode = Opcode::kInvalidateRange, .page = 1}, u64(64)));
  seeds.push_back(Frame({.opcode = Opcode::kPing}, page));
  BatchEncoder batch;
  std::vector<std::span<const uint8_t>> pieces{page};
  (void)batch.Add({.opcode = Opcode::kStore, .page = 1, .codec = Codec::kLz4, .version = 4},
                  pieces);
  (void)batch.Add({.opcode = Opcode::kLoad, .page = 2});
  auto range = u64(3);
  std::vector<std::span<const uint8_t>> range_pieces{range};
  (void)batch.Add({.opcode = Opcode::kInvalidateRange, .page = 3}, range_pieces);
  std::vector<uint8_t> payload;
  for (auto p : batch.pieces()) payload.insert(payload.end(), p.begin(), p.end());
  seeds.push_back(Frame(batch.Header(5), payload));
  auto truncated = seeds.back();
  truncated.resize(truncated.size() - 3);
  seeds.push_back(truncated);  // near-miss: short batch
  auto versioned_load = Frame({.opcode = Opcode::kLoad, .page = 7}, {});
  versioned_load[kFrameHeaderSize - 8] = 1;  // near-miss: a page version on a LOAD request
  seeds.push_back(versioned_load);
  for (size_t i = 0; i < seeds.size(); ++i) {
    std::string path = std::string(argv[1]) + "/seed-" + std::to_string(i);
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(seeds[i].data()), std::streamsize(seeds[i].size()));
  }
  std::printf("wrote %zu seeds to %s\n", seeds.size(), argv[1]);
  return 0;
}
