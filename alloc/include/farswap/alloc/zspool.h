// zspool.h: a user-space zsmalloc, the pool a memory node keeps compressed
// pages in.
//
//   absl::StatusOr<std::unique_ptr<ZsPool>> pool = ZsPool::Create({.mem_limit = 1 << 30});
//   absl::StatusOr<ZsHandle> h = (*pool)->Malloc(compressed_len);
//   if (!h.ok()) ...                        // RESOURCE_EXHAUSTED when full
//   (*pool)->Write(*h, compressed, compressed_len);
//   {
//     ZsPool::ReadGuard g = (*pool)->Read(*h).value();   // pins against compaction
//     Decompress(g.data(), g.size(), out);
//   }
//   (*pool)->Free(*h);
//
// Objects are 1..4096 bytes, kept in size classes (size_classes.h) inside
// zspages. Callers hold opaque handles that stay valid while compaction moves
// the object. The pool knows nothing about keys, LRUs, tenants or I/O.
//
// Thread safety: a ZsPool is safe for concurrent use from any number of
// threads. The caller must not Free() a handle while another thread reads,
// writes or frees the same handle (the page store's per-key lock ensures
// this); any other combination, including Compact() at any time, is safe.
#ifndef FARSWAP_ALLOC_ZSPOOL_H_
#define FARSWAP_ALLOC_ZSPOOL_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "farswap/alloc/size_classes.h"
#include "farswap/common/mutex.h"

namespace farswap::alloc {

// ZsHandle names one pool object. 0 is never a valid handle.
struct ZsHandle {
  uint64_t value = 0;
  explicit operator bool() const { return value != 0; }
  friend bool operator==(ZsHandle a, ZsHandle b) { return a.value == b.value; }
  friend bool operator!=(ZsHandle a, ZsHandle b) { return a.value != b.value; }
};

struct ZsPoolOptions {
  // mem_limit: the most bytes of memory (4 KiB pages committed from the OS)
  // the pool may hold; 0 means no limit. Malloc beyond it fails with
  // RESOURCE_EXHAUSTED. Changeable later with SetMemLimit().
  size_t mem_limit = 0;
  // max_pages_per_zspage: the longest zspage chain (kernel default 8).
  uint32_t max_pages_per_zspage = 8;
  // arena_bytes: virtual address space reserved for zspages at start
  // (MAP_NORESERVE: costs no memory). 0 picks max(8 x mem_limit, 1 GiB), or
  // 64 GiB without a limit. Every zspage gets a max_pages_per_zspage-page
  // slot of it. When every slot is in use the pool reserves another segment
  // twice the size of the one before, so a limit raised later (SetMemLimit)
  // is never capped by the start-up reservation: only by what handles can
  // address (2^32 - 1 zspages, 2^28 objects).
  size_t arena_bytes = 0;
  // release_batch_pages: pages emptied by Free() are returned to the OS in
  // batches of this many per class (they stay counted in mem_used_total
  // until they are), to keep madvise() off most frees. Compact() releases
  // every pending page.
  uint32_t release_batch_pages = 64;
  // empty_cache_pages: the most committed pages of emptied zspages the pool
  // keeps for reuse instead of returning them to the OS; 0 (the default)
  // returns every empty zspage at once. A node whose pool churns at its
  // limit (writeback frees, stores refill) would otherwise madvise() pages
  // away and fault them back in, a TLB shootdown and a page fault per page.
  // Cached pages stay counted in mem_used_total and against mem_limit; a
  // Malloc that would pass the limit first gives the cache back to the OS.
  // Changeable later with SetEmptyCacheLimit().
  uint32_t empty_cache_pages = 0;
};

// ZsPoolStats uses zram's mm_stat names (Documentation/admin-guide/
// blockdev/zram.rst). orig_data_size and same_pages describe data the pool
// never sees; the caller reports them with AddCallerCounters().
struct ZsPoolStats {
  uint64_t orig_data_size = 0;   // caller-reported: uncompressed bytes stored
  uint64_t compr_data_size = 0;  // sum of live objects' lengths
  uint64_t mem_used_total = 0;   // bytes of 4 KiB pages held from the OS
  // mem_cached: the part of mem_used_total in emptied zspages kept for
  // reuse (ZsPoolOptions::empty_cache_pages); no object lives there.
  uint64_t mem_cached = 0;
  uint64_t mem_limit = 0;
  uint64_t mem_used_max = 0;
  uint64_t same_pages = 0;       // caller-reported: pages stored as a fill value
  uint64_t pages_compacted = 0;  // pages freed by Compact(), cumulative
  uint64_t huge_pages = 0;       // live objects in the huge class
  uint64_t objects = 0;          // live objects
  uint64_t zspages = 0;          // live zspages
  // metadata_bytes: bookkeeping outside mem_used_total: the handle table,
  // zspage descriptors and per-object back-pointers.
  uint64_t metadata_bytes = 0;
  // page_release: how emptied pages go back to the OS (alloc/README.md,
  // "Giving pages back"): "process_madvise" (many ranges a call; Linux
  // 6.13 and later) or "madvise" (one range a call: older kernels, where a
  // drain is slower).
  const char* page_release = "";
};

// ZsClassStats is one row of the per-class table (zsmalloc's debugfs
// "classes" file).
struct ZsClassStats {
  uint32_t size = 0;
  uint32_t pages_per_zspage = 0;
  uint32_t objs_per_zspage = 0;
  uint64_t zspages = 0;
  uint64_t obj_allocated = 0;  // zspages x objs_per_zspage
  uint64_t obj_used = 0;
  uint64_t pages_used = 0;     // pages committed (including pending release)
  uint64_t freeable = 0;       // pages Compact() could free (zs_can_compact)
  uint64_t fullness[12] = {};  // zspages per fullness group: 0%, <10%, ..., 100%
};

class ZsPool {
  struct Zspage;

 public:
  class ReadGuard;

  // Create reserves the arena. INVALID_ARGUMENT for bad options,
  // RESOURCE_EXHAUSTED when the address space cannot be reserved.
  static absl::StatusOr<std::unique_ptr<ZsPool>> Create(const ZsPoolOptions& options);
  ~ZsPool();
  ZsPool(const ZsPool&) = delete;
  ZsPool& operator=(const ZsPool&) = delete;

  // Malloc allocates an object of exactly `len` bytes (1..4096).
  // INVALID_ARGUMENT for a bad length; RESOURCE_EXHAUSTED when the memory
  // limit (or the arena, or the handle table) would be exceeded. Never
  // aborts.
  absl::StatusOr<ZsHandle> Malloc(size_t len);

  // Free releases the object. A handle that is not live is ignored in
  // release builds and asserts in debug builds.
  void Free(ZsHandle handle);

  // FreeMany releases every object in `handles`, as Free on each would, but
  // takes each class's lock once for all of that class's objects and the
  // handle table's lock once, and updates the pool's counters once. For a
  // thread that frees many objects at a time (writeback publishing a
  // round): with two such threads, a lock and a counter per object made
  // them wait on and bounce each other's cache lines (pool_test's
  // FreeManyFreesEachObjectOnce; server/README.md, "Writeback threads").
  void FreeMany(std::span<const ZsHandle> handles);

  // Write copies `len` bytes into the object. INVALID_ARGUMENT, with nothing
  // written, when `len` exceeds the length the object was allocated with —
  // the check that keeps a re-compressed, longer page from overrunning its
  // slot (shared/seeds: the 2017 zram crash). NOT_FOUND for a dead handle.
  absl::Status Write(ZsHandle handle, const void* src, size_t len);

  // Read pins the object's zspage against compaction for the life of the
  // guard. NOT_FOUND for a dead handle.
  absl::StatusOr<ReadGuard> Read(ZsHandle handle) const;

  // Compact moves objects from the emptiest zspages of each class into the
  // fullest, frees what empties, and returns every page emptied by frees to
  // the OS. Zspages that readers hold are skipped (the relocator only
  // try-locks). Returns the pages freed (given back to the OS, or moved into
  // the empty-zspage cache). One compaction runs at a time; a concurrent
  // call returns 0 at once.
  //   kReleaseAll: the empty-zspage cache goes back to the OS too.
  //   kKeepEmptyCache: zspages emptied now may join the cache, and what it
  //     holds stays (for a caller that compacts to make room it will refill
  //     at once, as writeback does).
  enum class CompactMode { kReleaseAll, kKeepEmptyCache };
  uint64_t Compact(CompactMode mode = CompactMode::kReleaseAll);

  // ReleaseBatch: while one is alive on a thread, the zspages this pool
  // empties on that thread and does not cache go back to the OS in
  // batches, kReleaseBatchZspages to a system call (page_release.h: one TLB
  // flush instead of one per zspage), not one by one. Until its batch is
  // released a zspage's pages stay counted in mem_used_total and its id is
  // not handed out again, so nothing can land in memory about to be
  // dropped. The destructor releases what is left. For a thread that frees
  // many objects in a row: writeback, compaction. A nested ReleaseBatch of
  // the same pool does nothing; one for another pool on the same thread
  // does nothing either (its pool releases one by one meanwhile).
  //
  // Thread safety: lives on one thread, its creator; the pool it names
  // must outlive it.
  class ReleaseBatch {
   public:
    explicit ReleaseBatch(ZsPool& pool);
    ~ReleaseBatch();
    ReleaseBatch(const ReleaseBatch&) = delete;
    ReleaseBatch& operator=(const ReleaseBatch&) = delete;
    // Flush releases what the batch holds now; returns its pages. Compact()
    // and a Malloc that drains the empty-zspage cache flush their thread's
    // batch too.
    uint64_t Flush() { return active_ ? Release() : 0; }

   private:
    friend class ZsPool;
    void Add(Zspage* z, uint32_t committed);
    uint64_t Release();
    ZsPool* const pool_;
    bool active_ = false;                                // false for a nested or second-pool batch
    std::vector<std::pair<Zspage*, uint32_t>> zspages_;  // (zspage, committed)
  };
  static constexpr size_t kReleaseBatchZspages = 64;

  void SetMemLimit(size_t bytes);
  void SetEmptyCacheLimit(size_t pages);
  // mem_in_use_bytes: mem_used_total less the empty-zspage cache and the
  // zspages in ReleaseBatches: what the pool's objects and their zspages
  // hold (what watermarks should watch).
  uint64_t mem_in_use_bytes() const;
  void AddCallerCounters(int64_t orig_data_size_delta, int64_t same_pages_delta);

  ZsPoolStats GetStats() const;
  std::vector<ZsClassStats> GetClassStats() const;

  const SizeClassTable& classes() const { return table_; }
  // huge_class_size: objects this long or longer take a whole page; a
  // compressed page that does not get below it is better stored raw.
  uint32_t huge_class_size() const { return table_.huge_class_size(); }

  // The arena's first segment, reserved at Create (for registering with an
  // RDMA device; segments added when the pool grows past it are not
  // covered).
  const void* arena_base() const { return segments_[0].base.load(); }
  size_t arena_size() const { return arena_bytes_; }
  // arena_segments: how many arena segments are reserved now (1 until the
  // pool has outgrown the first).
  uint32_t arena_segments() const;

  // ReadGuard gives read access to one object; movable, not copyable.
  class ReadGuard {
   public:
    ReadGuard(ReadGuard&& other) noexcept;
    ReadGuard& operator=(ReadGuard&& other) noexcept;
    ~ReadGuard();
    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

   private:
    friend class ZsPool;
    ReadGuard(std::atomic<int32_t>* pin, const uint8_t* data, size_t size)
        : pin_(pin), data_(data), size_(size) {}
    std::atomic<int32_t>* pin_ = nullptr;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
  };

 private:
  struct Class;
  struct Location;

  explicit ZsPool(const ZsPoolOptions& options);
  absl::Status Init();

  // Handle table: chunks of words, each holding an object's location.
  absl::StatusOr<uint32_t> AllocHandleSlot();
  void FreeHandleSlot(uint32_t slot);
  std::atomic<uint64_t>* HandleWordOrNull(uint32_t slot) const;
  std::atomic<uint64_t>& HandleWord(uint32_t slot) const { return *HandleWordOrNull(slot); }

  // PinObject pins the zspage holding handle slot `slot`'s object (readers
  // bump Zspage::pin; relocation and zspage freeing try-lock it from 0 to -1)
  // and returns it with the location, consistent with the handle table.
  // nullptr for a dead handle.
  Zspage* PinObject(uint32_t slot, Location* loc) const;
  Zspage* ZspageAt(uint64_t id) const;
  // SegmentOf: the arena segment holding zspage id `id`; FirstIdOf: the
  // first id in segment `seg`. Segment i holds first_segment_zspages_ << i.
  uint32_t SegmentOf(uint64_t id) const;
  uint64_t FirstIdOf(uint32_t seg) const;
  std::atomic<Zspage*>& TableEntry(uint64_t id) const;
  uint8_t* SlotBase(uint64_t id) const;
  // AddSegmentLocked reserves the next arena segment and its descriptor
  // table; RESOURCE_EXHAUSTED when none can be.
  absl::Status AddSegmentLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(arena_mu_);
  // TakeZspageId hands out a zspage id for a class whose chain is
  // `chain_pages` long, preferring a cached empty zspage (best fit by its
  // committed pages); *committed gets the mask of pages it still holds
  // (0 for a fresh id).
  absl::StatusOr<uint32_t> TakeZspageId(uint32_t chain_pages, uint32_t* committed);
  void ReturnZspageId(uint32_t id);
  // RetireZspage takes an emptied zspage (pin held at -1, on no class list)
  // whose committed pages are `committed`: into the empty-zspage cache if
  // it has room, else its pages go back to the OS and its id to the free
  // list. Returns the pages that left the pool's classes.
  uint32_t RetireZspage(Zspage* z, uint32_t committed);
  // ReleaseZspage returns a retired zspage's pages to the OS and its id:
  // at once, or with the batch of this thread's ReleaseBatch for this pool.
  void ReleaseZspage(Zspage* z, uint32_t committed);
  // DrainEmptyCache gives every cached zspage back to the OS; returns pages.
  // What this thread's ReleaseBatch for this pool holds is released too.
  uint64_t DrainEmptyCache();
  // FlushThreadReleaseBatch releases this thread's ReleaseBatch for this
  // pool, if one is open; returns its pages.
  uint64_t FlushThreadReleaseBatch();
  uint64_t CompactClass(Class& c);
  uint64_t ReleaseAllPendingPages() ABSL_EXCLUSIVE_LOCKS_REQUIRED(compact_mu_);
  // ReleasePendingPagesOf gives back the emptied pages of each of `classes`
  // (in class order) that has at least `min_pages` pending, many classes to
  // a system call; returns the pages. Called with no class lock held.
  uint64_t ReleasePendingPagesOf(std::span<Class* const> classes, uint32_t min_pages);

  bool ChargePages(uint64_t pages, bool enforce_limit);
  void UnchargePages(uint64_t pages);
  // FitsAfterReleasing: whether one more page would pass the limit once
  // `pages` committed pages were given back (a hint: others charge and
  // uncharge meanwhile).
  bool FitsAfterReleasing(uint64_t pages) const;

  const ZsPoolOptions options_;
  const SizeClassTable table_;
  std::vector<std::unique_ptr<Class>> classes_;  // parallel to table_.classes()

  // The arena is a list of segments, each a MAP_NORESERVE reservation of
  // zspage slots with a descriptor table beside it: table[i] describes the
  // segment's slot i, created on the slot's first use and reused after
  // (mmap'd, so untouched entries cost no memory). Segment 0 is reserved at
  // Create; segment i+1, twice the size of segment i, when every id before
  // it is taken. Segments are published (base, then table) under arena_mu_
  // with release stores and never move or go away before the pool does;
  // readers load them with acquire.
  // kMaxArenaSegments: doubling from one slot, 32 segments pass the 2^32-1
  // zspage ids a handle can name.
  static constexpr uint32_t kMaxArenaSegments = 32;
  struct Segment {
    std::atomic<uint8_t*> base{nullptr};
    std::atomic<std::atomic<Zspage*>*> table{nullptr};
    uint64_t slots = 0;  // written before base and table are published
  };
  std::array<Segment, kMaxArenaSegments> segments_;
  size_t arena_bytes_ = 0;              // segment 0's size
  uint64_t first_segment_zspages_ = 0;  // segment 0's slots
  uint32_t slot_pages_ = 0;             // pages of arena per zspage slot
  std::atomic<uint64_t> descriptors_{0};

  // Lock order (written here, as in mm/zsmalloc.c):
  //   compact_mu_ -> Class::mu -> Zspage::pin (try-lock only, never waits
  //   while holding it) -> arena_mu_ -> handle_mu_
  // One Class::mu at a time, except in ReleasePendingPagesOf (for
  // ReleaseAllPendingPages and FreeMany), which takes several in class order.
  // Readers take no mutex: they pin the zspage (an atomic count) and
  // re-validate the handle word.
  Mutex compact_mu_;
  mutable Mutex arena_mu_;
  std::vector<uint32_t> free_zspage_ids_ ABSL_GUARDED_BY(arena_mu_);
  // empty_cache_[k]: ids of cached empty zspages whose highest committed
  // page is page k (so a class with a k+1-page chain fits them exactly).
  std::array<std::vector<uint32_t>, kMaxChainPages> empty_cache_ ABSL_GUARDED_BY(arena_mu_);
  std::atomic<uint64_t> empty_cache_limit_pages_{0};
  // cached_pages_: pages in empty_cache_; added under arena_mu_, subtracted
  // as zspages leave it (by read-modify-writes only).
  std::atomic<uint64_t> cached_pages_{0};
  // releasing_pages_: pages of zspages in some thread's ReleaseBatch (on
  // their way back to the OS; still in pages_used_).
  std::atomic<uint64_t> releasing_pages_{0};
  uint32_t next_zspage_id_ ABSL_GUARDED_BY(arena_mu_) = 0;
  uint32_t segment_count_ ABSL_GUARDED_BY(arena_mu_) = 0;
  uint64_t zspage_capacity_ ABSL_GUARDED_BY(arena_mu_) = 0;  // ids the segments hold

  mutable Mutex handle_mu_;
  std::vector<uint32_t> free_handle_slots_ ABSL_GUARDED_BY(handle_mu_);
  uint32_t next_handle_slot_ ABSL_GUARDED_BY(handle_mu_) = 1;  // 0 is "no handle"
  static constexpr uint32_t kHandleChunkBits = 12;             // 32 KiB chunks
  static constexpr uint32_t kHandleChunks = 1u << 16;          // 2^28 handles at most
  std::unique_ptr<std::atomic<std::atomic<uint64_t>*>[]> handle_chunks_;
  std::atomic<uint64_t> handle_chunks_used_{0};

  std::atomic<uint64_t> mem_limit_pages_{0};  // 0 = unlimited
  std::atomic<uint64_t> pages_used_{0};
  std::atomic<uint64_t> pages_used_max_{0};
  std::atomic<uint64_t> compr_data_size_{0};
  std::atomic<uint64_t> objects_{0};
  std::atomic<uint64_t> huge_objects_{0};
  std::atomic<uint64_t> live_zspages_{0};
  std::atomic<uint64_t> pages_compacted_{0};
  std::atomic<uint64_t> backptr_bytes_{0};
  std::atomic<int64_t> orig_data_size_{0};
  std::atomic<int64_t> same_pages_{0};
};

}  // namespace farswap::alloc

#endif  // FARSWAP_ALLOC_ZSPOOL_H_
