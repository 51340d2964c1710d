// frame_fuzzer: libFuzzer target for the frame decoder. Any input must be
// either rejected with INVALID_ARGUMENT or decoded into a frame that
// re-encodes to exactly the input bytes (header by EncodeHeader, a BATCH
// payload by BatchEncoder). Crashes, sanitizer reports and mismatches abort.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "farswap/transport/frame.h"

namespace farswap::transport {
namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "frame_fuzzer: %s\n", what);
  std::abort();
}

void CheckInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  absl::StatusOr<FrameHeader> header = DecodeHeader(in);
  if (!header.ok() && header.status().code() != absl::StatusCode::kInvalidArgument) {
    Fail("DecodeHeader failed with a code other than INVALID_ARGUMENT");
  }
  absl::StatusOr<FrameView> frame = DecodeFrame(in);
  if (!frame.ok()) {
    if (frame.status().code() != absl::StatusCode::kInvalidArgument) {
      Fail("DecodeFrame failed with a code other than INVALID_ARGUMENT");
    }
    return;
  }
  if (!header.ok() || !(*header == frame->header)) Fail("DecodeHeader disagrees with DecodeFrame");
  if (!ValidateHeader(frame->header).ok()) Fail("decoded header fails ValidateHeader");
  if (frame->header.version != 0 && !frame->header.carries_page() &&
      !frame->header.conditional_invalidate()) {
    Fail("a page version on a frame that carries no page (nor is a conditional INVALIDATE)");
  }
  auto encoded = EncodeHeader(frame->header);
  if (std::memcmp(encoded.data(), data, kFrameHeaderSize) != 0) Fail("header does not re-encode");
  const FrameHeader& h = frame->header;
  if (h.opcode != Opcode::kBatch || (h.is_reply() && h.status != absl::StatusCode::kOk)) return;
  absl::StatusOr<std::vector<FrameView>> subs = DecodeBatch(*frame);
  if (!subs.ok()) Fail("valid BATCH frame fails DecodeBatch");
  BatchEncoder batch;
  for (const FrameView& sub : *subs) {
    if (sub.header.version != 0 && !sub.header.carries_page() &&
        !sub.header.conditional_invalidate()) {
      Fail(
          "a page version on a BATCH entry that carries no page (nor is a conditional INVALIDATE)");
    }
    std::vector<std::span<const uint8_t>> pieces;
    if (!sub.payload.empty()) pieces.push_back(sub.payload);
    if (!batch.Add(sub.header, pieces).ok()) Fail("BatchEncoder rejects a decoded entry");
  }
  if (!(batch.Header(h.request_id) == h)) Fail("BatchEncoder header differs");
  std::vector<uint8_t> payload;
  for (auto piece : batch.pieces()) payload.insert(payload.end(), piece.begin(), piece.end());
  if (payload.size() != frame->payload.size() ||
      std::memcmp(payload.data(), frame->payload.data(), payload.size()) != 0) {
    Fail("BATCH payload does not re-encode");
  }
}

}  // namespace
}  // namespace farswap::transport

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  farswap::transport::CheckInput(data, size);
  return 0;
}
