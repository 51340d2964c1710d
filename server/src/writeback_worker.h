// writeback_worker.h: the thread that runs the page store's writeback
// passes. Private to server/.
//
// It sleeps until kicked (a Store saw pool memory above the high watermark,
// or could not allocate), runs one pass, and counts finished passes so a
// Store that is waiting for room can block until a pass that started after
// its request has finished — a condition signalled by writeback progress,
// not a sleep. A pass may ask for another one (by returning true): the
// cleaner does when it stopped at its per-pass bound.
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
  // a kick.
  explicit WritebackWorker(std::function<bool()> run_pass)
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
      const bool again = run_pass_();  // no lock held: the pass takes key, index and LRU locks
      MutexLock l(&mu_);
      if (again) kicked_ = true;
      ++passes_finished_;
      cv_.SignalAll();
    }
  }

  const std::function<bool()> run_pass_;
  Mutex mu_;
  CondVar cv_;  // signalled on kick, pass end and stop
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t passes_started_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t passes_finished_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;  // last: starts after every field above is built
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_WRITEBACK_WORKER_H_
