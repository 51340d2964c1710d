#include "farswap/common/sync_point.h"

#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "farswap/common/mutex.h"

namespace farswap {
namespace {

struct Entry {
  std::shared_ptr<std::function<void()>> callback;
  bool once = false;
};

struct Registry {
  Mutex mu;
  std::map<std::string, Entry> callbacks ABSL_GUARDED_BY(mu);
};

Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

}  // namespace

std::atomic<bool> SyncPoints::enabled_{false};

void SyncPoints::Set(const std::string& name, std::function<void()> callback) {
  Registry& r = registry();
  MutexLock l(&r.mu);
  r.callbacks[name] = Entry{std::make_shared<std::function<void()>>(std::move(callback)), false};
  enabled_.store(true);
}

void SyncPoints::SetOnce(const std::string& name, std::function<void()> callback) {
  Registry& r = registry();
  MutexLock l(&r.mu);
  r.callbacks[name] = Entry{std::make_shared<std::function<void()>>(std::move(callback)), true};
  enabled_.store(true);
}

void SyncPoints::Clear(const std::string& name) {
  Registry& r = registry();
  MutexLock l(&r.mu);
  r.callbacks.erase(name);
  enabled_.store(!r.callbacks.empty());
}

void SyncPoints::ClearAll() {
  Registry& r = registry();
  MutexLock l(&r.mu);
  r.callbacks.clear();
  enabled_.store(false);
}

void SyncPoints::Hit(const char* name) {
  Registry& r = registry();
  std::shared_ptr<std::function<void()>> cb;
  {
    MutexLock l(&r.mu);
    auto it = r.callbacks.find(name);
    if (it == r.callbacks.end()) return;
    cb = it->second.callback;
    if (it->second.once) {
      r.callbacks.erase(it);
      enabled_.store(!r.callbacks.empty());
    }
  }
  (*cb)();  // outside the registry lock: the callback may hit other points
}

}  // namespace farswap
