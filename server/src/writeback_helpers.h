// writeback_helpers.h: the threads that write back beside the writeback
// thread's pass. Private to server/.
//
// Why. One writeback thread is CPU-bound well before the disk is: each page
// costs a walk of the LRU (a cache miss per entry), its key lock and index
// lookup, a copy into the segment and a checksum, and its publish
// (server/README.md, "Writeback bandwidth"). The protocol already lets any
// number of threads write back at once (direct reclaim runs passes on the
// storing threads): each has its own open segment and round in flight, the
// LRU hands each pick to one of them, and a key lock re-validates every
// candidate. So a pass hands the same loop to helper threads, and a drain
// goes as fast as the cores and the disk allow (the kernel's writeback
// runs a worker per device for the same reason).
//
// The pass's thread calls Start with the work at the start of a pass and
// Wait before the pass ends; each helper runs the work once per Start.
#ifndef FARSWAP_SERVER_WRITEBACK_HELPERS_H_
#define FARSWAP_SERVER_WRITEBACK_HELPERS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "farswap/common/mutex.h"
#include "farswap/common/thread_name.h"

namespace farswap::server {

// WritebackHelpers owns `count` threads. Start and Wait are for one thread
// at a time (the writeback thread); the destructor joins the threads and
// must not run while a Start has no Wait yet.
class WritebackHelpers {
 public:
  explicit WritebackHelpers(uint32_t count) {
    threads_.reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
      threads_.emplace_back([this, i] { Loop(i); });
    }
  }

  ~WritebackHelpers() {
    {
      MutexLock l(&mu_);
      stopping_ = true;
      cv_.SignalAll();
    }
    for (std::thread& t : threads_) t.join();
  }

  WritebackHelpers(const WritebackHelpers&) = delete;
  WritebackHelpers& operator=(const WritebackHelpers&) = delete;

  uint32_t count() const { return uint32_t(threads_.size()); }

  // Start runs `work` once on every helper and returns at once. The work
  // runs with no lock of this class held.
  void Start(std::function<void()> work) {
    MutexLock l(&mu_);
    work_ = std::move(work);
    running_ = uint32_t(threads_.size());
    ++generation_;
    cv_.SignalAll();
  }

  // Wait blocks until every helper has returned from the last Start's work.
  void Wait() {
    MutexLock l(&mu_);
    while (running_ > 0) cv_.Wait(&mu_);
    work_ = nullptr;
  }

 private:
  void Loop(uint32_t index) {
    SetCurrentThreadName("fs-writeback-" + std::to_string(index + 1));
    uint64_t seen = 0;  // the generation this helper last ran
    for (;;) {
      std::function<void()> work;
      {
        MutexLock l(&mu_);
        while (generation_ == seen && !stopping_) cv_.Wait(&mu_);
        if (stopping_) return;
        seen = generation_;
        work = work_;
      }
      work();
      MutexLock l(&mu_);
      if (--running_ == 0) cv_.SignalAll();
    }
  }

  Mutex mu_;
  CondVar cv_;  // signalled on Start, on the last helper's return and on stop
  std::function<void()> work_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // Starts so far
  uint32_t running_ ABSL_GUARDED_BY(mu_) = 0;     // helpers still in this Start's work
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // last: started once every field above is built
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_WRITEBACK_HELPERS_H_
