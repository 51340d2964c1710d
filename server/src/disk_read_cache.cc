// disk_read_cache.cc: the page store's readahead cache (disk_read_cache.h).
#include "disk_read_cache.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace farswap::server::internal {

DiskReadCache::DiskReadCache(uint64_t segment_bytes, uint64_t capacity_bytes)
    : segment_bytes_(segment_bytes), capacity_bytes_(capacity_bytes) {}

uint64_t DiskReadCache::NextReadahead() {
  const uint64_t hits = hits_since_decision_.exchange(0, std::memory_order_relaxed);
  const uint64_t previous = readahead_.load(std::memory_order_relaxed);
  uint64_t bytes = hits == 0 ? 0 : std::bit_ceil((hits + 2) * 4096);
  bytes = std::min(bytes, kWindowBytes);
  bytes = std::max(bytes, previous / 2);
  if (bytes < kMinReadaheadBytes) bytes = 0;
  readahead_.store(bytes, std::memory_order_relaxed);
  return bytes;
}

DiskReadCache::Span DiskReadCache::SpanOf(uint64_t offset, uint64_t bytes) const {
  const uint64_t segment_begin = offset / segment_bytes_ * segment_bytes_;
  const uint64_t begin = segment_begin + (offset - segment_begin) / bytes * bytes;
  return {.begin = begin, .end = std::min(begin + bytes, segment_begin + segment_bytes_)};
}

DiskReadCache::Key DiskReadCache::KeyOf(uint64_t offset) const {
  const uint64_t segment = offset / segment_bytes_;
  return {.segment = segment, .index = (offset - segment * segment_bytes_) / kWindowBytes};
}

bool DiskReadCache::Lookup(uint64_t offset, uint32_t length, uint64_t epoch,
                           std::vector<uint8_t>* out, bool count_miss) {
  MutexLock l(&mu_);
  auto found = index_.find(KeyOf(offset));
  if (found == index_.end() || found->second->epoch != epoch || offset < found->second->begin ||
      offset + length > found->second->end) {
    if (count_miss) ++misses_;
    return false;
  }
  Lru::iterator it = found->second;
  lru_.splice(lru_.begin(), lru_, it);
  const uint8_t* bytes = it->data.get() + (offset - it->begin);
  out->insert(out->end(), bytes, bytes + length);
  ++hits_;
  hits_since_decision_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void DiskReadCache::Insert(uint64_t offset, uint64_t begin, uint64_t end, uint64_t epoch,
                           const uint8_t* data) {
  const Key key = KeyOf(offset);
  const uint64_t window_begin = key.segment * segment_bytes_ + key.index * kWindowBytes;
  const uint64_t window_end =
      std::min(window_begin + kWindowBytes, (key.segment + 1) * segment_bytes_);
  if (begin < window_begin) {
    data += window_begin - begin;
    begin = window_begin;
  }
  end = std::min(end, window_end);
  if (end <= begin || end - begin > capacity_bytes_) return;
  {
    MutexLock l(&mu_);
    if (auto found = index_.find(key); found != index_.end()) {
      const Entry& held = *found->second;
      if (held.epoch == epoch && held.begin <= begin && end <= held.end) return;
    }
  }
  // Copied with no lock held; a window inserted meanwhile is replaced.
  auto copy = std::make_unique_for_overwrite<uint8_t[]>(end - begin);
  std::memcpy(copy.get(), data, end - begin);
  MutexLock l(&mu_);
  if (auto found = index_.find(key); found != index_.end()) {
    const Entry& held = *found->second;
    if (held.epoch == epoch && held.begin <= begin && end <= held.end) return;
    EraseLocked(found->second);
  }
  while (bytes_ + (end - begin) > capacity_bytes_ && !lru_.empty()) {
    EraseLocked(std::prev(lru_.end()));
  }
  lru_.push_front(
      Entry{.key = key, .epoch = epoch, .begin = begin, .end = end, .data = std::move(copy)});
  index_[key] = lru_.begin();
  bytes_ += end - begin;
}

void DiskReadCache::EraseLocked(Lru::iterator it) {
  bytes_ -= it->end - it->begin;
  index_.erase(it->key);
  lru_.erase(it);
}

DiskReadCacheStats DiskReadCache::GetStats() const {
  const uint64_t readahead = readahead_.load(std::memory_order_relaxed);
  MutexLock l(&mu_);
  return {.hits = hits_,
          .misses = misses_,
          .windows = lru_.size(),
          .bytes = bytes_,
          .readahead_bytes = readahead};
}

}  // namespace farswap::server::internal
