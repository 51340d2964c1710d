// async_load_test.cc: loads of written-back pages read with no lock held
// (PageStore::LoadBatch): races with a store, an invalidate and the cleaner
// while a read is in flight (the segment pin), completions out of order,
// coalesced reads, a failed read of one page of a batch, and promotion back
// into the pool on a second load.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "farswap/server/block_device.h"
#include "farswap/server/block_write_queue.h"
#include "farswap/server/page_store.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using testing::ExpectPage;
using testing::Payload;
using testing::ScopedSyncPoints;
using testing::StorePayload;

constexpr uint32_t kTenant = 5;
constexpr uint64_t kSegment = 16 * kBlockSize;  // 64 KiB
constexpr char kAfterBegin[] = "PageStore::LoadBatch:after-begin";

// The read cache is off: these tests watch each load's own disk read (the
// cache would answer neighbours from memory; read_cache_test covers it).
std::unique_ptr<PageStore> NewStore(BlockDevice* backing) {
  absl::StatusOr<std::unique_ptr<PageStore>> s = PageStore::Create({.backing = backing,
                                                                    .start_writeback_worker = false,
                                                                    .segment_bytes = kSegment,
                                                                    .disk_read_cache_bytes = 0});
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

// Version `v` of page `p`: its own bytes, under one block.
std::vector<uint8_t> Version(uint64_t p, uint64_t v) {
  return Payload(p * 1000 + v, 600 + (p * 131 + v * 17) % 900);
}

// WriteBackApart puts pages 0..n-1 (version 1) on disk each in a block of
// its own with a dead block between two of them, so no two reads touch:
// page k is at block 2k.
void WriteBackApart(PageStore& store, uint64_t n) {
  for (uint64_t p = 0; p < n; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
    ASSERT_EQ(store.RunWritebackOnce(), WritebackOutcome::kWrittenBack);
    ASSERT_TRUE(StorePayload(store, kTenant, 1000 + p, Version(1000 + p, 1), 1).ok());
    ASSERT_EQ(store.RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  }
  for (uint64_t p = 0; p < n; ++p) ASSERT_TRUE(store.Invalidate(kTenant, 1000 + p).ok());
  ASSERT_EQ(store.GetStats().pages_on_disk, n);
}

// --- a read in flight while the entry changes --------------------------------------------

// The page is replaced while its read is in flight: the load returns the
// version it began with, intact; the old segment, left with nothing live,
// is not freed (so not reused) until the load ends; the new version is
// then served and no space leaks.
TEST(AsyncLoadRaceTest, StoreDuringTheReadReturnsTheOldBytesAndKeepsTheSegment) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(64);  // 4 segments
  auto store = NewStore(&ssd);
  ASSERT_TRUE(StorePayload(*store, kTenant, 7, Version(7, 1), 1).ok());
  ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  const uint64_t free_before = store->GetStats().free_segments;  // all but the parked one
  uint64_t free_during = 0;
  SyncPoints::SetOnce(kAfterBegin, [&] {
    ASSERT_TRUE(StorePayload(*store, kTenant, 7, Version(7, 2), 2).ok());
    // The new version goes to disk too: into a fresh segment, never the
    // pinned one (which holds no live bytes now).
    ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
    free_during = store->GetStats().free_segments;
  });
  ExpectPage(*store, kTenant, 7, Version(7, 1), 1);
  EXPECT_EQ(free_during, free_before - 1) << "the pinned segment was freed while read";
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.free_segments, free_before) << "the last unpin frees the old segment";
  EXPECT_EQ(st.disk_live_bytes, Version(7, 2).size());
  EXPECT_EQ(st.pages_on_disk, 1u);
  ExpectPage(*store, kTenant, 7, Version(7, 2), 2);
}

TEST(AsyncLoadRaceTest, InvalidateDuringTheReadReturnsTheOldBytesThenNothing) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(64);
  auto store = NewStore(&ssd);
  ASSERT_TRUE(StorePayload(*store, kTenant, 7, Version(7, 1), 1).ok());
  ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  const uint64_t segments = store->GetStats().segments;
  uint64_t free_during = 0, used_during = 0;
  SyncPoints::SetOnce(kAfterBegin, [&] {
    ASSERT_TRUE(store->Invalidate(kTenant, 7).ok());
    free_during = store->GetStats().free_segments;
    used_during = store->GetStats().backing_used_blocks;
  });
  ExpectPage(*store, kTenant, 7, Version(7, 1), 1);
  EXPECT_EQ(free_during, segments - 1) << "the pinned segment was freed while read";
  EXPECT_EQ(used_during, 1u);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.free_segments, segments);
  EXPECT_EQ(st.backing_used_blocks, 0u);
  EXPECT_EQ(st.disk_live_bytes, 0u);
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(store->Load(kTenant, 7).status().code(), absl::StatusCode::kNotFound);
}

// FillSegmentZero writes back pages 0..n+2 (version 1): segment 0 full of
// pages 0..n-1 and sealed, the rest in segment 1. Returns n.
uint64_t FillSegmentZero(PageStore& store) {
  uint64_t bytes = 0, n = 0;
  while (bytes + Version(n, 1).size() <= kSegment) bytes += Version(n++, 1).size();
  for (uint64_t p = 0; p < n + 3; ++p) {
    EXPECT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
  }
  while (store.RunWritebackBatch(64) == WritebackOutcome::kWrittenBack) {
  }
  EXPECT_EQ(store.GetStats().pages_on_disk, n + 3);
  return n;
}

// The same with a sealed segment: the page is its last live object, and
// the invalidate that empties it while the read is in flight must not free
// it; the unpin does.
TEST(AsyncLoadRaceTest, InvalidateEmptyingASealedSegmentDuringTheReadFreesItAtTheUnpin) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(64);
  auto store = NewStore(&ssd);
  const uint64_t n = FillSegmentZero(*store);
  for (uint64_t p = 0; p < n; ++p) {
    if (p != 1) {
      ASSERT_TRUE(store->Invalidate(kTenant, p).ok());
    }
  }
  const uint64_t free_before = store->GetStats().free_segments;
  uint64_t free_during = 0;
  SyncPoints::SetOnce(kAfterBegin, [&] {
    ASSERT_TRUE(store->Invalidate(kTenant, 1).ok());
    free_during = store->GetStats().free_segments;
  });
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);
  EXPECT_EQ(free_during, free_before) << "the pinned sealed segment was freed while read";
  EXPECT_EQ(store->GetStats().free_segments, free_before + 1);
  EXPECT_EQ(store->Load(kTenant, 1).status().code(), absl::StatusCode::kNotFound);
  for (uint64_t p = n; p < n + 3; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// The cleaner moves the page (and its neighbour) out of its segment while
// the read is in flight: the load reads the old copy, intact; the victim is
// freed only when the load unpins it; the page then loads from its new place.
TEST(AsyncLoadRaceTest, CleanerMovingTheSegmentDuringTheReadFreesItOnlyAfterTheLoad) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(64);
  auto store = NewStore(&ssd);
  // Segment 0 full and sealed, then thinned to pages 1 and 2.
  const uint64_t n = FillSegmentZero(*store);
  for (uint64_t p = 0; p < n; ++p) {
    if (p != 1 && p != 2) {
      ASSERT_TRUE(store->Invalidate(kTenant, p).ok());
    }
  }
  const PageStoreStats before = store->GetStats();
  bool freed = true;
  uint64_t free_during = 0;
  SyncPoints::SetOnce(kAfterBegin, [&] {
    freed = store->RunCleanerOnce();
    free_during = store->GetStats().free_segments;
  });
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);
  EXPECT_FALSE(freed) << "the victim is pinned: not freed by the cleaner";
  EXPECT_EQ(free_during, before.free_segments);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.cleaner_moves, 2u);
  EXPECT_EQ(st.free_segments, before.free_segments + 1) << "the unpin freed the victim";
  EXPECT_EQ(st.disk_live_bytes, before.disk_live_bytes);
  EXPECT_EQ(st.pages_on_disk, before.pages_on_disk);
  // Both moved pages read from their new place (page 1's second disk load
  // also promotes it).
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);
  for (uint64_t p = n; p < n + 3; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// --- batches -----------------------------------------------------------------------------

// ReverseReadDevice completes queued reads last-submitted first, one per
// Reap, and records the order (writes are done at Submit, as the
// synchronous queue does).
class ReverseReadDevice final : public BlockDevice {
 public:
  explicit ReverseReadDevice(uint64_t blocks) : mem_(blocks) {}
  absl::Status ReadBlock(uint64_t block, void* dst) override { return mem_.ReadBlock(block, dst); }
  absl::Status WriteBlock(uint64_t block, const void* src) override {
    return mem_.WriteBlock(block, src);
  }
  absl::Status ReadBlocks(uint64_t first, uint64_t count, void* dst) override {
    return mem_.ReadBlocks(first, count, dst);
  }
  absl::Status WriteBlocks(uint64_t first, uint64_t count, const void* src) override {
    return mem_.WriteBlocks(first, count, src);
  }
  absl::Status Sync() override { return absl::OkStatus(); }
  uint64_t block_count() const override { return mem_.block_count(); }
  std::string Describe() const override { return "reverse-read"; }
  std::unique_ptr<BlockWriteQueue> NewWriteQueue(size_t depth) override {
    return std::make_unique<Queue>(this, depth);
  }
  // completed: first block of each read, in completion order.
  const std::vector<uint64_t>& completed() const { return completed_; }

 private:
  class Queue final : public BlockWriteQueue {
   public:
    Queue(ReverseReadDevice* dev, size_t depth) : dev_(dev), depth_(depth) {}
    absl::Status Submit(uint64_t first, uint64_t count, const void* src, uint64_t tag) override {
      if (in_flight() >= depth_) return absl::FailedPreconditionError("queue full");
      written_.push_back({.tag = tag, .status = dev_->mem_.WriteBlocks(first, count, src)});
      return absl::OkStatus();
    }
    absl::Status SubmitRead(uint64_t first, uint64_t count, void* dst, uint64_t tag) override {
      if (in_flight() >= depth_) return absl::FailedPreconditionError("queue full");
      reads_.push_back({first, count, dst, tag});
      return absl::OkStatus();
    }
    std::vector<Completion> Reap() override {
      std::vector<Completion> out(written_.begin(), written_.end());
      written_.clear();
      if (!reads_.empty()) {
        const Read r = reads_.back();
        reads_.pop_back();
        out.push_back({.tag = r.tag, .status = dev_->mem_.ReadBlocks(r.first, r.count, r.dst)});
        dev_->completed_.push_back(r.first);
      }
      return out;
    }
    size_t in_flight() const override { return written_.size() + reads_.size(); }
    size_t depth() const override { return depth_; }
    const char* engine() const override { return "reverse-read"; }

   private:
    struct Read {
      uint64_t first, count;
      void* dst;
      uint64_t tag;
    };
    ReverseReadDevice* const dev_;
    const size_t depth_;
    std::vector<Completion> written_;
    std::vector<Read> reads_;
  };

  MemoryBlockDevice mem_;
  std::vector<uint64_t> completed_;  // the test's thread only
};

// Four reads in flight at once complete last-first; the results still come
// back in request order, the first only once all four are in.
TEST(LoadBatchTest, ReadsCompletingInReverseAreAnsweredInOrder) {
  ReverseReadDevice ssd(64);
  auto store = NewStore(&ssd);
  WriteBackApart(*store, 4);
  ASSERT_TRUE(StorePayload(*store, kTenant, 50, Version(50, 1), 1).ok());  // in the pool
  const std::vector<uint64_t> pages = {0, 1, 50, 2, 3};
  std::vector<size_t> order;
  std::vector<size_t> completed_at;
  store->LoadBatch(kTenant, pages, [&](size_t i, absl::StatusOr<LoadedPage>& r) {
    order.push_back(i);
    completed_at.push_back(ssd.completed().size());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->payload, Version(pages[i], 1)) << "page " << pages[i];
  });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(ssd.completed(), (std::vector<uint64_t>{6, 4, 2, 0})) << "blocks, completion order";
  EXPECT_EQ(completed_at[0], 4u) << "page 0's read completed last";
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.disk_read_requests, 4u);
  EXPECT_EQ(st.disk_reads_coalesced, 0u);
  EXPECT_EQ(st.disk_reads_in_flight, 0u);
}

// Pages written back together lie side by side: one read request for all.
TEST(LoadBatchTest, TouchingReadsAreCoalescedIntoOneRequest) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = NewStore(&ssd);
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < 12; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
    pages.push_back(11 - p);  // any order: the requests are built by place
  }
  ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  ASSERT_EQ(store->GetStats().pages_on_disk, 12u);
  const uint64_t reads_before = ssd.reads();
  size_t answered = 0;
  store->LoadBatch(kTenant, pages, [&](size_t i, absl::StatusOr<LoadedPage>& r) {
    EXPECT_EQ(i, answered++);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->payload, Version(pages[i], 1));
    EXPECT_EQ(r->checksum, 1u);
  });
  EXPECT_EQ(answered, 12u);
  EXPECT_EQ(ssd.reads() - reads_before, 1u) << "one read for the whole run";
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.disk_read_requests, 1u);
  EXPECT_EQ(st.disk_reads_coalesced, 11u);
  EXPECT_EQ(st.backing_reads, 12u) << "pages loaded from disk";
}

// The second of four read requests fails: that page is DATA_LOSS, the
// others of the batch are served, in order.
TEST(LoadBatchTest, AFailedReadIsDataLossForItsPageOnly) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = NewStore(&ssd);
  WriteBackApart(*store, 4);
  ssd.FailReads(1, 1, absl::DataLossError("EIO (injected)"));
  const std::vector<uint64_t> pages = {0, 1, 2, 3};
  std::vector<absl::StatusCode> codes;
  store->LoadBatch(kTenant, pages, [&](size_t i, absl::StatusOr<LoadedPage>& r) {
    codes.push_back(r.status().code());
    if (r.ok()) {
      EXPECT_EQ(r->payload, Version(pages[i], 1)) << "page " << pages[i];
    }
  });
  EXPECT_EQ(codes,
            (std::vector<absl::StatusCode>{absl::StatusCode::kOk, absl::StatusCode::kDataLoss,
                                           absl::StatusCode::kOk, absl::StatusCode::kOk}));
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.backing_read_errors, 1u);
  EXPECT_EQ(st.free_segments, st.segments - 1) << "every pin released";
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);  // the device works again
}

// --- promotion ---------------------------------------------------------------------------

TEST(PromotionTest, TheSecondLoadFromDiskMovesThePageIntoThePool) {
  MemoryBlockDevice ssd(64);
  auto store = NewStore(&ssd);
  ASSERT_TRUE(StorePayload(*store, kTenant, 9, Version(9, 1), 1).ok());
  ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  ExpectPage(*store, kTenant, 9, Version(9, 1), 1);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.promotions, 0u);
  EXPECT_EQ(st.pages_on_disk, 1u);
  EXPECT_EQ(st.pool.objects, 0u);
  ExpectPage(*store, kTenant, 9, Version(9, 1), 1);  // second load: promoted
  st = store->GetStats();
  EXPECT_EQ(st.promotions, 1u);
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.pool.objects, 1u);
  EXPECT_EQ(st.disk_live_bytes, 0u) << "the disk copy is dead";
  EXPECT_EQ(st.free_segments, st.segments) << "its segment, left empty, is free";
  const uint64_t reads = st.backing_reads;
  ExpectPage(*store, kTenant, 9, Version(9, 1), 1);  // from the pool now
  EXPECT_EQ(store->GetStats().backing_reads, reads);
  // It can be written back again, and loads from disk as itself.
  ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  EXPECT_EQ(store->GetStats().pages_on_disk, 1u);
  ExpectPage(*store, kTenant, 9, Version(9, 1), 1);
}

// A store lands between the read and the promotion: the store wins, the
// load returns the version it began with, nothing is promoted.
TEST(PromotionTest, AStoreRacingThePromotionWins) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(64);
  auto store = NewStore(&ssd);
  ASSERT_TRUE(StorePayload(*store, kTenant, 9, Version(9, 1), 1).ok());
  ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  ExpectPage(*store, kTenant, 9, Version(9, 1), 1);
  SyncPoints::SetOnce("PageStore::Promote:before-lock", [&] {
    ASSERT_TRUE(StorePayload(*store, kTenant, 9, Version(9, 2), 2).ok());
  });
  ExpectPage(*store, kTenant, 9, Version(9, 1), 1);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.promotions, 0u);
  EXPECT_EQ(st.pool.objects, 1u) << "only the new version";
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.disk_live_bytes, 0u);
  EXPECT_EQ(st.free_segments, st.segments);
  ExpectPage(*store, kTenant, 9, Version(9, 2), 2);
}

// --- concurrency (for TSan) ----------------------------------------------------------------

// Loaders batch-load on-disk pages while another thread replaces,
// invalidates, writes back and cleans: every load is NOT_FOUND or some
// version of the page, intact (the checksum names the version); at the end
// every pin is gone (a quiescent store's free and held space add up).
TEST(AsyncLoadConcurrencyTest, BatchLoadsRacingStoresInvalidatesWritebackAndCleaner) {
  MemoryBlockDevice ssd(1024);  // 64 segments
  auto store = NewStore(&ssd);
  constexpr uint64_t kPages = 96;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
  }
  while (store->RunWritebackBatch(64) == WritebackOutcome::kWrittenBack) {
  }
  std::atomic<bool> done{false};
  std::atomic<uint64_t> bad{0}, served{0};
  auto loader = [&](uint64_t seed) {
    std::vector<uint64_t> pages(16);
    for (int round = 0; round < 150; ++round) {
      for (size_t i = 0; i < pages.size(); ++i) pages[i] = (seed * 7 + round * 5 + i) % kPages;
      store->LoadBatch(kTenant, pages, [&](size_t i, absl::StatusOr<LoadedPage>& r) {
        if (!r.ok()) {
          if (r.status().code() != absl::StatusCode::kNotFound) bad++;
          return;
        }
        served++;
        if (r->payload != Version(pages[i], r->checksum)) bad++;
      });
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
  std::thread a(loader, 1), b(loader, 2);
  a.join();
  b.join();
  done = true;
  mutator.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(served.load(), 0u);
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.disk_reads_in_flight, 0u);
  EXPECT_EQ(st.backing_read_errors, 0u);
  // No pin leaked: invalidating everything frees every segment.
  ASSERT_TRUE(store->InvalidateRange(kTenant, 0, kPages).ok());
  const PageStoreStats empty = store->GetStats();
  EXPECT_EQ(empty.disk_live_bytes, 0u);
  EXPECT_EQ(empty.free_segments, empty.segments);
}

}  // namespace
}  // namespace farswap::server
