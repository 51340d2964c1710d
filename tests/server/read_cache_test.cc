// read_cache_test.cc: readahead for loads of written-back pages (the read
// cache, server/src/disk_read_cache.h): the cache itself (ranges, epochs,
// LRU, the readahead decision), and the page store around it — neighbours
// answered from memory without a disk read or a worker, promotion from it,
// and the two ways a window could go stale, each forced: bytes past the
// segment's extent when it was read (appended later), and a segment freed
// and reused (including right after the window was read). Every test that
// would otherwise be served stale bytes sees them as a disk-checksum
// mismatch (read_cache_mismatches), so each asserts there were none.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "disk_read_cache.h"
#include "farswap/server/block_device.h"
#include "farswap/server/page_store.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using internal::DiskReadCache;
using testing::ExpectPage;
using testing::Payload;
using testing::ScopedSyncPoints;
using testing::StorePayload;

constexpr uint32_t kTenant = 7;
constexpr uint64_t kKiB = 1024;

// --- the cache --------------------------------------------------------------------------

// Bytes `n` long whose byte i is (seed + i).
std::vector<uint8_t> Counting(uint8_t seed, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = uint8_t(seed + i);
  return out;
}

TEST(DiskReadCacheTest, AnswersOnlyWithinTheHeldBytesOfTheSameEpoch) {
  DiskReadCache cache(/*segment_bytes=*/1 << 20, /*capacity_bytes=*/1 << 20);
  const uint64_t seg2 = 2 << 20;  // segment 2's first byte
  const std::vector<uint8_t> bytes = Counting(1, 8192);
  cache.Insert(seg2 + 100, seg2, seg2 + 8192, /*epoch=*/5, bytes.data());

  std::vector<uint8_t> out;
  ASSERT_TRUE(cache.Lookup(seg2 + 100, 1000, 5, &out, true));
  EXPECT_EQ(out, std::vector<uint8_t>(bytes.begin() + 100, bytes.begin() + 1100));
  out.clear();
  EXPECT_FALSE(cache.Lookup(seg2 + 100, 1000, 6, &out, true)) << "another epoch";
  EXPECT_FALSE(cache.Lookup(seg2 + 8000, 500, 5, &out, true)) << "ends past the held bytes";
  EXPECT_FALSE(cache.Lookup(seg2 + 256 * kKiB, 10, 5, &out, true)) << "the next window";
  EXPECT_FALSE(cache.Lookup((3 << 20) + 100, 10, 5, &out, true)) << "another segment";
  EXPECT_FALSE(cache.Lookup(seg2 + 200, 10, 6, &out, false));  // a miss not counted
  EXPECT_TRUE(out.empty());
  const internal::DiskReadCacheStats s = cache.GetStats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 4u);
  EXPECT_EQ(s.windows, 1u);
  EXPECT_EQ(s.bytes, 8192u);
}

// A read that starts in one window and runs into the next is kept as the
// object's window's entry only, clipped to that window.
TEST(DiskReadCacheTest, KeepsOnlyTheObjectsWindow) {
  DiskReadCache cache(1 << 20, 1 << 20);
  const uint64_t begin = DiskReadCache::kWindowBytes - 4096;  // the last block of window 0
  const std::vector<uint8_t> bytes = Counting(9, 3 * 4096);
  cache.Insert(begin + 10, begin, begin + bytes.size(), 1, bytes.data());
  std::vector<uint8_t> out;
  ASSERT_TRUE(cache.Lookup(begin + 10, 4000, 1, &out, true));
  EXPECT_EQ(out, std::vector<uint8_t>(bytes.begin() + 10, bytes.begin() + 4010));
  EXPECT_FALSE(cache.Lookup(DiskReadCache::kWindowBytes + 10, 10, 1, &out, true))
      << "window 1 was not kept";
  EXPECT_EQ(cache.GetStats().bytes, 4096u);
}

TEST(DiskReadCacheTest, DropsTheLeastRecentlyUsedWindowWhenFull) {
  DiskReadCache cache(1 << 20, /*capacity_bytes=*/16 * kKiB);  // two 8 KiB entries
  const std::vector<uint8_t> bytes = Counting(3, 8192);
  auto window = [](uint64_t w) { return w * DiskReadCache::kWindowBytes; };
  cache.Insert(window(0), window(0), window(0) + 8192, 1, bytes.data());
  cache.Insert(window(1), window(1), window(1) + 8192, 1, bytes.data());
  std::vector<uint8_t> out;
  ASSERT_TRUE(cache.Lookup(window(0), 10, 1, &out, true));  // 0 is now the most recent
  cache.Insert(window(2), window(2), window(2) + 8192, 1, bytes.data());
  EXPECT_TRUE(cache.Lookup(window(0), 10, 1, &out, true));
  EXPECT_FALSE(cache.Lookup(window(1), 10, 1, &out, true)) << "the least recently used went";
  EXPECT_TRUE(cache.Lookup(window(2), 10, 1, &out, true));
  EXPECT_EQ(cache.GetStats().bytes, 16 * kKiB);
  EXPECT_EQ(cache.GetStats().windows, 2u);
}

// The kernel's swap readahead rule: no hits -> the span halves down to
// none; hits -> (hits + 2) x 4 KiB rounded up, at most a window.
TEST(DiskReadCacheTest, ReadaheadGrowsWithHitsAndShrinksWithout) {
  DiskReadCache cache(1 << 20, 1 << 20);
  const std::vector<uint64_t> shrinking = {128 * kKiB, 64 * kKiB, 32 * kKiB, 16 * kKiB,
                                           8 * kKiB,   0,         0};
  for (uint64_t want : shrinking) EXPECT_EQ(cache.NextReadahead(), want);
  const std::vector<uint8_t> bytes = Counting(0, 8192);
  cache.Insert(0, 0, 8192, 1, bytes.data());
  std::vector<uint8_t> out;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(cache.Lookup(0, 10, 1, &out, true));
  EXPECT_EQ(cache.NextReadahead(), 32 * kKiB);  // (5 + 2) x 4 KiB -> 32 KiB
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(cache.Lookup(0, 10, 1, &out, true));
  EXPECT_EQ(cache.NextReadahead(), DiskReadCache::kWindowBytes);  // capped
  EXPECT_EQ(cache.NextReadahead(), DiskReadCache::kWindowBytes / 2);
  EXPECT_EQ(cache.GetStats().readahead_bytes, DiskReadCache::kWindowBytes / 2);
}

// --- the page store ---------------------------------------------------------------------

std::unique_ptr<PageStore> NewStore(BlockDevice* backing, uint64_t segment_bytes,
                                    uint32_t batch_pages = 64) {
  absl::StatusOr<std::unique_ptr<PageStore>> s =
      PageStore::Create({.backing = backing,
                         .start_writeback_worker = false,
                         .segment_bytes = segment_bytes,
                         .writeback_batch_pages = batch_pages,
                         .disk_read_cache_bytes = 4 << 20});
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

// Version `v` of page `p`: its own bytes, under one block.
std::vector<uint8_t> Version(uint64_t p, uint64_t v) {
  return Payload(p * 1000 + v, 500 + (p * 131 + v * 17) % 1000);
}

void StoreAndWriteBack(PageStore& store, uint64_t first, uint64_t n, uint64_t v) {
  for (uint64_t p = first; p < first + n; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, p, Version(p, v), v).ok());
  }
  ASSERT_EQ(store.RunWritebackBatch(n), WritebackOutcome::kWrittenBack);
}

// One disk load brings its neighbours' bytes: they are answered from
// memory, by TryLoad too (the data plane's I/O thread: no worker).
TEST(ReadCacheStoreTest, NeighboursOfADiskLoadAreAnsweredFromMemory) {
  MemoryBlockDevice ssd(256);
  auto store = NewStore(&ssd, 64 * kKiB);
  StoreAndWriteBack(*store, 0, 12, 1);
  ASSERT_EQ(store->GetStats().pages_on_disk, 12u);

  ExpectPage(*store, kTenant, 0, Version(0, 1), 1);
  EXPECT_EQ(store->GetStats().backing_reads, 1u);
  for (uint64_t p = 1; p < 12; ++p) {
    std::optional<absl::StatusOr<LoadedPage>> r = store->TryLoad(kTenant, p);
    ASSERT_TRUE(r.has_value()) << "page " << p << " would have waited for the disk";
    ASSERT_TRUE(r->ok()) << r->status();
    EXPECT_EQ((*r)->checksum, 1u);
    EXPECT_TRUE((*r)->payload == Version(p, 1)) << "page " << p;
  }
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.backing_reads, 1u);
  EXPECT_EQ(st.read_cache_hits, 11u);
  EXPECT_EQ(st.read_cache_mismatches, 0u);
  EXPECT_EQ(st.pages_on_disk, 12u) << "a first load does not promote";
  EXPECT_GT(st.read_cache_bytes, 0u);
  EXPECT_EQ(st.read_cache_limit_bytes, 4u << 20);
}

// A second load of a page still on disk promotes it, from the cache as
// after a read: it leaves the disk and is served from the pool after.
TEST(ReadCacheStoreTest, ASecondLoadAnsweredFromTheCachePromotes) {
  MemoryBlockDevice ssd(256);
  auto store = NewStore(&ssd, 64 * kKiB);
  StoreAndWriteBack(*store, 0, 4, 1);
  ExpectPage(*store, kTenant, 0, Version(0, 1), 1);  // the disk read
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);  // from the cache
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);  // from the cache: promoted
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.promotions, 1u);
  EXPECT_EQ(st.pages_on_disk, 3u);
  EXPECT_EQ(st.pool.objects, 1u);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);  // from the pool
  st = store->GetStats();
  EXPECT_EQ(st.read_cache_hits, 2u);
  EXPECT_EQ(st.backing_reads, 1u);
}

// The segment is still open when a load reads its window: the window ends
// at the extent then. Pages appended after it (past that extent) are read
// from the disk, never from the window (whose bytes there were read before
// they were written).
TEST(ReadCacheStoreTest, AWindowNeverAnswersForBytesAppendedAfterItWasRead) {
  MemoryBlockDevice ssd(256);
  auto store = NewStore(&ssd, 64 * kKiB, /*batch_pages=*/3);
  StoreAndWriteBack(*store, 0, 3, 1);  // the segment is parked, partly filled
  ExpectPage(*store, kTenant, 0, Version(0, 1), 1);
  ASSERT_EQ(store->GetStats().backing_reads, 1u);
  StoreAndWriteBack(*store, 10, 3, 1);  // appended to the same segment
  ASSERT_EQ(store->GetStats().segments - store->GetStats().free_segments, 1u)
      << "the second batch should have gone to the same segment";

  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);    // the window: a hit
  ExpectPage(*store, kTenant, 11, Version(11, 1), 1);  // past its extent: the disk
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.read_cache_mismatches, 0u) << "the window served bytes read before their write";
  EXPECT_EQ(st.backing_reads, 2u);
  EXPECT_EQ(st.read_cache_hits, 1u);
}

// Every page of the only segment is invalidated, so it is freed, and new
// pages are written back into it from its start. The window read before
// is of the old epoch and answers nothing.
TEST(ReadCacheStoreTest, AFreedAndReusedSegmentIsNeverAnsweredFromAnOldWindow) {
  MemoryBlockDevice ssd(16);  // one 64 KiB segment: reuse is certain
  auto store = NewStore(&ssd, 64 * kKiB);
  StoreAndWriteBack(*store, 0, 6, 1);
  ExpectPage(*store, kTenant, 0, Version(0, 1), 1);  // caches the window
  for (uint64_t p = 0; p < 6; ++p) ASSERT_TRUE(store->Invalidate(kTenant, p).ok());
  ASSERT_EQ(store->GetStats().free_segments, 1u);
  StoreAndWriteBack(*store, 0, 6, 2);  // the same pages, new bytes, same segment

  for (uint64_t p = 0; p < 6; ++p) ExpectPage(*store, kTenant, p, Version(p, 2), 2);
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.read_cache_mismatches, 0u) << "an old window answered for the reused segment";
  EXPECT_EQ(st.backing_reads, 2u) << "one read of each epoch's window";
  EXPECT_EQ(st.read_cache_hits, 5u);
}

// The segment's pages are invalidated while the window is being read
// (sync point: after the load pinned the segment, before the read): the
// load returns the bytes it began with, the segment is freed only at the
// unpin — after the window went into the cache — and the pages written
// back into it next are read from the disk, not from that window.
TEST(ReadCacheStoreTest, ASegmentFreedRightAfterItsWindowWasReadIsNotAnsweredFromIt) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(16);
  auto store = NewStore(&ssd, 64 * kKiB);
  StoreAndWriteBack(*store, 0, 6, 1);
  SyncPoints::SetOnce("PageStore::LoadBatch:after-begin", [&] {
    for (uint64_t p = 0; p < 6; ++p) ASSERT_TRUE(store->Invalidate(kTenant, p).ok());
    EXPECT_EQ(store->GetStats().free_segments, 0u) << "pinned: not freed yet";
  });
  ExpectPage(*store, kTenant, 0, Version(0, 1), 1);
  ASSERT_EQ(store->GetStats().free_segments, 1u) << "freed at the unpin";
  StoreAndWriteBack(*store, 20, 6, 2);
  for (uint64_t p = 20; p < 26; ++p) ExpectPage(*store, kTenant, p, Version(p, 2), 2);
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.read_cache_mismatches, 0u);
  EXPECT_EQ(st.backing_reads, 2u);
  EXPECT_EQ(st.read_cache_hits, 5u);
}

// Off: every load of an on-disk page reads its own blocks, and TryLoad
// says it would wait.
TEST(ReadCacheStoreTest, OffReadsEveryPageFromTheDisk) {
  MemoryBlockDevice ssd(256);
  absl::StatusOr<std::unique_ptr<PageStore>> s = PageStore::Create({.backing = &ssd,
                                                                    .start_writeback_worker = false,
                                                                    .segment_bytes = 64 * kKiB,
                                                                    .disk_read_cache_bytes = 0});
  ASSERT_TRUE(s.ok()) << s.status();
  PageStore& store = **s;
  StoreAndWriteBack(store, 0, 4, 1);
  for (uint64_t p = 0; p < 4; ++p) {
    EXPECT_FALSE(store.TryLoad(kTenant, p).has_value());
    ExpectPage(store, kTenant, p, Version(p, 1), 1);
  }
  const PageStoreStats st = store.GetStats();
  EXPECT_EQ(st.backing_reads, 4u);
  EXPECT_EQ(st.read_cache_hits, 0u);
  EXPECT_EQ(st.read_cache_limit_bytes, 0u);
}

// A scrub's load checks the medium: with the page's window cached and the
// disk corrupted after, it reads the disk and sees DATA_LOSS (TryLoad says
// it would wait rather than answer from memory), while a load that uses the
// page is still answered, correctly, from the cache.
TEST(ReadCacheStoreTest, AScrubReadsTheDiskNotTheCache) {
  MemoryBlockDevice ssd(256);
  auto store = NewStore(&ssd, 64 * kKiB);
  StoreAndWriteBack(*store, 0, 4, 1);
  ExpectPage(*store, kTenant, 0, Version(0, 1), 1);  // caches the window
  ASSERT_EQ(store->GetStats().backing_reads, 1u);
  // Every block of the first segment, bits flipped.
  std::vector<uint8_t> block(kBlockSize);
  for (uint64_t b = 0; b < 16; ++b) {
    ASSERT_TRUE(ssd.ReadBlock(b, block.data()).ok());
    for (size_t i = 0; i < kBlockSize; i += 64) block[i] ^= 0x10;
    ASSERT_TRUE(ssd.WriteBlock(b, block.data()).ok());
  }

  EXPECT_FALSE(store->TryLoad(kTenant, 1, PageStore::LoadKind::kScrub).has_value())
      << "a scrub's load was answered from memory";
  EXPECT_EQ(store->Load(kTenant, 1, PageStore::LoadKind::kScrub).status().code(),
            absl::StatusCode::kDataLoss);
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);  // a use: the cache
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.backing_reads, 2u) << "the scrub's read only";
  EXPECT_EQ(st.backing_read_errors, 1u);
  EXPECT_EQ(st.read_cache_hits, 1u);
  EXPECT_EQ(st.read_cache_mismatches, 0u);
}

// A scrub's load is not an access: two of a page on disk promote nothing,
// and do not count as its first load either; it reads only the object's
// blocks and caches nothing.
TEST(ReadCacheStoreTest, AScrubsLoadsAreNotAccesses) {
  MemoryBlockDevice ssd(256);
  auto store = NewStore(&ssd, 64 * kKiB);
  StoreAndWriteBack(*store, 0, 4, 1);
  for (int i = 0; i < 2; ++i) {
    ExpectPage(*store, kTenant, 2, Version(2, 1), 1, PageStore::LoadKind::kScrub);
  }
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.promotions, 0u);
  EXPECT_EQ(st.pages_on_disk, 4u);
  EXPECT_EQ(st.backing_reads, 2u);
  EXPECT_EQ(st.read_cache_bytes, 0u) << "a scrub's read went into the cache";
  EXPECT_EQ(st.read_cache_hits + st.read_cache_misses, 0u);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);  // the first use: no promotion
  EXPECT_EQ(store->GetStats().promotions, 0u);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);  // the second: promoted
  st = store->GetStats();
  EXPECT_EQ(st.promotions, 1u);
  EXPECT_EQ(st.pages_on_disk, 3u);
}

// --- concurrency (for TSan) -------------------------------------------------------------

// Loaders (batch loads and TryLoad, as the workers and the I/O threads
// load) race a thread that replaces, invalidates, writes back and cleans,
// so windows go stale under them all the time: every load is NOT_FOUND or
// an intact version of the page, and no cached bytes ever fail the disk
// checksum. One loader mixes scrubs' loads into its batches.
TEST(ReadCacheConcurrencyTest, LoadsRacingStoresInvalidatesWritebackAndCleaner) {
  MemoryBlockDevice ssd(512);  // 32 segments of 64 KiB
  auto store = NewStore(&ssd, 64 * kKiB);
  constexpr uint64_t kPages = 96;
  StoreAndWriteBack(*store, 0, kPages, 1);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> bad{0}, served{0};
  auto check = [&](uint64_t page, const absl::StatusOr<LoadedPage>& r) {
    if (!r.ok()) {
      if (r.status().code() != absl::StatusCode::kNotFound) bad++;
      return;
    }
    served++;
    if (r->payload != Version(page, r->checksum)) bad++;
  };
  // with_scrubs: every other load of each batch is a scrub's (no cache,
  // no readahead, no access), read beside the others in the same batch.
  auto batch_loader = [&](uint64_t seed, bool with_scrubs) {
    std::vector<uint64_t> pages(16);
    std::vector<PageStore::LoadKind> kinds(pages.size(), PageStore::LoadKind::kUse);
    for (size_t i = 1; with_scrubs && i < kinds.size(); i += 2) {
      kinds[i] = PageStore::LoadKind::kScrub;
    }
    for (int round = 0; round < 150; ++round) {
      for (size_t i = 0; i < pages.size(); ++i) pages[i] = (seed * 7 + round * 5 + i) % kPages;
      store->LoadBatch(
          kTenant, pages, [&](size_t i, absl::StatusOr<LoadedPage>& r) { check(pages[i], r); },
          nullptr, kinds);
    }
  };
  auto try_loader = [&] {
    for (int round = 0; round < 2000; ++round) {
      const uint64_t page = (round * 13) % kPages;
      std::optional<absl::StatusOr<LoadedPage>> r = store->TryLoad(kTenant, page);
      if (r.has_value()) check(page, *r);
    }
  };
  std::thread mutator([&] {
    for (uint64_t v = 2; !done.load(); ++v) {
      for (uint64_t p = v % 3; p < kPages; p += 3) {
        if ((p + v) % 4 == 0) {
          EXPECT_TRUE(store->Invalidate(kTenant, p).ok());
        } else {
          EXPECT_TRUE(StorePayload(*store, kTenant, p, Version(p, v), v).ok());
        }
      }
      store->RunWritebackBatch(64);
      store->RunCleanerOnce();
    }
  });
  std::thread a(batch_loader, 1, false), b(batch_loader, 2, true), c(try_loader);
  a.join();
  b.join();
  c.join();
  done = true;
  mutator.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(served.load(), 0u);
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.read_cache_mismatches, 0u);
  EXPECT_GT(st.read_cache_hits, 0u);
}

}  // namespace
}  // namespace farswap::server
