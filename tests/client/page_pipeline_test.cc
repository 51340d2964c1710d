// The store/load pipeline: corpus and synthetic pages round trip with their
// checksum, a page changed after the snapshot is stored as the snapshot
// (never a mix), and a corrupted payload is DATA_LOSS naming the page.
#include "page_pipeline.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "farswap/common/sync_point.h"

namespace farswap::client_internal {
namespace {

absl::Status RoundTrip(PageCodec& codec, const PreparedPage& p, uint8_t* out) {
  std::span<const uint8_t> payload = p.payload_bytes();
  return DecodeVerified(codec, p.page_no, p.header(), payload, out);
}

TEST(PagePipelineTest, CorpusAndEdgePagesRoundTripVerified) {
  absl::StatusOr<PageFile> pages = ReadPageFile(FARSWAP_CORPUS_DIR "/node.pages.zst");
  ASSERT_TRUE(pages.ok()) << pages.status();
  std::vector<std::vector<uint8_t>> edge;
  edge.emplace_back(kPageSize, 0);     // zero page
  edge.emplace_back(kPageSize, 0xab);  // same-filled
  std::mt19937_64 rng(5);
  edge.emplace_back(kPageSize);
  for (auto& b : edge.back()) b = uint8_t(rng());  // incompressible
  for (Codec c : {Codec::kLz4, Codec::kZstd}) {
    PageCodec& codec = ThreadCodec({.codec = c, .raw_threshold = 3633});
    PreparedPage p;
    std::vector<uint8_t> out(kPageSize);
    size_t kinds[3] = {0, 0, 0};
    for (size_t i = 0; i < pages->page_count(); i += 7) {
      PreparePage(codec, i, pages->page(i), SnapshotMode::kCopy, &p);
      ASSERT_TRUE(RoundTrip(codec, p, out.data()).ok()) << i;
      ASSERT_EQ(std::memcmp(out.data(), pages->page(i), kPageSize), 0) << i;
      EXPECT_EQ(p.checksum, XXH3_64bits(pages->page(i), kPageSize));
      kinds[int(p.encoded.kind)]++;
    }
    EXPECT_GT(kinds[int(EncodedPage::Kind::kCompressed)], 0u);
    for (size_t e = 0; e < edge.size(); ++e) {
      PreparePage(codec, e, edge[e].data(), SnapshotMode::kStable, &p);
      ASSERT_TRUE(RoundTrip(codec, p, out.data()).ok());
      EXPECT_EQ(out, edge[e]);
    }
    EXPECT_EQ(p.encoded.kind, EncodedPage::Kind::kRaw);  // the random page
    EXPECT_EQ(p.header().payload_length, kPageSize);
  }
}

TEST(PagePipelineTest, PageModifiedAfterTheSnapshotIsStoredAsTheSnapshot) {
  // A writer thread rewrites the whole page at the worst moment: after the
  // copy, before the checksum and the compression read anything.
  std::vector<uint8_t> page(kPageSize);
  for (size_t i = 0; i < kPageSize; ++i) page[i] = uint8_t(i % 13);
  const std::vector<uint8_t> original = page;
  SyncPoints::SetOnce(kSyncAfterSnapshot, [&] {
    std::thread writer([&] {
      std::mt19937_64 rng(9);
      for (auto& b : page) b = uint8_t(rng());
    });
    writer.join();
  });
  PageCodec& codec = ThreadCodec({.codec = Codec::kLz4});
  PreparedPage p;
  PreparePage(codec, 77, page.data(), SnapshotMode::kCopy, &p);
  SyncPoints::ClearAll();
  ASSERT_NE(page, original);  // the writer did run
  EXPECT_EQ(p.checksum, XXH3_64bits(original.data(), kPageSize));
  EXPECT_EQ(p.encoded.kind, EncodedPage::Kind::kCompressed);
  std::vector<uint8_t> out(kPageSize);
  ASSERT_TRUE(RoundTrip(codec, p, out.data()).ok());
  EXPECT_EQ(out, original);
}

TEST(PagePipelineTest, CorruptPayloadOrChecksumIsDataLossWithThePageNumber) {
  std::vector<uint8_t> page(kPageSize);
  for (size_t i = 0; i < kPageSize; ++i) page[i] = uint8_t(i * 7 / 64);
  PageCodec& codec = ThreadCodec({.codec = Codec::kLz4});
  PreparedPage p;
  PreparePage(codec, 4711, page.data(), SnapshotMode::kCopy, &p);
  std::vector<uint8_t> payload(p.payload_bytes().begin(), p.payload_bytes().end());
  payload[payload.size() / 2] ^= 0x10;
  std::vector<uint8_t> out(kPageSize);
  absl::Status s = DecodeVerified(codec, 4711, p.header(), payload, out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("page 4711"), std::string::npos) << s;
  transport::FrameHeader h = p.header();
  h.checksum ^= 1;
  s = DecodeVerified(codec, 4711, h, p.payload_bytes(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s;
}

}  // namespace
}  // namespace farswap::client_internal
