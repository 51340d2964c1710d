// region_sigbus_test.cc: a page the backend cannot return raises SIGBUS in
// the faulting thread, after bounded retries: never a hang, never zeros.
// Each case runs in a child process (fork), which must die of SIGBUS.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <thread>

#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"
#include "region_test_util.h"

namespace farswap {
namespace {

constexpr uint64_t kPage = 4096;

// RunChild forks, runs `body` in the child (exit 0 if it returns), and
// returns the wait status.
int RunChild(const std::function<void()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    // The default disposition, as a plain program has: sanitizers install
    // their own SIGBUS handler, which would report and abort instead.
    signal(SIGBUS, SIG_DFL);
    body();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
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

// With the signal caught, the failure is visible in stats and the handler
// can leave the thread; nothing hangs and no zeros are handed out.
TEST(RegionSigbusTest, SigbusIsRecordedInStats) {
  int status = RunChild([] {
    struct sigaction sa {};
    sa.sa_handler = [](int) { _exit(42); };
    sigaction(SIGBUS, &sa, nullptr);
    MemoryPageBackend backend;
    auto r = Region::Create(&backend, 16 * kPage,
                            {.local_budget = 64 * kPage, .evict_batch = 4, .load_attempts = 2});
    if (!r.ok()) _exit(3);
    testing::FillPage((*r)->data(), 0, 1);
    if (!(*r)->Advise(0, kPage, Advice::kCold).ok()) _exit(4);
    backend.FailLoads(0, absl::DataLossError("gone"));
    std::thread t([&] { (void)*reinterpret_cast<volatile uint64_t*>((*r)->data()); });
    t.join();
    _exit(5);
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 42);
}

}  // namespace
}  // namespace farswap
