#include "page_index.h"

#include <utility>

namespace farswap::server::internal {

Entry* PageIndex::Find(const PageKey& key) {
  Shard& s = ShardFor(key);
  MutexLock l(&s.mu);
  auto it = s.entries.find(key);
  return it == s.entries.end() ? nullptr : it->get();
}

std::unique_ptr<Entry> PageIndex::Replace(std::unique_ptr<Entry> entry) {
  const PageKey key = entry->key;
  Shard& s = ShardFor(key);
  MutexLock l(&s.mu);
  // One probe of the table: a new key is inserted where the probe ended; a
  // stored key's slot keeps its place and takes the new entry (it was a
  // find, an extract and an insert: three probes and three hashes).
  bool inserted = false;
  auto it = s.entries.lazy_emplace(key, [&](const auto& construct) {
    inserted = true;
    construct(std::move(entry));
  });
  if (!inserted) {
    // A set's elements are const to keep their hash in place. The new entry
    // has the old one's key, so the slot's hash and tag still hold, and the
    // slot itself is not a const object: swapping the pointer is sound.
    std::swap(const_cast<std::unique_ptr<Entry>&>(*it), entry);
    return entry;  // the old one
  }
  s.pages[key.tenant].insert(key.page);
  size_.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

std::unique_ptr<Entry> PageIndex::Erase(const PageKey& key) {
  Shard& s = ShardFor(key);
  MutexLock l(&s.mu);
  auto it = s.entries.find(key);
  if (it == s.entries.end()) return nullptr;
  std::unique_ptr<Entry> old = std::move(s.entries.extract(it).value());
  auto pages = s.pages.find(key.tenant);
  pages->second.erase(key.page);
  if (pages->second.empty()) s.pages.erase(pages);
  size_.fetch_sub(1, std::memory_order_relaxed);
  return old;
}

bool PageIndex::NextKeysInRange(RangeCursor* c, std::vector<PageKey>* out) {
  for (; c->shard < kShards; ++c->shard, c->started = false) {
    if (!c->started) {
      c->next = c->first;
      c->started = true;
    }
    Shard& s = shards_[c->shard];
    size_t taken = 0;
    bool shard_done = true;
    {
      MutexLock l(&s.mu);
      auto pages = s.pages.find(c->tenant);
      if (pages != s.pages.end()) {
        const absl::btree_set<uint64_t>& set = pages->second;
        for (auto it = set.lower_bound(c->next); it != set.end() && *it <= c->last; ++it) {
          if (taken == kRangeChunk) {  // more left: resume here next time
            c->next = *it;
            shard_done = false;
            break;
          }
          out->push_back({c->tenant, *it});
          ++taken;
        }
      }
    }
    if (!shard_done) return true;
    if (taken > 0) {  // this shard is done; the next call starts the next one
      ++c->shard;
      c->started = false;
      return true;
    }
    // Nothing of this tenant's range here: on to the next shard now. Each
    // shard lock is still taken for one short look.
  }
  return false;
}

void PageIndex::Clear() {
  for (Shard& s : shards_) {
    MutexLock l(&s.mu);
    s.entries.clear();
    s.pages.clear();
  }
  size_.store(0, std::memory_order_relaxed);
}

}  // namespace farswap::server::internal
