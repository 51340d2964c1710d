#include "page_index.h"

namespace farswap::server::internal {

Entry* PageIndex::Find(const PageKey& key) {
  Shard& s = ShardFor(key);
  MutexLock l(&s.mu);
  auto it = s.map.find(key);
  return it == s.map.end() ? nullptr : it->second.get();
}

std::unique_ptr<Entry> PageIndex::Replace(std::unique_ptr<Entry> entry) {
  const PageKey key = entry->key;
  Shard& s = ShardFor(key);
  MutexLock l(&s.mu);
  std::unique_ptr<Entry>& slot = s.map[key];
  std::unique_ptr<Entry> old = std::move(slot);
  slot = std::move(entry);
  if (old == nullptr) size_.fetch_add(1, std::memory_order_relaxed);
  return old;
}

std::unique_ptr<Entry> PageIndex::Erase(const PageKey& key) {
  Shard& s = ShardFor(key);
  MutexLock l(&s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return nullptr;
  std::unique_ptr<Entry> old = std::move(it->second);
  s.map.erase(it);
  size_.fetch_sub(1, std::memory_order_relaxed);
  return old;
}

std::vector<PageKey> PageIndex::KeysInRange(uint32_t tenant, uint64_t first, uint64_t last) {
  std::vector<PageKey> keys;
  for (Shard& s : shards_) {
    MutexLock l(&s.mu);
    for (const auto& [key, entry] : s.map) {
      if (key.tenant == tenant && key.page >= first && key.page <= last) keys.push_back(key);
    }
  }
  return keys;
}

void PageIndex::Clear() {
  for (Shard& s : shards_) {
    MutexLock l(&s.mu);
    s.map.clear();
  }
  size_.store(0, std::memory_order_relaxed);
}

}  // namespace farswap::server::internal
