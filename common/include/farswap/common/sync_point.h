// sync_point.h: named points in concurrent code where a test can run a
// callback, to force one interleaving deterministically (no sleeps).
//
//   // in code under test:
//   FARSWAP_SYNC_POINT("PageStore::Writeback:after-unlock");
//   // in a test:
//   SyncPoints::Set("PageStore::Writeback:after-unlock", [&] { store.Store(k, v2); });
//   ...
//   SyncPoints::ClearAll();
//
// With no callback registered anywhere, a sync point costs one relaxed
// atomic load. A callback runs on the thread that reaches the point, with
// whatever locks that thread holds at that point (documented beside each
// point). Callbacks must not re-register themselves.
#ifndef FARSWAP_COMMON_SYNC_POINT_H_
#define FARSWAP_COMMON_SYNC_POINT_H_

#include <atomic>
#include <functional>
#include <string>

namespace farswap {

// SyncPoints is a process-wide registry; its functions are thread-safe.
class SyncPoints {
 public:
  // Set registers `callback` for `name`, replacing any earlier one.
  static void Set(const std::string& name, std::function<void()> callback);
  // SetOnce registers a callback that runs on the first hit only.
  static void SetOnce(const std::string& name, std::function<void()> callback);
  static void Clear(const std::string& name);
  static void ClearAll();
  // Hit runs the callback registered for `name`, if any.
  static void Hit(const char* name);
  static bool enabled() { return enabled_.load(std::memory_order_relaxed); }

 private:
  static std::atomic<bool> enabled_;
};

}  // namespace farswap

#define FARSWAP_SYNC_POINT(name)                                            \
  do {                                                                      \
    if (::farswap::SyncPoints::enabled()) ::farswap::SyncPoints::Hit(name); \
  } while (0)

#endif  // FARSWAP_COMMON_SYNC_POINT_H_
