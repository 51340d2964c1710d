// The cold zstd tier (server/src/cold_recompressor.cc): which pages are
// recompressed, what a load of one returns, and the seed interleavings — a
// store, invalidate, load, replace or writeback of the key landing at each
// unlocked step of its recompression, forced with sync points whose
// callbacks run on the recompressing thread while it holds no lock.
#include <gtest/gtest.h>
#include <lz4.h>
#include <zstd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "farswap/alloc/size_classes.h"
#include "farswap/common/page_file.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/block_device.h"
#include "farswap/server/page_store.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using testing::Payload;
using testing::ScopedSyncPoints;

constexpr uint32_t kTenant = 3;
constexpr uint64_t kPage = 41;
constexpr uint8_t kRaw = 0, kLz4 = 1, kZstd = 2;  // the wire's codec numbers

// TextPage: a page of words from a small vocabulary, different for every
// seed; compresses well with lz4 and better with zstd, as text pages do.
std::vector<uint8_t> TextPage(uint64_t seed) {
  static const char* const kWords[] = {"the ",    "page ", "store ", "cold ",   "zstd ",
                                       "memory ", "node ", "lz4 ",   "swap ",   "far ",
                                       "tenant ", "slab ", "entry ", "handle ", "pool "};
  std::vector<uint8_t> page;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  while (page.size() < kPageSize) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const char* w = kWords[x % (sizeof kWords / sizeof kWords[0])];
    page.insert(page.end(), w, w + std::strlen(w));
    if (x % 7 == 0) {  // a number now and then, so seeds differ everywhere
      std::string n = std::to_string(x % 100000) + " ";
      page.insert(page.end(), n.begin(), n.end());
    }
  }
  page.resize(kPageSize);
  return page;
}

std::vector<uint8_t> Lz4(const std::vector<uint8_t>& page) {
  std::vector<uint8_t> out(size_t{uint32_t(LZ4_compressBound(int(kPageSize)))});
  const int n =
      LZ4_compress_default(reinterpret_cast<const char*>(page.data()),
                           reinterpret_cast<char*>(out.data()), int(kPageSize), int(out.size()));
  EXPECT_GT(n, 0);
  out.resize(size_t(n));
  return out;
}

// Decoded: the page a loaded payload decodes to under its codec (empty when
// it does not decode to exactly one page).
std::vector<uint8_t> Decoded(const LoadedPage& p) {
  std::vector<uint8_t> page(kPageSize);
  if (p.codec == kRaw) return p.payload;
  if (p.codec == kLz4) {
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(p.payload.data()),
                                      reinterpret_cast<char*>(page.data()), int(p.payload.size()),
                                      int(kPageSize));
    return n == int(kPageSize) ? page : std::vector<uint8_t>{};
  }
  const size_t n = ZSTD_decompress(page.data(), kPageSize, p.payload.data(), p.payload.size());
  return !ZSTD_isError(n) && n == kPageSize ? page : std::vector<uint8_t>{};
}

// StoreLz4 stores page `seed` as the client would, lz4 with checksum = seed
// (so a load shows which page it got) and version = seed.
absl::Status StoreLz4(PageStore& store, uint64_t page, uint64_t seed) {
  const std::vector<uint8_t> bytes = Lz4(TextPage(seed));
  return store.Store(kTenant, page,
                     {.payload = bytes, .codec = kLz4, .checksum = seed, .version = seed});
}

// ExpectPageOf checks that `page` loads as page `seed`, in codec `codec`.
void ExpectPageOf(PageStore& store, uint64_t page, uint64_t seed, uint8_t codec) {
  absl::StatusOr<LoadedPage> p = store.Load(kTenant, page);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->checksum, seed);
  EXPECT_EQ(p->version, seed);
  EXPECT_EQ(int(p->codec), int(codec));
  EXPECT_TRUE(Decoded(*p) == TextPage(seed)) << "page " << page << " does not decode to " << seed;
  if (codec == kLz4) {
    EXPECT_TRUE(p->payload == Lz4(TextPage(seed))) << "lz4 bytes changed";
  }
}

uint64_t TenantBytes(const PageStoreStats& s) {
  for (const TenantStats& t : s.tenants) {
    if (t.tenant == kTenant) return t.stored_bytes;
  }
  return 0;
}

class ColdTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The read cache is off: loads_from_disk() tells a page on disk by its
    // disk read (read_cache_test covers the cache).
    absl::StatusOr<std::unique_ptr<PageStore>> s = PageStore::Create(
        {.backing = &ssd_, .start_writeback_worker = false, .disk_read_cache_bytes = 0});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  // MakeCold runs the pass that clears the page's referenced bit, which
  // recompresses nothing: the next pass finds it cold.
  void MakeCold() {
    ColdPassResult r = store_->RunColdPass();
    EXPECT_EQ(r.recompressed, 0u);
  }

  ScopedSyncPoints clear_sync_points_;
  MemoryBlockDevice ssd_{64};
  std::unique_ptr<PageStore> store_;
};

TEST_F(ColdTierTest, LoadOfARecompressedPageReturnsTheOriginalBytes) {
  ASSERT_TRUE(StoreLz4(*store_, kPage, 7).ok());
  const size_t lz4_len = Lz4(TextPage(7)).size();
  MakeCold();
  ColdPassResult r = store_->RunColdPass();
  EXPECT_EQ(r.scanned, 1u);
  ASSERT_EQ(r.recompressed, 1u);
  ExpectPageOf(*store_, kPage, 7, kZstd);

  absl::StatusOr<LoadedPage> p = store_->Load(kTenant, kPage);
  ASSERT_TRUE(p.ok());
  EXPECT_LT(p->payload.size(), lz4_len);
  EXPECT_EQ(r.bytes_saved, lz4_len - p->payload.size());
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.cold_recompressed_pages, 1u);
  EXPECT_EQ(st.cold_bytes_saved, r.bytes_saved);
  EXPECT_EQ(st.cold_loads, 2u);
  EXPECT_EQ(st.cold_passes, 2u);
  EXPECT_EQ(st.pool.objects, 1u) << "the lz4 object was not freed";
  EXPECT_EQ(st.pool.compr_data_size, p->payload.size());
  EXPECT_EQ(st.pool.orig_data_size, kPageSize);
  EXPECT_EQ(TenantBytes(st), p->payload.size());

  // A recompressed page is not looked at again.
  r = store_->RunColdPass();
  EXPECT_EQ(r.recompressed + r.kept + r.aborted, 0u);
}

TEST_F(ColdTierTest, ALoadBetweenPassesKeepsThePageHot) {
  ASSERT_TRUE(StoreLz4(*store_, kPage, 8).ok());
  MakeCold();
  ExpectPageOf(*store_, kPage, 8, kLz4);
  EXPECT_EQ(store_->RunColdPass().recompressed, 0u);
  EXPECT_EQ(store_->RunColdPass().recompressed, 1u);
  ExpectPageOf(*store_, kPage, 8, kZstd);
}

TEST_F(ColdTierTest, ARecompressedPageIsWrittenBackAndLoadsFromDisk) {
  ASSERT_TRUE(StoreLz4(*store_, kPage, 9).ok());
  MakeCold();
  ASSERT_EQ(store_->RunColdPass().recompressed, 1u);
  ASSERT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  ExpectPageOf(*store_, kPage, 9, kZstd);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 1u);
  EXPECT_EQ(st.pool.objects, 0u);
  EXPECT_EQ(st.cold_loads, 1u);
}

// Writeback takes the coldest recompressed pages first: 8 random pages
// (stored raw, kept by the cold tier) are colder than 8 recompressed text
// pages, yet after the first batch (a fresh LRU: every page still has its
// store-time second chance, so that batch takes the coldest) the
// recompressed pages go to disk before any more raw ones. Which pages are
// on disk is read back through the loads (a load from disk reads the
// backing store) and the bytes written.
TEST_F(ColdTierTest, WritebackTakesRecompressedPagesFirst) {
  constexpr uint64_t kRawBase = 100, kTextBase = 200, kEach = 8;
  std::vector<std::vector<uint8_t>> raw;
  for (uint64_t i = 0; i < kEach; ++i) {
    raw.push_back(Payload(50 + i, kPageSize));
    ASSERT_TRUE(
        store_->Store(kTenant, kRawBase + i, {.payload = raw[i], .codec = kRaw, .checksum = i})
            .ok());
  }
  for (uint64_t i = 0; i < kEach; ++i) ASSERT_TRUE(StoreLz4(*store_, kTextBase + i, 300 + i).ok());
  MakeCold();
  ColdPassResult r = store_->RunColdPass();
  ASSERT_EQ(r.recompressed, kEach);
  ASSERT_EQ(r.kept, kEach);

  ASSERT_EQ(store_->RunWritebackBatch(1), WritebackOutcome::kWrittenBack);  // raw page 0
  EXPECT_EQ(store_->GetStats().written_back_bytes, kPageSize);
  // Two batches of 3: the raw pages 1-3 are the coldest candidates each
  // time, and each time three recompressed pages replace them.
  for (int batch = 0; batch < 2; ++batch) {
    ASSERT_EQ(store_->RunWritebackBatch(3), WritebackOutcome::kWrittenBack);
  }
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 7u);
  auto loads_from_disk = [&](uint64_t page) {
    const uint64_t before = store_->GetStats().backing_reads;
    absl::StatusOr<LoadedPage> p = store_->Load(kTenant, page);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok() && page >= kTextBase) {
      EXPECT_EQ(int(p->codec), int(kZstd));
      EXPECT_TRUE(Decoded(*p) == TextPage(300 + page - kTextBase)) << "page " << page;
    } else if (p.ok()) {
      EXPECT_TRUE(p->payload == raw[page - kRawBase]) << "page " << page;
    }
    return store_->GetStats().backing_reads > before;
  };
  EXPECT_TRUE(loads_from_disk(kRawBase));
  for (uint64_t i = 1; i < kEach; ++i) {
    EXPECT_FALSE(loads_from_disk(kRawBase + i)) << "raw page " << i << " was written back";
  }
  for (uint64_t i = 0; i < kEach; ++i) {
    EXPECT_EQ(loads_from_disk(kTextBase + i), i < 6) << "text page " << i;
  }
  // The bytes written are one raw page and six of the zstd pages.
  uint64_t six_zstd = 0;
  for (uint64_t i = 0; i < 6; ++i) {
    absl::StatusOr<LoadedPage> p = store_->Load(kTenant, kTextBase + i);
    ASSERT_TRUE(p.ok());
    six_zstd += p->payload.size();
  }
  EXPECT_EQ(st.written_back_bytes, kPageSize + six_zstd);
}

TEST_F(ColdTierTest, APageThatDoesNotShrinkStaysAsStored) {
  // Mostly random bytes: zstd gains a few bytes over lz4, not a pool slot.
  std::vector<uint8_t> page = Payload(5, kPageSize);
  std::fill(page.begin() + 3904, page.end(), 0);
  const std::vector<uint8_t> lz4 = Lz4(page);
  std::vector<uint8_t> z(ZSTD_compressBound(kPageSize));
  const size_t zlen = ZSTD_compress(z.data(), z.size(), page.data(), kPageSize, 3);
  const alloc::SizeClassTable classes = alloc::SizeClassTable::Build({});
  ASSERT_EQ(classes.ForSize(uint32_t(zlen)).size, classes.ForSize(uint32_t(lz4.size())).size)
      << "precondition: zstd (" << zlen << ") and lz4 (" << lz4.size() << ") share a slot";
  ASSERT_TRUE(store_->Store(kTenant, kPage, {.payload = lz4, .codec = kLz4, .checksum = 1}).ok());
  // Random bytes stored raw (zstd only adds its frame), and a page the
  // client already sent as zstd, are left alone too.
  const std::vector<uint8_t> raw = Payload(6, kPageSize);
  ASSERT_TRUE(
      store_->Store(kTenant, kPage + 1, {.payload = raw, .codec = kRaw, .checksum = 2}).ok());
  const std::vector<uint8_t> zstd_page(z.begin(), z.begin() + zlen);
  ASSERT_TRUE(
      store_->Store(kTenant, kPage + 2, {.payload = zstd_page, .codec = kZstd, .checksum = 3})
          .ok());
  MakeCold();
  ColdPassResult r = store_->RunColdPass();
  EXPECT_EQ(r.recompressed, 0u);
  EXPECT_EQ(r.kept, 3u);
  for (uint64_t k = 0; k < 3; ++k) {
    absl::StatusOr<LoadedPage> p = store_->Load(kTenant, kPage + k);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(int(p->codec), int(k == 0 ? kLz4 : k == 1 ? kRaw : kZstd));
    EXPECT_TRUE(p->payload == (k == 0 ? lz4 : k == 1 ? raw : zstd_page)) << "page " << k;
  }
  // Kept pages are not recompressed on later passes either.
  MakeCold();
  r = store_->RunColdPass();
  EXPECT_EQ(r.recompressed + r.kept + r.aborted, 0u);
  EXPECT_EQ(store_->GetStats().cold_kept_pages, 3u);
}

TEST_F(ColdTierTest, APayloadThatDoesNotDecodeIsKeptAsStored) {
  const std::vector<uint8_t> junk = Payload(11, 900);  // "lz4" that is not
  ASSERT_TRUE(store_->Store(kTenant, kPage, {.payload = junk, .codec = kLz4, .checksum = 4}).ok());
  MakeCold();
  EXPECT_EQ(store_->RunColdPass().kept, 1u);
  absl::StatusOr<LoadedPage> p = store_->Load(kTenant, kPage);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(int(p->codec), int(kLz4));
  EXPECT_TRUE(p->payload == junk);
}

TEST(ColdTierOptionsTest, ABadZstdLevelIsRefused) {
  for (int level : {0, -1, 23}) {
    absl::StatusOr<std::unique_ptr<PageStore>> s = PageStore::Create({.cold_zstd_level = level});
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << "level " << level;
  }
}

// Every step of a recompression at which its thread holds no lock.
const char* const kColdPoints[] = {
    "PageStore::ColdPass:after-lru-unlock",
    "PageStore::ColdPass:copied-unlocked",
    "PageStore::ColdPass:encoded-unlocked",
};

class ColdRaceTest : public ColdTierTest, public ::testing::WithParamInterface<const char*> {
 protected:
  void SetUp() override {
    ColdTierTest::SetUp();
    before_ = store_->GetStats();
    ASSERT_TRUE(StoreLz4(*store_, kPage, 1).ok());
    MakeCold();
  }
  PageStoreStats before_;
};

TEST_P(ColdRaceTest, StoreDuringRecompressionKeepsNewestData) {
  SyncPoints::SetOnce(GetParam(), [&] { ASSERT_TRUE(StoreLz4(*store_, kPage, 2).ok()); });
  ColdPassResult r = store_->RunColdPass();
  EXPECT_EQ(r.recompressed, 0u);
  EXPECT_EQ(r.aborted, 1u);
  ExpectPageOf(*store_, kPage, 2, kLz4);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pool.objects, 1u) << "an object of the old version survived";
  EXPECT_EQ(st.pool.compr_data_size, Lz4(TextPage(2)).size());
  EXPECT_EQ(TenantBytes(st), Lz4(TextPage(2)).size());

  // The newest version is recompressed in its turn (its store counted as a
  // reference, and the load above as another).
  MakeCold();
  EXPECT_EQ(store_->RunColdPass().recompressed, 1u);
  ExpectPageOf(*store_, kPage, 2, kZstd);
}

TEST_P(ColdRaceTest, InvalidateDuringRecompressionLeavesNothing) {
  SyncPoints::SetOnce(GetParam(), [&] { ASSERT_TRUE(store_->Invalidate(kTenant, kPage).ok()); });
  ColdPassResult r = store_->RunColdPass();
  EXPECT_EQ(r.recompressed, 0u);
  EXPECT_EQ(r.aborted, 1u);
  EXPECT_EQ(store_->Load(kTenant, kPage).status().code(), absl::StatusCode::kNotFound);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.stored_pages, 0u);
  EXPECT_EQ(st.pool.objects, before_.pool.objects) << "the zstd object leaked";
  EXPECT_EQ(st.pool.compr_data_size, before_.pool.compr_data_size);
  EXPECT_EQ(st.pool.orig_data_size, before_.pool.orig_data_size);
  EXPECT_EQ(TenantBytes(st), 0u);
}

TEST_P(ColdRaceTest, LoadDuringRecompressionReturnsThePage) {
  SyncPoints::SetOnce(GetParam(), [&] { ExpectPageOf(*store_, kPage, 1, kLz4); });
  // A load that comes after the scan picked the page does not stop it: the
  // page is the same either way, and the next load gets the zstd bytes.
  EXPECT_EQ(store_->RunColdPass().recompressed, 1u);
  ExpectPageOf(*store_, kPage, 1, kZstd);
  EXPECT_EQ(store_->GetStats().pool.objects, 1u);
}

// The ABA case: the page is invalidated and stored again while the
// recompression holds a pointer to the old entry, which the new one may
// reuse; only the generation tells them apart.
TEST_P(ColdRaceTest, ReplaceDuringRecompressionDoesNotPublishTheOldGeneration) {
  SyncPoints::SetOnce(GetParam(), [&] {
    ASSERT_TRUE(store_->Invalidate(kTenant, kPage).ok());
    ASSERT_TRUE(StoreLz4(*store_, kPage, 2).ok());
  });
  ColdPassResult r = store_->RunColdPass();
  EXPECT_EQ(r.recompressed, 0u);
  ExpectPageOf(*store_, kPage, 2, kLz4);
  EXPECT_EQ(store_->GetStats().pool.objects, 1u);
}

TEST_P(ColdRaceTest, WritebackDuringRecompressionWins) {
  SyncPoints::SetOnce(
      GetParam(), [&] { ASSERT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kWrittenBack); });
  ColdPassResult r = store_->RunColdPass();
  EXPECT_EQ(r.recompressed, 0u);
  EXPECT_EQ(r.aborted, 1u);
  ExpectPageOf(*store_, kPage, 1, kLz4);  // from disk, as written back
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 1u);
  EXPECT_EQ(st.pool.objects, 0u) << "the zstd object leaked";
  EXPECT_EQ(st.pool.compr_data_size, 0u);
}

std::string StepName(const ::testing::TestParamInfo<const char*>& step) {
  static const char* const kNames[] = {"AfterLruUnlock", "CopiedUnlocked", "EncodedUnlocked"};
  return kNames[step.index];
}

INSTANTIATE_TEST_SUITE_P(AtEachColdStep, ColdRaceTest, ::testing::ValuesIn(kColdPoints), StepName);

// Stores, loads and invalidates of a few keys race cold passes run back to
// back (and writeback) on other threads: every load returns a page that
// decodes to the version its checksum names. For TSan.
TEST(ColdTierStressTest, LoadsAlwaysDecodeToTheStoredVersion) {
  MemoryBlockDevice ssd(4096);
  absl::StatusOr<std::unique_ptr<PageStore>> s =
      PageStore::Create({.backing = &ssd, .start_writeback_worker = false});
  ASSERT_TRUE(s.ok()) << s.status();
  PageStore& store = **s;
  constexpr uint64_t kKeys = 16;
  constexpr int kRounds = 300;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> recompressed{0}, bad{0};
  std::thread cold([&] {
    while (!done.load()) recompressed += store.RunColdPass().recompressed;
  });
  std::thread writeback([&] {
    while (!done.load()) store.RunWritebackOnce();
  });
  std::thread loader([&] {
    while (!done.load()) {
      for (uint64_t k = 0; k < kKeys; ++k) {
        absl::StatusOr<LoadedPage> p = store.Load(kTenant, k);
        if (p.ok() && Decoded(*p) != TextPage(p->checksum)) ++bad;
      }
    }
  });
  uint64_t version = 1;
  for (int round = 0; round < kRounds; ++round) {
    for (uint64_t k = 0; k < kKeys; ++k) {
      if ((round + k) % 5 == 0) {
        ASSERT_TRUE(store.Invalidate(kTenant, k).ok());
      } else if ((round + k) % 3 == 0) {
        ASSERT_TRUE(StoreLz4(store, k, ++version).ok());
      }
    }
  }
  done = true;
  cold.join();
  writeback.join();
  loader.join();
  EXPECT_EQ(bad.load(), 0u);
  // Whatever survived decodes to its version, recompressed or not.
  for (int pass = 0; pass < 2; ++pass) recompressed += store.RunColdPass().recompressed;
  for (uint64_t k = 0; k < kKeys; ++k) {
    absl::StatusOr<LoadedPage> p = store.Load(kTenant, k);
    if (p.ok()) {
      EXPECT_TRUE(Decoded(*p) == TextPage(p->checksum)) << "key " << k;
    }
  }
  EXPECT_GT(recompressed.load(), 0u);
}

}  // namespace
}  // namespace farswap::server
