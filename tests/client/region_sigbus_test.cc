// region_sigbus_test.cc: a page the backend cannot return, or the kernel
// will not install, raises SIGBUS in the faulting thread after bounded
// retries: never a hang, never zeros. Each case runs in a child process
// (fork), waited for with a deadline; the child's exit status is the
// verdict. Also here because they fork: what a fork child of a program
// with a region sees.
#include <errno.h>
#include <gtest/gtest.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"
#include "region_test_util.h"

namespace farswap {
namespace {

constexpr uint64_t kPage = 4096;

// A child still running after this long is hung (a fault nobody answers).
constexpr auto kChildDeadline = std::chrono::seconds(20);
// The wait status RunChild returns for a child it had to kill.
constexpr int kHung = -1;

// RunChild forks, runs `body` in the child (exit 0 if it returns), and
// returns the wait status, or kHung if the child was still running at the
// deadline (it is killed).
int RunChild(const std::function<void()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    // The default disposition, as a plain program has: sanitizers install
    // their own SIGBUS/SIGSEGV handlers, which would report and abort instead.
    signal(SIGBUS, SIG_DFL);
    signal(SIGSEGV, SIG_DFL);
    body();
    _exit(0);
  }
  const auto deadline = std::chrono::steady_clock::now() + kChildDeadline;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return kHung;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a child, not syncing
  }
  return status;
}

// InjectFailures returns an ioctl hook that fails `op` on `page` with `err`
// the first `times` times (< 0: always).
std::function<int(RegionIoctl, uint64_t)> InjectFailures(RegionIoctl op, uint64_t page, int err,
                                                         int times) {
  auto left = std::make_shared<std::atomic<int>>(times);
  return [=](RegionIoctl o, uint64_t p) {
    if (o != op || p != page) return 0;
    if (times < 0) return err;
    return left->fetch_sub(1) > 0 ? err : 0;
  };
}

// The child's body: evict page 3, make it unreadable, touch it from a
// worker thread (the faulting thread), report survival with exit codes.
void TouchUnreadablePage(const std::function<void(MemoryPageBackend&)>& break_page) {
  MemoryPageBackend backend;
  auto r = Region::Create(&backend, 16 * kPage,
                          {.local_budget = 64 * kPage, .evict_batch = 4, .load_attempts = 2});
  if (!r.ok()) _exit(3);
  testing::FillPage((*r)->data() + 3 * kPage, 3, 1);
  if (!(*r)->Advise(3 * kPage, kPage, Advice::kCold).ok()) _exit(4);
  break_page(backend);
  std::thread t([&] {
    volatile uint64_t v = *reinterpret_cast<volatile uint64_t*>((*r)->data() + 3 * kPage);
    (void)v;
  });
  t.join();
  _exit(5);  // survived: the test fails
}

TEST(RegionSigbusTest, DataLossRaisesSigbusInTheFaultingThread) {
  int status = RunChild([] {
    TouchUnreadablePage(
        [](MemoryPageBackend& b) { b.FailLoads(3, absl::DataLossError("replica lost")); });
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGBUS);
}

TEST(RegionSigbusTest, UnreachableNodeRaisesSigbus) {
  int status = RunChild([] {
    TouchUnreadablePage(
        [](MemoryPageBackend& b) { b.FailLoads(3, absl::UnavailableError("no node")); });
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGBUS);
}

TEST(RegionSigbusTest, ChecksumMismatchRaisesSigbus) {
  int status = RunChild([] {
    TouchUnreadablePage([](MemoryPageBackend& b) {
      if (!b.CorruptPage(3)) _exit(6);
    });
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGBUS);
}

// The faulting thread's way out of a SIGBUS it caught.
thread_local sigjmp_buf sigbus_jump;

// With the signal caught, the handler can leave the faulting access, and the
// failure is visible in stats; nothing hangs and no zeros are handed out.
TEST(RegionSigbusTest, SigbusIsRecordedInStats) {
  int status = RunChild([] {
    struct sigaction sa {};
    sa.sa_handler = [](int) { siglongjmp(sigbus_jump, 1); };
    sigaction(SIGBUS, &sa, nullptr);
    MemoryPageBackend backend;
    auto r = Region::Create(&backend, 16 * kPage,
                            {.local_budget = 64 * kPage, .evict_batch = 4, .load_attempts = 2});
    if (!r.ok()) _exit(3);
    testing::FillPage((*r)->data(), 0, 1);
    if (!(*r)->Advise(0, kPage, Advice::kCold).ok()) _exit(4);
    backend.FailLoads(0, absl::DataLossError("gone"));
    bool caught = false;
    std::thread t([&] {
      if (sigsetjmp(sigbus_jump, 1) == 0) {
        (void)*reinterpret_cast<volatile uint64_t*>((*r)->data());
      } else {
        caught = true;
      }
    });
    t.join();
    if (!caught) _exit(5);
    const RegionStats s = (*r)->stats();
    if (s.sigbus_delivered != 1) _exit(6);
    if (s.load_retries != 1) _exit(7);  // load_attempts = 2: one retry
    if (s.last_error.empty()) _exit(8);
    if (s.resident_pages != 0) _exit(9);  // the page stayed remote
    // The copy comes back: the same page loads once the backend has it.
    backend.ClearFailures();
    if (!testing::PageMatches((*r)->data(), 0, 1)) _exit(10);
    if ((*r)->stats().sigbus_delivered != 1) _exit(11);
    _exit(42);
  });
  ASSERT_NE(status, kHung);
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 42);
}

// A UFFDIO_COPY that fails (here ENOMEM, once) must not leave the page
// marked resident with its thread asleep in the kernel: the install is
// retried and the thread reads its data.
TEST(RegionSigbusTest, FailedInstallOfALoadedPageIsRetried) {
  int status = RunChild([] {
    MemoryPageBackend backend;
    RegionOptions o{.local_budget = 64 * kPage, .evict_batch = 4, .prefetch = false};
    o.ioctl_error_for_testing = InjectFailures(RegionIoctl::kCopy, 3, ENOMEM, 1);
    auto r = Region::Create(&backend, 16 * kPage, o);
    if (!r.ok()) _exit(3);
    testing::FillPage((*r)->data() + 3 * kPage, 3, 1);
    if (!(*r)->Advise(3 * kPage, kPage, Advice::kCold).ok()) _exit(4);
    bool ok = false;
    std::thread t([&] { ok = testing::PageMatches((*r)->data() + 3 * kPage, 3, 1); });
    t.join();
    if (!ok) _exit(5);
    const RegionStats s = (*r)->stats();
    if (s.install_retries != 1) _exit(6);
    if (s.sigbus_delivered != 0) _exit(7);
    if (s.resident_pages != 1) _exit(8);
  });
  ASSERT_NE(status, kHung) << "the faulting thread was never woken";
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The same for the zero-fill of a never-written page (a UFFDIO_COPY of zeros,
// RegionIoctl::kZeroPage), failing twice with load_attempts = 3; and for EAGAIN, which the
// kernel returns while a REMOVE or UNMAP event is pending, many times.
TEST(RegionSigbusTest, FailedZeroFillIsRetried) {
  for (int err : {EFAULT, EAGAIN}) {
    SCOPED_TRACE(strerror(err));
    int status = RunChild([err] {
      MemoryPageBackend backend;
      RegionOptions o{.local_budget = 64 * kPage, .evict_batch = 4, .prefetch = false};
      o.ioctl_error_for_testing =
          InjectFailures(RegionIoctl::kZeroPage, 5, err, err == EAGAIN ? 50 : 2);
      auto r = Region::Create(&backend, 16 * kPage, o);
      if (!r.ok()) _exit(3);
      uint64_t v = 1;
      std::thread t([&] { v = *reinterpret_cast<volatile uint64_t*>((*r)->data() + 5 * kPage); });
      t.join();
      if (v != 0) _exit(5);
      // The fault thread counts the zero-fill after the ioctl that woke us.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while ((*r)->stats().zero_fills == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
      }
      const RegionStats s = (*r)->stats();
      if (s.install_retries != (err == EAGAIN ? 50u : 2u)) _exit(6);
      if (s.sigbus_delivered != 0) _exit(7);
      if (s.zero_fills != 1) _exit(8);
      if (s.resident_pages != 1) _exit(9);
    });
    ASSERT_NE(status, kHung) << "the faulting thread was never woken";
    ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
}

// An install that keeps failing ends in SIGBUS for the faulting thread,
// after load_attempts tries, as an unreadable page does.
TEST(RegionSigbusTest, InstallThatKeepsFailingRaisesSigbus) {
  int status = RunChild([] {
    MemoryPageBackend backend;
    RegionOptions o{
        .local_budget = 64 * kPage, .evict_batch = 4, .prefetch = false, .load_attempts = 3};
    o.ioctl_error_for_testing = InjectFailures(RegionIoctl::kCopy, 3, ENOMEM, -1);
    auto r = Region::Create(&backend, 16 * kPage, o);
    if (!r.ok()) _exit(3);
    testing::FillPage((*r)->data() + 3 * kPage, 3, 1);
    if (!(*r)->Advise(3 * kPage, kPage, Advice::kCold).ok()) _exit(4);
    std::thread t([&] { (void)*reinterpret_cast<volatile uint64_t*>((*r)->data() + 3 * kPage); });
    t.join();
    _exit(5);  // survived: the test fails
  });
  ASSERT_NE(status, kHung) << "the faulting thread was never woken";
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGBUS);
}

// A fork child has no copy of the region (MADV_DONTFORK): touching it is a
// plain SIGSEGV, never the silent zeros a child would read for every
// evicted page if it inherited the mapping without the region behind it.
TEST(RegionSigbusTest, ForkChildDoesNotReadZerosForEvictedPages) {
  MemoryPageBackend backend;
  auto r = Region::Create(&backend, 16 * kPage, {.local_budget = 64 * kPage, .evict_batch = 4});
  ASSERT_TRUE(r.ok()) << r.status();
  for (uint64_t p = 0; p < 8; ++p) testing::FillPage((*r)->data() + p * kPage, p, 1);
  ASSERT_TRUE((*r)->Advise(0, 4 * kPage, Advice::kCold).ok());  // 0..3 evicted, 4..7 resident
  for (uint64_t page : {1, 6}) {
    SCOPED_TRACE(page);
    int status = RunChild([&] {
      // Correct data would do too; zeros would not.
      _exit(testing::PageMatches((*r)->data() + page * kPage, page, 1) ? 0 : 7);
    });
    ASSERT_NE(status, kHung);
    if (WIFEXITED(status)) {
      EXPECT_EQ(WEXITSTATUS(status), 0) << "the child read wrong data (zeros)";
    } else {
      EXPECT_EQ(WTERMSIG(status), SIGSEGV);
    }
  }
  // The parent's region is untouched by the fork.
  for (uint64_t p = 0; p < 8; ++p)
    EXPECT_TRUE(testing::PageMatches((*r)->data() + p * kPage, p, 1));
}

}  // namespace
}  // namespace farswap
