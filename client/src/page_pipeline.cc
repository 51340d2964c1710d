#include "page_pipeline.h"

#include <xxhash.h>

#include <cstring>
#include <map>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"

namespace farswap::client_internal {

transport::FrameHeader PreparedPage::header() const {
  transport::FrameHeader h{.opcode = transport::Opcode::kStore, .page = page_no};
  h.checksum = checksum;
  h.version = version;
  if (encoded.kind == EncodedPage::Kind::kSameFilled) {
    h.flags = transport::kFlagSameFilled;
    h.codec = transport::Codec::kNone;
    h.payload_length = transport::kFillValueSize;
  } else {
    h.codec = transport::Codec(encoded.codec);
    h.payload_length = encoded.length;
  }
  return h;
}

std::span<const uint8_t> PreparedPage::payload_bytes() const {
  if (encoded.kind == EncodedPage::Kind::kSameFilled) {
    return {payload.data(), transport::kFillValueSize};
  }
  return {payload.data(), encoded.length};
}

void PreparePage(PageCodec& codec, uint64_t page_no, const void* page, SnapshotMode mode,
                 PreparedPage* out) {
  out->page_no = page_no;
  // The snapshot lives on this thread's stack for the few microseconds the
  // checksum and the single encoding need it; the encoding (or, for raw
  // pages, the codec's copy of the snapshot) is what leaves.
  alignas(64) uint8_t snapshot[kPageSize];
  const uint8_t* stable = static_cast<const uint8_t*>(page);
  if (mode == SnapshotMode::kCopy) {
    std::memcpy(snapshot, page, kPageSize);
    stable = snapshot;
  }
  FARSWAP_SYNC_POINT(kSyncAfterSnapshot);
  out->checksum = XXH3_64bits(stable, kPageSize);
  out->encoded = codec.Encode(stable, out->payload.data());
  if (out->encoded.kind == EncodedPage::Kind::kSameFilled) {
    std::array<uint8_t, 8> fill = transport::EncodeU64Payload(out->encoded.fill);
    std::memcpy(out->payload.data(), fill.data(), fill.size());
  }
}

absl::Status DecodeVerified(PageCodec& codec, uint64_t page_no, const transport::FrameHeader& reply,
                            std::span<const uint8_t> payload, uint8_t* out) {
  if (reply.same_filled()) {
    absl::StatusOr<uint64_t> fill = transport::DecodeU64Payload(payload);
    if (!fill.ok()) {
      return absl::DataLossError(
          absl::StrCat("page ", page_no, ": bad same-filled payload: ", fill.status().message()));
    }
    PageCodec::DecodeSameFilled(*fill, out);
  } else {
    absl::Status s = codec.Decode(Codec(reply.codec), payload.data(), payload.size(), out);
    if (!s.ok()) return absl::DataLossError(absl::StrCat("page ", page_no, ": ", s.message()));
  }
  uint64_t sum = XXH3_64bits(out, kPageSize);
  if (sum != reply.checksum) {
    return absl::DataLossError(absl::StrCat("page ", page_no, ": checksum mismatch (stored ",
                                            absl::Hex(reply.checksum), ", loaded ", absl::Hex(sum),
                                            ")"));
  }
  return absl::OkStatus();
}

PageCodec& ThreadCodec(const PageCodecOptions& options) {
  using Key = std::tuple<int, int, uint32_t>;
  thread_local std::map<Key, std::unique_ptr<PageCodec>> codecs;
  Key key{int(options.codec), options.zstd_level, options.raw_threshold};
  std::unique_ptr<PageCodec>& c = codecs[key];
  if (!c) c = std::make_unique<PageCodec>(options);
  return *c;
}

}  // namespace farswap::client_internal
