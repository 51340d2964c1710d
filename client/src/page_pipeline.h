// page_pipeline.h: the client's path from a caller's page to the bytes sent
// to memory nodes, and back (gRPC-free, so its tests run under TSan).
//
// Store side (docs/invariants.md rules 3-4):
//   1. snapshot: unless the caller promises the page cannot change during the
//      call, copy it into a private buffer first; everything below reads only
//      the snapshot;
//   2. checksum: xxh3-64 of the snapshot;
//   3. encode once: same-filled → flag + 8-byte fill; else lz4/zstd into a
//      page-sized buffer; an encoding that does not shrink below the raw
//      threshold is replaced by the raw snapshot. The payload sent is exactly
//      that one encoding's bytes: nothing is re-encoded, nothing is re-sized.
// Load side: decode the node's payload and compare the xxh3-64 of the result
// with the checksum the node returned (the one sent at store time). A
// mismatch or undecodable payload is DATA_LOSS naming the page.
//
//   PreparedPage p = PreparePage(codec, page_no, page, SnapshotMode::kCopy);
//   send(p.header(), p.payload());
//   ...
//   FARSWAP_RETURN_IF_ERROR(DecodeVerified(codec, page_no, reply.header, reply.payload, out));
#ifndef FARSWAP_CLIENT_SRC_PAGE_PIPELINE_H_
#define FARSWAP_CLIENT_SRC_PAGE_PIPELINE_H_

#include <array>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "farswap/client/client_options.h"
#include "farswap/client/page_codec.h"
#include "farswap/common/page_file.h"
#include "farswap/transport/frame.h"

namespace farswap::client_internal {

// PreparedPage is one encoded page ready to send to any number of replicas:
// the STORE header fields and the payload. A value type; once built it is
// never modified, so replicas and retries all send the same bytes.
struct PreparedPage {
  uint64_t page_no = 0;
  EncodedPage encoded;
  uint64_t checksum = 0;
  uint64_t version = 0;  // the store version (set by the Client before sending)
  // payload holds the compressed bytes, the raw snapshot, or the fill word.
  std::array<uint8_t, kPageSize> payload;

  // header is the STORE request header (request id left 0).
  transport::FrameHeader header() const;
  std::span<const uint8_t> payload_bytes() const;
};

// kSyncAfterSnapshot is hit after the snapshot is taken (or, in stable mode,
// right before encoding reads the caller's page) and before the checksum and
// compression read it. Tests modify the caller's page here.
inline constexpr char kSyncAfterSnapshot[] = "PreparePage:after-snapshot";

// PreparePage snapshots (per `mode`), checksums and encodes `page` (4096
// bytes) into *out. `codec` is the calling thread's codec.
void PreparePage(PageCodec& codec, uint64_t page_no, const void* page, SnapshotMode mode,
                 PreparedPage* out);

// DecodeVerified decodes a LOAD reply (`reply` header + payload) into `out`
// (4096 bytes) and verifies its checksum. DATA_LOSS naming `page_no` on a
// bad payload or a checksum mismatch; `out` may then hold garbage and must
// not be handed to the application.
absl::Status DecodeVerified(PageCodec& codec, uint64_t page_no, const transport::FrameHeader& reply,
                            std::span<const uint8_t> payload, uint8_t* out);

// ThreadCodec returns this thread's PageCodec for `options` (codecs keep
// zstd contexts and are not thread-safe, so each thread has its own).
PageCodec& ThreadCodec(const PageCodecOptions& options);

}  // namespace farswap::client_internal

#endif  // FARSWAP_CLIENT_SRC_PAGE_PIPELINE_H_
