// region_internals_test: the region's fault paths driven directly, white
// box (RegionTestPeer is a friend of Region and RegionImpl), where the
// interleaving to force involves a fault message the kernel would only
// deliver by chance.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"
#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"
#include "region_impl.h"
#include "region_test_util.h"

namespace farswap {

constexpr uint64_t kPage = 4096;

class RegionTestPeer {
 public:
  // ServeStaleMissingFault hands the region a MISSING fault message for
  // `page` as a fault thread would, from the calling thread: what a message
  // read before another thread's fault installed the page looks like.
  static void ServeStaleMissingFault(Region& region, uint64_t page) {
    RegionImpl& impl = *region.impl_;
    std::vector<uint8_t> buf(kPage);
    RegionImpl::ParkedFault f{page, /*write=*/false, static_cast<uint32_t>(syscall(SYS_gettid)),
                              std::chrono::steady_clock::now()};
    impl.HandleMissing(f, buf, /*may_park=*/false);
  }
  // WaitForState: the faulting thread runs on from the install's wake-up,
  // before its fault thread publishes the page's new state.
  static void WaitForState(Region& region, uint64_t page, uint8_t state) {
    while (region.impl_->state_[page].load() != state) std::this_thread::yield();
  }
  // DropsByMove: the region has a drop area (drop_by_move, Linux 6.8+).
  static bool DropsByMove(const Region& region) { return region.impl_->drop_area_ != nullptr; }
};

namespace {

using testing::FillPage;
using testing::MakeRegion;
using testing::PageMatches;

// A fault thread holding a stale MISSING message reads the page's state
// (resident), and before it looks at the page an evictor stores it, drops
// it (the region's own MADV_DONTNEED) and publishes kRemote. The page is
// missing now because its contents live remotely, not because the program
// zapped it: the fault must not fill it with zeros. (CI once saw a hot page
// read as zeros under the many-threads test; this is that interleaving.)
TEST(RegionInternalsTest, StaleMissingFaultOnAPageEvictedMeanwhileKeepsItsContents) {
  MemoryPageBackend backend;
  auto r = MakeRegion(&backend, 16, 8, {.evict_batch = 1, .prefetch = false});
  ASSERT_NE(r, nullptr);
  constexpr uint64_t kVictim = 3;
  uint8_t* victim = r->data() + kVictim * kPage;
  FillPage(victim, kVictim, 7);
  RegionTestPeer::WaitForState(*r, kVictim, kDirty);
  bool evicted_in_between = false;
  SyncPoints::SetOnce("Region::MissingFault:resident-before-look", [&] {
    // Another thread: the evictor's MADV_DONTNEED waits for a fault thread
    // to read its REMOVE event, and this one is not a fault thread anyway.
    std::thread evictor(
        [&] { ASSERT_TRUE(r->Advise(kVictim * kPage, kPage, Advice::kCold).ok()); });
    evictor.join();
    evicted_in_between = r->stats().evictions == 1;
  });
  RegionTestPeer::ServeStaleMissingFault(*r, kVictim);
  SyncPoints::ClearAll();
  ASSERT_TRUE(evicted_in_between) << "evictions " << r->stats().evictions
                                  << ", last error: " << r->stats().last_error;
  EXPECT_TRUE(PageMatches(victim, kVictim, 7))
      << "first word now " << *reinterpret_cast<uint64_t*>(victim);
  EXPECT_EQ(r->stats().sigbus_delivered, 0u);
}

// The program munmaps part of a run the evictor is about to drop by
// madvise (drop_by_move off, or a page it could not move). The
// evictor's MADV_DONTNEED over the run then fails ENOMEM, but the kernel
// still zaps the part that is mapped and raises a REMOVE event for it. That
// event is the evictor's, not the program's: the mapped pages keep their
// remote copies and read back as written. (Seen as a hang of
// RegionTest.MunmapOfPartOfTheRegionLeavesTheRestWorking: the page next to
// the hole was forgotten — its remote copy dropped — as if the program had
// zapped it.)
TEST(RegionInternalsTest, DropOverARunPartlyUnmappedMeanwhileKeepsTheMappedPages) {
  MemoryPageBackend backend;
  // 16 pages written, far under the budget: nothing is evicted but the run.
  constexpr uint64_t kPages = 64, kWritten = 16, kRunFirst = 4, kRunLen = 8, kHoleLen = 4;
  auto r = MakeRegion(&backend, kPages, kPages,
                      {.evict_batch = kRunLen, .prefetch = false, .drop_by_move = false});
  ASSERT_NE(r, nullptr);
  for (uint64_t p = 0; p < kWritten; ++p) FillPage(r->data() + p * kPage, p, 1);
  for (uint64_t p = 0; p < kWritten; ++p) RegionTestPeer::WaitForState(*r, p, kDirty);
  uint8_t* hole = r->data() + kRunFirst * kPage;
  int unmapped = -1;
  SyncPoints::SetOnce("Region::Evict:before-madvise", [&] {
    // Returns once a fault thread has read the UNMAP event.
    unmapped = munmap(hole, kHoleLen * kPage);
  });
  ASSERT_TRUE(r->Advise(kRunFirst * kPage, kRunLen * kPage, Advice::kCold).ok());
  SyncPoints::ClearAll();
  ASSERT_EQ(unmapped, 0) << "the sync point was not reached";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r->stats().pages_unmapped < kHoleLen && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();  // a bounded wait for the UNMAP event's handling, not a sleep
  }
  EXPECT_EQ(r->stats().pages_unmapped, kHoleLen);
  EXPECT_EQ(r->stats().pages_removed, 0u) << "the evictor's own drop was taken for the program's";
  for (uint64_t p = kRunFirst + kHoleLen; p < kRunFirst + kRunLen; ++p) {
    EXPECT_TRUE(PageMatches(r->data() + p * kPage, p, 1))
        << "page " << p << ": first word now "
        << *reinterpret_cast<uint64_t*>(r->data() + p * kPage);
  }
  EXPECT_EQ(backend.stats().pages, kRunLen - kHoleLen);  // the hole's copies are gone
}

// The program drops (MADV_DONTNEED) one page of a run the evictor is about
// to drop, on either drop path. By madvise (drop_by_move off) both REMOVE events name that page,
// the program's first. The program's event must forget that page only, and the evictor's must not
// be taken for the program's: the rest of the run keeps its remote copies. (Matching events whole,
// the program's one-page event passed for the evictor's, whose own event then forgot the whole run:
// pages the program had written read as zeros. RegionTest.MadviseDontneedRacingFaultsAnd-
// EvictionsKeepsEveryPageRight failed in 1 of 4 runs beside a busy loop.)
// By move, the program's event is the only one, and the move, finding the
// page already missing, moves the others.
class RegionInternalsDropTest : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(DropPaths, RegionInternalsDropTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ByMove" : "ByMadvise";
                         });

TEST_P(RegionInternalsDropTest, ProgramDropOfOnePageOfARunBeingDroppedForgetsThatPageOnly) {
  MemoryPageBackend backend;
  constexpr uint64_t kPages = 64, kWritten = 16, kRunFirst = 4, kRunLen = 8, kDropped = 6;
  auto r = MakeRegion(&backend, kPages, kPages,
                      {.evict_batch = kRunLen, .prefetch = false, .drop_by_move = GetParam()});
  ASSERT_NE(r, nullptr);
  if (GetParam() && !RegionTestPeer::DropsByMove(*r)) {
    GTEST_SKIP() << "this kernel has no UFFDIO_MOVE";
  }
  for (uint64_t p = 0; p < kWritten; ++p) FillPage(r->data() + p * kPage, p, 1);
  for (uint64_t p = 0; p < kWritten; ++p) RegionTestPeer::WaitForState(*r, p, kDirty);
  int dropped = -1;
  // By madvise, the run is listed as the evictor's here; the program's
  // madvise returns once a fault thread has read its REMOVE event, queued
  // before the evictor's own.
  SyncPoints::SetOnce(
      GetParam() ? "Region::Evict:before-move" : "Region::Evict:before-madvise",
      [&] { dropped = madvise(r->data() + kDropped * kPage, kPage, MADV_DONTNEED); });
  ASSERT_TRUE(r->Advise(kRunFirst * kPage, kRunLen * kPage, Advice::kCold).ok());
  SyncPoints::ClearAll();
  ASSERT_EQ(dropped, 0) << "the sync point was not reached";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r->stats().pages_removed < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();  // a bounded wait for the events' handling, not a sleep
  }
  RegionStats s = r->stats();
  EXPECT_EQ(s.pages_removed, 1u);
  // By move, the dropped page was missing when the move came to it (the
  // move of a page checked after it allows no hole): it went the
  // write-protected way, where its snapshot read zeros and it was kept.
  EXPECT_EQ(s.moved_evictions, GetParam() ? kRunLen - 1 : 0u);
  for (uint64_t p = kRunFirst; p < kRunFirst + kRunLen; ++p) {
    if (p == kDropped) {
      const auto* w = reinterpret_cast<const uint64_t*>(r->data() + p * kPage);
      EXPECT_EQ(w[0], 0u) << "the page the program dropped reads as zeros";
      EXPECT_EQ(w[511], 0u);
    } else {
      EXPECT_TRUE(PageMatches(r->data() + p * kPage, p, 1))
          << "page " << p << " holds " << testing::DescribePage(r->data() + p * kPage, p, 1);
    }
  }
  EXPECT_EQ(backend.stats().pages, kRunLen - 1);  // the dropped page's copy is gone
  EXPECT_EQ(s.sigbus_delivered, 0u);
}

// Evicted pages leave by UFFDIO_MOVE, which raises no event on the region's
// userfaultfd: an eviction completes while no fault thread reads at all.
// (By madvise, the evictor would sleep until a fault thread read its REMOVE
// event; this test then fails at the deadline.)
TEST(RegionInternalsTest, AnEvictionByMoveNeedsNoFaultThreadToReadAnEvent) {
  MemoryPageBackend backend;
  constexpr uint64_t kPages = 64, kRun = 8;
  auto r = MakeRegion(&backend, kPages, kPages, {.evict_batch = kRun, .prefetch = false});
  ASSERT_NE(r, nullptr);
  if (!RegionTestPeer::DropsByMove(*r)) GTEST_SKIP() << "this kernel has no UFFDIO_MOVE";
  for (uint64_t p = 0; p < kRun; ++p) FillPage(r->data() + p * kPage, p, 1);
  for (uint64_t p = 0; p < kRun; ++p) RegionTestPeer::WaitForState(*r, p, kDirty);
  Mutex mu;
  CondVar cv;
  bool readers_held = true;
  SyncPoints::Set("Region::FaultThread:before-read", [&] {
    MutexLock l(&mu);
    while (readers_held) cv.Wait(&mu);
  });
  std::atomic<bool> advised{false};
  absl::Status status;
  std::thread evictor([&] {
    status = r->Advise(0, kRun * kPage, Advice::kCold);
    advised.store(true);
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!advised.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();  // a bounded wait for the other thread, not a sleep
  }
  const bool finished_with_readers_held = advised.load();
  {
    MutexLock l(&mu);
    readers_held = false;
    cv.SignalAll();
  }
  evictor.join();
  SyncPoints::ClearAll();
  EXPECT_TRUE(finished_with_readers_held) << "the eviction waited for a fault thread";
  EXPECT_TRUE(status.ok()) << status;
  RegionStats s = r->stats();
  EXPECT_EQ(s.evictions, kRun);
  EXPECT_EQ(s.moved_evictions, kRun);
  EXPECT_EQ(s.pages_removed, 0u);
  for (uint64_t p = 0; p < kRun; ++p) {
    EXPECT_TRUE(PageMatches(r->data() + p * kPage, p, 1))
        << "page " << p << " holds " << testing::DescribePage(r->data() + p * kPage, p, 1);
  }
}

// The program unmaps one page of a run the evictor is about to move out
// and maps something else at that address. The kernel moves a page out of
// any anonymous mapping there, registered or not; the region must move only
// pages that are still its own, so the new mapping keeps its contents.
// (Without the look at kFlagForgetUnmapped under read_mu_, the new page
// would be moved away and read as zeros.)
TEST(RegionInternalsTest, MoveOutLeavesAMappingTheProgramMadeInAHoleAlone) {
  MemoryPageBackend backend;
  // Every other page written: each victim is a run of its own, so the
  // hole's page is moved by a call of its own (a move over a run that spans
  // the hole's mapping fails at the boundary anyway).
  constexpr uint64_t kPages = 64, kFirst = 4, kVictims = 4, kHole = kFirst + 2;
  auto r = MakeRegion(&backend, kPages, kPages, {.evict_batch = 8, .prefetch = false});
  ASSERT_NE(r, nullptr);
  if (!RegionTestPeer::DropsByMove(*r)) GTEST_SKIP() << "this kernel has no UFFDIO_MOVE";
  for (uint64_t i = 0; i < kVictims; ++i) {
    FillPage(r->data() + (kFirst + 2 * i) * kPage, kFirst + 2 * i, 1);
  }
  for (uint64_t i = 0; i < kVictims; ++i) RegionTestPeer::WaitForState(*r, kFirst + 2 * i, kDirty);
  uint8_t* hole = r->data() + kHole * kPage;
  void* remapped = MAP_FAILED;
  SyncPoints::SetOnce("Region::Evict:before-move", [&] {
    // munmap returns once a fault thread has read the UNMAP event.
    if (munmap(hole, kPage) != 0) return;
    remapped = mmap(hole, kPage, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (remapped != MAP_FAILED) memset(remapped, 0xab, kPage);
  });
  ASSERT_TRUE(r->Advise(kFirst * kPage, 2 * kVictims * kPage, Advice::kCold).ok());
  SyncPoints::ClearAll();
  ASSERT_EQ(remapped, static_cast<void*>(hole)) << "the sync point was not reached, or mmap failed";
  const auto* bytes = static_cast<const uint8_t*>(remapped);
  EXPECT_EQ(bytes[0], 0xab) << "the program's new mapping lost its page";
  EXPECT_EQ(bytes[kPage - 1], 0xab);
  RegionStats s = r->stats();
  EXPECT_EQ(s.pages_unmapped, 1u);
  EXPECT_EQ(s.moved_evictions, kVictims - 1);
  for (uint64_t i = 0; i < kVictims; ++i) {
    const uint64_t p = kFirst + 2 * i;
    if (p == kHole) continue;
    EXPECT_TRUE(PageMatches(r->data() + p * kPage, p, 1))
        << "page " << p << " holds " << testing::DescribePage(r->data() + p * kPage, p, 1);
  }
  munmap(remapped, kPage);
}

}  // namespace
}  // namespace farswap
