// writeback_worker_test: the writeback thread's pass and progress
// signalling (writeback_worker.h), with a pass that the test steps through:
// a Store waiting for room must wake when a batch is published, while the
// pass that published it is still running, not only when the pass ends.
#include "writeback_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>

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

}  // namespace
}  // namespace farswap::server
