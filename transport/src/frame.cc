// frame.cc: encoding and validation of the farswap wire format (frame.h).
//
// Validation is written as one rule per check, each with its own message,
// because the message is what an operator sees in the log line when a
// connection is closed for a malformed frame. The rules are strict on
// purpose: fields a frame does not use must be zero, so a desynchronised or
// hostile stream is caught on the first bad header rather than by chance.
//
// Byte order is explicit (shifts, not memcpy of host integers), so the
// format is little-endian on every host.
#include "farswap/transport/frame.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "farswap/common/status_macros.h"

namespace farswap::transport {
namespace {

// Field offsets within the header; frame.h and README.md show the table.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffOpcode = 6;
constexpr size_t kOffFlags = 7;
constexpr size_t kOffRequestId = 8;
constexpr size_t kOffPage = 16;
constexpr size_t kOffPayloadLength = 24;
constexpr size_t kOffCodec = 28;
constexpr size_t kOffReserved = 29;
constexpr size_t kOffStatus = 30;
constexpr size_t kOffChecksum = 32;
constexpr size_t kOffPageVersion = 40;
static_assert(kOffPageVersion + 8 == kFrameHeaderSize);

// The largest absl::StatusCode (kUnauthenticated = 16).
constexpr uint16_t kMaxStatusCode = 16;

void Put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint16_t Get16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

absl::Status Invalid(const FrameHeader& h, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(OpcodeName(h.opcode), h.is_reply() ? " reply" : " request", ": ", what));
}

// PayloadLimits is the inclusive range of payload_length for a header.
struct PayloadLimits {
  size_t min;
  size_t max;
};

PayloadLimits LimitsFor(const FrameHeader& h) {
  if (h.is_reply() && h.status != absl::StatusCode::kOk) return {0, kMaxErrorMessageSize};
  if (h.carries_page()) {
    if (h.same_filled()) return {kFillValueSize, kFillValueSize};
    return {1, kMaxPagePayload};
  }
  switch (h.opcode) {
    case Opcode::kHello:
      return h.is_reply() ? PayloadLimits{0, 0} : PayloadLimits{1, kMaxSessionTokenSize};
    case Opcode::kInvalidateRange:
      return h.is_reply() ? PayloadLimits{0, 0} : PayloadLimits{8, 8};
    case Opcode::kPing:
      return {0, kMaxPingPayload};
    case Opcode::kBatch:
      // Every sub-frame has a header; the count is checked before this.
      return {h.page * kFrameHeaderSize, h.page * kMaxSubFrameSize};
    default:  // STORE reply, LOAD request, INVALIDATE both ways
      return {0, 0};
  }
}

}  // namespace

bool FrameHeader::conditional_invalidate() const {
  return opcode == Opcode::kInvalidate && !is_reply() && version != 0;
}

bool FrameHeader::carries_page() const {
  if (opcode == Opcode::kStore) return !is_reply();
  if (opcode == Opcode::kLoad) return is_reply() && status == absl::StatusCode::kOk;
  return false;
}

const char* OpcodeName(Opcode op) {
  switch (op) {
    case Opcode::kHello:
      return "HELLO";
    case Opcode::kStore:
      return "STORE";
    case Opcode::kLoad:
      return "LOAD";
    case Opcode::kInvalidate:
      return "INVALIDATE";
    case Opcode::kInvalidateRange:
      return "INVALIDATE_RANGE";
    case Opcode::kPing:
      return "PING";
    case Opcode::kBatch:
      return "BATCH";
  }
  return "UNKNOWN";
}

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone:
      return "none";
    case Codec::kLz4:
      return "lz4";
    case Codec::kZstd:
      return "zstd";
  }
  return "unknown";
}

std::string DescribeHeader(const FrameHeader& h) {
  return absl::StrCat(OpcodeName(h.opcode), h.is_reply() ? " reply" : "", " id=", h.request_id,
                      " page=", h.page, " len=", h.payload_length, " codec=", CodecName(h.codec),
                      " status=", absl::StatusCodeToString(h.status), " flags=", h.flags,
                      " version=", h.version);
}

void EncodeHeader(const FrameHeader& h, std::span<uint8_t, kFrameHeaderSize> out) {
  uint8_t* p = out.data();
  Put32(p + kOffMagic, kFrameMagic);
  Put16(p + kOffVersion, kFrameVersion);
  p[kOffOpcode] = uint8_t(h.opcode);
  p[kOffFlags] = h.flags;
  Put64(p + kOffRequestId, h.request_id);
  Put64(p + kOffPage, h.page);
  Put32(p + kOffPayloadLength, h.payload_length);
  p[kOffCodec] = uint8_t(h.codec);
  p[kOffReserved] = 0;
  Put16(p + kOffStatus, uint16_t(h.status));
  Put64(p + kOffChecksum, h.checksum);
  Put64(p + kOffPageVersion, h.version);
}

std::array<uint8_t, kFrameHeaderSize> EncodeHeader(const FrameHeader& h) {
  std::array<uint8_t, kFrameHeaderSize> out;
  EncodeHeader(h, std::span<uint8_t, kFrameHeaderSize>(out));
  return out;
}

absl::Status ValidateHeader(const FrameHeader& h) {
  // Opcode, codec and status arrive as raw integers on the wire; an
  // in-memory header may hold anything too, so check ranges first.
  const uint8_t op = uint8_t(h.opcode);
  if (op == 0 || op > kMaxOpcode) {
    return absl::InvalidArgumentError(absl::StrCat("unknown opcode ", op));
  }
  if (h.flags & ~kKnownFlags) {
    return Invalid(h, absl::StrCat("unknown flag bits 0x", absl::Hex(h.flags & ~kKnownFlags)));
  }
  if (uint8_t(h.codec) > kMaxCodec) {
    return Invalid(h, absl::StrCat("unknown codec ", uint8_t(h.codec)));
  }
  if (uint32_t(h.status) > kMaxStatusCode) {
    return Invalid(h, absl::StrCat("unknown status code ", uint32_t(h.status)));
  }
  if (!h.is_reply() && h.status != absl::StatusCode::kOk) {
    return Invalid(h, absl::StrCat("a request carries status ", uint32_t(h.status)));
  }
  if (h.same_filled() && !h.carries_page()) {
    return Invalid(h, "SAME_FILLED is only valid on STORE requests and OK LOAD replies");
  }
  if (h.node_draining() &&
      !(h.opcode == Opcode::kPing && h.is_reply() && h.status == absl::StatusCode::kOk)) {
    return Invalid(h, "NODE_DRAINING is only valid on OK PING replies");
  }
  if (h.scrub() && !(h.opcode == Opcode::kLoad && !h.is_reply())) {
    return Invalid(h, "SCRUB is only valid on LOAD requests");
  }
  const bool page_payload = h.carries_page();
  if (h.codec != Codec::kNone && (!page_payload || h.same_filled())) {
    return Invalid(h, absl::StrCat("codec ", CodecName(h.codec),
                                   " on a frame without a compressed page payload"));
  }
  if (h.checksum != 0 && !page_payload) {
    return Invalid(h, "nonzero checksum on a frame without a page payload");
  }
  if (h.version != 0 && !page_payload && !h.conditional_invalidate()) {
    return Invalid(h, "nonzero page version on a frame without a page payload");
  }
  const bool error_reply = h.is_reply() && h.status != absl::StatusCode::kOk;
  if (h.opcode == Opcode::kBatch && !error_reply) {
    if (h.page == 0 || h.page > kMaxBatchEntries) {
      return Invalid(h, absl::StrCat("entry count ", h.page, " outside 1..", kMaxBatchEntries));
    }
  } else if (h.page != 0 && (error_reply || h.opcode == Opcode::kHello ||
                             h.opcode == Opcode::kPing || h.opcode == Opcode::kBatch)) {
    return Invalid(h, absl::StrCat("page field must be 0, is ", h.page));
  }
  const PayloadLimits limits = LimitsFor(h);
  if (h.payload_length < limits.min || h.payload_length > limits.max) {
    return Invalid(h, absl::StrCat("payload length ", h.payload_length, " outside ", limits.min,
                                   "..", limits.max));
  }
  return absl::OkStatus();
}

absl::StatusOr<FrameHeader> DecodeHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kFrameHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated header: ", bytes.size(), " of ", kFrameHeaderSize, " bytes"));
  }
  const uint8_t* p = bytes.data();
  if (uint32_t magic = Get32(p + kOffMagic); magic != kFrameMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad magic 0x", absl::Hex(magic, absl::kZeroPad8), " (expected 0x",
                     absl::Hex(kFrameMagic), " 'FSWP')"));
  }
  if (uint16_t version = Get16(p + kOffVersion); version != kFrameVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported version ", version, " (this build speaks ", kFrameVersion, ")"));
  }
  if (p[kOffReserved] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("reserved byte 29 is ", int(p[kOffReserved]), ", must be 0"));
  }
  FrameHeader h;
  h.opcode = Opcode(p[kOffOpcode]);
  h.flags = p[kOffFlags];
  h.request_id = Get64(p + kOffRequestId);
  h.page = Get64(p + kOffPage);
  h.payload_length = Get32(p + kOffPayloadLength);
  h.codec = Codec(p[kOffCodec]);
  h.status = absl::StatusCode(Get16(p + kOffStatus));
  h.checksum = Get64(p + kOffChecksum);
  h.version = Get64(p + kOffPageVersion);
  FARSWAP_RETURN_IF_ERROR(ValidateHeader(h));
  return h;
}

absl::Status ValidatePayload(const FrameHeader& h, std::span<const uint8_t> payload) {
  if (payload.size() != h.payload_length) {
    return Invalid(
        h, absl::StrCat("payload is ", payload.size(), " bytes, header says ", h.payload_length));
  }
  const bool error_reply = h.is_reply() && h.status != absl::StatusCode::kOk;
  if (error_reply) return absl::OkStatus();  // an error message: any bytes
  if (h.opcode == Opcode::kInvalidateRange && !h.is_reply()) {
    const uint64_t count = Get64(payload.data());
    if (count == 0) return Invalid(h, "count is 0");
    if (count - 1 > UINT64_MAX - h.page) {
      return Invalid(h, absl::StrCat("range ", h.page, "+", count, " overflows u64"));
    }
  }
  if (h.opcode != Opcode::kBatch) return absl::OkStatus();

  size_t off = 0;
  for (uint64_t i = 0; i < h.page; ++i) {
    const std::span<const uint8_t> rest = payload.subspan(off);
    absl::StatusOr<FrameHeader> sub = DecodeHeader(rest);
    if (!sub.ok()) {
      return Invalid(h, absl::StrCat("entry ", i, " of ", h.page, ": ", sub.status().message()));
    }
    if (sub->opcode == Opcode::kBatch || sub->opcode == Opcode::kHello) {
      return Invalid(h, absl::StrCat("entry ", i, " is a ", OpcodeName(sub->opcode),
                                     ", which cannot be batched"));
    }
    if (sub->is_reply() != h.is_reply()) {
      return Invalid(h, absl::StrCat("entry ", i, " is a ", sub->is_reply() ? "reply" : "request",
                                     " inside a ", h.is_reply() ? "reply" : "request"));
    }
    if (sub->payload_length > rest.size() - kFrameHeaderSize) {
      return Invalid(h, absl::StrCat("entry ", i, " payload of ", sub->payload_length,
                                     " bytes runs past the batch (", rest.size() - kFrameHeaderSize,
                                     " left)"));
    }
    const std::span<const uint8_t> sub_payload =
        rest.subspan(kFrameHeaderSize, sub->payload_length);
    if (absl::Status s = ValidatePayload(*sub, sub_payload); !s.ok()) {
      return Invalid(h, absl::StrCat("entry ", i, ": ", s.message()));
    }
    off += kFrameHeaderSize + sub->payload_length;
  }
  if (off != payload.size()) {
    return Invalid(
        h, absl::StrCat(payload.size() - off, " trailing bytes after ", h.page, " entries"));
  }
  return absl::OkStatus();
}

absl::StatusOr<FrameView> DecodeFrame(std::span<const uint8_t> bytes) {
  FARSWAP_ASSIGN_OR_RETURN(FrameHeader h, DecodeHeader(bytes));
  const size_t want = kFrameHeaderSize + size_t{h.payload_length};
  if (bytes.size() != want) {
    return Invalid(h, absl::StrCat("frame is ", bytes.size(), " bytes, header says ", want));
  }
  std::span<const uint8_t> payload = bytes.subspan(kFrameHeaderSize);
  FARSWAP_RETURN_IF_ERROR(ValidatePayload(h, payload));
  return FrameView{h, payload};
}

absl::StatusOr<std::vector<FrameView>> DecodeBatch(const FrameView& batch) {
  const FrameHeader& h = batch.header;
  if (h.opcode != Opcode::kBatch || (h.is_reply() && h.status != absl::StatusCode::kOk)) {
    return Invalid(h, "not a BATCH with entries");
  }
  FARSWAP_RETURN_IF_ERROR(ValidateHeader(h));
  FARSWAP_RETURN_IF_ERROR(ValidatePayload(h, batch.payload));
  std::vector<FrameView> out;
  out.reserve(h.page);
  size_t off = 0;
  for (uint64_t i = 0; i < h.page; ++i) {
    FrameHeader sub = *DecodeHeader(batch.payload.subspan(off));  // validated above
    out.push_back({sub, batch.payload.subspan(off + kFrameHeaderSize, sub.payload_length)});
    off += kFrameHeaderSize + sub.payload_length;
  }
  return out;
}

std::array<uint8_t, 8> EncodeU64Payload(uint64_t v) {
  std::array<uint8_t, 8> out;
  Put64(out.data(), v);
  return out;
}

absl::StatusOr<uint64_t> DecodeU64Payload(std::span<const uint8_t> payload) {
  if (payload.size() != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("u64 payload is ", payload.size(), " bytes, expected 8"));
  }
  return Get64(payload.data());
}

BatchEncoder::BatchEncoder(size_t max_entries)
    : max_entries_(std::min(max_entries, kMaxBatchEntries)) {
  headers_.reserve(max_entries_);
  pieces_.reserve(2 * max_entries_);  // a sub-header and one payload piece each
}

absl::Status BatchEncoder::Add(FrameHeader sub, std::span<const std::span<const uint8_t>> pieces) {
  if (count_ == max_entries_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("batch already holds the maximum of ", max_entries_, " entries"));
  }
  if (sub.opcode == Opcode::kBatch || sub.opcode == Opcode::kHello) {
    return absl::InvalidArgumentError(
        absl::StrCat(OpcodeName(sub.opcode), " cannot be a batch entry"));
  }
  if (count_ > 0 && sub.is_reply() != reply_) {
    return absl::InvalidArgumentError("a batch cannot mix requests and replies");
  }
  size_t len = 0;
  for (const auto& piece : pieces) len += piece.size();
  if (len > kMaxPagePayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry payload of ", len, " bytes exceeds ", kMaxPagePayload));
  }
  sub.payload_length = uint32_t(len);
  FARSWAP_RETURN_IF_ERROR(ValidateHeader(sub));
  reply_ = sub.is_reply();
  headers_.push_back(EncodeHeader(sub));  // never reallocates: capacity reserved
  pieces_.emplace_back(headers_.back());
  for (const auto& piece : pieces) {
    if (!piece.empty()) pieces_.push_back(piece);
  }
  ++count_;
  payload_size_ += kFrameHeaderSize + len;
  return absl::OkStatus();
}

FrameHeader BatchEncoder::Header(uint64_t request_id) const {
  FrameHeader h;
  h.opcode = Opcode::kBatch;
  h.flags = reply_ ? kFlagReply : 0;
  h.request_id = request_id;
  h.page = count_;
  h.payload_length = uint32_t(payload_size_);
  return h;
}

}  // namespace farswap::transport
