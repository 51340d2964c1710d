// region_evictor_priority_test.cc: the background evictor runs nicer than
// the program (RegionOptions::evict_nice), and a fault parked for room is
// never left to it: the urgent evictor, at the program's priority, makes
// the room. A real userfaultfd and an in-memory PageBackend; the starved
// evictor is forced with a sync point, not a CPU hog.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"
#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"
#include "region_test_util.h"

namespace farswap {
namespace {

using testing::FillPage;
using testing::MakeRegion;
using testing::PageMatches;
constexpr uint64_t kPage = 4096;

// NicenessOfThreadsNamed: this process's threads called `name`, tid -> nice.
std::map<int, int> NicenessOfThreadsNamed(const std::string& name) {
  std::map<int, int> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string c;
    std::getline(comm, c);
    if (c != name) continue;
    const int tid = std::stoi(task.path().filename().string());
    errno = 0;
    const int nice = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
    if (nice == -1 && errno != 0) continue;  // the thread is gone
    out[tid] = nice;
  }
  return out;
}

class RegionEvictorPriorityTest : public ::testing::Test {
 protected:
  void TearDown() override { SyncPoints::ClearAll(); }
  MemoryPageBackend backend_;
};

TEST_F(RegionEvictorPriorityTest, BackgroundEvictorsAreNicerAndTheUrgentOneIsNot) {
  const int base = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
  RegionOptions o;
  o.evict_threads = 2;
  o.evict_nice = 7;
  std::unique_ptr<Region> region = MakeRegion(&backend_, 256, 128, o);
  ASSERT_NE(region, nullptr);
  // Each evictor lowers its own priority as it starts, which may be after
  // Create returned: wait for both (bounded), then check exactly.
  const int want = std::min(19, base + 7);
  std::map<int, int> evictors;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    evictors = NicenessOfThreadsNamed("fs-evict");
    bool all = evictors.size() == 2;
    for (const auto& [tid, nice] : evictors) all = all && nice == want;
    if (all || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::yield();
  }
  ASSERT_EQ(evictors.size(), 2u);
  for (const auto& [tid, nice] : evictors) EXPECT_EQ(nice, want) << "evictor " << tid;
  const std::map<int, int> urgent = NicenessOfThreadsNamed("fs-evict-urgent");
  ASSERT_EQ(urgent.size(), 1u);
  EXPECT_EQ(urgent.begin()->second, base);
  for (const auto& [tid, nice] : NicenessOfThreadsNamed("fs-fault")) EXPECT_EQ(nice, base);
}

TEST_F(RegionEvictorPriorityTest, NiceZeroLeavesTheEvictorsAsTheProgram) {
  const int base = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
  RegionOptions o;
  o.evict_nice = 0;
  std::unique_ptr<Region> region = MakeRegion(&backend_, 256, 128, o);
  ASSERT_NE(region, nullptr);
  // Run a batch through the evictor, so its start is behind us.
  uint8_t* p = region->data();
  for (uint64_t i = 0; i < 256; ++i) FillPage(p + i * kPage, i, 1);
  ASSERT_GT(region->stats().evictions, 0u);
  for (const auto& [tid, nice] : NicenessOfThreadsNamed("fs-evict")) EXPECT_EQ(nice, base);
}

TEST_F(RegionEvictorPriorityTest, OutOfRangeNiceIsRefused) {
  for (int nice : {-1, 40}) {
    RegionOptions o;
    o.evict_nice = nice;
    o.local_budget = 128 * kPage;
    EXPECT_EQ(Region::Create(&backend_, 256 * kPage, o).status().code(),
              absl::StatusCode::kInvalidArgument)
        << nice;
  }
}

// The background evictor never gets to run (held as soon as it is woken, as
// a nice-19 thread on a CPU-bound machine hardly does): a program that
// writes three budgets' worth of pages still finishes, because its parked
// faults wake the urgent evictor, and every page reads back. (Held at its
// first batch instead, it could miss being held at all: woken but not yet
// run when the urgent evictor had already made the room, it finds no batch
// to do.)
TEST_F(RegionEvictorPriorityTest, ParkedFaultsAreServedWhileTheBackgroundEvictorIsStarved) {
  constexpr uint64_t kPages = 768, kBudget = 256;
  RegionOptions o;
  o.evict_batch = 32;
  o.evict_threads = 1;
  std::unique_ptr<Region> region = MakeRegion(&backend_, kPages, kBudget, o);
  ASSERT_NE(region, nullptr);

  Mutex mu;
  CondVar released;
  bool release = false;
  std::atomic<int> held{0};
  SyncPoints::Set("Region::EvictorThread:woken", [&] {
    held.fetch_add(1);
    MutexLock l(&mu);
    while (!release) released.Wait(&mu);
  });
  auto free_evictor = [&] {
    MutexLock l(&mu);
    release = true;
    released.SignalAll();
  };

  uint8_t* p = region->data();
  std::future<void> writer = std::async(std::launch::async, [&] {
    for (uint64_t i = 0; i < kPages; ++i) FillPage(p + i * kPage, i, 1);
  });
  const bool finished = writer.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  RegionStats during = region->stats();
  // The urgent evictor may still be in its last batch: it counts each page
  // into `evictions` as it commits it, and the batch into
  // `urgent_evictions` once the batch is done, so one read of the stats
  // can fall between the two. Read until they agree (bounded): a page the
  // held background evictor had evicted would keep them apart for good.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (finished && during.urgent_evictions != during.evictions &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
    during = region->stats();
  }
  // The writer's faults woke the background evictor; it reaches the sync
  // point whenever it is next scheduled (bounded).
  while (finished && held.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  free_evictor();  // either way, so the region can be destroyed
  writer.wait();
  ASSERT_TRUE(finished) << "the program stayed parked behind a starved evictor";
  EXPECT_GT(held.load(), 0) << "the background evictor was never asked for a batch";
  EXPECT_GT(during.parked_faults, 0u);
  EXPECT_GE(during.urgent_evictions, kPages - kBudget - o.evict_batch);
  EXPECT_EQ(during.urgent_evictions, during.evictions)
      << "only the urgent evictor could have evicted";
  EXPECT_LE(during.max_resident_pages, kBudget + o.evict_batch);
  SyncPoints::ClearAll();
  for (uint64_t i = 0; i < kPages; ++i) {
    ASSERT_TRUE(PageMatches(p + i * kPage, i, 1)) << "page " << i;
  }
}

}  // namespace
}  // namespace farswap
