// sync_point_counter.h: counts the hits of one sync point, and waits for a
// number of them.
//
//   SyncPointCounter answered("Client::RepairCopies:answered");
//   ... work that hits the point on other threads ...
//   ASSERT_TRUE(answered.WaitFor(n, absl::Seconds(30)));
//
// For work that finishes after the call that started it returns (a reply
// read by an I/O thread): the test waits for the code to say so, not for a
// sleep to pass. Registers the point for its lifetime (replacing any other
// callback on it) and clears it on destruction. Thread-safe.
#ifndef FARSWAP_TESTS_UTIL_SYNC_POINT_COUNTER_H_
#define FARSWAP_TESTS_UTIL_SYNC_POINT_COUNTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"

namespace farswap::testing {

class SyncPointCounter {
 public:
  explicit SyncPointCounter(std::string name)
      : name_(std::move(name)), state_(std::make_shared<State>()) {
    // The callback holds the state: a hit already under way when the
    // counter is destroyed (SyncPoints::Hit runs callbacks outside its
    // registry lock) still counts into live memory.
    SyncPoints::Set(name_, [state = state_] {
      MutexLock l(&state->mu);
      ++state->hits;
      state->cv.SignalAll();
    });
  }
  ~SyncPointCounter() { SyncPoints::Clear(name_); }
  SyncPointCounter(const SyncPointCounter&) = delete;
  SyncPointCounter& operator=(const SyncPointCounter&) = delete;

  // WaitFor: true once at least `n` hits were counted, false if `timeout`
  // passed first.
  bool WaitFor(uint64_t n, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    MutexLock l(&state_->mu);
    while (state_->hits < n) {
      if (state_->cv.WaitWithDeadline(&state_->mu, deadline)) return state_->hits >= n;
    }
    return true;
  }
  uint64_t hits() {
    MutexLock l(&state_->mu);
    return state_->hits;
  }

 private:
  struct State {
    Mutex mu;
    CondVar cv;
    uint64_t hits ABSL_GUARDED_BY(mu) = 0;
  };
  const std::string name_;
  const std::shared_ptr<State> state_;
};

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_SYNC_POINT_COUNTER_H_
