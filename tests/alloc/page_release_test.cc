#include "page_release.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "farswap/alloc/zspool.h"

namespace farswap::alloc::internal {
namespace {

constexpr size_t kPage = 4096;

// Pages: an anonymous private mapping of n pages, page i filled with i + 1.
class Pages {
 public:
  explicit Pages(size_t n) : n_(n) {
    base_ = static_cast<uint8_t*>(
        mmap(nullptr, n * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    EXPECT_NE(base_, MAP_FAILED);
    for (size_t i = 0; i < n; ++i) memset(base_ + i * kPage, int(i % 255) + 1, kPage);
  }
  ~Pages() { munmap(base_, n_ * kPage); }
  iovec Run(size_t first, size_t count) const { return {base_ + first * kPage, count * kPage}; }
  bool Resident(size_t i) const {
    unsigned char v = 0;
    EXPECT_EQ(mincore(base_ + i * kPage, kPage, &v), 0);
    return v & 1;
  }
  // Holds: page i reads back all zeros (released) or all its fill.
  bool Holds(size_t i, bool released) const {
    const uint8_t want = released ? 0 : uint8_t(i % 255 + 1);
    for (size_t b = 0; b < kPage; ++b) {
      if (base_[i * kPage + b] != want) return false;
    }
    return true;
  }

 private:
  size_t n_;
  uint8_t* base_;
};

// Every listed page is released (not resident, zeros after); every other
// page keeps its data. Runs: [1], [3, 6), [10, 11), [20, 32).
void ExpectRunsReleased() {
  Pages pages(40);
  const std::vector<iovec> runs = {pages.Run(1, 1), pages.Run(3, 3), pages.Run(10, 1),
                                   pages.Run(20, 12)};
  ReleasePageRuns(runs);
  std::vector<bool> released(40, false);
  for (size_t i : {1, 3, 4, 5, 10}) released[i] = true;
  for (size_t i = 20; i < 32; ++i) released[i] = true;
  for (size_t i = 0; i < 40; ++i) {
    if (released[i]) {
      EXPECT_FALSE(pages.Resident(i)) << i;
    }
    EXPECT_TRUE(pages.Holds(i, released[i])) << i;
  }
}

TEST(PageReleaseTest, ListedRunsLeaveAndOthersKeepTheirData) {
  ExpectRunsReleased();
  // Either mechanism is right; which one this kernel gives is learned now.
  EXPECT_NE(CurrentReleaseMechanism(), ReleaseMechanism::kUnknown);
}

TEST(PageReleaseTest, TheMadviseFallbackReleasesTheSame) {
  ForceMadviseForTesting(true);
  EXPECT_EQ(CurrentReleaseMechanism(), ReleaseMechanism::kMadvise);
  ExpectRunsReleased();
  ForceMadviseForTesting(false);
}

// More runs than one process_madvise takes (1024): every one is released.
TEST(PageReleaseTest, MoreRunsThanOneCallTakes) {
  Pages pages(3000);
  std::vector<iovec> runs;
  for (size_t i = 0; i < 3000; i += 2) runs.push_back(pages.Run(i, 1));
  ReleasePageRuns(runs);
  for (size_t i = 0; i < 3000; ++i) ASSERT_TRUE(pages.Holds(i, i % 2 == 0)) << i;
}

// A forked child inherits the parent's pidfd, which names the parent. The
// kernel refuses MADV_DONTNEED on another process, so released through it
// the child would fall back to madvise for good; it opens its own instead
// and keeps the parent's mechanism. Its pages go, the parent's stay.
TEST(PageReleaseTest, AForkedChildReleasesItsOwnPagesNotItsParents) {
  Pages pages(8);
  ReleasePageRuns(std::vector<iovec>{pages.Run(0, 1)});  // learn in the parent
  const ReleaseMechanism parent = CurrentReleaseMechanism();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ReleasePageRuns(std::vector<iovec>{pages.Run(2, 4)});
    bool ok = true;
    for (size_t i = 2; i < 6; ++i) ok = ok && pages.Holds(i, true);
    _exit(!ok ? 1 : CurrentReleaseMechanism() != parent ? 2 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 1) << "the child's own pages were not released";
  EXPECT_NE(WEXITSTATUS(status), 2) << "the child did not keep the parent's mechanism";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  for (size_t i = 1; i < 8; ++i) EXPECT_TRUE(pages.Holds(i, false)) << i;
}

// The mechanism is learned before any page is released (one empty
// process_madvise), and the first real release agrees with it: a probe that
// said process_madvise where the kernel then refuses the call would show as
// a fallback to madvise here. Run in a forked child: a process that has not
// learned yet.
TEST(PageReleaseTest, TheProbeKnowsBeforeTheFirstReleaseWhatItWillBe) {
  Pages pages(4);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (CurrentReleaseMechanism() != ReleaseMechanism::kUnknown) _exit(1);
    const ReleaseMechanism learned = LearnReleaseMechanism();
    if (learned == ReleaseMechanism::kUnknown) _exit(2);
    ReleasePageRuns(std::vector<iovec>{pages.Run(1, 2)});
    if (!pages.Holds(1, true) || !pages.Holds(2, true) || !pages.Holds(0, false)) _exit(3);
    _exit(CurrentReleaseMechanism() == learned ? 0 : 4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 1) << "known before anything asked";
  EXPECT_NE(WEXITSTATUS(status), 2) << "the probe learned nothing";
  EXPECT_NE(WEXITSTATUS(status), 3) << "the release did not release";
  EXPECT_NE(WEXITSTATUS(status), 4) << "the first release fell back: the probe was wrong";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A pool's stats name the mechanism from its creation on.
TEST(PageReleaseTest, APoolsStatsNameTheMechanism) {
  auto pool = ZsPool::Create({.mem_limit = 1 << 20});
  ASSERT_TRUE(pool.ok()) << pool.status();
  const std::string named = (*pool)->GetStats().page_release;
  EXPECT_TRUE(named == "process_madvise" || named == "madvise") << named;
  EXPECT_EQ(named, ReleaseMechanismName(CurrentReleaseMechanism()));
  ForceMadviseForTesting(true);
  EXPECT_EQ(std::string((*pool)->GetStats().page_release), "madvise");
  ForceMadviseForTesting(false);
}

}  // namespace
}  // namespace farswap::alloc::internal
