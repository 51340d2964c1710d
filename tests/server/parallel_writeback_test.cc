// parallel_writeback_test.cc: a writeback pass that finds the pool far
// behind runs PageStoreOptions::writeback_threads batches at once (helper
// threads beside the pass, writeback.cc). Forced with a sync point: two
// batches hold isolated (WRITEBACK_PENDING) entries at the same moment, and
// still every page loads back as stored, each on disk or in the pool exactly
// once, with the log's live bytes matching. A pass that starts near the
// high watermark runs alone. Runs under ThreadSanitizer in CI.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/block_device.h"
#include "farswap/server/page_store.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using testing::ExpectPage;
using testing::Payload;
using testing::ScopedSyncPoints;
using testing::StorePayload;

constexpr uint32_t kTenant = 4;
constexpr uint64_t kPages = 600;

std::vector<uint8_t> Bytes(uint64_t p) { return Payload(p, 700 + (p * 37) % 1500); }

// The read cache is off, so TryLoad tells a page on disk (nullopt) from one
// in the pool.
std::unique_ptr<PageStore> NewStore(BlockDevice* backing, uint32_t threads) {
  absl::StatusOr<std::unique_ptr<PageStore>> s =
      PageStore::Create({.limits = {.pool_limit_bytes = 64 << 20},
                         .backing = backing,
                         .start_writeback_worker = false,
                         .writeback_batch_pages = 16,
                         .writeback_threads = threads,
                         .disk_read_cache_bytes = 0});
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

void StoreAll(PageStore& store) {
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, p, Bytes(p), p).ok());
  }
}

// Lowers the pool limit to a quarter of what the pool holds (watermarks
// 0.6 / 0.5, as farswap-bench node's drain does): far behind.
void LowerLimit(PageStore& store) {
  const uint64_t in_use = store.GetStats().pool.mem_used_total;
  ASSERT_TRUE(store
                  .SetLimits({.pool_limit_bytes = std::max<uint64_t>(in_use / 4, 64 << 10),
                              .high_watermark = 0.6,
                              .low_watermark = 0.5})
                  .ok());
}

// Every page loads back as stored; each is on disk or in the pool, and
// the log's live bytes are exactly the on-disk pages' lengths.
void ExpectEveryPageOnce(PageStore& store) {
  uint64_t on_disk = 0, disk_bytes = 0, in_pool = 0;
  for (uint64_t p = 0; p < kPages; ++p) {
    if (store.TryLoad(kTenant, p).has_value()) {
      ++in_pool;
    } else {
      ++on_disk;
      disk_bytes += Bytes(p).size();
    }
  }
  const PageStoreStats st = store.GetStats();
  EXPECT_EQ(st.pages_on_disk, on_disk);
  EXPECT_EQ(st.pool.objects, in_pool);
  EXPECT_EQ(st.disk_live_bytes, disk_bytes);
  for (uint64_t p = 0; p < kPages; ++p) ExpectPage(store, kTenant, p, Bytes(p), p);
}

TEST(ParallelWritebackTest, TwoBatchesIsolateAtOnceAndEveryPageSurvives) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(2048);
  auto store = NewStore(&ssd, 2);
  StoreAll(*store);
  LowerLimit(*store);

  // A barrier of two at the point where a batch holds its isolated
  // entries (WRITEBACK_PENDING, no lock held): the first thread there waits
  // until a second one arrives, so two batches are in flight together.
  Mutex mu;
  CondVar cv;
  std::set<std::thread::id> arrived;
  bool met = false, timed_out = false;
  SyncPoints::Set("PageStore::Writeback:pending-unlocked", [&] {
    MutexLock l(&mu);
    if (met) return;
    arrived.insert(std::this_thread::get_id());
    if (arrived.size() >= 2) {
      met = true;
      cv.SignalAll();
      return;
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!met && !timed_out) timed_out = cv.WaitWithDeadline(&mu, deadline);
  });
  const uint64_t written = store->RunWritebackPass();
  SyncPoints::ClearAll();
  {
    MutexLock l(&mu);
    EXPECT_TRUE(met) << "no second writeback thread reached the isolation step";
    EXPECT_FALSE(timed_out);
  }
  EXPECT_GT(written, 0u);
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.parallel_writeback_passes, 1u);
  EXPECT_LE(st.pool.mem_used_total, st.pool.mem_limit);
  EXPECT_TRUE(st.health.ok()) << st.health;
  ExpectEveryPageOnce(*store);
}

TEST(ParallelWritebackTest, APassNearTheHighWatermarkRunsAlone) {
  MemoryBlockDevice ssd(2048);
  auto store = NewStore(&ssd, 2);
  StoreAll(*store);
  // High watermark just under what the pool holds: not far behind.
  const uint64_t in_use = store->GetStats().pool.mem_used_total;
  ASSERT_TRUE(
      store
          ->SetLimits(
              {.pool_limit_bytes = in_use * 100 / 85, .high_watermark = 0.8, .low_watermark = 0.7})
          .ok());
  EXPECT_GT(store->RunWritebackPass(), 0u);
  EXPECT_EQ(store->GetStats().parallel_writeback_passes, 0u);
  ExpectEveryPageOnce(*store);
}

TEST(ParallelWritebackTest, OneThreadNeverStartsHelpers) {
  MemoryBlockDevice ssd(2048);
  auto store = NewStore(&ssd, 1);
  StoreAll(*store);
  LowerLimit(*store);
  EXPECT_GT(store->RunWritebackPass(), 0u);
  EXPECT_EQ(store->GetStats().parallel_writeback_passes, 0u);
  ExpectEveryPageOnce(*store);
}

// Stores, loads and invalidates race passes that keep finding the pool far
// behind (its limit is a quarter of what is stored), on the writeback
// thread and its helpers: every load is NOT_FOUND or the version its
// checksum names. For TSan.
TEST(ParallelWritebackTest, StoresLoadsAndInvalidatesRaceParallelPasses) {
  MemoryBlockDevice ssd(4096);
  absl::StatusOr<std::unique_ptr<PageStore>> s = PageStore::Create(
      {.limits = {.pool_limit_bytes = 256 << 10, .high_watermark = 0.6, .low_watermark = 0.5},
       .backing = &ssd,
       .writeback_batch_pages = 16,
       .writeback_threads = 3});
  ASSERT_TRUE(s.ok()) << s.status();
  PageStore& store = **s;
  std::atomic<uint64_t> bad{0};
  auto client = [&](uint64_t first) {
    for (uint64_t round = 0; round < 4; ++round) {
      for (uint64_t p = first; p < first + 200; ++p) {
        const uint64_t v = round * 1000 + p;
        if ((p + round) % 7 == 0) {
          EXPECT_TRUE(store.Invalidate(kTenant, p).ok());
        } else {
          absl::Status st = store.Store(
              kTenant, p, {.payload = Payload(v, 900 + p % 700), .codec = 1, .checksum = v});
          EXPECT_TRUE(st.ok()) << st;
        }
        absl::StatusOr<LoadedPage> r = store.Load(kTenant, first + (p * 13) % 200);
        if (r.ok() && r->payload != Payload(r->checksum, 900 + (first + (p * 13) % 200) % 700)) {
          bad++;
        } else if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) {
          bad++;
        }
      }
    }
  };
  std::thread a(client, 0), b(client, 1000);
  a.join();
  b.join();
  store.QuiesceWriteback();
  EXPECT_EQ(bad.load(), 0u);
  const PageStoreStats st = store.GetStats();
  EXPECT_GT(st.written_back_pages, 0u);
  EXPECT_TRUE(st.health.ok()) << st.health;
}

}  // namespace
}  // namespace farswap::server
