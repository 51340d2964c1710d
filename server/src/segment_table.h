// segment_table.h: the page store's log-structured layout of the backing
// store. Private to server/.
//
// The backing store is cut into segments of segment_bytes (a whole number of
// 4 KiB blocks, 1 MiB by default). Writeback appends compressed pages end to
// end into an open segment's in-memory buffer and writes the appended blocks
// with one WriteBlocks; an entry on disk records its byte offset and length.
// The table keeps, per segment, its state, the bytes written so far (its
// extent), the live bytes (objects some entry still points to) and a record
// of every object appended (key, gen, offset, length) for the cleaner.
//
// Segment states:
//   kFree      nothing in it; may be handed out by AcquireOpen.
//   kOpenBusy  an OpenSegment checked out by one writeback batch or cleaning
//              round, which alone appends to it.
//   kOpenParked a partly filled open segment between batches (up to
//              max_parked of them: one per writeback thread); the next
//              AcquireOpen takes one, so batches keep filling it.
//   kSealed    no more appends; freed when its live bytes reach 0, or when
//              the cleaner has moved its live objects away.
//   kCleaning  the cleaner is moving its live objects; freed when it ends.
//
// Pins: why a segment is never freed with a reader in it. A load reads an
// object with NO lock held (page_store.cc, "load"): under the entry's key
// lock it takes a pin on the object's segment (Pin), drops the lock, reads,
// and unpins (Unpin). A pinned segment is never freed, so never reused:
// where it would be freed (its live bytes reach 0 by Drop, by Release of an
// open segment, or when the cleaner finishes with it) it is sealed instead,
// with no live bytes, and the last Unpin frees it. The cleaner may still
// move a pinned segment's live objects elsewhere (the bytes stay where they
// were, only the entries point elsewhere): the load in flight reads the old
// copy, which is intact because nothing writes to a segment until it is
// free again. Appends never touch a block that holds published bytes: each
// write covers blocks past the segment's extent, and the extent then
// advances to the next block boundary.
//
// Dead bytes. A segment's held bytes (its extent) minus its live bytes are
// dead: objects no entry points to any more, and the zero padding after a
// write's last object. The table keeps the store-wide dead fraction and
// raises DeadOverTarget() while it is above `max_dead_fraction`; the page
// store's space-driven cleaner then reclaims segments until it is not
// (cleaner.cc).
//
// Thread-safe; its mutex is a leaf of the page store's lock order.
#ifndef FARSWAP_SERVER_SEGMENT_TABLE_H_
#define FARSWAP_SERVER_SEGMENT_TABLE_H_

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "farswap/common/mutex.h"
#include "farswap/server/block_device.h"
#include "page_index.h"

namespace farswap::server::internal {

// ObjectRecord: one object appended to a segment.
struct ObjectRecord {
  PageKey key;
  uint64_t gen = 0;
  uint32_t offset = 0;  // within the segment
  uint32_t length = 0;
};

// OpenSegment is a segment being appended to, with its buffer. Owned by
// whoever checked it out (not thread-safe itself).
// SegmentBufferDeleter frees a segment buffer of the heap; one of the
// table's arena (`in_arena`) belongs to the table and is left alone.
struct SegmentBufferDeleter {
  bool in_arena = false;
  void operator()(uint8_t* p) const {
    if (!in_arena) std::free(p);
  }
};

struct OpenSegment {
  uint64_t segment = 0;
  uint64_t fill = 0;     // bytes appended (the next object's offset)
  uint64_t flushed = 0;  // bytes on disk: a block boundary, <= fill
  // segment_bytes, block-aligned. Bytes past `fill` are not zeroed (a
  // recycled buffer holds an earlier segment's): a flush zeroes the padding
  // it writes.
  std::unique_ptr<uint8_t, SegmentBufferDeleter> buf;
};

struct SegmentTableStats {
  uint64_t segments = 0;
  uint64_t free_segments = 0;
  uint64_t live_bytes = 0;  // bytes of objects entries point to
  uint64_t held_bytes = 0;  // extents of every segment not free (live + dead + padding)
};

// VictimPolicy: how PickVictim ranks the sealed segments that qualify.
enum class VictimPolicy {
  // kGreedy: the lowest live fraction first (the most space back per byte
  // moved now: what a store that is running out of segments needs).
  kGreedy,
  // kCostBenefit: Sprite LFS's benefit / cost = (1 - u) x age / (1 + u),
  // u the live fraction and age how long ago the segment was sealed (in
  // seals since): a cold segment's dead bytes are cleaned at a higher u
  // than a hot one's, whose live bytes are still dying by themselves.
  kCostBenefit,
};

// SegmentTable: see the file comment. Thread-safe.
class SegmentTable {
 public:
  // reserve_segments: free segments only the cleaner may take, so it can
  // always make progress while writeback has filled the rest.
  // max_dead_fraction: DeadOverTarget() is raised while dead bytes exceed
  // this fraction of held bytes; 1 never raises it.
  // max_parked: partly filled segments kept open between batches (>= 1):
  // one per thread that writes back at once, so that none of them seals a
  // segment half full at the end of every pass.
  SegmentTable(uint64_t segment_count, uint64_t segment_bytes, uint64_t reserve_segments,
               double max_dead_fraction = 1.0, uint32_t max_parked = 1);
  ~SegmentTable();
  SegmentTable(const SegmentTable&) = delete;
  SegmentTable& operator=(const SegmentTable&) = delete;

  // BufferRegion: the arena of segment buffers, mapped for the table's
  // whole life (bytes 0 where there is none). Open segments take their
  // buffers from it first, so the write queues register it with io_uring
  // once (BlockWriteQueue::UseRegisteredBuffer) and a segment's writes go
  // from pinned pages. Segments open beyond the arena's buffers at once get
  // heap buffers, written as before.
  struct BufferRegion {
    const void* base = nullptr;
    size_t bytes = 0;
  };
  BufferRegion buffer_region() const { return {arena_, arena_bytes_}; }
  // kArenaBuffers: segment buffers in the arena (fewer where segments are
  // so large that kArenaBuffers of them pass kArenaMaxBytes; none where one
  // does). Each writeback thread, the cleaner and a direct reclaimer hold
  // one at most, and each parked segment one more; past these, segments get
  // heap buffers and write plain.
  static constexpr size_t kArenaBuffers = 4;
  static constexpr size_t kArenaMaxBytes = 16 << 20;

  uint64_t segment_bytes() const { return segment_bytes_; }
  uint64_t segment_count() const { return segment_count_; }

  // AcquireOpen checks out a parked segment, or else a free one (a free
  // one only while more than the reserve is free, unless `use_reserve`),
  // with its buffer. nullptr when there is none.
  std::unique_ptr<OpenSegment> AcquireOpen(bool use_reserve);
  // Release returns a checked-out segment: a full one, or one that finds
  // max_parked segments parked, is sealed; a partly filled one is parked. One whose
  // live bytes are 0 is freed instead, its extent discarded.
  void Release(std::unique_ptr<OpenSegment> open);

  // AddLive: an object at `record.offset` of `segment` was published.
  void AddLive(uint64_t segment, const ObjectRecord& record);
  // Extend: `segment`'s extent grew to `extent` bytes (after a write).
  void Extend(uint64_t segment, uint64_t extent);
  // Drop: an object of `length` bytes in `segment` is no longer an entry's
  // (invalidated, replaced, moved). A sealed or parked segment left with
  // no live bytes is freed.
  void Drop(uint64_t segment, uint32_t length);

  // free_segments: how many are free now.
  uint64_t free_segments() const;
  // CanAppend: a segment is parked or free, so the cleaner has somewhere to
  // move live objects to.
  bool CanAppend() const;
  // DeadOverTarget: dead bytes are above max_dead_fraction of held bytes
  // (an atomic read; no lock).
  bool DeadOverTarget() const { return dead_over_target_.load(std::memory_order_relaxed); }
  // dead_bytes: held minus live bytes now.
  uint64_t dead_bytes() const;
  // PickVictim marks the best sealed segment under `policy` whose live
  // bytes are below `threshold` x segment_bytes as being cleaned and
  // returns it with its extent and its records. nullopt when no segment
  // qualifies.
  struct Victim {
    uint64_t segment = 0;
    uint64_t extent = 0;
    std::vector<ObjectRecord> records;
  };
  std::optional<Victim> PickVictim(double threshold, VictimPolicy policy = VictimPolicy::kGreedy);
  // Pin: a reader is about to read from `segment`; it is not freed until
  // the matching Unpin. Unpin frees it if it was left with nothing live
  // while pinned (see the file comment). Returns the segment's epoch and
  // extent now: the bytes below that extent are final while it is pinned
  // (disk_read_cache.h).
  struct PinnedSegment {
    uint64_t epoch = 0;
    uint64_t extent = 0;
  };
  PinnedSegment Pin(uint64_t segment);
  // epoch: how many times `segment` has been freed; a window read from it
  // is stale once this moves (disk_read_cache.h).
  uint64_t epoch(uint64_t segment) const;
  void Unpin(uint64_t segment);
  // pins: readers in `segment` now (tests).
  uint64_t pins(uint64_t segment) const;
  // FinishCleaning frees the victim if nothing live is left in it (and no
  // reader has it pinned: then the last Unpin frees it), else seals it
  // again (an object could not be moved). Returns whether freed now.
  bool FinishCleaning(uint64_t segment);

  SegmentTableStats GetStats() const;

 private:
  enum class State : uint8_t { kFree, kOpenBusy, kOpenParked, kSealed, kCleaning };
  struct Segment {
    State state = State::kFree;
    uint64_t extent = 0;
    uint64_t live = 0;
    uint64_t sealed_at = 0;  // seal_clock_ when last sealed (cost-benefit's age)
    uint64_t pins = 0;       // loads reading from it now (Pin / Unpin)
    uint64_t epoch = 0;      // times freed (FreeLocked)
    std::vector<ObjectRecord> records;
  };
  void FreeLocked(uint64_t segment) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SealLocked(uint64_t segment) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // UpdateDeadLocked recomputes dead_over_target_ after live or held moved.
  void UpdateDeadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t segment_count_;
  const uint64_t segment_bytes_;
  const uint64_t reserve_;
  const double max_dead_fraction_;
  const uint32_t max_parked_;
  mutable Mutex mu_;
  std::vector<Segment> segments_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> free_ ABSL_GUARDED_BY(mu_);  // a stack of free segment numbers
  std::vector<std::unique_ptr<OpenSegment>> parked_ ABSL_GUARDED_BY(mu_);  // max_parked_ at most
  // spare_buffers_: buffers of segments no longer open, kept for the next
  // AcquireOpen (at most kMaxSpareBuffers): a fresh 1 MiB buffer costs an
  // mmap, page faults and an munmap, at every segment writeback fills.
  static constexpr size_t kMaxSpareBuffers = 4;
  std::vector<std::unique_ptr<uint8_t, SegmentBufferDeleter>> spare_buffers_ ABSL_GUARDED_BY(mu_);
  // The arena (buffer_region()): arena_bytes_ / segment_bytes_ buffers in
  // one anonymous mapping, unmapped by the destructor; arena_free_ holds
  // those no open segment has. An arena buffer always goes back there.
  uint8_t* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  std::vector<uint8_t*> arena_free_ ABSL_GUARDED_BY(mu_);
  // KeepBufferLocked: `open` is done with; keep its buffer (back in the
  // arena, or as a spare).
  void KeepBufferLocked(std::unique_ptr<OpenSegment> open) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t seal_clock_ ABSL_GUARDED_BY(mu_) = 0;  // segments sealed so far
  std::atomic<bool> dead_over_target_{false};     // written under mu_, read without
};

}  // namespace farswap::server::internal

#endif  // FARSWAP_SERVER_SEGMENT_TABLE_H_
