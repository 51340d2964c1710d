// tsan_absl_mutex.cc: makes Debian's prebuilt absl::Mutex visible to
// ThreadSanitizer. Linked into test binaries of TSan builds only.
//
// Why. Debian builds Abseil without -fsanitize=thread, so the annotations
// absl::Mutex carries for TSan (ABSL_TSAN_MUTEX_*) are compiled out of
// libabsl_synchronization, and its lock word is touched by uninstrumented
// atomics. TSan then sees no happens-before edge at all between an unlock
// and the next lock, and reports every ABSL_GUARDED_BY field as racy (and
// Condition lambdas that Unlock() evaluates on another thread's stack).
// Rebuilding Abseil under TSan is not an option with Debian packages only.
//
// How. This file defines the Mutex / CondVar entry points the project
// calls. The definitions in the executable take precedence over the shared
// library's (symbol interposition); each forwards to the library's own
// function, found with dlsym(RTLD_NEXT), and tells TSan what happened with
// its public mutex API (sanitizer/tsan_interface.h) — the same calls Abseil
// makes when it is built under TSan. TSan then also checks lock order
// (lock-order-inversion reports) for absl::Mutex.
//
// Limits: Await / LockWhen / CondVar waits are annotated as writer-mode
// (the project never waits in reader mode).
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FARSWAP_TSAN_BUILD 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define FARSWAP_TSAN_BUILD 1
#endif

#ifdef FARSWAP_TSAN_BUILD

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#pragma clang diagnostic ignored "-Wthread-safety-analysis"

namespace {

#define FARSWAP_XSTR(x) FARSWAP_STR(x)
#define FARSWAP_STR(x) #x

// Real looks up the shared library's definition of an absl symbol given
// the mangled name after "_ZN4absl<ns>" (the inline namespace varies).
template <typename Fn>
Fn Real(const char* suffix) {
  const std::string ns = FARSWAP_XSTR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = "_ZN4absl" + std::to_string(ns.size()) + ns + suffix;
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found in the Abseil library\n", name.c_str());
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

using MutexFn = void (*)(absl::Mutex*);
using MutexBoolFn = bool (*)(absl::Mutex*);
using MutexCondFn = void (*)(absl::Mutex*, const absl::Condition&);
using MutexCondTimeoutFn = bool (*)(absl::Mutex*, const absl::Condition&, absl::Duration);
using CondVarWaitFn = void (*)(absl::CondVar*, absl::Mutex*);
using CondVarWaitTimeoutFn = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);

// Released / Reacquired bracket a wait that drops and retakes the lock.
void Released(void* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_mutex_post_unlock(mu, 0);
}
void Reacquired(void* mu) {
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_mutex_post_lock(mu, 0, 0);
}

// SeenUnderLock wraps a Condition so that, wherever Abseil evaluates it
// (on the waiting thread, or on another thread inside Unlock), TSan first
// acquires the mutex's release history, and releases it again afterwards:
// Abseil evaluates conditions with the lock word held, at moments the
// annotations above cannot bracket.
struct SeenUnderLock {
  const absl::Condition* cond;
  absl::Mutex* mu;
  static bool Eval(SeenUnderLock* self) {
    __tsan_acquire(self->mu);
    bool ready = self->cond->Eval();
    __tsan_release(self->mu);  // and the next holder sees this evaluation
    return ready;
  }
  absl::Condition AsCondition() { return absl::Condition(&SeenUnderLock::Eval, this); }
};

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

Mutex::~Mutex() {
  static const MutexFn real = Real<MutexFn>("5MutexD1Ev");
  __tsan_mutex_destroy(this, 0);
  real(this);
}

void Mutex::Lock() {
  static const MutexFn real = Real<MutexFn>("5Mutex4LockEv");
  __tsan_mutex_pre_lock(this, 0);
  real(this);
  __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::ReaderLock() {
  static const MutexFn real = Real<MutexFn>("5Mutex10ReaderLockEv");
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

bool Mutex::TryLock() {
  static const MutexBoolFn real = Real<MutexBoolFn>("5Mutex7TryLockEv");
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  bool locked = real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed),
                         0);
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const MutexBoolFn real = Real<MutexBoolFn>("5Mutex13ReaderTryLockEv");
  const unsigned flags = __tsan_mutex_read_lock | __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(this, flags);
  bool locked = real(this);
  __tsan_mutex_post_lock(this, flags | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  return locked;
}

void Mutex::Unlock() {
  static const MutexFn real = Real<MutexFn>("5Mutex6UnlockEv");
  __tsan_mutex_pre_unlock(this, 0);
  real(this);
  __tsan_mutex_post_unlock(this, 0);
}

void Mutex::ReaderUnlock() {
  static const MutexFn real = Real<MutexFn>("5Mutex12ReaderUnlockEv");
  __tsan_mutex_pre_unlock(this, __tsan_mutex_read_lock);
  real(this);
  __tsan_mutex_post_unlock(this, __tsan_mutex_read_lock);
}

void Mutex::LockWhen(const Condition& cond) {
  static const MutexCondFn real = Real<MutexCondFn>("5Mutex8LockWhenERKNS0_9ConditionE");
  SeenUnderLock wrapped{&cond, this};
  __tsan_mutex_pre_lock(this, 0);
  real(this, wrapped.AsCondition());
  __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::Await(const Condition& cond) {
  static const MutexCondFn real = Real<MutexCondFn>("5Mutex5AwaitERKNS0_9ConditionE");
  SeenUnderLock wrapped{&cond, this};
  Released(this);
  real(this, wrapped.AsCondition());
  Reacquired(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const MutexCondTimeoutFn real =
      Real<MutexCondTimeoutFn>("5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  SeenUnderLock wrapped{&cond, this};
  Released(this);
  bool result = real(this, wrapped.AsCondition(), timeout);
  Reacquired(this);
  return result;
}

void CondVar::Wait(Mutex* mu) {
  static const CondVarWaitFn real = Real<CondVarWaitFn>("7CondVar4WaitEPNS0_5MutexE");
  Released(mu);
  real(this, mu);
  Reacquired(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static const CondVarWaitTimeoutFn real =
      Real<CondVarWaitTimeoutFn>("7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Released(mu);
  bool result = real(this, mu, timeout);
  Reacquired(mu);
  return result;
}

ABSL_NAMESPACE_END
}  // namespace absl

#endif  // FARSWAP_TSAN_BUILD
