// disk_read_cache.h: windows of the backing store read recently, so that
// loads of pages written back side by side are answered from memory
// (readahead). Private to server/.
//
// Why. Writeback appends the pages of a batch end to end (segment_table.h),
// so pages that were evicted together lie together on disk, and a program
// that faults one of them back soon faults its neighbours too (the kernel's
// swap readahead rests on the same locality). A load that must read the
// disk reads the whole aligned window around its object (kWindowBytes,
// clipped to the segment's written extent); the page store keeps the window
// here, and the next load of an object inside it copies the bytes instead
// of waiting for a read — on the I/O thread that read the request, with no
// hand-off to a worker (data_plane.cc).
//
// Why a window's bytes stay right. A window is keyed by segment and index
// within it and records the segment's epoch (bumped each time the segment
// is freed, segment_table.h) and how many of its bytes lay below the
// segment's extent when it was read. Bytes below a segment's extent are
// final until the segment is freed: appends only write past the extent, and
// nothing rewrites a segment before it is free again. So a window serves an
// object only if its epoch is the segment's epoch now and the object ends
// within its valid bytes. The caller holds the entry's key lock while it
// looks up, so the entry's segment holds that live object and cannot be
// freed meanwhile; the caller also checks the object's disk checksum.
//
// Bounded: at most `capacity_bytes` of windows (their valid bytes), least
// recently used first out. Thread-safe; its mutex is a leaf of the page
// store's lock order (taken under a key lock, or with no lock held).
#ifndef FARSWAP_SERVER_DISK_READ_CACHE_H_
#define FARSWAP_SERVER_DISK_READ_CACHE_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "farswap/common/mutex.h"

namespace farswap::server::internal {

struct DiskReadCacheStats {
  uint64_t hits = 0;             // lookups answered
  uint64_t misses = 0;           // lookups not answered (counted only where asked to)
  uint64_t windows = 0;          // windows held now
  uint64_t bytes = 0;            // the bytes they hold
  uint64_t readahead_bytes = 0;  // the span the last NextReadahead chose (0: none)
};

class DiskReadCache {
 public:
  // kWindowBytes: the largest readahead span, and the unit the cache keeps
  // (one entry per window of a segment; an entry may hold part of it):
  // about 150 of the dev corpora's compressed pages (1.7 KB each).
  static constexpr uint64_t kWindowBytes = 256 * 1024;
  // kMinReadaheadBytes: the smallest span worth reading around an object.
  static constexpr uint64_t kMinReadaheadBytes = 8 * 1024;

  // segment_bytes: the backing store's segment size (a window never spans
  // two segments); capacity_bytes: the most bytes held, > 0.
  DiskReadCache(uint64_t segment_bytes, uint64_t capacity_bytes);

  // NextReadahead: how much to read around each object of the next batch
  // of disk loads, decided as the kernel's swap readahead decides
  // (mm/swap_state.c, __swapin_nr_pages): from the hits since the last
  // decision, (hits + 2) x 4 KiB rounded up to a power of two, at most
  // kWindowBytes; no readahead (0) after a decision with no hit in
  // between; never below half the previous span (so one unlucky batch
  // does not collapse a sequential scan's), and 0 below kMinReadaheadBytes.
  // Starts at kWindowBytes.
  uint64_t NextReadahead();

  // Span: the `bytes`-aligned span (relative to its segment's start)
  // holding device byte `offset`, within its segment.
  struct Span {
    uint64_t begin = 0;
    uint64_t end = 0;
  };
  Span SpanOf(uint64_t offset, uint64_t bytes) const;

  // Lookup appends the `length` bytes at device byte `offset` to *out and
  // returns true if the cache holds them all, read from the object's
  // segment in `epoch`; else false and *out is untouched. count_miss:
  // whether a false counts as a miss.
  bool Lookup(uint64_t offset, uint32_t length, uint64_t epoch, std::vector<uint8_t>* out,
              bool count_miss);

  // Insert keeps a copy of device bytes [begin, end), read in `epoch` from
  // the segment of the object at `offset` (begin <= offset < end), all
  // final (below the segment's extent), as that object's window's entry
  // (clipped to the window). `data` holds the byte at `begin`. Replaces the
  // window's entry unless that one, of the same epoch, already holds the
  // span. A copy, so what the cache holds is exactly what it counts.
  void Insert(uint64_t offset, uint64_t begin, uint64_t end, uint64_t epoch, const uint8_t* data);

  DiskReadCacheStats GetStats() const;

 private:
  struct Key {
    uint64_t segment;
    uint64_t index;  // window within the segment
    bool operator==(const Key& o) const { return segment == o.segment && index == o.index; }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.segment, k.index);
    }
  };
  struct Entry {
    Key key;
    uint64_t epoch = 0;
    uint64_t begin = 0, end = 0;      // device bytes held
    std::unique_ptr<uint8_t[]> data;  // data[0] is the byte at `begin`
  };
  using Lru = std::list<Entry>;  // most recently used first

  Key KeyOf(uint64_t offset) const;
  void EraseLocked(Lru::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t segment_bytes_;
  const uint64_t capacity_bytes_;
  std::atomic<uint64_t> hits_since_decision_{0};
  std::atomic<uint64_t> readahead_{kWindowBytes};  // the last decision
  mutable Mutex mu_;
  Lru lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Key, Lru::iterator> index_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace farswap::server::internal

#endif  // FARSWAP_SERVER_DISK_READ_CACHE_H_
