// writeback_worker.h: the thread that runs the page store's writeback
// passes. Private to server/.
//
// It sleeps until kicked (a Store saw pool memory above the high watermark,
// or could not allocate), runs one pass, and counts finished passes so a
// Store that is waiting for room can block until a pass that started after
// its request has finished — a condition signalled by writeback progress,
// not a sleep. A pass may ask for another one (by returning true): the
// cleaner does when it stopped at its per-pass bound.
//
// A pass also reports progress (NotifyProgress) after each batch it
// publishes, and a Store waiting for room (WaitForRoom) wakes then, not only
// at the end of the pass: a pass from the high watermark down to the low one
// is many batches, and a Store that waited for all of them left the pool's
// freed objects unused (and its connection stalled) for that long.
//
// Idle work. Besides passes, the owner may ask for work that is worth doing
// only while the store is quiet (RequestIdleWork: the space-driven cleaner,
// which rewrites live bytes to give back dead ones). It runs once, for
// `idle_delay`, no pass has run or been asked for and the owner's activity
// count (`activity`: stores) has not moved — so a busy writeback, or the
// stores that will soon need one, are never slowed by it. The count is read
// when the quiet time would end, so it costs the stores nothing. A pass
// asked for meanwhile goes first: the idle work asks KickPending() between
// its steps and stops early. Idle work that returns true wants another
// round, at once while still quiet. With a zero delay it is simply the end
// of every pass (and of WaitForPass's wait) while requested, and runs at
// once when requested with no pass running.
#ifndef FARSWAP_SERVER_WRITEBACK_WORKER_H_
#define FARSWAP_SERVER_WRITEBACK_WORKER_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "farswap/common/mutex.h"
#include "farswap/common/thread_name.h"

namespace farswap::server {

// WritebackWorker owns one thread. Kick, RequestIdleWork, KickPending and
// WaitForPass are safe from any thread; the destructor stops and joins the thread (waiters are
// released).
class WritebackWorker {
 public:
  // run_pass: one pass; returns whether to run another without waiting for
  // a kick. It gets the worker it runs on, for NotifyProgress (the owner's
  // pointer to the worker is not safe to read from the pass: the owner
  // clears it when it destroys the worker, while the pass may still run).
  // run_idle (may be empty): the idle work, on this thread with no lock
  // held; returns whether to run another round. activity (may be empty): a
  // count that moves while the owner is busy; called with this worker's
  // lock held, so it must take no lock (an atomic load).
  explicit WritebackWorker(std::function<bool(WritebackWorker&)> run_pass,
                           std::function<bool(WritebackWorker&)> run_idle = nullptr,
                           absl::Duration idle_delay = absl::ZeroDuration(),
                           std::function<uint64_t()> activity = nullptr)
      : run_pass_(std::move(run_pass)),
        run_idle_(std::move(run_idle)),
        idle_delay_(idle_delay),
        activity_(std::move(activity)),
        thread_([this] { Loop(); }) {}

  ~WritebackWorker() {
    {
      MutexLock l(&mu_);
      stopping_ = true;
      cv_.SignalAll();
    }
    thread_.join();
  }

  WritebackWorker(const WritebackWorker&) = delete;
  WritebackWorker& operator=(const WritebackWorker&) = delete;

  // Kick asks for a pass (cheap; many kicks before a pass starts run one).
  void Kick() {
    MutexLock l(&mu_);
    kicked_ = true;
    cv_.SignalAll();
  }

  // RequestIdleWork asks for a round of idle work once the store is quiet
  // (cheap; many requests before it runs run one round). No-op without
  // run_idle.
  void RequestIdleWork() {
    MutexLock l(&mu_);
    if (!run_idle_ || idle_wanted_) return;
    idle_wanted_ = true;
    quiet_since_ = absl::Now();
    quiet_activity_ = Activity();
    cv_.SignalAll();
  }

  // KickPending: a pass has been asked for and not started (for idle work,
  // which stops early then).
  bool KickPending() {
    MutexLock l(&mu_);
    return kicked_ || stopping_;
  }

  // WaitForPass kicks and blocks until a pass that started after this call
  // has finished. Returns false if the worker is stopping instead.
  bool WaitForPass() {
    MutexLock l(&mu_);
    kicked_ = true;
    cv_.SignalAll();
    const uint64_t target = passes_started_ + 1;
    while (passes_finished_ < target && !stopping_) cv_.Wait(&mu_);
    return passes_finished_ >= target;
  }

  // RoomWait: what ended a WaitForRoom.
  enum class RoomWait {
    kProgress,  // a batch was published: freed objects may make room
    kPassDone,  // the pass the waiter waits for has finished
    kStopping,  // the worker is stopping
  };

  // PassWaiter: one Store's wait across several WaitForRoom calls. It is
  // waiting for a pass that started after its first call (pass_target), and
  // for batches published after its previous call (progress_seen).
  struct PassWaiter {
    uint64_t pass_target = 0;  // 0: not waiting for a pass yet
    uint64_t progress_seen = 0;
  };

  // WaitForRoom kicks and blocks until a batch is published after this
  // waiter's previous call (kProgress), or the pass it waits for has
  // finished (kPassDone; the next call waits for a new pass), or the worker
  // stops. A batch published between the caller's failed allocation and its
  // first call is not seen; the end of the pass still is.
  RoomWait WaitForRoom(PassWaiter* waiter) {
    MutexLock l(&mu_);
    kicked_ = true;
    cv_.SignalAll();
    if (waiter->pass_target == 0) {
      waiter->pass_target = passes_started_ + 1;
      waiter->progress_seen = progress_;
    }
    while (passes_finished_ < waiter->pass_target && progress_ == waiter->progress_seen &&
           !stopping_) {
      cv_.Wait(&mu_);
    }
    if (passes_finished_ >= waiter->pass_target) {
      waiter->pass_target = 0;
      return RoomWait::kPassDone;
    }
    if (stopping_) return RoomWait::kStopping;
    waiter->progress_seen = progress_;
    return RoomWait::kProgress;
  }

  // NotifyProgress: the running pass published a batch (called from the
  // pass, on the worker's thread or one of its helpers, writeback_helpers.h,
  // with no other lock held).
  void NotifyProgress() {
    MutexLock l(&mu_);
    ++progress_;
    cv_.SignalAll();
  }

 private:
  void Loop() {
    SetCurrentThreadName("fs-writeback");
    for (;;) {
      bool pass = false;
      {
        MutexLock l(&mu_);
        while (!kicked_ && !stopping_) {
          if (!idle_wanted_) {
            cv_.Wait(&mu_);
            continue;
          }
          const absl::Time now = absl::Now();
          if (const uint64_t activity = Activity(); activity != quiet_activity_) {
            quiet_activity_ = activity;  // busy since: the quiet time starts again
            quiet_since_ = now;
          }
          const absl::Time quiet_until = std::max(last_pass_end_, quiet_since_) + idle_delay_;
          if (now >= quiet_until) break;  // quiet long enough: idle work
          cv_.WaitWithDeadline(&mu_, quiet_until);
        }
        if (stopping_) return;
        if (kicked_) {
          kicked_ = false;
          ++passes_started_;
          pass = true;
        } else {
          idle_wanted_ = false;
        }
      }
      if (!pass) {
        RunIdleRound();
        continue;
      }
      const bool again = run_pass_(*this);  // no lock held: the pass takes key, index and LRU locks
      if (idle_delay_ == absl::ZeroDuration() && TakeIdleRequest()) {
        // No quiet time wanted: the idle work is the end of this pass (and
        // WaitForPass waits for it too).
        RunIdleRound();
      }
      MutexLock l(&mu_);
      if (again) kicked_ = true;
      ++passes_finished_;
      last_pass_end_ = absl::Now();
      cv_.SignalAll();
    }
  }

  // RunIdleRound runs one round of idle work (no lock held, as for a
  // pass). One that wants more goes on as soon as no pass is asked for: the
  // quiet time already passed, and a pass in between restarts it.
  void RunIdleRound() {
    const bool more = run_idle_(*this);
    MutexLock l(&mu_);
    if (more && !idle_wanted_) {
      idle_wanted_ = true;
      quiet_since_ = absl::InfinitePast();  // still quiet unless the count moved meanwhile
    }
  }

  uint64_t Activity() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return activity_ ? activity_() : 0; }

  bool TakeIdleRequest() {
    MutexLock l(&mu_);
    const bool wanted = idle_wanted_;
    idle_wanted_ = false;
    return wanted;
  }

  const std::function<bool(WritebackWorker&)> run_pass_;
  const std::function<bool(WritebackWorker&)> run_idle_;
  const absl::Duration idle_delay_;
  const std::function<uint64_t()> activity_;
  Mutex mu_;
  CondVar cv_;  // signalled on kick, progress, pass end and stop
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t passes_started_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t passes_finished_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t progress_ ABSL_GUARDED_BY(mu_) = 0;     // batches published, all passes
  bool idle_wanted_ ABSL_GUARDED_BY(mu_) = false;  // RequestIdleWork since the last round
  // The quiet time runs from quiet_since_ (or the last pass's end, if later)
  // while the activity count stays quiet_activity_.
  absl::Time quiet_since_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t quiet_activity_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_pass_end_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::thread thread_;  // last: starts after every field above is built
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_WRITEBACK_WORKER_H_
