#include "farswap/client/page_codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "farswap/common/page_file.h"

namespace farswap {
namespace {

std::vector<uint8_t> RoundTrip(PageCodec& codec, const uint8_t* page, EncodedPage* e) {
  std::vector<uint8_t> enc(kPageSize), dec(kPageSize);
  *e = codec.Encode(page, enc.data());
  if (e->kind == EncodedPage::Kind::kSameFilled) {
    PageCodec::DecodeSameFilled(e->fill, dec.data());
  } else {
    EXPECT_TRUE(codec.Decode(e->codec, enc.data(), e->length, dec.data()).ok());
  }
  return dec;
}

TEST(PageCodecTest, CorpusPagesRoundTripWithEveryCodec) {
  absl::StatusOr<PageFile> pages = ReadPageFile(FARSWAP_CORPUS_DIR "/python.pages.zst");
  ASSERT_TRUE(pages.ok()) << pages.status();
  ASSERT_GE(pages->page_count(), 1024u) << "tests/corpus/python.pages.zst is too small";
  for (Codec c : {Codec::kLz4, Codec::kZstd, Codec::kNone}) {
    PageCodec codec({.codec = c, .raw_threshold = 3633});
    size_t compressed = 0, same = 0, raw = 0, bytes = 0;
    for (size_t i = 0; i < pages->page_count(); i += 3) {
      EncodedPage e;
      std::vector<uint8_t> back = RoundTrip(codec, pages->page(i), &e);
      ASSERT_EQ(std::memcmp(back.data(), pages->page(i), kPageSize), 0) << CodecName(c) << i;
      compressed += e.kind == EncodedPage::Kind::kCompressed;
      same += e.kind == EncodedPage::Kind::kSameFilled;
      raw += e.kind == EncodedPage::Kind::kRaw;
      bytes += e.length;
      EXPECT_LT(e.length, e.kind == EncodedPage::Kind::kRaw ? kPageSize + 1 : 3633u);
    }
    if (c == Codec::kNone) {
      EXPECT_EQ(compressed, 0u);
    } else {
      EXPECT_GT(compressed, raw);
      EXPECT_LT(bytes, (compressed + raw) * kPageSize / 2);  // real heaps compress >2:1
    }
    EXPECT_GT(same, 0u);
  }
}

TEST(PageCodecTest, EdgeCases) {
  PageCodec codec({.codec = Codec::kLz4, .raw_threshold = 3633});
  std::vector<uint8_t> page(kPageSize, 0);
  EncodedPage e;
  EXPECT_EQ(RoundTrip(codec, page.data(), &e), page);
  EXPECT_EQ(e.kind, EncodedPage::Kind::kSameFilled);
  EXPECT_EQ(e.fill, 0u);
  for (size_t i = 0; i < kPageSize; i += 8) std::memcpy(&page[i], "ABCDEFGH", 8);
  EXPECT_EQ(RoundTrip(codec, page.data(), &e), page);
  EXPECT_EQ(e.kind, EncodedPage::Kind::kSameFilled);
  page[4095] ^= 1;  // one byte off: no longer same-filled
  EXPECT_EQ(RoundTrip(codec, page.data(), &e), page);
  EXPECT_EQ(e.kind, EncodedPage::Kind::kCompressed);
  std::mt19937_64 rng(7);
  for (auto& b : page) b = uint8_t(rng());
  EXPECT_EQ(RoundTrip(codec, page.data(), &e), page);
  EXPECT_EQ(e.kind, EncodedPage::Kind::kRaw);
  EXPECT_EQ(e.length, kPageSize);
}

TEST(PageCodecTest, PagesAtTheRawThresholdAreStoredRaw) {
  // Half random, half zeros compresses to roughly 2 KiB with lz4; a
  // threshold just below and just above that length flips the decision.
  std::mt19937_64 rng(3);
  std::vector<uint8_t> page(kPageSize, 0);
  for (size_t i = 0; i < kPageSize / 2; ++i) page[i] = uint8_t(rng());
  std::vector<uint8_t> out(kPageSize);
  uint32_t len = PageCodec({.codec = Codec::kLz4}).Encode(page.data(), out.data()).length;
  ASSERT_LT(len, kPageSize);
  EXPECT_EQ(
      PageCodec({.codec = Codec::kLz4, .raw_threshold = len}).Encode(page.data(), out.data()).kind,
      EncodedPage::Kind::kRaw);
  EncodedPage e =
      PageCodec({.codec = Codec::kLz4, .raw_threshold = len + 1}).Encode(page.data(), out.data());
  EXPECT_EQ(e.kind, EncodedPage::Kind::kCompressed);
  EXPECT_EQ(e.length, len);
}

TEST(PageCodecTest, CorruptPayloadIsDataLoss) {
  absl::StatusOr<PageFile> pages = ReadPageFile(FARSWAP_CORPUS_DIR "/sqlite.pages.zst");
  ASSERT_TRUE(pages.ok());
  for (Codec c : {Codec::kLz4, Codec::kZstd}) {
    PageCodec codec({.codec = c});
    std::vector<uint8_t> enc(kPageSize), dec(kPageSize);
    size_t i = 0;
    EncodedPage e;
    do {
      e = codec.Encode(pages->page(i++), enc.data());
    } while (e.kind != EncodedPage::Kind::kCompressed);
    EXPECT_EQ(codec.Decode(c, enc.data(), e.length / 2, dec.data()).code(),
              absl::StatusCode::kDataLoss);
    EXPECT_EQ(codec.Decode(Codec::kNone, enc.data(), e.length, dec.data()).code(),
              absl::StatusCode::kDataLoss);
  }
}

TEST(PageFileTest, BadFilesAreClearErrors) {
  EXPECT_EQ(ReadPageFile("/nonexistent/x.pages").status().code(), absl::StatusCode::kNotFound);
  std::string path = ::testing::TempDir() + "/odd.pages";
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite("abc", 1, 3, f);
  std::fclose(f);
  absl::Status s = ReadPageFile(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("multiple of"), std::string::npos);
}

}  // namespace
}  // namespace farswap
