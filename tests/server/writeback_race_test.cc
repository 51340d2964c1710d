// The seed interleavings (docs/invariants.md rules 1-2): a store, invalidate or load
// of a key lands at each step of that key's writeback. Each is forced with a
// sync point whose callback runs on the writeback thread itself at a moment
// when it holds no lock, so no test sleeps or races.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
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

constexpr uint32_t kTenant = 4;
constexpr uint64_t kPage = 77;

// Every writeback step at which the writeback thread holds no lock.
const char* const kWritebackPoints[] = {
    "PageStore::Writeback:after-lru-unlock",
    "PageStore::Writeback:pending-unlocked",
    "PageStore::Writeback:after-io",
};

class WritebackRaceTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<PageStore>> s =
        PageStore::Create({.backing = &ssd_, .start_writeback_worker = false});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
    ASSERT_TRUE(StorePayload(*store_, kTenant, kPage, v1_, 1).ok());
  }

  // Writeback of a page that was not written back meanwhile.
  bool StepIsBeforeValidation() const {
    return std::string(GetParam()) == "PageStore::Writeback:after-lru-unlock";
  }

  ScopedSyncPoints clear_sync_points_;
  MemoryBlockDevice ssd_{64};
  std::unique_ptr<PageStore> store_;
  std::vector<uint8_t> v1_ = Payload(1, 1500);
  std::vector<uint8_t> v2_ = Payload(2, 900);
};

TEST_P(WritebackRaceTest, StoreDuringWritebackKeepsNewestData) {
  SyncPoints::SetOnce(GetParam(),
                      [&] { ASSERT_TRUE(StorePayload(*store_, kTenant, kPage, v2_, 2).ok()); });
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kAborted);
  ExpectPage(*store_, kTenant, kPage, v2_, 2);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.backing_used_blocks, 0u) << "the aborted writeback's block was not freed";
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.stored_pages, 1u);
  EXPECT_EQ(st.pool.objects, 1u);
  EXPECT_EQ(st.pool.compr_data_size, v2_.size());

  // The newest version itself can then be written back and read from disk.
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  ExpectPage(*store_, kTenant, kPage, v2_, 2);
  EXPECT_EQ(store_->GetStats().pages_on_disk, 1u);
  EXPECT_EQ(store_->GetStats().pool.objects, 0u);
}

TEST_P(WritebackRaceTest, InvalidateDuringWritebackLeavesNothing) {
  SyncPoints::SetOnce(GetParam(), [&] { ASSERT_TRUE(store_->Invalidate(kTenant, kPage).ok()); });
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kAborted);
  EXPECT_EQ(store_->Load(kTenant, kPage).status().code(), absl::StatusCode::kNotFound);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.backing_used_blocks, 0u) << "the aborted writeback's block was not freed";
  EXPECT_EQ(st.stored_pages, 0u);
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.pool.objects, 0u);
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kNothingToWrite);
}

TEST_P(WritebackRaceTest, LoadDuringWritebackReturnsTheData) {
  SyncPoints::SetOnce(GetParam(), [&] { ExpectPage(*store_, kTenant, kPage, v1_, 1); });
  WritebackOutcome outcome = store_->RunWritebackOnce();
  // Before the entry is marked, a load only sets its referenced bit and the
  // writeback goes ahead; once it is pending, a load cancels it (the page is
  // hot) and the writeback gives its block back.
  EXPECT_EQ(outcome,
            StepIsBeforeValidation() ? WritebackOutcome::kWrittenBack : WritebackOutcome::kAborted);
  ExpectPage(*store_, kTenant, kPage, v1_, 1);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.backing_used_blocks, st.pages_on_disk);
  EXPECT_EQ(st.stored_pages, 1u);
}

// A scrub's load is not an access: at every step it reads the page (from
// the pool: the object stays until the writeback publishes) and the
// writeback goes ahead, where a load that uses the page would cancel it.
TEST_P(WritebackRaceTest, AScrubDuringWritebackLetsItFinish) {
  SyncPoints::SetOnce(GetParam(), [&] {
    ExpectPage(*store_, kTenant, kPage, v1_, 1, PageStore::LoadKind::kScrub);
  });
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 1u);
  EXPECT_EQ(st.pool.objects, 0u);
  ExpectPage(*store_, kTenant, kPage, v1_, 1, PageStore::LoadKind::kScrub);  // from the disk
  EXPECT_EQ(store_->GetStats().pages_on_disk, 1u);
}

// The ABA case: the page is invalidated and stored again with new data
// while writeback holds a pointer to the old entry. The new entry may well
// reuse the old one's address; only the generation tells them apart.
TEST_P(WritebackRaceTest, WritebackRacingAReplaceDoesNotPublishTheOldGeneration) {
  SyncPoints::SetOnce(GetParam(), [&] {
    ASSERT_TRUE(store_->Invalidate(kTenant, kPage).ok());
    ASSERT_TRUE(StorePayload(*store_, kTenant, kPage, v2_, 2).ok());
  });
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kAborted);
  ExpectPage(*store_, kTenant, kPage, v2_, 2);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.backing_used_blocks, 0u);
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.written_back_pages, 0u);
}

std::string StepName(const ::testing::TestParamInfo<const char*>& step) {
  static const char* const kNames[] = {"AfterLruUnlock", "PendingUnlocked", "AfterIo"};
  return kNames[step.index];
}

INSTANTIATE_TEST_SUITE_P(AtEachWritebackStep, WritebackRaceTest,
                         ::testing::ValuesIn(kWritebackPoints), StepName);

// After the publish, before the round's pool objects are freed (one
// FreeMany per round, with no lock held): the entry already says ON_DISK,
// so what comes in then sees the disk copy, and the old pool object is
// still freed exactly once.
class WritebackBeforeFreeTest : public WritebackRaceTest {};

TEST_F(WritebackBeforeFreeTest, ALoadReadsTheDiskCopyAndThePoolObjectIsFreedOnce) {
  PageStoreStats during;
  SyncPoints::SetOnce("PageStore::Writeback:before-free", [&] {
    ExpectPage(*store_, kTenant, kPage, v1_, 1);  // from the disk
    during = store_->GetStats();
  });
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  EXPECT_EQ(during.pages_on_disk, 1u);
  EXPECT_EQ(during.pool.objects, 1u) << "freed before the sync point: the test tests nothing";
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 1u);
  EXPECT_EQ(st.pool.objects, 0u);
  EXPECT_EQ(st.pool.compr_data_size, 0u);
  EXPECT_EQ(st.pool.orig_data_size, 0u);
  EXPECT_EQ(st.written_back_pages, 1u);
  ExpectPage(*store_, kTenant, kPage, v1_, 1);
}

TEST_F(WritebackBeforeFreeTest, AStoreReplacesThePublishedPage) {
  SyncPoints::SetOnce("PageStore::Writeback:before-free",
                      [&] { ASSERT_TRUE(StorePayload(*store_, kTenant, kPage, v2_, 2).ok()); });
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  ExpectPage(*store_, kTenant, kPage, v2_, 2);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 0u) << "the replaced disk copy is still counted";
  EXPECT_EQ(st.stored_pages, 1u);
  EXPECT_EQ(st.pool.objects, 1u) << "v1's pool object leaked, or v2's was freed";
  EXPECT_EQ(st.pool.compr_data_size, v2_.size());
  EXPECT_EQ(st.pool.orig_data_size, 4096u);
}

TEST_F(WritebackBeforeFreeTest, AnInvalidateLeavesNothing) {
  uint64_t on_disk_after_invalidate = 1;
  SyncPoints::SetOnce("PageStore::Writeback:before-free", [&] {
    ASSERT_TRUE(store_->Invalidate(kTenant, kPage).ok());
    on_disk_after_invalidate = store_->GetStats().pages_on_disk;
  });
  EXPECT_EQ(store_->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  EXPECT_EQ(on_disk_after_invalidate, 0u) << "pages_on_disk must not pass below zero";
  EXPECT_EQ(store_->Load(kTenant, kPage).status().code(), absl::StatusCode::kNotFound);
  PageStoreStats st = store_->GetStats();
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.stored_pages, 0u);
  EXPECT_EQ(st.pool.objects, 0u);
  EXPECT_EQ(st.pool.orig_data_size, 0u);
}

// Two writebacks of the same entry: a load cancels the first while it is
// writing, a second one writes the page back completely, then the first
// comes back. It must neither publish nor undo the second one's work.
TEST(WritebackTicketTest, CancelledWritebackDoesNotUndoALaterOne) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(8);
  // Two segments: the inner writeback needs its own while the outer one
  // holds the first.
  auto store = *PageStore::Create(
      {.backing = &ssd, .start_writeback_worker = false, .segment_bytes = 4 * kBlockSize});
  std::vector<uint8_t> v1 = Payload(1, 2500);
  ASSERT_TRUE(StorePayload(*store, 1, 1, v1, 1).ok());
  WritebackOutcome inner = WritebackOutcome::kNothingToWrite;
  SyncPoints::SetOnce("PageStore::Writeback:after-io", [&] {
    ExpectPage(*store, 1, 1, v1, 1);  // cancels the pending writeback
    inner = store->RunWritebackOnce();
  });
  EXPECT_EQ(store->RunWritebackOnce(), WritebackOutcome::kAborted);
  EXPECT_EQ(inner, WritebackOutcome::kWrittenBack);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.pages_on_disk, 1u);
  EXPECT_EQ(st.backing_used_blocks, 1u) << "the outer writeback's segment leaked";
  EXPECT_EQ(st.free_segments, 1u);
  EXPECT_EQ(st.pool.objects, 0u);
  ExpectPage(*store, 1, 1, v1, 1);
}

// Store between allocation and publish: a concurrent writeback cannot see
// the half-published entry (it is not on the LRU yet), and the store that
// publishes last wins.
TEST(StorePublishTest, WritebackBeforePublishSeesOnlyTheOldVersion) {
  ScopedSyncPoints clear;
  MemoryBlockDevice ssd(8);
  auto store = *PageStore::Create({.backing = &ssd, .start_writeback_worker = false});
  std::vector<uint8_t> v1 = Payload(1, 700), v2 = Payload(2, 800);
  ASSERT_TRUE(StorePayload(*store, 1, 1, v1, 1).ok());
  WritebackOutcome during = WritebackOutcome::kNothingToWrite;
  SyncPoints::SetOnce("PageStore::Store:before-publish",
                      [&] { during = store->RunWritebackOnce(); });
  ASSERT_TRUE(StorePayload(*store, 1, 1, v2, 2).ok());
  EXPECT_EQ(during, WritebackOutcome::kWrittenBack);  // v1 went to disk...
  ExpectPage(*store, 1, 1, v2, 2);                    // ...and v2 replaced it
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.backing_used_blocks, 0u) << "the replaced version's block was not freed";
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.pool.objects, 1u);
}

TEST(WritebackIoErrorTest, FailedWriteKeepsThePageLoadableAndTheErrorSticky) {
  MemoryBlockDevice mem(16);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = *PageStore::Create({.backing = &ssd, .start_writeback_worker = false});
  std::vector<uint8_t> v1 = Payload(1, 3000), v2 = Payload(2, 3000);
  ASSERT_TRUE(StorePayload(*store, 1, 1, v1, 1).ok());
  ASSERT_TRUE(StorePayload(*store, 1, 2, v2, 2).ok());
  ssd.FailWrites(0, 1, absl::DataLossError("EIO (injected)"));

  EXPECT_EQ(store->RunWritebackOnce(), WritebackOutcome::kIoError);
  ExpectPage(*store, 1, 1, v1, 1);
  ExpectPage(*store, 1, 2, v2, 2);
  absl::Status health = store->Health();
  EXPECT_EQ(health.code(), absl::StatusCode::kDataLoss) << health;
  EXPECT_NE(health.message().find("EIO"), std::string::npos) << health;

  // Sticky: the device would work again, but writeback stays off and the
  // first error stays reported.
  EXPECT_EQ(store->RunWritebackOnce(), WritebackOutcome::kIoError);
  EXPECT_EQ(ssd.writes(), 1u);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.backing_write_errors, 1u);
  EXPECT_EQ(st.backing_used_blocks, 0u);
  EXPECT_EQ(st.pages_on_disk, 0u);
  EXPECT_EQ(st.pool.objects, 2u);
  EXPECT_EQ(st.health.code(), absl::StatusCode::kDataLoss);
  ExpectPage(*store, 1, 1, v1, 1);
}

TEST(WritebackIoErrorTest, PoolFullAfterAnIoErrorIsRejectedAsIoError) {
  MemoryBlockDevice mem(64);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = *PageStore::Create(
      {.limits = {.pool_limit_bytes = 32 << 10}, .backing = &ssd, .start_writeback_worker = false});
  ssd.FailWrites(0, FaultInjectingBlockDevice::kForever, absl::DataLossError("EIO"));
  absl::Status refused;
  uint64_t p = 0;
  for (; p < 100 && refused.ok(); ++p) refused = StorePayload(*store, 1, p, Payload(p, 3000), p);
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("io_error"), std::string::npos) << refused;
  EXPECT_EQ(store->GetStats().rejects[int(RejectReason::kIoError)], 1u);
  for (uint64_t q = 0; q + 1 < p; ++q) ExpectPage(*store, 1, q, Payload(q, 3000), q);
}

TEST(WritebackIoErrorTest, FailedDiskReadIsDataLossForThatPageOnly) {
  MemoryBlockDevice mem(16);
  FaultInjectingBlockDevice ssd(&mem);
  auto store = *PageStore::Create({.backing = &ssd, .start_writeback_worker = false});
  std::vector<uint8_t> a = Payload(1, 1234), b = Payload(2, 4096);
  ASSERT_TRUE(StorePayload(*store, 1, 10, a, 1).ok());
  ASSERT_TRUE(StorePayload(*store, 1, 11, b, 2).ok());
  ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  ASSERT_EQ(store->GetStats().pages_on_disk, 2u);

  ssd.FailReads(0, 1, absl::DataLossError("EIO (injected)"));
  absl::StatusOr<LoadedPage> lost = store->Load(1, 10);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kDataLoss) << lost.status();
  EXPECT_NE(lost.status().message().find("page 10"), std::string::npos) << lost.status();
  ExpectPage(*store, 1, 11, b, 2);
  EXPECT_EQ(store->Health().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->GetStats().backing_read_errors, 1u);
  // The entry was kept: once the device reads again, so does the page.
  ExpectPage(*store, 1, 10, a, 1);
}

TEST(WritebackIoErrorTest, CorruptBlockIsDataLoss) {
  MemoryBlockDevice ssd(4);
  auto store = *PageStore::Create({.backing = &ssd, .start_writeback_worker = false});
  ASSERT_TRUE(StorePayload(*store, 1, 1, Payload(1, 100), 1).ok());
  ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  std::vector<uint8_t> junk(kBlockSize, 0xEE);
  for (uint64_t blk = 0; blk < 4; ++blk) ASSERT_TRUE(ssd.WriteBlock(blk, junk.data()).ok());
  EXPECT_EQ(store->Load(1, 1).status().code(), absl::StatusCode::kDataLoss);
}

TEST(WritebackSecondChanceTest, ReferencedPagesAreWrittenBackLast) {
  MemoryBlockDevice ssd(8);
  auto store = *PageStore::Create({.backing = &ssd, .start_writeback_worker = false});
  for (uint64_t p = 0; p < 3; ++p) ASSERT_TRUE(StorePayload(*store, 1, p, Payload(p, 500), p).ok());
  // One sweep clears every referenced bit; page 0 (the oldest) goes first.
  ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  ExpectPage(*store, 1, 1, Payload(1, 500), 1);  // page 1 is referenced again
  ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  // Page 2 went before page 1: loading 2 now reads the disk, loading 1 does not.
  uint64_t reads = store->GetStats().backing_reads;
  ExpectPage(*store, 1, 2, Payload(2, 500), 2);
  EXPECT_EQ(store->GetStats().backing_reads, reads + 1);
  ExpectPage(*store, 1, 1, Payload(1, 500), 1);
  EXPECT_EQ(store->GetStats().backing_reads, reads + 1);
  EXPECT_GT(store->GetStats().writeback_second_chances, 0u);
}

// ProbingBlockDevice writes synchronously (the default BlockWriteQueue: a
// Submit is the write itself, as wherever io_uring is unavailable). On its
// first write it runs `probe` on another thread and waits, for kProbeBound
// at most, for the probe to end: a writer that holds a lock the probe needs
// across the write shows as a probe that did not end in time (rather than
// as a hung test).
class ProbingBlockDevice final : public BlockDevice {
 public:
  static constexpr absl::Duration kProbeBound = absl::Seconds(20);

  explicit ProbingBlockDevice(uint64_t blocks) : disk_(blocks) {}
  ~ProbingBlockDevice() override {
    if (prober_.joinable()) prober_.join();
  }
  void SetProbe(std::function<void()> probe) { probe_ = std::move(probe); }
  // ProbeEndedInTime: the probe ran and ended within kProbeBound.
  bool ProbeEndedInTime() {
    MutexLock l(&mu_);
    return ended_in_time_;
  }
  void JoinProbe() {
    if (prober_.joinable()) prober_.join();
  }

  absl::Status ReadBlock(uint64_t block, void* dst) override { return disk_.ReadBlock(block, dst); }
  absl::Status WriteBlock(uint64_t block, const void* src) override {
    if (probe_ && !prober_.joinable()) {
      prober_ = std::thread([this] {
        probe_();
        MutexLock l(&mu_);
        ended_ = true;
        cv_.SignalAll();
      });
      MutexLock l(&mu_);
      const absl::Time deadline = absl::Now() + kProbeBound;
      while (!ended_ && absl::Now() < deadline) cv_.WaitWithDeadline(&mu_, deadline);
      ended_in_time_ = ended_;
    }
    return disk_.WriteBlock(block, src);
  }
  absl::Status Sync() override { return disk_.Sync(); }
  uint64_t block_count() const override { return disk_.block_count(); }
  std::string Describe() const override { return "probing " + disk_.Describe(); }

 private:
  MemoryBlockDevice disk_;
  std::function<void()> probe_;  // set before the first write
  std::thread prober_;           // the writing thread's only
  Mutex mu_;
  CondVar cv_;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_in_time_ ABSL_GUARDED_BY(mu_) = false;
};

// Writeback starts each whole write request as soon as its bytes are in the
// segment buffer, while it is still isolating the round's candidates. Where
// writes are synchronous, starting one is the write itself, and no key lock
// may be held across it: a store or load of a key on the same lock stripe
// (on a node's I/O thread, run to completion) would wait for the disk, and
// with a disk that stalls, for ever (data_plane_queue_test hung so, once in
// about two thousand runs, in FillPool's TryStore while writeback wrote to
// its gated disk).
TEST(WritebackLockTest, NoKeyLockIsHeldWhileARequestIsWritten) {
  ProbingBlockDevice ssd(4096);
  // 40 pages of 3000 bytes in 32 KiB requests (not the default 128 KiB):
  // the batch's first request is started mid-round, right after the
  // eleventh candidate is appended.
  auto store = *PageStore::Create(
      {.backing = &ssd, .start_writeback_worker = false, .write_request_bytes = 32 * 1024});
  constexpr uint64_t kPages = 40;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, kTenant, p, Payload(p, 3000), p).ok());
  }
  std::vector<bool> answered(kPages, false);
  ssd.SetProbe([&] {
    // Every key, so whichever stripe a lock held across the write covers.
    for (uint64_t p = 0; p < kPages; ++p) answered[p] = store->TryLoad(kTenant, p).has_value();
  });
  store->RunWritebackBatch(kPages);
  ssd.JoinProbe();
  EXPECT_TRUE(ssd.ProbeEndedInTime()) << "a key lock was held across a synchronous write";
  for (uint64_t p = 0; p < kPages; ++p) {
    EXPECT_TRUE(answered[p]) << p << ": in the pool or pending, so a TryLoad answers";
    ExpectPage(*store, kTenant, p, Payload(p, 3000), p);
  }
}

}  // namespace
}  // namespace farswap::server
