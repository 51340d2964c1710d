// completion_waiter.h: turns asynchronous completions into blocking calls
// without a wake-up per call where it can (private to client/).
//
//   CompletionWaiter w(n, spin);            // n completions expected
//   client.LoadAsync(page, out, w.Callback(0));
//   std::vector<absl::Status> s = w.Wait();   // or, for n == 1, w.WaitOne()
//
// A reply is usually read by the transport's I/O thread a round trip (tens
// of microseconds) after the request left. Sleeping on a condition variable
// for it costs a wake-up of the waiting thread on top (70–90 µs between the
// two vCPUs of the development machine), so Wait first spins for `spin`
// checking an atomic count, yielding the CPU between checks (on a small
// machine the I/O thread may need this very core), and only then sleeps.
// The last completion always takes the mutex before it signals, and Wait
// takes it before returning, so the waiter never outlives a completion that
// is still touching it.
//
// Given a transport to help (ClientOptions::poll_while_waiting), the spin
// runs the transport's ready I/O itself (Transport::HelpPoll) instead of
// only yielding: the reply is then read and completed on this thread, with
// no wake-up of an I/O thread on the way. A waiter for more than one
// completion (a batch: its replies come after the node handled every page,
// hundreds of microseconds) also makes its spin a helping spell
// (Transport::BeginHelping): the I/O threads are then not woken for the
// replies it reads. A one-page wait does not: its reply comes within a
// round trip, and the spell's two epoll_ctl calls on its path cost it
// more than the I/O thread's wake-up, which is off its path (measured:
// README.md, "The data path").
//
// A waiter for one completion allocates nothing (WaitOne): a fault's load
// is such a call.
//
// Thread safety: Callback(i) may run on any thread, once per i; Wait or
// WaitOne runs on one thread, once.
#ifndef FARSWAP_CLIENT_SRC_COMPLETION_WAITER_H_
#define FARSWAP_CLIENT_SRC_COMPLETION_WAITER_H_

#include <atomic>
#include <cassert>
#include <chrono>
#include <iterator>
#include <thread>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "farswap/client/client.h"
#include "farswap/common/mutex.h"
#include "farswap/transport/transport.h"

namespace farswap::client_internal {

class CompletionWaiter {
 public:
  // help: the transport whose I/O the spin runs (nullptr: none).
  CompletionWaiter(size_t n, absl::Duration spin, transport::Transport* help = nullptr)
      : statuses_(n), left_(n), batch_(n > 1), spin_(spin), help_(help) {}

  DoneCallback Callback(size_t i) {
    return [this, i](absl::Status s) {
      MutexLock l(&mu_);
      statuses_[i] = std::move(s);
      if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) cv_.SignalAll();
    };
  }

  std::vector<absl::Status> Wait() {
    WaitForAll();
    MutexLock l(&mu_);
    return std::vector<absl::Status>(std::make_move_iterator(statuses_.begin()),
                                     std::make_move_iterator(statuses_.end()));
  }

  // WaitOne: Wait for a waiter made for one completion; its status.
  absl::Status WaitOne() {
    WaitForAll();
    MutexLock l(&mu_);
    assert(statuses_.size() == 1);
    return std::move(statuses_[0]);
  }

 private:
  // WaitForAll returns once every completion has run (and released mu_).
  void WaitForAll() {
    if (spin_ > absl::ZeroDuration() && left_.load(std::memory_order_acquire) != 0) {
      const auto until = std::chrono::steady_clock::now() +
                         std::chrono::nanoseconds(absl::ToInt64Nanoseconds(spin_));
      const bool quiet = help_ != nullptr && batch_;  // file comment
      if (quiet) help_->BeginHelping();
      while (left_.load(std::memory_order_acquire) != 0 &&
             std::chrono::steady_clock::now() < until) {
        if (help_ == nullptr || !help_->HelpPoll()) std::this_thread::yield();
      }
      if (quiet) help_->EndHelping();
    }
    MutexLock l(&mu_);
    while (left_.load(std::memory_order_acquire) != 0) cv_.Wait(&mu_);
  }

  Mutex mu_;
  CondVar cv_;
  absl::InlinedVector<absl::Status, 1> statuses_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> left_;
  const bool batch_;  // more than one completion expected
  const absl::Duration spin_;
  transport::Transport* const help_;
};

}  // namespace farswap::client_internal

#endif  // FARSWAP_CLIENT_SRC_COMPLETION_WAITER_H_
