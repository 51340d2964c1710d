// Wire-format tests: every opcode round-trips, and every validation rule
// rejects with INVALID_ARGUMENT and a message naming the problem.
#include "farswap/transport/frame.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace farswap::transport {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7);
  return v;
}

// Wire concatenates an encoded header and payload into one frame.
std::vector<uint8_t> Wire(FrameHeader h, std::span<const uint8_t> payload) {
  h.payload_length = uint32_t(payload.size());
  auto header = EncodeHeader(h);
  std::vector<uint8_t> out(header.begin(), header.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

std::vector<uint8_t> Gather(std::span<const std::span<const uint8_t>> pieces) {
  std::vector<uint8_t> out;
  for (auto p : pieces) out.insert(out.end(), p.begin(), p.end());
  return out;
}

void ExpectRoundTrip(FrameHeader h, const std::vector<uint8_t>& payload) {
  h.payload_length = uint32_t(payload.size());
  ASSERT_TRUE(ValidateHeader(h).ok()) << ValidateHeader(h) << " " << DescribeHeader(h);
  std::vector<uint8_t> wire = Wire(h, payload);
  absl::StatusOr<FrameView> f = DecodeFrame(wire);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->header, h);
  EXPECT_EQ(std::vector<uint8_t>(f->payload.begin(), f->payload.end()), payload);
}

void ExpectInvalid(std::span<const uint8_t> wire, const std::string& reason) {
  absl::StatusOr<FrameView> f = DecodeFrame(wire);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(reason));
}

TEST(FrameTest, HeaderIsFortyEightBytesLittleEndian) {
  FrameHeader h{.opcode = Opcode::kStore,
                .request_id = 0x0102030405060708,
                .page = 0x1112131415161718,
                .payload_length = 0x100,
                .codec = Codec::kZstd,
                .checksum = 0xA1A2A3A4A5A6A7A8,
                .version = 0xB1B2B3B4B5B6B7B8};
  auto w = EncodeHeader(h);
  ASSERT_EQ(w.size(), 48u);
  EXPECT_EQ(std::memcmp(w.data(), "FSWP", 4), 0);
  EXPECT_EQ(w[4], 2);  // frame version
  EXPECT_EQ(w[5], 0);
  EXPECT_EQ(w[6], uint8_t(Opcode::kStore));
  EXPECT_EQ(w[8], 0x08);  // request id, low byte first
  EXPECT_EQ(w[15], 0x01);
  EXPECT_EQ(w[16], 0x18);
  EXPECT_EQ(w[24], 0x00);
  EXPECT_EQ(w[25], 0x01);  // payload length 0x100
  EXPECT_EQ(w[28], uint8_t(Codec::kZstd));
  EXPECT_EQ(w[32], 0xA8);
  EXPECT_EQ(w[39], 0xA1);
  EXPECT_EQ(w[40], 0xB8);  // page version, low byte first
  EXPECT_EQ(w[47], 0xB1);
}

TEST(FrameTest, PageVersionRoundTripsOnStoresLoadRepliesAndBatchEntries) {
  auto compressed = Bytes(700, 4);
  ExpectRoundTrip({.opcode = Opcode::kStore,
                   .page = 9,
                   .codec = Codec::kLz4,
                   .checksum = 7,
                   .version = 0x17F0123456789ABC},
                  compressed);
  ExpectRoundTrip({.opcode = Opcode::kLoad,
                   .flags = kFlagReply,
                   .page = 9,
                   .codec = Codec::kLz4,
                   .checksum = 7,
                   .version = UINT64_MAX},
                  compressed);
  std::string stale = "stale version 3";
  ExpectRoundTrip(
      {.opcode = Opcode::kStore, .flags = kFlagReply, .status = absl::StatusCode::kAborted},
      std::vector<uint8_t>(stale.begin(), stale.end()));
  BatchEncoder b;
  std::vector<std::span<const uint8_t>> pieces{compressed};
  ASSERT_TRUE(b.Add({.opcode = Opcode::kStore, .page = 1, .version = 41}, pieces).ok());
  ASSERT_TRUE(b.Add({.opcode = Opcode::kStore, .page = 2, .version = 42}, pieces).ok());
  std::vector<uint8_t> payload = Gather(b.pieces());
  std::vector<uint8_t> wire = Wire(b.Header(1), payload);
  absl::StatusOr<FrameView> f = DecodeFrame(wire);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::vector<FrameView>> entries = DecodeBatch(*f);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].header.version, 41u);
  EXPECT_EQ((*entries)[1].header.version, 42u);
}

TEST(FrameTest, EveryOpcodeRoundTripsBothDirections) {
  auto page = Bytes(4096, 1);
  auto compressed = Bytes(1234, 2);
  auto fill = EncodeU64Payload(0xDEADBEEFCAFEF00D);
  std::vector<uint8_t> fill_v(fill.begin(), fill.end());
  auto count = EncodeU64Payload(1000);
  std::vector<uint8_t> count_v(count.begin(), count.end());

  ExpectRoundTrip({.opcode = Opcode::kHello, .request_id = 1}, Bytes(32, 3));
  ExpectRoundTrip({.opcode = Opcode::kHello, .flags = kFlagReply, .request_id = 1}, {});
  ExpectRoundTrip({.opcode = Opcode::kStore, .request_id = 2, .page = 99, .checksum = 5}, page);
  ExpectRoundTrip(
      {.opcode = Opcode::kStore, .request_id = 2, .page = 9, .codec = Codec::kLz4, .checksum = 7},
      compressed);
  ExpectRoundTrip({.opcode = Opcode::kStore, .flags = kFlagSameFilled, .page = 3, .checksum = 8},
                  fill_v);
  ExpectRoundTrip({.opcode = Opcode::kStore, .flags = kFlagReply, .request_id = 2}, {});
  ExpectRoundTrip({.opcode = Opcode::kLoad, .request_id = 3, .page = 77}, {});
  ExpectRoundTrip({.opcode = Opcode::kLoad,
                   .flags = kFlagReply,
                   .request_id = 3,
                   .page = 77,
                   .codec = Codec::kZstd,
                   .checksum = 0x1234},
                  compressed);
  ExpectRoundTrip({.opcode = Opcode::kLoad, .flags = kFlagReply | kFlagSameFilled, .page = 77},
                  fill_v);
  std::string msg = "page 77 not stored";
  ExpectRoundTrip({.opcode = Opcode::kLoad,
                   .flags = kFlagReply,
                   .request_id = 3,
                   .status = absl::StatusCode::kNotFound},
                  std::vector<uint8_t>(msg.begin(), msg.end()));
  ExpectRoundTrip({.opcode = Opcode::kInvalidate, .request_id = 4, .page = 5}, {});
  ExpectRoundTrip({.opcode = Opcode::kInvalidate, .flags = kFlagReply, .request_id = 4}, {});
  ExpectRoundTrip({.opcode = Opcode::kInvalidateRange, .request_id = 5, .page = 100}, count_v);
  ExpectRoundTrip({.opcode = Opcode::kInvalidateRange, .flags = kFlagReply}, {});
  ExpectRoundTrip({.opcode = Opcode::kPing, .request_id = 6}, {});
  ExpectRoundTrip({.opcode = Opcode::kPing, .flags = kFlagReply, .request_id = 6}, page);
}

TEST(FrameTest, BatchOfEveryBatchableOpcodeRoundTrips) {
  auto compressed = Bytes(1000, 9);
  auto fill = EncodeU64Payload(0);
  auto count = EncodeU64Payload(16);
  std::vector<std::span<const uint8_t>> p1{std::span<const uint8_t>(compressed).first(400),
                                           std::span<const uint8_t>(compressed).subspan(400)};
  std::vector<std::span<const uint8_t>> p2{fill};
  std::vector<std::span<const uint8_t>> p3{count};
  BatchEncoder b;
  ASSERT_TRUE(b.Add({.opcode = Opcode::kStore,
                     .request_id = 10,
                     .page = 1,
                     .codec = Codec::kLz4,
                     .checksum = 11},
                    p1)
                  .ok());
  ASSERT_TRUE(b.Add({.opcode = Opcode::kStore, .flags = kFlagSameFilled, .page = 2}, p2).ok());
  ASSERT_TRUE(b.Add({.opcode = Opcode::kLoad, .page = 3}).ok());
  ASSERT_TRUE(b.Add({.opcode = Opcode::kInvalidate, .page = 4}).ok());
  ASSERT_TRUE(b.Add({.opcode = Opcode::kInvalidateRange, .page = 5}, p3).ok());
  ASSERT_TRUE(b.Add({.opcode = Opcode::kPing}).ok());
  FrameHeader h = b.Header(42);
  EXPECT_EQ(h.page, 6u);
  EXPECT_FALSE(h.is_reply());
  std::vector<uint8_t> payload = Gather(b.pieces());
  ASSERT_EQ(payload.size(), b.payload_size());
  std::vector<uint8_t> wire = Wire(h, payload);
  absl::StatusOr<FrameView> f = DecodeFrame(wire);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::vector<FrameView>> subs = DecodeBatch(*f);
  ASSERT_TRUE(subs.ok()) << subs.status();
  ASSERT_EQ(subs->size(), 6u);
  EXPECT_EQ((*subs)[0].header.opcode, Opcode::kStore);
  EXPECT_EQ((*subs)[0].header.request_id, 10u);
  EXPECT_EQ((*subs)[0].header.checksum, 11u);
  EXPECT_EQ((*subs)[0].header.codec, Codec::kLz4);
  EXPECT_EQ(std::vector<uint8_t>((*subs)[0].payload.begin(), (*subs)[0].payload.end()), compressed);
  EXPECT_TRUE((*subs)[1].header.same_filled());
  EXPECT_EQ(*DecodeU64Payload((*subs)[1].payload), 0u);
  EXPECT_EQ((*subs)[2].header.opcode, Opcode::kLoad);
  EXPECT_EQ((*subs)[2].header.page, 3u);
  EXPECT_EQ(*DecodeU64Payload((*subs)[4].payload), 16u);
  EXPECT_EQ((*subs)[5].header.opcode, Opcode::kPing);
}

TEST(FrameTest, MaximalBatchOfFullPagesRoundTrips) {
  auto page = Bytes(kMaxPagePayload, 5);
  BatchEncoder b;
  std::vector<std::span<const uint8_t>> pieces{page};
  for (size_t i = 0; i < kMaxBatchEntries; ++i) {
    ASSERT_TRUE(b.Add({.opcode = Opcode::kStore, .page = i}, pieces).ok());
  }
  EXPECT_EQ(b.Add({.opcode = Opcode::kStore, .page = 999}, pieces).code(),
            absl::StatusCode::kResourceExhausted);
  std::vector<uint8_t> wire = Wire(b.Header(1), Gather(b.pieces()));
  EXPECT_EQ(wire.size(), kMaxFrameSize);
  absl::StatusOr<FrameView> f = DecodeFrame(wire);
  ASSERT_TRUE(f.ok()) << f.status();
  auto subs = DecodeBatch(*f);
  ASSERT_TRUE(subs.ok());
  ASSERT_EQ(subs->size(), kMaxBatchEntries);
  EXPECT_EQ((*subs)[255].header.page, 255u);
}

TEST(FrameTest, BatchEncoderHoldsNoMoreThanItWasSizedFor) {
  // Sized once (its pieces point into its own headers, so they must never
  // move): the entry past max_entries is refused, not reallocated.
  BatchEncoder b(2);
  ASSERT_TRUE(b.Add({.opcode = Opcode::kLoad, .page = 1}).ok());
  ASSERT_TRUE(b.Add({.opcode = Opcode::kLoad, .page = 2}).ok());
  EXPECT_EQ(b.Add({.opcode = Opcode::kLoad, .page = 3}).code(),
            absl::StatusCode::kResourceExhausted);
  std::vector<uint8_t> wire = Wire(b.Header(1), Gather(b.pieces()));
  absl::StatusOr<FrameView> f = DecodeFrame(wire);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::vector<FrameView>> subs = DecodeBatch(*f);
  ASSERT_TRUE(subs.ok()) << subs.status();
  ASSERT_EQ(subs->size(), 2u);
  EXPECT_EQ((*subs)[1].header.page, 2u);
  // Asking for more than a BATCH may hold gives kMaxBatchEntries.
  BatchEncoder big(kMaxBatchEntries + 10);
  for (size_t i = 0; i < kMaxBatchEntries; ++i) {
    ASSERT_TRUE(big.Add({.opcode = Opcode::kLoad, .page = i}).ok());
  }
  EXPECT_EQ(big.Add({.opcode = Opcode::kLoad}).code(), absl::StatusCode::kResourceExhausted);
}

TEST(FrameTest, BatchEncoderRejectsBadEntries) {
  BatchEncoder b;
  EXPECT_EQ(b.Add({.opcode = Opcode::kHello}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.Add({.opcode = Opcode::kBatch}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.Add({.opcode = Opcode::kStore}).code(), absl::StatusCode::kInvalidArgument);  // empty
  ASSERT_TRUE(b.Add({.opcode = Opcode::kLoad, .page = 1}).ok());
  EXPECT_EQ(b.Add({.opcode = Opcode::kLoad, .flags = kFlagReply}).code(),
            absl::StatusCode::kInvalidArgument);  // mixes directions
}

// --- every validation rule ---

std::vector<uint8_t> ValidStore() {
  return Wire({.opcode = Opcode::kStore, .page = 1, .codec = Codec::kLz4, .checksum = 2},
              Bytes(100, 0));
}

TEST(FrameValidationTest, TruncatedHeader) {
  auto w = ValidStore();
  ExpectInvalid(std::span<const uint8_t>(w).first(47), "truncated header: 47 of 48");
  ExpectInvalid({}, "truncated header: 0 of 48");
}

TEST(FrameValidationTest, WrongMagic) {
  auto w = ValidStore();
  w[0] = 'G';
  ExpectInvalid(w, "bad magic");
  std::string http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789abcdef";
  ExpectInvalid(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(http.data()), 48),
                "bad magic");
}

TEST(FrameValidationTest, WrongVersion) {
  auto w = ValidStore();
  w[4] = 1;  // version 1: the 40-byte header without page versions
  ExpectInvalid(w, "unsupported version 1");
  w[4] = 3;
  ExpectInvalid(w, "unsupported version 3");
}

TEST(FrameValidationTest, UnknownOpcode) {
  auto w = ValidStore();
  w[6] = 0;
  ExpectInvalid(w, "unknown opcode 0");
  w[6] = 8;
  ExpectInvalid(w, "unknown opcode 8");
}

TEST(FrameValidationTest, UnknownAndMisplacedFlags) {
  auto w = ValidStore();
  w[7] = 0x80;
  ExpectInvalid(w, "unknown flag bits 0x80");
  ExpectInvalid(Wire({.opcode = Opcode::kLoad, .flags = kFlagSameFilled}, {}), "SAME_FILLED");
  ExpectInvalid(Wire({.opcode = Opcode::kStore, .flags = kFlagSameFilled}, Bytes(100, 0)),
                "payload length 100 outside 8..8");
  // NODE_DRAINING: only an OK PING reply says the node is draining.
  ExpectRoundTrip({.opcode = Opcode::kPing, .flags = kFlagReply | kFlagNodeDraining}, Bytes(8, 1));
  ExpectInvalid(Wire({.opcode = Opcode::kPing, .flags = kFlagNodeDraining}, {}), "NODE_DRAINING");
  ExpectInvalid(Wire({.opcode = Opcode::kLoad, .flags = kFlagReply | kFlagNodeDraining}, {}),
                "NODE_DRAINING");
  // SCRUB: only on a LOAD request.
  ExpectRoundTrip({.opcode = Opcode::kLoad, .flags = kFlagScrub, .page = 9}, {});
  ExpectInvalid(Wire({.opcode = Opcode::kStore, .flags = kFlagScrub}, Bytes(100, 0)), "SCRUB");
  ExpectInvalid(Wire({.opcode = Opcode::kLoad, .flags = kFlagReply | kFlagScrub}, Bytes(8, 0)),
                "SCRUB");
  ExpectInvalid(Wire({.opcode = Opcode::kPing, .flags = kFlagScrub}, {}), "SCRUB");
}

TEST(FrameValidationTest, ReservedByteMustBeZero) {
  auto w = ValidStore();
  w[29] = 1;
  ExpectInvalid(w, "reserved byte 29");
}

TEST(FrameValidationTest, BadCodec) {
  auto w = ValidStore();
  w[28] = 3;
  ExpectInvalid(w, "unknown codec 3");
  ExpectInvalid(Wire({.opcode = Opcode::kPing, .codec = Codec::kLz4}, {}), "codec lz4");
  ExpectInvalid(Wire({.opcode = Opcode::kStore, .flags = kFlagSameFilled, .codec = Codec::kZstd},
                     Bytes(8, 0)),
                "codec zstd");
}

TEST(FrameValidationTest, StatusFieldRules) {
  ExpectInvalid(Wire({.opcode = Opcode::kLoad, .status = absl::StatusCode::kNotFound}, {}),
                "a request carries status 5");
  auto w = Wire({.opcode = Opcode::kLoad, .flags = kFlagReply}, Bytes(10, 0));
  w[30] = 17;
  ExpectInvalid(w, "unknown status code 17");
}

TEST(FrameValidationTest, ChecksumOnlyWithPages) {
  ExpectInvalid(Wire({.opcode = Opcode::kLoad, .checksum = 1}, {}), "nonzero checksum");
}

TEST(FrameValidationTest, PageVersionOnlyWithPages) {
  ExpectInvalid(Wire({.opcode = Opcode::kLoad, .page = 1, .version = 1}, {}),
                "nonzero page version");
  ExpectInvalid(Wire({.opcode = Opcode::kStore, .flags = kFlagReply, .version = 1}, {}),
                "nonzero page version");
  ExpectInvalid(Wire({.opcode = Opcode::kLoad,
                      .flags = kFlagReply,
                      .status = absl::StatusCode::kNotFound,
                      .version = 1},
                     {}),
                "nonzero page version");
  ExpectInvalid(Wire({.opcode = Opcode::kPing, .version = 1}, {}), "nonzero page version");
  auto w = ValidStore();
  w[40] = 9;  // a version on a STORE is fine
  EXPECT_TRUE(DecodeFrame(w).ok());
}

// A version on an INVALIDATE request makes it conditional (drop only a copy
// at most that version); nowhere else on the invalidation opcodes.
TEST(FrameValidationTest, AVersionOnAnInvalidateRequestMakesItConditional) {
  const FrameHeader conditional{.opcode = Opcode::kInvalidate, .page = 3, .version = 77};
  EXPECT_TRUE(conditional.conditional_invalidate());
  ExpectRoundTrip(conditional, {});
  const FrameHeader unconditional{.opcode = Opcode::kInvalidate, .page = 3};
  EXPECT_FALSE(unconditional.conditional_invalidate());
  ExpectInvalid(Wire({.opcode = Opcode::kInvalidate, .flags = kFlagReply, .version = 1}, {}),
                "nonzero page version");
  ExpectInvalid(
      Wire({.opcode = Opcode::kInvalidateRange, .page = 1, .version = 1}, EncodeU64Payload(4)),
      "nonzero page version");
  // In a BATCH too.
  BatchEncoder b;
  ASSERT_TRUE(b.Add(conditional).ok());
  std::vector<uint8_t> wire = Wire(b.Header(9), Gather(b.pieces()));
  absl::StatusOr<FrameView> f = DecodeFrame(wire);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::vector<FrameView>> subs = DecodeBatch(*f);
  ASSERT_TRUE(subs.ok()) << subs.status();
  ASSERT_EQ(subs->size(), 1u);
  EXPECT_EQ((*subs)[0].header.version, 77u);
}

TEST(FrameValidationTest, AbsurdAndPerOpcodeLengths) {
  auto w = ValidStore();
  w[24] = 0xFF, w[25] = 0xFF, w[26] = 0xFF, w[27] = 0xFF;
  ExpectInvalid(w, "payload length 4294967295 outside 1..4096");
  // DecodeHeader alone rejects it: a stream reader never buffers for it.
  EXPECT_FALSE(DecodeHeader(w).ok());
  ExpectInvalid(Wire({.opcode = Opcode::kStore}, Bytes(4097, 0)), "outside 1..4096");
  ExpectInvalid(Wire({.opcode = Opcode::kStore}, {}), "outside 1..4096");
  ExpectInvalid(Wire({.opcode = Opcode::kHello}, {}), "outside 1..256");
  ExpectInvalid(Wire({.opcode = Opcode::kHello}, Bytes(257, 0)), "outside 1..256");
  ExpectInvalid(Wire({.opcode = Opcode::kLoad}, Bytes(1, 0)), "outside 0..0");
  ExpectInvalid(Wire({.opcode = Opcode::kInvalidate}, Bytes(8, 0)), "outside 0..0");
  ExpectInvalid(Wire({.opcode = Opcode::kInvalidateRange}, Bytes(4, 0)), "outside 8..8");
  ExpectInvalid(Wire({.opcode = Opcode::kPing}, Bytes(4097, 0)), "outside 0..4096");
  ExpectInvalid(
      Wire({.opcode = Opcode::kLoad, .flags = kFlagReply, .status = absl::StatusCode::kInternal},
           Bytes(257, 0)),
      "outside 0..256");
  ExpectInvalid(Wire({.opcode = Opcode::kPing, .page = 3}, {}), "page field must be 0");
}

TEST(FrameValidationTest, FrameSizeMustMatchHeader) {
  auto w = ValidStore();
  w.push_back(0);
  ExpectInvalid(w, "frame is 149 bytes, header says 148");
  w.resize(120);
  ExpectInvalid(w, "frame is 120 bytes, header says 148");
}

TEST(FrameValidationTest, InvalidateRangeCount) {
  auto zero = EncodeU64Payload(0);
  ExpectInvalid(Wire({.opcode = Opcode::kInvalidateRange, .page = 5}, zero), "count is 0");
  auto big = EncodeU64Payload(UINT64_MAX);
  ExpectInvalid(Wire({.opcode = Opcode::kInvalidateRange, .page = 5}, big), "overflows");
  auto one = EncodeU64Payload(1);
  ExpectRoundTrip({.opcode = Opcode::kInvalidateRange, .page = UINT64_MAX},
                  std::vector<uint8_t>(one.begin(), one.end()));
}

// Batch structure: build a valid two-entry batch, then break it.
std::vector<uint8_t> TwoEntryBatchPayload() {
  auto a = Wire({.opcode = Opcode::kLoad, .page = 1}, {});
  auto b = Wire({.opcode = Opcode::kStore, .page = 2}, Bytes(50, 1));
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(FrameValidationTest, InconsistentBatches) {
  auto payload = TwoEntryBatchPayload();
  ExpectRoundTrip({.opcode = Opcode::kBatch, .page = 2}, payload);
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 0}, payload), "entry count 0");
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 257}, payload), "entry count 257");
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 1}, payload), "trailing bytes");
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 3}, payload), "entry 2 of 3: truncated");
  // Second entry claims more payload than the batch holds.
  auto overrun = payload;
  overrun[kFrameHeaderSize + 24] = 200;
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 2}, overrun), "runs past the batch");
  // An entry with bad magic.
  auto bad = payload;
  bad[kFrameHeaderSize] = 'X';
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 2}, bad), "entry 1 of 2: bad magic");
  // Nested batch / batched HELLO / direction mismatch.
  auto nested = Wire({.opcode = Opcode::kBatch, .page = 2}, payload);
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 1}, nested), "cannot be batched");
  auto hello = Wire({.opcode = Opcode::kHello}, Bytes(4, 0));
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 1}, hello), "cannot be batched");
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .flags = kFlagReply, .page = 2}, payload),
                "is a request inside a reply");
  // Fewer bytes than `count` headers need: rejected from the header alone.
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 4}, payload), "outside 192..");
  // A bad INVALIDATE_RANGE count inside a batch.
  auto range = Wire({.opcode = Opcode::kInvalidateRange, .page = 1}, EncodeU64Payload(0));
  ExpectInvalid(Wire({.opcode = Opcode::kBatch, .page = 1}, range), "entry 0: INVALIDATE_RANGE");
}

TEST(FrameValidationTest, ValidateHeaderCatchesSenderBugs) {
  EXPECT_EQ(ValidateHeader({.opcode = Opcode(0)}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateHeader({.opcode = Opcode::kStore, .payload_length = 5000}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateHeader({.opcode = Opcode::kStore, .payload_length = 4096}).ok());
}

TEST(FrameTest, U64PayloadNeedsEightBytes) {
  EXPECT_EQ(DecodeU64Payload(Bytes(7, 0)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*DecodeU64Payload(EncodeU64Payload(0x0123456789ABCDEF)), 0x0123456789ABCDEFu);
}

}  // namespace
}  // namespace farswap::transport
