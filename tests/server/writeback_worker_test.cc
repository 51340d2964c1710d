// writeback_worker_test: the writeback thread's pass and progress
// signalling (writeback_worker.h), with a pass that the test steps through:
// a Store waiting for room must wake when a batch is published, while the
// pass that published it is still running, not only when the pass ends.
#include "writeback_worker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>

namespace farswap::server {
namespace {

using RoomWait = WritebackWorker::RoomWait;

TEST(WritebackWorkerTest, AWaiterWakesOnAPublishedBatchWhileThePassStillRuns) {
  std::promise<void> waiter_woke;  // the waiter returned from WaitForRoom
  const std::shared_future<void> waiter_woke_seen = waiter_woke.get_future().share();
  std::atomic<bool> pass_still_running{false};
  std::atomic<bool> woke_during_pass{false};
  WritebackWorker worker([&](WritebackWorker& self) {
    pass_still_running = true;
    self.NotifyProgress();  // one batch published
    // The pass goes on until the waiter has woken (bounded: a waiter that
    // only wakes at the pass's end never does while this waits).
    woke_during_pass =
        waiter_woke_seen.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
    pass_still_running = false;
    return false;
  });
  WritebackWorker::PassWaiter waiter;
  const RoomWait first = worker.WaitForRoom(&waiter);  // kicks the pass
  const bool during = pass_still_running.load();
  waiter_woke.set_value();
  EXPECT_EQ(first, RoomWait::kProgress);
  EXPECT_TRUE(during) << "the waiter woke only after the pass had ended";
  // The next call waits for the pass it is still part of: it ends it.
  EXPECT_EQ(worker.WaitForRoom(&waiter), RoomWait::kPassDone);
  EXPECT_TRUE(woke_during_pass.load());
}

TEST(WritebackWorkerTest, APassThatPublishesNothingEndsTheWaitWhenItEnds) {
  std::atomic<int> passes{0};
  WritebackWorker worker([&](WritebackWorker&) {
    ++passes;
    return false;  // nothing published: no progress
  });
  WritebackWorker::PassWaiter waiter;
  EXPECT_EQ(worker.WaitForRoom(&waiter), RoomWait::kPassDone);
  EXPECT_GE(passes.load(), 1);
}

// Idle work waits for a quiet time: while the activity count moves (a
// store came since the worker last looked) it never runs, however many
// quiet-time windows end; once the count stands still it runs. Forced by
// the count itself: it moves on each of the worker's first 20 reads.
TEST(WritebackWorkerTest, IdleWorkWaitsUntilTheActivityCountStandsStill) {
  std::atomic<int> reads{0};
  std::atomic<int> idle_runs{0};
  std::atomic<int> reads_at_first_idle{-1};
  std::promise<void> idle_ran;
  WritebackWorker worker([](WritebackWorker&) { return false; },
                         [&](WritebackWorker&) {
                           if (idle_runs++ == 0) {
                             reads_at_first_idle = reads.load();
                             idle_ran.set_value();
                           }
                           return false;
                         },
                         absl::Microseconds(100),
                         [&]() -> uint64_t {
                           const int n = ++reads;
                           return uint64_t(std::min(n, 20));  // busy until the 20th read
                         });
  worker.RequestIdleWork();
  ASSERT_EQ(idle_ran.get_future().wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_GE(reads_at_first_idle.load(), 21) << "idle work ran while the count still moved";
  EXPECT_EQ(idle_runs.load(), 1);
}

// A pass asked for while idle work runs is seen by it (KickPending: the
// cleaner stops there), and runs once the idle work has returned.
TEST(WritebackWorkerTest, IdleWorkSeesAPassAskedForWhileItRuns) {
  std::promise<void> in_idle, kicked;
  std::shared_future<void> kicked_seen = kicked.get_future().share();
  std::atomic<bool> saw_kick{false};
  std::atomic<int> idle_runs{0};
  std::atomic<int> passes{0};
  std::unique_ptr<WritebackWorker> worker;
  worker = std::make_unique<WritebackWorker>(
      [&](WritebackWorker&) {
        ++passes;
        return false;
      },
      [&](WritebackWorker& self) {
        if (idle_runs++ == 0) {
          in_idle.set_value();
          kicked_seen.wait();
          saw_kick = self.KickPending();
        }
        return false;
      },
      absl::ZeroDuration());
  worker->RequestIdleWork();  // zero delay and no pass: runs at once
  in_idle.get_future().wait();
  worker->Kick();
  kicked.set_value();
  worker->WaitForPass();
  EXPECT_TRUE(saw_kick);
  EXPECT_GE(passes.load(), 1);
  EXPECT_EQ(idle_runs.load(), 1);
}

}  // namespace
}  // namespace farswap::server
