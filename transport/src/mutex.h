// mutex.h: the mutex, lock guard and condition variable transport/ uses —
// std::mutex underneath, with Abseil's thread-safety annotations on top.
//
// Why not absl::Mutex. Debian 12 ships Abseil prebuilt without
// ThreadSanitizer instrumentation, so TSan cannot see the happens-before
// edges absl::Mutex creates and reports every field it guards as a race
// (the TSan build of this repository shows hundreds of such reports for
// any absl::Mutex user). pthread mutexes and condition variables are
// intercepted by TSan itself, so these wrappers keep the TSan build
// meaningful while clang's -Wthread-safety still checks ABSL_GUARDED_BY.
// A candidate for common/ once other modules need it.
//
// Thread safety: as std::mutex / std::condition_variable.
#ifndef FARSWAP_TRANSPORT_SRC_MUTEX_H_
#define FARSWAP_TRANSPORT_SRC_MUTEX_H_

#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace farswap::transport {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // Wait atomically releases `mu`, waits for a Signal (or a spurious
  // wakeup), and reacquires `mu`. Callers loop on their condition.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // WaitWithDeadline is Wait bounded by `deadline`.
  void WaitWithDeadline(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait_until(lock, absl::ToChronoTime(deadline));
    lock.release();
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_SRC_MUTEX_H_
