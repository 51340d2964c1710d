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
#ifndef FARSWAP_SERVER_WRITEBACK_WORKER_H_
#define FARSWAP_SERVER_WRITEBACK_WORKER_H_

#include <cstdint>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "farswap/common/mutex.h"

namespace farswap::server {

// WritebackWorker owns one thread. Kick and WaitForPass are safe from any
// thread; the destructor stops and joins the thread (waiters are released).
class WritebackWorker {
 public:
  // run_pass: one pass; returns whether to run another without waiting for
  // a kick. It gets the worker it runs on, for NotifyProgress (the owner's
  // pointer to the worker is not safe to read from the pass: the owner
  // clears it when it destroys the worker, while the pass may still run).
  explicit WritebackWorker(std::function<bool(WritebackWorker&)> run_pass)
      : run_pass_(std::move(run_pass)), thread_([this] { Loop(); }) {}

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
  // pass, on the worker's thread, with no other lock held).
  void NotifyProgress() {
    MutexLock l(&mu_);
    ++progress_;
    cv_.SignalAll();
  }

 private:
  void Loop() {
    for (;;) {
      {
        MutexLock l(&mu_);
        while (!kicked_ && !stopping_) cv_.Wait(&mu_);
        if (stopping_) return;
        kicked_ = false;
        ++passes_started_;
      }
      const bool again = run_pass_(*this);  // no lock held: the pass takes key, index and LRU locks
      MutexLock l(&mu_);
      if (again) kicked_ = true;
      ++passes_finished_;
      cv_.SignalAll();
    }
  }

  const std::function<bool(WritebackWorker&)> run_pass_;
  Mutex mu_;
  CondVar cv_;  // signalled on kick, progress, pass end and stop
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t passes_started_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t passes_finished_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t progress_ ABSL_GUARDED_BY(mu_) = 0;  // batches published, all passes
  std::thread thread_;                          // last: starts after every field above is built
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_WRITEBACK_WORKER_H_
