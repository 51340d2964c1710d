// frame.h: the farswap data-plane wire format, shared by every transport
// backend (TCP, RDMA). transport/README.md has the same layout as a table.
//
//   FrameHeader h{.opcode = Opcode::kStore, .request_id = 7, .page = 42,
//                 .codec = Codec::kLz4, .checksum = xxh3_of_page, .version = v};
//   h.payload_length = compressed.size();
//   std::array<uint8_t, kFrameHeaderSize> wire = EncodeHeader(h);
//   // writev({wire}, {compressed}): the payload is never copied.
//
//   absl::StatusOr<FrameView> f = DecodeFrame(bytes);   // validates every field
//   if (!f.ok()) close the connection, log f.status().message();
//
// A frame is a fixed 48-byte little-endian header followed by
// `payload_length` bytes of payload:
//
//   off size field
//     0    4 magic           'F','S','W','P' (kFrameMagic read little-endian)
//     4    2 frame_version   kFrameVersion (2)
//     6    1 opcode          Opcode
//     7    1 flags           kFlagReply | kFlagSameFilled | kFlagNodeDraining |
//                            kFlagScrub
//     8    8 request_id      chosen by the requester, echoed in the reply
//    16    8 page            tenant-scoped page number (BATCH: entry count)
//    24    4 payload_length  bytes after the header
//    28    1 codec           Codec of the page payload
//    29    1 reserved        must be 0
//    30    2 status          replies: absl::StatusCode; requests: 0
//    32    8 checksum        xxh3-64 of the uncompressed page, carried as is
//    40    8 version         the page's store version (STORE requests and OK
//                            LOAD replies; on INVALIDATE requests, the
//                            newest version to drop; 0 elsewhere)
//
// Page versions. A client stamps every STORE with a version from a counter
// that only goes up (farswap::Client seeds it from the wall clock, so a
// restarted client still counts upward); the node keeps it with the page,
// refuses a STORE whose version is lower than the stored page's with
// ABORTED ("stale version"), and returns it in OK LOAD replies. So a store
// delayed past a newer one can never overwrite it. Version 0 is the lowest:
// an unversioned STORE only ever replaces an unversioned page.
//
// An INVALIDATE request with version 0 drops the page whatever its version.
// One with a nonzero version is conditional: the node drops the page only if
// its stored version is at most that, and keeps a newer one (OK either way).
// A client clears up a copy it may have left behind (a read repair that
// landed after the page was invalidated) without risking a newer store of
// the page. Nodes that take it say so when attached
// (AttachResponse.conditional_invalidate); older ones refuse the frame as
// malformed and close the connection, so clients send it only to those.
//
// The transport carries the checksum end to end and never computes it; the
// client computes it before compression and verifies it after decompression.
// A BATCH frame's payload is `page` complete sub-frames (header + payload
// each) so one round trip carries up to kMaxBatchEntries pages.
//
// Thread safety: everything here is a pure function or a value type;
// BatchEncoder is a value type (not for concurrent mutation).
#ifndef FARSWAP_TRANSPORT_FRAME_H_
#define FARSWAP_TRANSPORT_FRAME_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace farswap::transport {

// kFrameMagic is the first four bytes of every frame, "FSWP", read as a
// little-endian u32. It lets a receiver reject a stream that is not farswap
// (an HTTP probe, a desynchronised stream) on its first frame.
inline constexpr uint32_t kFrameMagic = 0x50575346;
// kFrameVersion changes whenever the header layout or an opcode's meaning
// changes; receivers reject any other version.
// Version 2 added the page `version` field (header 40 -> 48 bytes).
inline constexpr uint16_t kFrameVersion = 2;
inline constexpr size_t kFrameHeaderSize = 48;

// kMaxPagePayload: a page is 4 KiB and a page that does not compress is sent
// raw, so no page payload is ever longer.
inline constexpr size_t kMaxPagePayload = 4096;
// kFillValueSize: a SAME_FILLED page's payload is its 8-byte fill pattern.
inline constexpr size_t kFillValueSize = 8;
// kMaxSessionTokenSize: HELLO tokens are opaque bearer strings; 256 bytes
// holds a signed token with room to spare and bounds pre-auth allocation.
inline constexpr size_t kMaxSessionTokenSize = 256;
// kMaxErrorMessageSize: a non-OK reply may carry a human-readable message.
inline constexpr size_t kMaxErrorMessageSize = 256;
// kMaxPingPayload: PING echoes an opaque payload (latency probes with a
// page-sized body); no larger than a page.
inline constexpr size_t kMaxPingPayload = kMaxPagePayload;
// kMaxBatchEntries: sub-frames per BATCH. 256 x 4 KiB = 1 MiB per round
// trip: enough to saturate a link, small enough to bound one receive buffer.
inline constexpr size_t kMaxBatchEntries = 256;
// kMaxSubFrameSize: the largest sub-frame a BATCH may hold.
inline constexpr size_t kMaxSubFrameSize = kFrameHeaderSize + kMaxPagePayload;
// kMaxBatchPayload / kMaxFrameSize: the largest payload and frame anyone
// may send; a receiver never buffers more than kMaxFrameSize for one frame.
inline constexpr size_t kMaxBatchPayload = kMaxBatchEntries * kMaxSubFrameSize;
inline constexpr size_t kMaxFrameSize = kFrameHeaderSize + kMaxBatchPayload;
static_assert(kMaxPingPayload <= kMaxPagePayload);
static_assert(kMaxSessionTokenSize <= kMaxPagePayload && kMaxErrorMessageSize <= kMaxPagePayload);
static_assert(kMaxFrameSize <= UINT32_MAX, "payload_length is a u32");

enum class Opcode : uint8_t {
  kHello = 1,            // payload: session token (1..256 bytes)
  kStore = 2,            // payload: the (compressed) page
  kLoad = 3,             // OK reply payload: the stored page
  kInvalidate = 4,       // drop one page
  kInvalidateRange = 5,  // page = first; payload: u64 count (>= 1)
  kPing = 6,             // payload echoed by the reply (0..4096 bytes)
  kBatch = 7,            // payload: `page` sub-frames (no HELLO, no BATCH)
};
inline constexpr uint8_t kMaxOpcode = 7;

enum class Codec : uint8_t { kNone = 0, kLz4 = 1, kZstd = 2 };
inline constexpr uint8_t kMaxCodec = 2;

// kFlagReply marks a reply; replies carry `status` and echo request_id.
inline constexpr uint8_t kFlagReply = 0x01;
// kFlagSameFilled marks a page that is one 8-byte value repeated (zero pages
// most of all); its payload is the value, codec NONE. Only on STORE requests
// and OK LOAD replies.
inline constexpr uint8_t kFlagSameFilled = 0x02;
// kFlagNodeDraining: on an OK PING reply only, the node is draining (it
// refuses new stores); clients move their slabs off it.
inline constexpr uint8_t kFlagNodeDraining = 0x04;
// kFlagScrub: on LOAD requests only, the load checks the stored copy rather
// than uses the page (a client's scrub). The node answers from the copy
// itself, pool or backing store, never from a cache of backing-store reads,
// so corruption of the medium is seen; and it is not an access (the page's
// LRU reference, promotion and pending writeback are left as they are).
// Nodes that take it say so when attached (AttachResponse.scrub_loads);
// older ones refuse the frame as malformed, so clients send it to no other.
inline constexpr uint8_t kFlagScrub = 0x08;
inline constexpr uint8_t kKnownFlags =
    kFlagReply | kFlagSameFilled | kFlagNodeDraining | kFlagScrub;

// FrameHeader is the decoded header; magic and version are implicit.
struct FrameHeader {
  Opcode opcode = Opcode::kPing;
  uint8_t flags = 0;
  uint64_t request_id = 0;
  uint64_t page = 0;
  uint32_t payload_length = 0;
  Codec codec = Codec::kNone;
  absl::StatusCode status = absl::StatusCode::kOk;
  uint64_t checksum = 0;
  // version: the page's store version (see the file comment); nonzero only
  // where carries_page(), or on a conditional INVALIDATE request.
  uint64_t version = 0;

  bool is_reply() const { return (flags & kFlagReply) != 0; }
  bool same_filled() const { return (flags & kFlagSameFilled) != 0; }
  bool node_draining() const { return (flags & kFlagNodeDraining) != 0; }
  bool scrub() const { return (flags & kFlagScrub) != 0; }
  // carries_page: a STORE request or an OK LOAD reply, the only frames whose
  // payload is a page (and so the only ones with a codec, checksum and
  // version).
  bool carries_page() const;
  // conditional_invalidate: an INVALIDATE request with a version (see the
  // file comment): drop only a copy at most that version.
  bool conditional_invalidate() const;
  friend bool operator==(const FrameHeader&, const FrameHeader&) = default;
};

// FrameView is a decoded frame whose payload points into the caller's bytes.
struct FrameView {
  FrameHeader header;
  std::span<const uint8_t> payload;
};

const char* OpcodeName(Opcode op);
const char* CodecName(Codec codec);
// DescribeHeader renders a header for logs: "STORE id=7 page=42 len=1234 ...".
std::string DescribeHeader(const FrameHeader& h);

// EncodeHeader writes magic, frame version and `h` into kFrameHeaderSize bytes. It does not
// validate; senders call ValidateHeader first (the transports do).
void EncodeHeader(const FrameHeader& h, std::span<uint8_t, kFrameHeaderSize> out);
std::array<uint8_t, kFrameHeaderSize> EncodeHeader(const FrameHeader& h);

// DecodeHeader parses and validates the first kFrameHeaderSize bytes of
// `bytes`: magic, frame version, opcode, flags allowed for the opcode and
// direction, reserved byte, codec, status, checksum and page-version
// presence and payload_length within the opcode's
// limits. It needs only the header, so a stream reader can reject a frame
// before buffering its payload. INVALID_ARGUMENT with the reason otherwise.
absl::StatusOr<FrameHeader> DecodeHeader(std::span<const uint8_t> bytes);

// ValidateHeader applies DecodeHeader's rules to an in-memory header.
absl::Status ValidateHeader(const FrameHeader& h);

// ValidatePayload checks what the header alone cannot: an INVALIDATE_RANGE
// count, and a BATCH's structure (exactly `page` well-formed sub-frames, no
// nested BATCH or HELLO, directions matching, no trailing bytes).
// `payload.size()` must equal h.payload_length.
absl::Status ValidatePayload(const FrameHeader& h, std::span<const uint8_t> payload);

// DecodeFrame decodes exactly one whole frame: `bytes` must be header plus
// payload with nothing after it. Every field is validated.
absl::StatusOr<FrameView> DecodeFrame(std::span<const uint8_t> bytes);

// DecodeBatch splits a validated BATCH frame into its sub-frames (views
// into the same bytes). INVALID_ARGUMENT if `batch` is not a valid BATCH.
absl::StatusOr<std::vector<FrameView>> DecodeBatch(const FrameView& batch);

// Little-endian u64 payload helpers: the fill value of a SAME_FILLED page
// and the count of an INVALIDATE_RANGE.
std::array<uint8_t, 8> EncodeU64Payload(uint64_t v);
// DecodeU64Payload: INVALID_ARGUMENT unless `payload` is exactly 8 bytes.
absl::StatusOr<uint64_t> DecodeU64Payload(std::span<const uint8_t> payload);

// BatchEncoder assembles a BATCH payload as a scatter-gather list without
// copying page payloads: sub-headers live in the encoder, payload pieces
// stay where the caller has them. Both must outlive the send.
//
//   BatchEncoder b;
//   b.Add({.opcode = Opcode::kStore, .page = p, .codec = c, .checksum = x, .version = v},
//         {{data, n}});
//   FrameHeader h = b.Header(/*request_id=*/0);
//   send(h, b.pieces());
//
// Thread safety: a value type; not for concurrent mutation. Moving it keeps
// the pieces valid (sub-headers are heap-allocated once, in the constructor).
class BatchEncoder {
 public:
  // The encoder holds up to `max_entries` entries (at most
  // kMaxBatchEntries); its memory is sized for them once (a sub-header and
  // one payload piece per entry), so Add allocates only when entries with
  // several payload pieces outgrow that reserve.
  explicit BatchEncoder(size_t max_entries = kMaxBatchEntries);

  // Add appends one sub-frame; its payload_length is set from `pieces`.
  // INVALID_ARGUMENT when the sub-frame is invalid (a BATCH or HELLO, bad
  // length for its opcode, ...) or mixes directions with earlier entries;
  // RESOURCE_EXHAUSTED when the batch already holds max_entries.
  absl::Status Add(FrameHeader sub, std::span<const std::span<const uint8_t>> pieces = {});

  size_t count() const { return count_; }
  size_t payload_size() const { return payload_size_; }
  // Header returns the outer BATCH header for this content; it is a reply
  // when the entries are replies.
  FrameHeader Header(uint64_t request_id) const;
  // pieces is the batch payload, in order: sub-header, its payload pieces, ...
  std::span<const std::span<const uint8_t>> pieces() const { return pieces_; }

 private:
  size_t max_entries_;
  std::vector<std::array<uint8_t, kFrameHeaderSize>> headers_;  // capacity fixed: max_entries_
  std::vector<std::span<const uint8_t>> pieces_;
  size_t count_ = 0;
  size_t payload_size_ = 0;
  bool reply_ = false;
};

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_FRAME_H_
