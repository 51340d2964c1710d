// segment_table.cc: SegmentTable (see segment_table.h).
#include "segment_table.h"

#include <sys/mman.h>

#include <algorithm>
#include <cassert>
#include <cstring>

namespace farswap::server::internal {

SegmentTable::SegmentTable(uint64_t segment_count, uint64_t segment_bytes,
                           uint64_t reserve_segments, double max_dead_fraction, uint32_t max_parked)
    : segment_count_(segment_count),
      segment_bytes_(segment_bytes),
      reserve_(reserve_segments),
      max_dead_fraction_(max_dead_fraction),
      max_parked_(std::max<uint32_t>(max_parked, 1)),
      segments_(segment_count) {
  // Hand out low segments first: a stack with segment 0 on top.
  free_.reserve(segment_count);
  for (uint64_t s = segment_count; s > 0; --s) free_.push_back(s - 1);
  const size_t buffers =
      std::min<uint64_t>({kArenaBuffers, kArenaMaxBytes / segment_bytes, segment_count});
  if (buffers == 0) return;
  void* arena = ::mmap(nullptr, buffers * segment_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (arena == MAP_FAILED) return;  // heap buffers only, as where segments are large
  arena_ = static_cast<uint8_t*>(arena);
  arena_bytes_ = buffers * segment_bytes;
  MutexLock l(&mu_);
  for (size_t i = buffers; i > 0; --i) arena_free_.push_back(arena_ + (i - 1) * segment_bytes);
}

SegmentTable::~SegmentTable() {
  parked_.clear();  // their buffers may be the arena's
  if (arena_ != nullptr) ::munmap(arena_, arena_bytes_);
}

std::unique_ptr<OpenSegment> SegmentTable::AcquireOpen(bool use_reserve) {
  uint64_t segment = 0;
  {
    MutexLock l(&mu_);
    if (!parked_.empty()) {
      std::unique_ptr<OpenSegment> open = std::move(parked_.back());
      parked_.pop_back();
      segments_[open->segment].state = State::kOpenBusy;
      return open;
    }
    const uint64_t keep = use_reserve ? 0 : reserve_;
    if (free_.size() <= keep) return nullptr;
    segment = free_.back();
    free_.pop_back();
    segments_[segment].state = State::kOpenBusy;
  }
  auto open = std::make_unique<OpenSegment>();
  open->segment = segment;
  {
    MutexLock l(&mu_);
    if (!arena_free_.empty()) {
      open->buf = std::unique_ptr<uint8_t, SegmentBufferDeleter>(
          arena_free_.back(), SegmentBufferDeleter{.in_arena = true});
      arena_free_.pop_back();
      return open;
    }
    if (!spare_buffers_.empty()) {
      open->buf = std::move(spare_buffers_.back());
      spare_buffers_.pop_back();
      return open;
    }
  }
  open->buf.reset(static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, segment_bytes_)));
  return open;
}

void SegmentTable::Release(std::unique_ptr<OpenSegment> open) {
  MutexLock l(&mu_);
  Segment& seg = segments_[open->segment];
  assert(seg.state == State::kOpenBusy);
  if (seg.live == 0 && seg.pins == 0) {
    FreeLocked(open->segment);  // nothing anyone points to: reuse from the start
    KeepBufferLocked(std::move(open));
    return;
  }
  if (seg.live == 0) {
    SealLocked(open->segment);  // a load still reads from it: the last Unpin frees it
    KeepBufferLocked(std::move(open));
    return;
  }
  if (open->fill + kBlockSize > segment_bytes_ || parked_.size() >= max_parked_) {
    SealLocked(open->segment);  // full (no room for a largest object), or no slot is free
    KeepBufferLocked(std::move(open));
    return;
  }
  seg.state = State::kOpenParked;
  parked_.push_back(std::move(open));
}

void SegmentTable::AddLive(uint64_t segment, const ObjectRecord& record) {
  MutexLock l(&mu_);
  Segment& seg = segments_[segment];
  seg.live += record.length;
  seg.records.push_back(record);
  live_bytes_ += record.length;
  UpdateDeadLocked();
}

void SegmentTable::Extend(uint64_t segment, uint64_t extent) {
  MutexLock l(&mu_);
  Segment& seg = segments_[segment];
  if (extent > seg.extent) {
    held_bytes_ += extent - seg.extent;
    seg.extent = extent;
    UpdateDeadLocked();
  }
}

void SegmentTable::Drop(uint64_t segment, uint32_t length) {
  MutexLock l(&mu_);
  Segment& seg = segments_[segment];
  assert(seg.live >= length);
  seg.live -= length;
  live_bytes_ -= length;
  UpdateDeadLocked();
  if (seg.live != 0) return;
  if (seg.state == State::kSealed) {
    if (seg.pins == 0) FreeLocked(segment);  // else the last Unpin frees it
  } else if (seg.state == State::kOpenParked) {
    auto it = std::find_if(parked_.begin(), parked_.end(),
                           [segment](const auto& p) { return p->segment == segment; });
    assert(it != parked_.end());
    KeepBufferLocked(std::move(*it));  // the next batch starts a fresh segment
    parked_.erase(it);
    if (seg.pins == 0) {
      FreeLocked(segment);
    } else {
      SealLocked(segment);  // a load still reads from it: the last Unpin frees it
    }
  }
  // kOpenBusy: Release decides; kCleaning: FinishCleaning does.
}

void SegmentTable::KeepBufferLocked(std::unique_ptr<OpenSegment> open) {
  if (open->buf.get_deleter().in_arena) {
    arena_free_.push_back(open->buf.release());
  } else if (spare_buffers_.size() < kMaxSpareBuffers) {
    spare_buffers_.push_back(std::move(open->buf));
  }
}

void SegmentTable::FreeLocked(uint64_t segment) {
  Segment& seg = segments_[segment];
  held_bytes_ -= seg.extent;
  seg.state = State::kFree;
  ++seg.epoch;
  seg.extent = 0;
  seg.live = 0;
  seg.records.clear();
  seg.records.shrink_to_fit();
  free_.push_back(segment);
  UpdateDeadLocked();
}

void SegmentTable::SealLocked(uint64_t segment) {
  Segment& seg = segments_[segment];
  seg.state = State::kSealed;
  seg.sealed_at = ++seal_clock_;
}

void SegmentTable::UpdateDeadLocked() {
  const bool over = double(held_bytes_ - live_bytes_) > max_dead_fraction_ * double(held_bytes_);
  dead_over_target_.store(over, std::memory_order_relaxed);
}

uint64_t SegmentTable::dead_bytes() const {
  MutexLock l(&mu_);
  return held_bytes_ - live_bytes_;
}

uint64_t SegmentTable::free_segments() const {
  MutexLock l(&mu_);
  return free_.size();
}

bool SegmentTable::CanAppend() const {
  MutexLock l(&mu_);
  return !parked_.empty() || !free_.empty();
}

std::optional<SegmentTable::Victim> SegmentTable::PickVictim(double threshold,
                                                             VictimPolicy policy) {
  MutexLock l(&mu_);
  const double limit = threshold * double(segment_bytes_);
  // A linear scan: segments are few (a 64 GiB store of 1 MiB segments has
  // 65536) and a victim is picked once per segment cleaned.
  std::optional<uint64_t> best;
  double best_score = 0;
  for (uint64_t s = 0; s < segment_count_; ++s) {
    const Segment& seg = segments_[s];
    // live 0: a pinned segment waiting for its last Unpin; nothing to move.
    if (seg.state != State::kSealed || seg.live == 0 || double(seg.live) >= limit) continue;
    double score = 0;  // higher is better
    if (policy == VictimPolicy::kGreedy) {
      score = -double(seg.live);
    } else {
      const double u = double(seg.live) / double(segment_bytes_);
      const double age = double(seal_clock_ - seg.sealed_at + 1);
      score = (1 - u) * age / (1 + u);
    }
    if (!best.has_value() || score > best_score) {
      best = s;
      best_score = score;
    }
  }
  if (!best.has_value()) return std::nullopt;
  Segment& seg = segments_[*best];
  seg.state = State::kCleaning;
  return Victim{.segment = *best, .extent = seg.extent, .records = seg.records};
}

bool SegmentTable::FinishCleaning(uint64_t segment) {
  MutexLock l(&mu_);
  Segment& seg = segments_[segment];
  assert(seg.state == State::kCleaning);
  if (seg.live == 0 && seg.pins == 0) {
    FreeLocked(segment);
    return true;
  }
  seg.state = State::kSealed;  // keeps its age: nothing new was written to it
  return false;
}

SegmentTable::PinnedSegment SegmentTable::Pin(uint64_t segment) {
  MutexLock l(&mu_);
  Segment& seg = segments_[segment];
  ++seg.pins;
  return {.epoch = seg.epoch, .extent = seg.extent};
}

uint64_t SegmentTable::epoch(uint64_t segment) const {
  MutexLock l(&mu_);
  return segments_[segment].epoch;
}

void SegmentTable::Unpin(uint64_t segment) {
  MutexLock l(&mu_);
  Segment& seg = segments_[segment];
  assert(seg.pins > 0);
  if (--seg.pins != 0) return;
  // Left with nothing live while a load read from it: free it now.
  if (seg.live == 0 && seg.state == State::kSealed) FreeLocked(segment);
}

uint64_t SegmentTable::pins(uint64_t segment) const {
  MutexLock l(&mu_);
  return segments_[segment].pins;
}

SegmentTableStats SegmentTable::GetStats() const {
  MutexLock l(&mu_);
  return {.segments = segment_count_,
          .free_segments = free_.size(),
          .live_bytes = live_bytes_,
          .held_bytes = held_bytes_};
}

}  // namespace farswap::server::internal
