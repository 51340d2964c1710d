// The packed, log-structured backing store (segment_table.h, writeback.cc,
// cleaner.cc): batches of pages packed into one segment write, the seed
// interleavings at each unlocked step of a batch and of the cleaner, disk
// full, and I/O faults. Every interleaving is forced with a sync point whose
// callback runs on the writeback (or cleaner) thread while it holds no lock;
// nothing sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/page_store.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using testing::ExpectPage;
using testing::Payload;
using testing::ScopedSyncPoints;
using testing::StorePayload;

constexpr uint32_t kTenant = 3;
constexpr uint64_t kSegment = 4 * kBlockSize;  // 16 KiB: small enough to fill in a test

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

// Version `v` of page `p`: its own bytes, and its length varies with it.
std::vector<uint8_t> Version(uint64_t p, uint64_t v) {
  return Payload(p * 1000 + v, 900 + (p * 131 + v * 17) % 1200);
}

TEST(SegmentLogTest, ABatchIsPackedIntoOneWriteAndLoadsReadOnlyTheirBlocks) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = NewStore(&ssd);
  uint64_t bytes = 0;
  for (uint64_t p = 0; p < 8; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
    bytes += Version(p, 1).size();
  }
  ASSERT_LE(bytes, kSegment);
  EXPECT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.pages_on_disk, 8u);
  EXPECT_EQ(ssd.writes(), 1u) << "a batch that fits one segment is one write";
  EXPECT_EQ(st.disk_live_bytes, bytes);
  EXPECT_EQ(st.written_back_bytes, bytes);
  EXPECT_EQ(st.backing_used_blocks, (bytes + kBlockSize - 1) / kBlockSize);
  EXPECT_EQ(st.backing_bytes_written, st.backing_used_blocks * kBlockSize);
  EXPECT_EQ(st.pool.objects, 0u);
  for (uint64_t p = 0; p < 8; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
  EXPECT_EQ(ssd.reads(), 8u) << "one read per load";
}

TEST(SegmentLogTest, ABatchLargerThanASegmentFillsItAndContinuesInTheNext) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = NewStore(&ssd);
  uint64_t bytes = 0;
  // 30: a fresh page is referenced, so the pick gives 30 second chances and
  // takes 30 pages in its first 64-entry hold.
  for (uint64_t p = 0; p < 30; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
    bytes += Version(p, 1).size();
  }
  ASSERT_GT(bytes, 2 * kSegment);
  EXPECT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.pages_on_disk, 30u);
  EXPECT_EQ(st.disk_live_bytes, bytes);
  // One write per segment filled (a segment's tail may not fit the next
  // page, so there may be one more segment than the bytes alone need).
  EXPECT_EQ(ssd.writes(), st.segments - st.free_segments);
  EXPECT_LE(ssd.writes(), bytes / kSegment + 2);
  for (uint64_t p = 0; p < 30; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// --- the seed interleavings at each unlocked step of a batch ---------------------------

const char* const kBatchPoints[] = {
    "PageStore::Writeback:pending-unlocked",
    "PageStore::Writeback:after-io",
};

class SegmentWriteRaceTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    store_ = NewStore(&ssd_);
    for (uint64_t p = 0; p < 6; ++p) {
      ASSERT_TRUE(StorePayload(*store_, kTenant, p, Version(p, 1), 1).ok());
    }
  }
  ScopedSyncPoints clear_sync_points_;
  MemoryBlockDevice ssd_{64};
  std::unique_ptr<PageStore> store_;
};

// While the segment holding pages 0..5 is being written: page 1 is stored
// anew, page 2 invalidated, page 3 loaded (cancelling its writeback), page
// 4 invalidated and stored again (a new generation, maybe at the old
// entry's address). Only 0 and 5 may go to disk; the others keep their
// newest state, and their appended bytes are counted dead.
TEST_P(SegmentWriteRaceTest, StoreInvalidateAndLoadDuringTheWriteKeepTheNewestVersion) {
  SyncPoints::SetOnce(GetParam(), [&] {
    ASSERT_TRUE(StorePayload(*store_, kTenant, 1, Version(1, 2), 2).ok());
    ASSERT_TRUE(store_->Invalidate(kTenant, 2).ok());
    ExpectPage(*store_, kTenant, 3, Version(3, 1), 1);
    ASSERT_TRUE(store_->Invalidate(kTenant, 4).ok());
    ASSERT_TRUE(StorePayload(*store_, kTenant, 4, Version(4, 3), 3).ok());
  });
  EXPECT_EQ(store_->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 2u);
  EXPECT_EQ(st.written_back_pages, 2u);
  EXPECT_EQ(st.writeback_aborted, 4u);
  EXPECT_EQ(st.disk_live_bytes, Version(0, 1).size() + Version(5, 1).size());
  EXPECT_EQ(st.pool.objects, 3u);  // 1 (v2), 3, 4 (v3)
  ExpectPage(*store_, kTenant, 0, Version(0, 1), 1);
  ExpectPage(*store_, kTenant, 1, Version(1, 2), 2);
  EXPECT_EQ(store_->Load(kTenant, 2).status().code(), absl::StatusCode::kNotFound);
  ExpectPage(*store_, kTenant, 3, Version(3, 1), 1);
  ExpectPage(*store_, kTenant, 4, Version(4, 3), 3);
  ExpectPage(*store_, kTenant, 5, Version(5, 1), 1);

  // The survivors can go to disk later, and the dead bytes never come back:
  // every page still reads as its newest version from there.
  for (int i = 0; i < 4 && store_->RunWritebackBatch(64) == WritebackOutcome::kWrittenBack; ++i) {
  }
  EXPECT_EQ(store_->GetStats().pages_on_disk, 5u);
  ExpectPage(*store_, kTenant, 1, Version(1, 2), 2);
  ExpectPage(*store_, kTenant, 3, Version(3, 1), 1);
  ExpectPage(*store_, kTenant, 4, Version(4, 3), 3);
}

// Every page of the batch invalidated during the write: nothing is
// published, and the segment, holding nothing live, is free again.
TEST_P(SegmentWriteRaceTest, EverythingInvalidatedDuringTheWriteFreesTheSegment) {
  SyncPoints::SetOnce(GetParam(),
                      [&] { ASSERT_EQ(store_->InvalidateRange(kTenant, 0, 6).value_or(0), 6u); });
  EXPECT_EQ(store_->RunWritebackBatch(64), WritebackOutcome::kAborted);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.stored_pages, 0u);
  EXPECT_EQ(st.free_segments, st.segments);
  EXPECT_EQ(st.backing_used_blocks, 0u);
  EXPECT_EQ(st.disk_live_bytes, 0u);
}

std::string BatchStepName(const ::testing::TestParamInfo<const char*>& step) {
  static const char* const kNames[] = {"PendingUnlocked", "AfterIo"};
  return kNames[step.index];
}

INSTANTIATE_TEST_SUITE_P(AtEachBatchStep, SegmentWriteRaceTest, ::testing::ValuesIn(kBatchPoints),
                         BatchStepName);

// --- the cleaner ------------------------------------------------------------------------

// Fills segment 0 with pages 0..n-1 (sealed: the batch carried on into
// segment 1), then invalidates all of segment 0's pages but `keep`, so its
// live fraction is below the threshold. Returns n.
uint64_t FillAndThinSegmentZero(PageStore& store, const std::vector<uint64_t>& keep) {
  uint64_t bytes = 0, n = 0;
  while (bytes + Version(n, 1).size() <= kSegment) bytes += Version(n++, 1).size();
  for (uint64_t p = 0; p < n + 3; ++p) {
    EXPECT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
  }
  EXPECT_EQ(store.RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  EXPECT_EQ(store.GetStats().pages_on_disk, n + 3);
  for (uint64_t p = 0; p < n; ++p) {
    if (std::find(keep.begin(), keep.end(), p) == keep.end()) {
      EXPECT_TRUE(store.Invalidate(kTenant, p).ok());
    }
  }
  return n;
}

TEST(SegmentCleanerTest, MovesLiveObjectsAndFreesTheSegment) {
  MemoryBlockDevice ssd(64);
  auto store = NewStore(&ssd);
  const uint64_t n = FillAndThinSegmentZero(*store, {1, 2});
  const PageStoreStats before = store->GetStats();
  ASSERT_TRUE(store->RunCleanerOnce());
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.cleaner_moves, 2u);
  EXPECT_EQ(st.cleaner_segments, 1u);
  EXPECT_EQ(st.disk_live_bytes, before.disk_live_bytes);
  EXPECT_EQ(st.pages_on_disk, before.pages_on_disk);
  EXPECT_GT(st.backing_bytes_written, before.backing_bytes_written);
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);
  for (uint64_t p = n; p < n + 3; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
  // Nothing else qualifies now.
  EXPECT_FALSE(store->RunCleanerOnce());

  // The freed segment is reused: fill the disk with new pages; every page,
  // moved or new, reads back as itself, never as bytes of the freed one.
  for (uint64_t p = 100; p < 160; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
  }
  while (store->RunWritebackBatch(64) == WritebackOutcome::kWrittenBack) {
  }
  EXPECT_EQ(store->GetStats().pages_on_disk, 2 + 3 + 60u);
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);
  for (uint64_t p = 100; p < 160; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

const char* const kCleanerPoints[] = {
    "PageStore::Cleaner:after-read",
    "PageStore::Cleaner:after-io",
};

class CleanerRaceTest : public ::testing::TestWithParam<const char*> {
 protected:
  ScopedSyncPoints clear_sync_points_;
  MemoryBlockDevice ssd_{64};
};

// The cleaner relocating page 1 while a store replaces it: the new version
// wins, and the relocated copy of the old one is dead and never served.
TEST_P(CleanerRaceTest, StoreDuringRelocationKeepsTheNewVersion) {
  auto store = NewStore(&ssd_);
  FillAndThinSegmentZero(*store, {1, 2});
  const uint64_t live_before = store->GetStats().disk_live_bytes;
  SyncPoints::SetOnce(
      GetParam(), [&] { ASSERT_TRUE(StorePayload(*store, kTenant, 1, Version(1, 2), 2).ok()); });
  ASSERT_TRUE(store->RunCleanerOnce());
  ExpectPage(*store, kTenant, 1, Version(1, 2), 2);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.cleaner_moves, 1u);
  EXPECT_EQ(st.disk_live_bytes, live_before - Version(1, 1).size());
  // Written back again, the new version reads from disk as itself.
  while (store->RunWritebackBatch(64) == WritebackOutcome::kWrittenBack) {
  }
  ExpectPage(*store, kTenant, 1, Version(1, 2), 2);
}

// The ABA case: page 1 is replaced and the new version written back to
// disk (a new generation, maybe at the old entry's address) while the
// cleaner holds the old copy. The cleaner must not point the new entry at
// the old bytes.
TEST_P(CleanerRaceTest, ReplacedAndWrittenBackDuringRelocationIsNotRedirected) {
  auto store = NewStore(&ssd_);
  FillAndThinSegmentZero(*store, {1, 2});
  SyncPoints::SetOnce(GetParam(), [&] {
    ASSERT_TRUE(store->Invalidate(kTenant, 1).ok());
    ASSERT_TRUE(StorePayload(*store, kTenant, 1, Version(1, 2), 2).ok());
    ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  });
  ASSERT_TRUE(store->RunCleanerOnce());
  ExpectPage(*store, kTenant, 1, Version(1, 2), 2);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);
}

TEST_P(CleanerRaceTest, InvalidateDuringRelocationLeavesNothing) {
  auto store = NewStore(&ssd_);
  FillAndThinSegmentZero(*store, {1, 2});
  SyncPoints::SetOnce(GetParam(), [&] { ASSERT_TRUE(store->Invalidate(kTenant, 1).ok()); });
  ASSERT_TRUE(store->RunCleanerOnce());
  EXPECT_EQ(store->Load(kTenant, 1).status().code(), absl::StatusCode::kNotFound);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);
  EXPECT_EQ(store->GetStats().cleaner_moves, 1u);
}

// A load during relocation reads the old copy (still valid) and changes
// nothing: the move goes ahead.
TEST_P(CleanerRaceTest, LoadDuringRelocationReadsTheOldCopy) {
  auto store = NewStore(&ssd_);
  FillAndThinSegmentZero(*store, {1, 2});
  SyncPoints::SetOnce(GetParam(), [&] { ExpectPage(*store, kTenant, 1, Version(1, 1), 1); });
  ASSERT_TRUE(store->RunCleanerOnce());
  EXPECT_EQ(store->GetStats().cleaner_moves, 2u);
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);
}

std::string CleanerStepName(const ::testing::TestParamInfo<const char*>& step) {
  static const char* const kNames[] = {"AfterRead", "AfterIo"};
  return kNames[step.index];
}

INSTANTIATE_TEST_SUITE_P(AtEachCleanerStep, CleanerRaceTest, ::testing::ValuesIn(kCleanerPoints),
                         CleanerStepName);

// --- disk full, and faults ---------------------------------------------------------------

// Every segment more than half live: the cleaner can reclaim nothing, so a
// store that needs room is refused (backing_full) and every acknowledged
// page still loads. Thinning the disk out lets the cleaner make room again.
TEST(SegmentLogFullTest, FullDiskRefusesStoresKeepsAckedPagesAndCleaningMakesRoom) {
  MemoryBlockDevice ssd(16);  // 4 segments of 16 KiB, one of them the cleaner's reserve
  auto store = *PageStore::Create({.limits = {.pool_limit_bytes = 64 << 10},
                                   .backing = &ssd,
                                   .start_writeback_worker = false,
                                   .segment_bytes = kSegment});
  std::vector<uint64_t> acked;
  absl::Status refused;
  for (uint64_t p = 0; p < 500 && refused.ok(); ++p) {
    refused = StorePayload(*store, kTenant, p, Version(p, 1), 1);
    if (refused.ok()) acked.push_back(p);
  }
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("backing_full"), std::string::npos) << refused;
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.cleaner_segments, 0u);
  EXPECT_GT(st.pages_on_disk, 16u) << "packed: more pages than blocks";
  for (uint64_t p : acked) ExpectPage(*store, kTenant, p, Version(p, 1), 1);

  // Free most pages that are on disk (the oldest): now stores go through,
  // the cleaner making room.
  for (uint64_t p : acked) {
    if (p % 4 != 0 && p < acked.size() / 2) {
      ASSERT_TRUE(store->Invalidate(kTenant, p).ok());
    }
  }
  // Until the disk is full again: every store acknowledged or refused as
  // backing_full, never lost.
  std::vector<uint64_t> more;
  for (uint64_t p = 1000; p < 1100; ++p) {
    absl::Status s = StorePayload(*store, kTenant, p, Version(p, 1), 1);
    if (!s.ok()) {
      EXPECT_NE(s.message().find("backing_full"), std::string::npos) << s;
      break;
    }
    more.push_back(p);
  }
  EXPECT_GE(more.size(), 8u) << "the cleaner made room for the invalidated pages' bytes";
  EXPECT_GT(store->GetStats().cleaner_segments, 0u);
  for (uint64_t p : acked) {
    if (p % 4 != 0 && p < acked.size() / 2) continue;
    ExpectPage(*store, kTenant, p, Version(p, 1), 1);
  }
  for (uint64_t p : more) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// A failed segment write: the batch's pages stay in the pool and are
// served, the error is sticky, and nothing is published.
TEST(SegmentLogFaultTest, FailedSegmentWriteKeepsTheBatchInThePool) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = NewStore(&ssd);
  for (uint64_t p = 0; p < 10; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
  }
  ssd.FailWrites(0, 1, absl::DataLossError("EIO (injected)"));
  EXPECT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kIoError);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.pool.objects, 10u);
  EXPECT_EQ(st.disk_live_bytes, 0u);
  EXPECT_EQ(st.health.code(), absl::StatusCode::kDataLoss);
  for (uint64_t p = 0; p < 10; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
  EXPECT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kIoError);
  EXPECT_FALSE(store->RunCleanerOnce());
  EXPECT_EQ(ssd.writes(), 1u);
}

// A failed cleaner write: the objects stay where they were, and load.
TEST(SegmentLogFaultTest, FailedCleanerWriteLeavesObjectsInPlace) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = NewStore(&ssd);
  FillAndThinSegmentZero(*store, {1, 2});
  ssd.FailWrites(0, 1, absl::DataLossError("EIO (injected)"));
  EXPECT_FALSE(store->RunCleanerOnce());
  EXPECT_EQ(store->GetStats().cleaner_moves, 0u);
  EXPECT_EQ(store->Health().code(), absl::StatusCode::kDataLoss);
  ExpectPage(*store, kTenant, 1, Version(1, 1), 1);
  ExpectPage(*store, kTenant, 2, Version(2, 1), 1);
}

// Two pages packed into the same block: a failed read of one is DATA_LOSS
// for that page only; the other, and the same page once the device reads
// again, load.
TEST(SegmentLogFaultTest, FailedReadOfOnePackedObjectIsDataLossForThatPageOnly) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = NewStore(&ssd);
  const std::vector<uint8_t> a = Payload(1, 700), b = Payload(2, 800);
  ASSERT_TRUE(StorePayload(*store, kTenant, 10, a, 1).ok());
  ASSERT_TRUE(StorePayload(*store, kTenant, 11, b, 2).ok());
  ASSERT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kWrittenBack);
  ASSERT_EQ(store->GetStats().backing_used_blocks, 1u) << "both in one block";
  ssd.FailReads(0, 1, absl::DataLossError("EIO (injected)"));
  absl::StatusOr<LoadedPage> lost = store->Load(kTenant, 10);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kDataLoss) << lost.status();
  EXPECT_NE(lost.status().message().find("page 10"), std::string::npos) << lost.status();
  ExpectPage(*store, kTenant, 11, b, 2);
  ExpectPage(*store, kTenant, 10, a, 1);
}

// A page whose bytes on disk were overwritten behind the store's back (here:
// the whole device) is DATA_LOSS, not another page's bytes.
TEST(SegmentLogFaultTest, OverwrittenSegmentIsDataLossNotOtherBytes) {
  MemoryBlockDevice ssd(64);
  auto store = NewStore(&ssd);
  ASSERT_TRUE(StorePayload(*store, kTenant, 1, Payload(1, 1500), 1).ok());
  ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  std::vector<uint8_t> junk(64 * kBlockSize, 0xEE);
  ASSERT_TRUE(ssd.WriteBlocks(0, 64, junk.data()).ok());
  EXPECT_EQ(store->Load(kTenant, 1).status().code(), absl::StatusCode::kDataLoss);
}

// --- space-driven cleaning ---------------------------------------------------------------

double DeadFraction(const PageStoreStats& st) {
  return st.disk_held_bytes == 0
             ? 0
             : double(st.disk_held_bytes - st.disk_live_bytes) / double(st.disk_held_bytes);
}

// Every other page invalidated leaves every segment about half live and a
// dead fraction near 0.5. The writeback thread, asked by the invalidates
// (no store comes, none waits), cleans until dead bytes are under
// cleaner_max_dead of what the log holds; every page reads back as itself.
// cleaner_idle_ms 0: the cleaning ends each pass, so QuiesceWriteback
// waits for it.
TEST(SpaceDrivenCleanerTest, HalfDeadSegmentsAreCleanedUnderTheTargetWithoutAStore) {
  constexpr double kMaxDead = 0.1;
  constexpr uint64_t kPages = 1000;
  constexpr uint64_t kBigSegment = 16 * kBlockSize;  // 64 KiB: batch padding stays small
  MemoryBlockDevice ssd(1024);                       // 64 segments
  absl::StatusOr<std::unique_ptr<PageStore>> created =
      PageStore::Create({.backing = &ssd,
                         .segment_bytes = kBigSegment,
                         .cleaner_max_dead = kMaxDead,
                         .cleaner_idle_ms = 0});
  ASSERT_TRUE(created.ok()) << created.status();
  PageStore& store = **created;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
  }
  // No pool limit, so the worker writes nothing back by itself; write
  // everything back here.
  for (int i = 0; i < 100 && store.GetStats().pages_on_disk < kPages; ++i) {
    store.RunWritebackBatch(64);
  }
  PageStoreStats st = store.GetStats();
  ASSERT_EQ(st.pages_on_disk, kPages);
  ASSERT_LT(DeadFraction(st), kMaxDead) << "only batch padding is dead so far";
  const uint64_t held_full = st.disk_held_bytes;

  for (uint64_t p = 1; p < kPages; p += 2) ASSERT_TRUE(store.Invalidate(kTenant, p).ok());
  // Each pass cleans a bounded number of segments; wait for passes (not
  // time) until the target is met. 64 passes are far more than needed.
  for (int i = 0; i < 64 && DeadFraction(store.GetStats()) > kMaxDead; ++i) {
    store.QuiesceWriteback();
  }
  st = store.GetStats();
  EXPECT_LE(DeadFraction(st), kMaxDead)
      << "held " << st.disk_held_bytes << " live " << st.disk_live_bytes;
  EXPECT_GT(st.cleaner_space_segments, 0u);
  EXPECT_EQ(st.cleaner_space_segments, st.cleaner_segments) << "free segments never ran low";
  EXPECT_LT(st.disk_held_bytes, held_full * 6 / 10);
  EXPECT_EQ(st.pages_on_disk, kPages / 2);
  EXPECT_EQ(st.stores, kPages) << "no store was needed to start the cleaner";
  EXPECT_EQ(st.health.code(), absl::StatusCode::kOk);
  for (uint64_t p = 0; p < kPages; p += 2) ExpectPage(store, kTenant, p, Version(p, 1), 1);
  EXPECT_EQ(store.Load(kTenant, 1).status().code(), absl::StatusCode::kNotFound);
}

// A store whose segments are each only a little dead (under the target)
// is left alone: nothing is rewritten to gain nothing.
TEST(SpaceDrivenCleanerTest, SegmentsUnderTheTargetAreNotCleaned) {
  constexpr uint64_t kPages = 400;
  MemoryBlockDevice ssd(1024);
  absl::StatusOr<std::unique_ptr<PageStore>> created =
      PageStore::Create({.backing = &ssd,
                         .segment_bytes = 16 * kBlockSize,
                         .cleaner_max_dead = 0.5,
                         .cleaner_idle_ms = 0});
  ASSERT_TRUE(created.ok()) << created.status();
  PageStore& store = **created;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
  }
  for (int i = 0; i < 100 && store.GetStats().pages_on_disk < kPages; ++i) {
    store.RunWritebackBatch(64);
  }
  for (uint64_t p = 0; p < kPages; p += 4) ASSERT_TRUE(store.Invalidate(kTenant, p).ok());
  store.QuiesceWriteback();
  const PageStoreStats st = store.GetStats();
  EXPECT_EQ(st.cleaner_segments, 0u);
  EXPECT_EQ(st.pages_on_disk, kPages - kPages / 4);
  for (uint64_t p = 1; p < kPages; p += 4) ExpectPage(store, kTenant, p, Version(p, 1), 1);
}

// WriteBackHalfDead: kPages pages written back, every odd one invalidated
// (the log about half dead), then `pool_pages` more pages stored and left
// in the pool.
constexpr uint64_t kHalfDeadPages = 1000;
void WriteBackHalfDead(PageStore& store, uint64_t pool_pages) {
  for (uint64_t p = 0; p < kHalfDeadPages; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
  }
  for (int i = 0; i < 100 && store.GetStats().pages_on_disk < kHalfDeadPages; ++i) {
    store.RunWritebackBatch(64);
  }
  ASSERT_EQ(store.GetStats().pages_on_disk, kHalfDeadPages);
  for (uint64_t p = 0; p < pool_pages; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, 10000 + p, Version(10000 + p, 1), 1).ok());
  }
  for (uint64_t p = 1; p < kHalfDeadPages; p += 2) ASSERT_TRUE(store.Invalidate(kTenant, p).ok());
}

// IdleCleaningUnder is set when a quiet-time cleaning round of the watched
// store ends (the writeback thread's "PageStore::Cleaner:idle-round-end")
// with the set-up complete (`final_pages` stored, i.e. every invalidate of
// WriteBackHalfDead applied) and dead bytes at or under `max_dead`. Rounds
// also run while the set-up still invalidates (the first invalidates put dead
// bytes over the target); one of them may end under the target before the
// rest push it back over, so those do not count (a TSan run once did).
// Wait returns once it is set, or after 30 s (a failure). One case has no
// round ending after the set-up: the last round ended during it and the
// invalidates after it stayed under the target. So when no round has counted
// for a second, Wait quiesces writeback (a round stops between segments for
// the pass; none starts under the target) and takes the state as it is.
// Declare it before the store, so that it outlives the store's writeback
// thread, and Watch before the cleaning can start.
class IdleCleaningUnder {
 public:
  explicit IdleCleaningUnder(double max_dead) : max_dead_(max_dead) {}
  ~IdleCleaningUnder() { SyncPoints::Clear("PageStore::Cleaner:idle-round-end"); }
  void Watch(PageStore& store, uint64_t final_pages) {
    store_ = &store;
    final_pages_ = final_pages;
    SyncPoints::Set("PageStore::Cleaner:idle-round-end", [this] {
      if (!Under(store_->GetStats())) return;
      MutexLock l(&mu_);
      done_ = true;
      cv_.SignalAll();
    });
  }
  bool Wait() {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      {
        MutexLock l(&mu_);
        const absl::Time step = std::min(deadline, absl::Now() + absl::Seconds(1));
        while (!done_ && !cv_.WaitWithDeadline(&mu_, step)) {
        }
        if (done_) return true;
      }
      store_->QuiesceWriteback();
      if (Under(store_->GetStats())) return true;
    }
    return false;
  }

 private:
  bool Under(const PageStoreStats& st) const {
    return st.stored_pages == final_pages_ && DeadFraction(st) <= max_dead_;
  }

  const double max_dead_;
  PageStore* store_ = nullptr;
  uint64_t final_pages_ = 0;
  Mutex mu_;
  CondVar cv_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// While writeback keeps running, dead bytes stay on the disk: rewriting
// live bytes to give back space no one needs yet would take disk bandwidth
// from writeback (the demo's sort: 3.5x write amplification). Here no quiet
// hour ever comes between the passes.
TEST(SpaceDrivenCleanerTest, PassesInBusyWritebackDoNotCleanForSpace) {
  MemoryBlockDevice ssd(1024);
  absl::StatusOr<std::unique_ptr<PageStore>> created =
      PageStore::Create({.backing = &ssd,
                         .segment_bytes = 16 * kBlockSize,
                         .cleaner_max_dead = 0.1,
                         .cleaner_idle_ms = 3600 * 1000});
  ASSERT_TRUE(created.ok()) << created.status();
  PageStore& store = **created;
  WriteBackHalfDead(store, 0);
  for (int i = 0; i < 16; ++i) store.QuiesceWriteback();
  const PageStoreStats st = store.GetStats();
  EXPECT_EQ(st.cleaner_segments, 0u);
  EXPECT_GT(DeadFraction(st), 0.4);
  for (uint64_t p = 0; p < kHalfDeadPages; p += 2) ExpectPage(store, kTenant, p, Version(p, 1), 1);
}

// Once writeback is quiet the cleaning runs by itself (no store, no pass):
// dead bytes come under the target. The wait is for that state, bounded.
TEST(SpaceDrivenCleanerTest, QuietWritebackCleansUnderTheTarget) {
  constexpr double kMaxDead = 0.1;
  ScopedSyncPoints clear_sync_points;
  IdleCleaningUnder cleaned(kMaxDead);
  MemoryBlockDevice ssd(1024);
  absl::StatusOr<std::unique_ptr<PageStore>> created =
      PageStore::Create({.backing = &ssd,
                         .segment_bytes = 16 * kBlockSize,
                         .cleaner_max_dead = kMaxDead,
                         .cleaner_idle_ms = 5});
  ASSERT_TRUE(created.ok()) << created.status();
  PageStore& store = **created;
  cleaned.Watch(store, kHalfDeadPages / 2);
  WriteBackHalfDead(store, 0);
  ASSERT_TRUE(cleaned.Wait()) << "no quiet-time cleaning round brought dead bytes under the target";
  const PageStoreStats st = store.GetStats();
  EXPECT_LE(DeadFraction(st), kMaxDead);
  EXPECT_GT(st.cleaner_space_segments, 0u);
  EXPECT_EQ(st.cleaner_space_segments, st.cleaner_segments) << "free segments never ran low";
  EXPECT_EQ(st.stores, kHalfDeadPages) << "no store was needed to start the cleaner";
  for (uint64_t p = 0; p < kHalfDeadPages; p += 2) ExpectPage(store, kTenant, p, Version(p, 1), 1);
}

// A writeback pass asked for while the quiet-time cleaning runs goes first:
// the cleaner finishes the segment it has read and stops. Forced: the ask
// (a lowered pool limit, which kicks writeback) comes while the cleaner
// holds its first victim's bytes; the pass's first batch then sees exactly
// one segment cleaned, with the log still over the target.
TEST(SpaceDrivenCleanerTest, APassAskedForDuringQuietCleaningGoesFirst) {
  ScopedSyncPoints clear_sync_points;
  constexpr double kMaxDead = 0.1;
  IdleCleaningUnder cleaned(kMaxDead);
  MemoryBlockDevice ssd(4096);
  absl::StatusOr<std::unique_ptr<PageStore>> created =
      PageStore::Create({.backing = &ssd,
                         .segment_bytes = 16 * kBlockSize,
                         .cleaner_max_dead = kMaxDead,
                         // Long enough that no quiet time falls between the
                         // set-up's own writeback batches on a loaded machine
                         // (at 1 ms one did, and the kick came mid-set-up).
                         .cleaner_idle_ms = 100});
  ASSERT_TRUE(created.ok()) << created.status();
  PageStore& store = **created;
  std::atomic<bool> kicked{false};
  std::optional<PageStoreStats> at_pass;
  SyncPoints::SetOnce("PageStore::Cleaner:after-read", [&] {
    ASSERT_TRUE(store.SetLimits({.pool_limit_bytes = 64 * 1024}).ok());
    kicked = true;
  });
  // The test thread's own writeback batches pass here too, before the kick.
  SyncPoints::Set("PageStore::Writeback:after-lru-unlock", [&] {
    if (kicked && !at_pass.has_value()) at_pass = store.GetStats();
  });
  cleaned.Watch(store, kHalfDeadPages / 2 + 100);
  WriteBackHalfDead(store, 100);  // 100 pages left in the pool for the pass
  ASSERT_TRUE(cleaned.Wait()) << "no quiet-time cleaning round brought dead bytes under the target";
  store.QuiesceWriteback();
  ASSERT_TRUE(kicked);
  ASSERT_TRUE(at_pass.has_value()) << "the pass asked for ran";
  EXPECT_EQ(at_pass->cleaner_space_segments, 1u);
  EXPECT_GT(DeadFraction(*at_pass), kMaxDead);
  // The quiet time after the pass finished the job.
  EXPECT_LE(DeadFraction(store.GetStats()), kMaxDead);
  for (uint64_t p = 0; p < kHalfDeadPages; p += 2) ExpectPage(store, kTenant, p, Version(p, 1), 1);
  for (uint64_t p = 0; p < 100; ++p)
    ExpectPage(store, kTenant, 10000 + p, Version(10000 + p, 1), 1);
}

// --- write requests in flight, completed out of order ------------------------------------

// ReverseCompletionDevice keeps every write submitted through its queue in
// flight until the queue is reaped, then performs and completes them in
// reverse order of submission (the last one first), failing the one
// numbered fail_request_ (0-based, counting every request) if set.
class ReverseCompletionDevice final : public BlockDevice {
 public:
  explicit ReverseCompletionDevice(uint64_t blocks) : mem_(blocks) {}

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
  std::string Describe() const override { return "reverse-completion"; }

  std::unique_ptr<BlockWriteQueue> NewWriteQueue(size_t depth) override {
    return std::make_unique<Queue>(this, depth);
  }

  void FailRequest(uint64_t n) { fail_request_ = n; }
  uint64_t requests() const { return requests_; }
  uint64_t max_in_flight() const { return max_in_flight_; }
  uint64_t max_request_blocks() const { return max_request_blocks_; }
  // reversed: reaps that completed two or more writes, last submitted first.
  uint64_t reversed() const { return reversed_; }

 private:
  class Queue final : public BlockWriteQueue {
   public:
    Queue(ReverseCompletionDevice* dev, size_t depth) : dev_(dev), depth_(depth) {}
    absl::Status Submit(uint64_t first, uint64_t count, const void* src, uint64_t tag) override {
      if (pending_.size() >= depth_) return absl::FailedPreconditionError("queue full");
      pending_.push_back({first, count, src, nullptr, tag, dev_->requests_++});
      dev_->max_request_blocks_ = std::max(dev_->max_request_blocks_, count);
      dev_->max_in_flight_ = std::max<uint64_t>(dev_->max_in_flight_, pending_.size());
      return absl::OkStatus();
    }
    // Reads (loads of written-back pages) complete last-first too; they
    // are not counted as requests (the tests here count writes).
    absl::Status SubmitRead(uint64_t first, uint64_t count, void* dst, uint64_t tag) override {
      if (pending_.size() >= depth_) return absl::FailedPreconditionError("queue full");
      pending_.push_back({first, count, nullptr, dst, tag, UINT64_MAX});
      return absl::OkStatus();
    }
    std::vector<Completion> Reap() override {
      std::vector<Completion> out;
      for (auto it = pending_.rbegin(); it != pending_.rend(); ++it) {
        absl::Status st = it->dst != nullptr ? dev_->mem_.ReadBlocks(it->first, it->count, it->dst)
                          : it->number == dev_->fail_request_
                              ? absl::DataLossError("injected EIO")
                              : dev_->mem_.WriteBlocks(it->first, it->count, it->src);
        out.push_back({.tag = it->tag, .status = st});
      }
      if (pending_.size() >= 2) ++dev_->reversed_;
      pending_.clear();
      return out;
    }
    size_t in_flight() const override { return pending_.size(); }
    size_t depth() const override { return depth_; }
    const char* engine() const override { return "reverse-test"; }

   private:
    struct Pending {
      uint64_t first, count;
      const void* src;
      void* dst;  // a read's; null for a write
      uint64_t tag, number;
    };
    ReverseCompletionDevice* const dev_;
    const size_t depth_;
    std::vector<Pending> pending_;
  };

  MemoryBlockDevice mem_;
  // Touched only by the thread flushing (the test's, with no worker).
  uint64_t fail_request_ = UINT64_MAX;
  uint64_t requests_ = 0, max_in_flight_ = 0, reversed_ = 0, max_request_blocks_ = 0;
};

constexpr uint64_t kMiB = 1 << 20;

// The tests below cut flushes into 32 KiB requests (not the default 128
// KiB), so that a round of 64 pages is several requests and its first ones
// start while it is still isolating.
constexpr uint32_t kSmallRequestBytes = 32 * 1024;

// Batches of 64 pages, so a pass over FillThenShrink's 200 pages runs
// several rounds (the pipeline's tests need a round in flight beside the next).
std::unique_ptr<PageStore> NewBigSegmentStore(BlockDevice* backing,
                                              uint32_t request_bytes = kSmallRequestBytes) {
  absl::StatusOr<std::unique_ptr<PageStore>> s =
      PageStore::Create({.backing = backing,
                         .start_writeback_worker = false,
                         .segment_bytes = kMiB,
                         .write_request_bytes = request_bytes,
                         .writeback_batch_pages = 64});
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

// StoreAndWriteBack stores version 1 of pages [0, n) and runs writeback
// rounds of `round_pages` until all n are on disk (fresh, referenced pages:
// the first pick gives second chances); returns the payload bytes stored.
uint64_t StoreAndWriteBack(PageStore& store, uint64_t n, size_t round_pages, int max_rounds) {
  uint64_t bytes = 0;
  for (uint64_t p = 0; p < n; ++p) {
    EXPECT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
    bytes += Version(p, 1).size();
  }
  for (int i = 0; i < max_rounds && store.GetStats().pages_on_disk < n; ++i) {
    store.RunWritebackBatch(round_pages);
  }
  return bytes;
}

// Batches of 100-300 KiB are cut into 32 KiB requests, all in flight at once;
// they complete last-first, and every page is published and reads back as
// itself from where it was packed.
TEST(SegmentWriteQueueTest, RequestsCompletedInReverseOrderPublishEveryPage) {
  ReverseCompletionDevice ssd(512);  // two 1 MiB segments
  auto store = NewBigSegmentStore(&ssd);
  const uint64_t bytes = StoreAndWriteBack(*store, 200, /*round_pages=*/256, /*max_rounds=*/4);
  const PageStoreStats st = store->GetStats();
  ASSERT_EQ(st.pages_on_disk, 200u);
  const uint64_t requests = (bytes + kSmallRequestBytes - 1) / kSmallRequestBytes;
  EXPECT_GE(ssd.requests(), requests);
  // The batches are as large as the LRU's second-chance scan makes them
  // (not all 200 pages at once); each flush's requests are all in flight
  // before the first completes.
  EXPECT_GE(ssd.max_in_flight(), 3u) << "the requests of one flush are in flight together";
  EXPECT_GT(ssd.reversed(), 0u);
  EXPECT_EQ(st.write_engine, "reverse-test");
  EXPECT_EQ(st.max_writes_in_flight, ssd.max_in_flight());
  EXPECT_EQ(st.backing_writes, ssd.requests());
  EXPECT_EQ(ssd.max_request_blocks(), kSmallRequestBytes / kBlockSize);
  EXPECT_EQ(st.health.code(), absl::StatusCode::kOk);
  for (uint64_t p = 0; p < 200; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// With the default request size a round (up to 64 pages of ~1.5 KB here,
// under 128 KiB) is one write request: a round costs one submission.
TEST(SegmentWriteQueueTest, ARoundIsOneRequestAtTheDefaultSize) {
  ReverseCompletionDevice ssd(512);
  auto store = NewBigSegmentStore(&ssd, PageStoreOptions{}.write_request_bytes);
  const uint64_t bytes = StoreAndWriteBack(*store, 200, /*round_pages=*/64, /*max_rounds=*/8);
  const PageStoreStats st = store->GetStats();
  ASSERT_EQ(st.pages_on_disk, 200u);
  ASSERT_EQ(kDefaultWriteRequestBytes, 128u * 1024);
  // Four rounds at least (64 pages each), one request each: fewer requests
  // than 32 KiB pieces of the same bytes would be.
  EXPECT_GE(ssd.requests(), 4u);
  EXPECT_LT(ssd.requests(), (bytes + kSmallRequestBytes - 1) / kSmallRequestBytes);
  EXPECT_GT(ssd.max_request_blocks(), kSmallRequestBytes / kBlockSize);
  EXPECT_LE(ssd.max_request_blocks(), kDefaultWriteRequestBytes / kBlockSize);
  EXPECT_EQ(st.backing_writes, ssd.requests());
  for (uint64_t p = 0; p < 200; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// A round's first 32 KiB request (kSmallRequestBytes) is submitted while the round is still
// isolating (writeback.cc step 2). A store replacing a page whose bytes are
// in that request, while the request is in flight (this device writes only
// at Reap) and the round goes on filling the segment, wins: the round
// publishes every other page, the replaced page's appended bytes stay dead,
// and the page reads back as its new version from the pool.
TEST(SegmentWriteQueueTest, StoreReplacingAPageOfAStartedRequestWins) {
  ScopedSyncPoints clear_sync_points;
  ReverseCompletionDevice ssd(512);
  auto store = NewBigSegmentStore(&ssd);
  constexpr uint64_t kPages = 200;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
  }
  // Page 0 is the coldest: the first page of the first round, so in its
  // first request.
  uint64_t requests_when_replaced = 0;
  SyncPoints::SetOnce("PageStore::Writeback:request-started", [&] {
    requests_when_replaced = ssd.requests();
    ASSERT_TRUE(StorePayload(*store, kTenant, 0, Version(0, 2), 2).ok());
  });
  for (int i = 0; i < 4 && store->GetStats().pages_on_disk < kPages - 1; ++i) {
    store->RunWritebackBatch(256);
  }
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(requests_when_replaced, 1u) << "the store ran while the first request was in flight";
  EXPECT_EQ(st.pages_on_disk, kPages - 1);
  EXPECT_EQ(st.writeback_aborted, 1u) << "page 0 was isolated when the store replaced it";
  uint64_t live = 0;
  for (uint64_t p = 1; p < kPages; ++p) live += Version(p, 1).size();
  EXPECT_EQ(st.disk_live_bytes, live);
  EXPECT_GE(st.disk_held_bytes - st.disk_live_bytes, Version(0, 1).size())
      << "the replaced version's appended bytes count dead";
  EXPECT_EQ(st.stored_pages, kPages);
  EXPECT_EQ(st.pool.objects, 1u);
  const uint64_t reads = st.backing_reads;
  ExpectPage(*store, kTenant, 0, Version(0, 2), 2);
  EXPECT_EQ(store->GetStats().backing_reads, reads) << "the new version is served from the pool";
  for (uint64_t p = 1; p < kPages; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
  // The new version is written back in turn and reads back from disk.
  for (int i = 0; i < 4 && store->GetStats().pages_on_disk < kPages; ++i) {
    store->RunWritebackBatch(256);
  }
  EXPECT_EQ(store->GetStats().pages_on_disk, kPages);
  ExpectPage(*store, kTenant, 0, Version(0, 2), 2);
}

// One request of a flush fails (not the first to complete, not the last):
// the whole round is unpublished, the error is the store's sticky backing
// error, and every page is still served from the pool.
TEST(SegmentWriteQueueTest, OneFailedRequestKeepsTheWholeRoundInThePool) {
  ReverseCompletionDevice ssd(512);
  auto store = NewBigSegmentStore(&ssd);
  for (uint64_t p = 0; p < 200; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
  }
  ssd.FailRequest(2);
  WritebackOutcome last = WritebackOutcome::kAborted;
  for (int i = 0; i < 4 && last != WritebackOutcome::kIoError; ++i) {
    last = store->RunWritebackBatch(256);
  }
  EXPECT_EQ(last, WritebackOutcome::kIoError);
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.written_back_pages, 0u);
  EXPECT_EQ(st.disk_live_bytes, 0u);
  EXPECT_GE(st.backing_write_errors, 1u);
  EXPECT_EQ(st.health.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->RunWritebackBatch(256), WritebackOutcome::kIoError) << "sticky";
  for (uint64_t p = 0; p < 200; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// --- a pass keeps one round in flight while it isolates the next -----------------------

// FillThenShrink stores kPages pages with no limit, then sets a pool limit
// whose low watermark only writing back nearly all of them reaches, so one
// RunWritebackPass runs batch after batch.
constexpr uint64_t kPassPages = 200;
void FillThenShrink(PageStore& store) {
  for (uint64_t p = 0; p < kPassPages; ++p) {
    ASSERT_TRUE(StorePayload(store, kTenant, p, Version(p, 1), 1).ok());
  }
  ASSERT_TRUE(
      store.SetLimits({.pool_limit_bytes = 64 << 10, .high_watermark = 0.6, .low_watermark = 0.5})
          .ok());
}

// In a pass, a batch's round is completed only after the next round's
// writes have started (writeback.cc, the pipeline), so the device writes
// one round while the thread isolates the next. Forced here: when the
// second round has been isolated, the first round's writes are submitted
// and nothing is published yet (this device performs writes only when
// reaped); even pages are stored anew right then, with both rounds'
// pages pending (the limit is lifted for them, so the pass ends after the
// rounds in flight). The new versions win: every page reads back as its
// newest version, and the replaced pages' appended bytes are dead.
TEST(WritebackPipelineTest, ARoundStaysInFlightWhileTheNextIsolatesAndNewerStoresWin) {
  ScopedSyncPoints clear_sync_points;
  ReverseCompletionDevice ssd(512);
  auto store = NewBigSegmentStore(&ssd);
  FillThenShrink(*store);
  int rounds_isolated = 0;
  uint64_t requests_at_second = 0, on_disk_at_second = UINT64_MAX;
  SyncPoints::Set("PageStore::Writeback:pending-unlocked", [&] {
    if (++rounds_isolated != 2) return;
    requests_at_second = ssd.requests();
    on_disk_at_second = store->GetStats().pages_on_disk;
    // Room for the new versions (the pass then ends after the rounds in
    // flight).
    ASSERT_TRUE(store->SetLimits({.pool_limit_bytes = 1 << 30}).ok());
    for (uint64_t p = 0; p < kPassPages; p += 2) {
      ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 2), 2).ok());
    }
  });
  const uint64_t written = store->RunWritebackPass();
  SyncPoints::ClearAll();
  ASSERT_GE(rounds_isolated, 2);
  EXPECT_GE(requests_at_second, 1u) << "the first round's writes were submitted";
  EXPECT_EQ(on_disk_at_second, 0u) << "and the first round was not yet published";
  const PageStoreStats st = store->GetStats();
  EXPECT_GT(written, 0u);
  EXPECT_EQ(st.pages_on_disk, written);
  EXPECT_GT(st.writeback_aborted, 0u) << "replaced pages of the rounds in flight";
  EXPECT_EQ(st.health.code(), absl::StatusCode::kOk);
  for (uint64_t p = 0; p < kPassPages; ++p) {
    const uint64_t v = p % 2 == 0 ? 2 : 1;
    ExpectPage(*store, kTenant, p, Version(p, v), v);
  }
}

// The first round's write fails while the second round's writes are in
// flight: the first round stays in the pool, the second (whose writes
// succeed) is published, the error is sticky and ends the pass, and every
// page is served.
TEST(WritebackPipelineTest, AFailedRoundWithTheNextInFlightLosesNothing) {
  ReverseCompletionDevice ssd(512);
  auto store = NewBigSegmentStore(&ssd);
  FillThenShrink(*store);
  ssd.FailRequest(0);  // the first request of the first round
  store->RunWritebackPass();
  const PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.health.code(), absl::StatusCode::kDataLoss);
  EXPECT_GE(st.backing_write_errors, 1u);
  EXPECT_GT(st.pages_on_disk, 0u) << "the round in flight beside the failed one was published";
  EXPECT_LT(st.pages_on_disk, kPassPages);
  EXPECT_EQ(st.pages_on_disk + st.pool.objects, kPassPages);
  EXPECT_EQ(store->RunWritebackBatch(64), WritebackOutcome::kIoError) << "sticky";
  for (uint64_t p = 0; p < kPassPages; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// A pass whose first batch is enough to reach the low watermark isolates
// no second batch, although the first is still in flight (its pages still
// in the pool) when the pass looks again: the pipeline must not make the
// pass overshoot by a round.
TEST(WritebackPipelineTest, APassStopsIsolatingOnceTheRoundInFlightIsEnough) {
  ScopedSyncPoints clear_sync_points;
  MemoryBlockDevice ssd(512);
  auto store = NewBigSegmentStore(&ssd);
  for (uint64_t p = 0; p < kPassPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
  }
  const PageStoreStats before = store->GetStats();
  const uint64_t in_use = before.pool.mem_used_total - before.pool.mem_cached;
  // 30 KB over the low watermark: one batch (up to 64 pages, ~1.5 KB each)
  // is plenty.
  const uint64_t low = in_use - 30 * 1024;
  ASSERT_TRUE(
      store->SetLimits({.pool_limit_bytes = low * 2, .high_watermark = 0.99, .low_watermark = 0.5})
          .ok());
  int rounds_isolated = 0;
  SyncPoints::Set("PageStore::Writeback:pending-unlocked", [&] { ++rounds_isolated; });
  const uint64_t written = store->RunWritebackPass();
  SyncPoints::ClearAll();
  EXPECT_EQ(rounds_isolated, 1);
  EXPECT_GT(written, 0u);
  EXPECT_EQ(store->GetStats().pages_on_disk, written);
  for (uint64_t p = 0; p < kPassPages; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

// WriteCountingDevice: a MemoryBlockDevice that counts the writes of each
// block (its queue is the synchronous default: one WriteBlocks a request).
class WriteCountingDevice final : public BlockDevice {
 public:
  explicit WriteCountingDevice(uint64_t blocks) : mem_(blocks), writes_(blocks) {}
  absl::Status ReadBlock(uint64_t block, void* dst) override { return mem_.ReadBlock(block, dst); }
  absl::Status WriteBlock(uint64_t block, const void* src) override {
    return WriteBlocks(block, 1, src);
  }
  absl::Status ReadBlocks(uint64_t first, uint64_t count, void* dst) override {
    return mem_.ReadBlocks(first, count, dst);
  }
  absl::Status WriteBlocks(uint64_t first, uint64_t count, const void* src) override {
    for (uint64_t b = first; b < first + count && b < writes_.size(); ++b) ++writes_[b];
    return mem_.WriteBlocks(first, count, src);
  }
  absl::Status Sync() override { return absl::OkStatus(); }
  uint64_t block_count() const override { return mem_.block_count(); }
  std::string Describe() const override { return "write-counting"; }
  // Touched only by the thread flushing (the test's, with no worker).
  uint64_t max_writes_of_a_block() const {
    return *std::max_element(writes_.begin(), writes_.end());
  }

 private:
  MemoryBlockDevice mem_;
  std::vector<uint64_t> writes_;
};

// A segment writeback left open (parked, part full) is appended to by the
// cleaner next: its flush writes only what the cleaner appended, never the
// blocks writeback already wrote (each block of the log is written once
// until its segment is freed).
TEST(WritebackPipelineTest, TheNextAppenderOfAParkedSegmentWritesOnlyItsOwnBlocks) {
  WriteCountingDevice ssd(64);
  auto store = NewStore(&ssd);     // 16 KiB segments
  constexpr uint64_t kPages = 12;  // ~18 KB: one segment full, the next part full
  uint64_t bytes = 0;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Version(p, 1), 1).ok());
    bytes += Version(p, 1).size();
  }
  ASSERT_GT(bytes, kSegment);
  for (int i = 0; i < 4 && store->GetStats().pages_on_disk < kPages; ++i) {
    store->RunWritebackBatch(64);
  }
  ASSERT_EQ(store->GetStats().pages_on_disk, kPages);
  ASSERT_EQ(ssd.max_writes_of_a_block(), 1u);
  // The coldest pages went first, into the full segment: most of it dies.
  for (uint64_t p = 0; p < 7; ++p) ASSERT_TRUE(store->Invalidate(kTenant, p).ok());
  ASSERT_TRUE(store->RunCleanerOnce());
  const PageStoreStats st = store->GetStats();
  EXPECT_GT(st.cleaner_moves, 0u);
  EXPECT_EQ(ssd.max_writes_of_a_block(), 1u) << "a block was written twice";
  for (uint64_t p = 7; p < kPages; ++p) ExpectPage(*store, kTenant, p, Version(p, 1), 1);
}

TEST(SegmentLogOptionsTest, BadOptionsAreRefused) {
  MemoryBlockDevice ssd(64);
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .segment_bytes = 5000}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .segment_bytes = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .cleaner_threshold = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .cleaner_threshold = 1.5}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .cleaner_max_dead = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .cleaner_max_dead = 1.01}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .write_queue_depth = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (uint32_t bytes : {0u, 2048u, 4097u, (16u << 20) + 4096}) {
    EXPECT_EQ(PageStore::Create({.backing = &ssd, .write_request_bytes = bytes}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bytes;
  }
  EXPECT_TRUE(PageStore::Create({.backing = &ssd, .write_request_bytes = 4096}).ok());
  EXPECT_EQ(PageStore::Create({.backing = &ssd, .writeback_batch_pages = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      PageStore::Create({.backing = &ssd, .writeback_batch_pages = kMaxWritebackBatchPages + 1})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      PageStore::Create({.backing = &ssd, .writeback_batch_pages = kMaxWritebackBatchPages}).ok());
  // A device smaller than a segment is one segment.
  auto store = PageStore::Create({.backing = &ssd, .segment_bytes = 1 << 20});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->GetStats().segments, 1u);
  EXPECT_EQ((*store)->GetStats().segment_bytes, 64 * kBlockSize);
}

}  // namespace
}  // namespace farswap::server
