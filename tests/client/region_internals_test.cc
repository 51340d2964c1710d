// region_internals_test: the region's fault paths driven directly, white
// box (RegionTestPeer is a friend of Region and RegionImpl), where the
// interleaving to force involves a fault message the kernel would only
// deliver by chance.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"
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
};

namespace {

using testing::FillPage;
using testing::PageMatches;

std::unique_ptr<Region> MakeRegion(PageBackend* backend, uint64_t pages, uint64_t budget_pages,
                                   RegionOptions options) {
  options.local_budget = budget_pages * kPage;
  absl::StatusOr<std::unique_ptr<Region>> r = Region::Create(backend, pages * kPage, options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

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

// The program munmaps part of a run the evictor is about to drop. The
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
  auto r = MakeRegion(&backend, kPages, kPages, {.evict_batch = kRunLen, .prefetch = false});
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
// to drop. Both REMOVE events name that page, the program's first. The
// program's event must forget that page only, and the evictor's must not
// be taken for the program's: the rest of the run keeps its remote copies.
// (Matching events whole, the program's one-page event passed for the
// evictor's, whose own event then forgot the whole run: pages the program
// had written read as zeros. RegionTest.MadviseDontneedRacingFaultsAnd-
// EvictionsKeepsEveryPageRight failed in 1 of 4 runs beside a busy loop.)
TEST(RegionInternalsTest, ProgramDropOfOnePageOfARunBeingDroppedForgetsThatPageOnly) {
  MemoryPageBackend backend;
  constexpr uint64_t kPages = 64, kWritten = 16, kRunFirst = 4, kRunLen = 8, kDropped = 6;
  auto r = MakeRegion(&backend, kPages, kPages, {.evict_batch = kRunLen, .prefetch = false});
  ASSERT_NE(r, nullptr);
  for (uint64_t p = 0; p < kWritten; ++p) FillPage(r->data() + p * kPage, p, 1);
  for (uint64_t p = 0; p < kWritten; ++p) RegionTestPeer::WaitForState(*r, p, kDirty);
  int dropped = -1;
  SyncPoints::SetOnce("Region::Evict:before-madvise", [&] {
    // The run is listed as the evictor's; the program's madvise returns
    // once a fault thread has read its REMOVE event, queued before the
    // evictor's own.
    dropped = madvise(r->data() + kDropped * kPage, kPage, MADV_DONTNEED);
  });
  ASSERT_TRUE(r->Advise(kRunFirst * kPage, kRunLen * kPage, Advice::kCold).ok());
  SyncPoints::ClearAll();
  ASSERT_EQ(dropped, 0) << "the sync point was not reached";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r->stats().pages_removed < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();  // a bounded wait for the events' handling, not a sleep
  }
  EXPECT_EQ(r->stats().pages_removed, 1u);
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
  EXPECT_EQ(r->stats().sigbus_delivered, 0u);
}

}  // namespace
}  // namespace farswap
