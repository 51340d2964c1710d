// zspool.cc: the zspool, a user-space zsmalloc.
//
// Why it exists. A memory node keeps many compressed pages of arbitrary
// length (32..4096 bytes). malloc() would scatter them and fragment without
// bound; zsmalloc packs objects of similar size into size classes of
// "zspages" (chains of 4 KiB pages), relocates them with compaction, and so
// keeps mem_used_total close to the sum of compressed lengths. This file
// follows the kernel's geometry and protocols (mm/zsmalloc.c; see
// shared/reference/zsmalloc-notes.md) and spends the freedoms user space has
// on the places the kernel loses bytes:
//
//  1. No in-object header. The kernel prefixes every object with its 8-byte
//     handle (ZS_HANDLE_SIZE) so compaction can find live objects. Here a
//     zspage's descriptor keeps a bitmap of used slots and a back-pointer
//     array outside the pool pages, so slots are exactly class-sized. That
//     bookkeeping is reported as metadata_bytes.
//  2. Pages are committed as objects land in them. Each zspage owns a
//     virtually contiguous slot of an mmap'd MAP_NORESERVE arena, so objects
//     may cross 4 KiB boundaries without bounce buffers, and a page costs
//     memory only once an object touches it. Allocation takes the lowest free
//     slot, so a partial zspage costs its filled prefix, not its whole chain
//     (the kernel's partially filled zspage per class is most of its
//     overhead on small pools). A page whose last object is freed goes back
//     to the OS (madvise(MADV_DONTNEED), batched per class).
//  3. Empty zspages go back to the OS at once — or, where the caller asks
//     for it (ZsPoolOptions::empty_cache_pages), into a bounded cache of
//     empty zspages whose pages stay committed. A pool that churns at its
//     limit (a memory node whose writeback frees what stores refill) then
//     reuses those pages instead of madvise()-ing them away and faulting
//     them back: in a VM each madvise is a TLB-shootdown IPI, and the
//     writeback thread spent two thirds of its time there. The next zspage
//     of any class takes a cached one first (best fit by its committed
//     pages, "inherited" by the new zspage and used without a new charge).
//
// Units. A "page" is 4 KiB; mem_used_total counts committed pages x 4096,
// as zram's mm_stat does. An object's "slot" is class-size bytes at
// idx * size within its zspage.
//
// Handles. A handle is an index into a chunked table of 64-bit words; a word
// holds the object's location [class id:8 | zspage id:40 | object index:16]
// (the newest kernel also encodes the class so zs_free() needs no pool
// lock). Compaction rewrites words; callers' handles never change.
//
// Locking (the order is written in zspool.h):
//  - Class::mu guards a class's zspages: lists, bitmaps, counts, back-
//    pointers; Malloc, Free and relocation of that class take it.
//  - Zspage::pin is the kernel's v6.15 zspage lock: readers increment it
//    without any mutex and never block relocation for long; relocation and
//    freeing take it from 0 to -1 with a compare-and-swap, and relocation
//    skips a zspage it cannot take (it backs off from readers). A reader
//    that finds -1 waits for the move to finish and re-resolves its handle.
//  - A reader validates its pin by re-reading the handle word: if the word
//    still names the pinned zspage, the object cannot move until unpinned.
#include "farswap/alloc/zspool.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/common/status_macros.h"
#include "farswap/common/sync_point.h"
#include "page_release.h"

namespace farswap::alloc {
namespace {

// The ReleaseBatch open on this thread, if any (ZsPool::ReleaseBatch).
thread_local ZsPool::ReleaseBatch* tls_release_batch = nullptr;

constexpr uint32_t kNone = UINT32_MAX;
constexpr uint64_t kFreeWord = ~uint64_t{0};
constexpr int kFullnessGroups = 12;  // 0%, <10% ... <100% (1..10), 100% (11)
constexpr int kFullGroup = 11;
constexpr uint32_t kHandleChunkEntries = 1u << 12;
constexpr uint64_t kMaxZspageId = (uint64_t{1} << 40) - 1;
static_assert(kMaxObjsPerZspage <= 0xFFFF, "object index is 16 bits in a handle word");

uint64_t EncodeLocation(uint32_t class_id, uint64_t zspage_id, uint32_t idx) {
  return (uint64_t{class_id} << 56) | (zspage_id << 16) | idx;
}

int FullnessGroup(uint32_t inuse, uint32_t objs) {
  if (inuse == 0) return 0;
  if (inuse == objs) return kFullGroup;
  return int(100 * inuse / objs) / 10 + 1;  // get_fullness_group(): 1/127 lands in 10%
}

}  // namespace

struct ZsPool::Location {
  uint32_t class_id;
  uint64_t zspage_id;
  uint32_t idx;
  static Location Decode(uint64_t w) {
    return Location{uint32_t(w >> 56), (w >> 16) & kMaxZspageId, uint32_t(w & 0xFFFF)};
  }
};

// Zspage is the descriptor of one zspage. Its fields are guarded by the
// owning class's mutex, except `pin` (atomic) and the per-object `len` and
// `handle` entries, which readers read only after pinning and validating.
struct ZsPool::Zspage {
  std::atomic<int32_t> pin{-1};  // >= 0 readers; -1 locked (relocating or free)
  uint64_t id = 0;
  uint8_t* base = nullptr;
  uint32_t class_id = 0;
  uint32_t inuse = 0;
  int fullness = -1;  // -1: on no list
  uint32_t prev = kNone, next = kNone;
  bool in_pending = false;
  uint32_t pending_release = 0;  // bitmask: pages emptied, still committed
  // inherited: committed pages taken over from the empty-zspage cache that
  // no object has used yet (not released by ReleasePendingPages: they are
  // the point of the cache).
  uint32_t inherited = 0;
  // cached_mask: while the zspage sits in the empty-zspage cache, the pages
  // it holds (guarded by the pool's arena_mu_ then; no class owns it).
  uint32_t cached_mask = 0;
  uint16_t page_objs[kMaxChainPages] = {};  // objects overlapping each page
  std::unique_ptr<uint64_t[]> used;         // bitmap of used slots
  std::unique_ptr<uint32_t[]> handle;       // back-pointer: slot -> handle slot
  std::unique_ptr<uint16_t[]> len;          // slot -> object length

  // CommittedPages: pages holding objects plus those pending release.
  uint32_t CommittedPages(uint32_t pages) const {
    uint32_t n = std::popcount(pending_release | inherited);
    for (uint32_t p = 0; p < pages; ++p) n += page_objs[p] != 0;
    return n;
  }
};

// Class is one real size class.
struct ZsPool::Class {
  Class(ZsPool* owner, uint32_t class_id, const SizeClass& geometry)
      : pool(owner),
        id(class_id),
        geo(geometry),
        bitmap_words((geometry.objs_per_zspage + 63) / 64) {
    std::fill(std::begin(head), std::end(head), kNone);
  }

  ZsPool* const pool;
  const uint32_t id;
  const SizeClass geo;
  const uint32_t bitmap_words;

  Mutex mu;
  uint32_t head[kFullnessGroups] ABSL_GUARDED_BY(mu);
  uint64_t zspages ABSL_GUARDED_BY(mu) = 0;
  uint64_t objs_used ABSL_GUARDED_BY(mu) = 0;
  uint64_t pages_committed ABSL_GUARDED_BY(mu) = 0;
  uint64_t zspages_in_group[kFullnessGroups] ABSL_GUARDED_BY(mu) = {};
  uint32_t pending_pages ABSL_GUARDED_BY(mu) = 0;
  std::vector<uint32_t> pending ABSL_GUARDED_BY(mu);  // zspage ids with pending pages

  void Unlink(Zspage* z) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (z->fullness < 0) return;
    if (z->prev != kNone)
      pool->ZspageAt(z->prev)->next = z->next;
    else
      head[z->fullness] = z->next;
    if (z->next != kNone) pool->ZspageAt(z->next)->prev = z->prev;
    zspages_in_group[z->fullness]--;
    z->prev = z->next = kNone;
    z->fullness = -1;
  }

  // Relink puts z on the list of its current fullness group.
  void Relink(Zspage* z) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    int g = FullnessGroup(z->inuse, geo.objs_per_zspage);
    if (g == z->fullness) return;
    Unlink(z);
    z->fullness = g;
    z->prev = kNone;
    z->next = head[g];
    if (z->next != kNone) pool->ZspageAt(z->next)->prev = uint32_t(z->id);
    head[g] = uint32_t(z->id);
    zspages_in_group[g]++;
  }

  // First returns the first zspage in groups from..to (either direction),
  // skipping `except`.
  Zspage* First(int from, int to, const Zspage* except = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    int step = from <= to ? 1 : -1;
    for (int g = from;; g += step) {
      for (uint32_t zid = head[g]; zid != kNone;) {
        Zspage* z = pool->ZspageAt(zid);
        if (z != except) return z;
        zid = z->next;
      }
      if (g == to) return nullptr;
    }
  }

  absl::StatusOr<Zspage*> NewZspage() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    uint32_t committed = 0;
    absl::StatusOr<uint32_t> zid = pool->TakeZspageId(geo.pages_per_zspage, &committed);
    if (!zid.ok()) return zid.status();
    Zspage* z = pool->ZspageAt(*zid);
    if (z == nullptr) {
      z = new Zspage;
      z->id = *zid;
      z->base = pool->SlotBase(*zid);
      pool->TableEntry(*zid).store(z, std::memory_order_release);
      pool->descriptors_.fetch_add(1, std::memory_order_relaxed);
    }
    z->class_id = id_value();
    z->inuse = 0;
    z->fullness = -1;
    z->prev = z->next = kNone;
    z->in_pending = false;
    z->pending_release = 0;
    z->inherited = 0;
    if (committed != 0) {
      // Pages past this class's chain are of no use to it: back to the OS.
      const uint32_t fits = (1u << geo.pages_per_zspage) - 1;  // chains are <= 16 pages
      if (uint32_t beyond = committed & ~fits; beyond != 0) {
        const uint32_t p = std::countr_zero(beyond);
        madvise(z->base + size_t{p} * kZsPageBytes,
                size_t(std::bit_width(beyond) - p) * kZsPageBytes, MADV_DONTNEED);
        pool->UnchargePages(std::popcount(beyond));
      }
      z->inherited = committed & fits;
      pages_committed += std::popcount(z->inherited);
    }
    std::fill(std::begin(z->page_objs), std::end(z->page_objs), 0);
    z->used.reset(new uint64_t[bitmap_words]());
    z->handle.reset(new uint32_t[geo.objs_per_zspage]);
    z->len.reset(new uint16_t[geo.objs_per_zspage]);
    pool->backptr_bytes_.fetch_add(BackptrBytes(), std::memory_order_relaxed);
    zspages++;
    pool->live_zspages_.fetch_add(1, std::memory_order_relaxed);
    z->pin.store(0, std::memory_order_release);  // open for readers
    return z;
  }

  uint32_t id_value() const { return id; }
  uint64_t BackptrBytes() const {
    return bitmap_words * 8 + uint64_t{geo.objs_per_zspage} * (sizeof(uint32_t) + sizeof(uint16_t));
  }

  // FreeZspage returns an empty zspage's pages and arena slot. `locked`: the
  // caller already holds z->pin at -1 (relocation). Returns pages released.
  uint32_t FreeZspage(Zspage* z, bool locked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    assert(z->inuse == 0);
    Unlink(z);
    if (z->in_pending) {
      pending.erase(std::find(pending.begin(), pending.end(), uint32_t(z->id)));
      z->in_pending = false;
    }
    if (!locked) {
      // Only transient pins can exist (a reader that resolved a handle just
      // before its object moved away); they drop without blocking.
      int32_t expected = 0;
      while (!z->pin.compare_exchange_weak(expected, -1, std::memory_order_acquire)) {
        expected = 0;
        std::this_thread::yield();
      }
    }
    // Empty: every committed page is pending release or inherited.
    const uint32_t committed = z->pending_release | z->inherited;
    pending_pages -= std::popcount(z->pending_release);
    pages_committed -= std::popcount(committed);
    z->pending_release = 0;
    z->inherited = 0;
    z->used.reset();
    z->handle.reset();
    z->len.reset();
    pool->backptr_bytes_.fetch_sub(BackptrBytes(), std::memory_order_relaxed);
    zspages--;
    pool->live_zspages_.fetch_sub(1, std::memory_order_relaxed);
    return pool->RetireZspage(z, committed);
  }

  // TakeSlot allocates the lowest free slot of z for an object of `len`
  // bytes owned by handle slot `handle_slot`, committing the pages it
  // touches, and returns its index; kNone when that would pass the memory
  // limit and `enforce_limit` is set (no Status: compaction meets the limit
  // as a matter of course on a full pool, and Malloc words the error).
  uint32_t TakeSlot(Zspage* z, uint32_t len, uint32_t handle_slot, bool enforce_limit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    uint32_t idx = kNone;
    for (uint32_t w = 0; w < bitmap_words; ++w) {
      if (~z->used[w] != 0) {
        idx = w * 64 + std::countr_one(z->used[w]);
        break;
      }
    }
    assert(idx != kNone && idx < geo.objs_per_zspage);
    uint64_t off = uint64_t{idx} * geo.size;
    uint32_t first = uint32_t(off / kZsPageBytes);
    uint32_t last = uint32_t((off + geo.size - 1) / kZsPageBytes);
    uint32_t new_pages = 0;
    for (uint32_t p = first; p <= last; ++p) {
      new_pages += z->page_objs[p] == 0 && !((z->pending_release | z->inherited) & (1u << p));
    }
    if (new_pages != 0 && !pool->ChargePages(new_pages, enforce_limit)) return kNone;
    pages_committed += new_pages;
    for (uint32_t p = first; p <= last; ++p) {
      if (z->page_objs[p] == 0 && (z->pending_release & (1u << p))) {
        z->pending_release &= ~(1u << p);  // reused before release: still committed
        pending_pages--;
      }
      z->inherited &= ~(1u << p);  // committed already: now in use
      z->page_objs[p]++;
    }
    z->used[idx / 64] |= uint64_t{1} << (idx % 64);
    z->handle[idx] = handle_slot;
    z->len[idx] = uint16_t(len == kZsPageBytes ? 0 : len);  // 4096 stored as 0
    z->inuse++;
    objs_used++;
    Relink(z);
    return idx;
  }

  // ReleaseSlot frees slot idx of z; pages it leaves empty become pending
  // release. The caller frees z if it is now empty.
  void ReleaseSlot(Zspage* z, uint32_t idx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    assert(z->used[idx / 64] & (uint64_t{1} << (idx % 64)));
    uint64_t off = uint64_t{idx} * geo.size;
    uint32_t first = uint32_t(off / kZsPageBytes);
    uint32_t last = uint32_t((off + geo.size - 1) / kZsPageBytes);
    for (uint32_t p = first; p <= last; ++p) {
      if (--z->page_objs[p] == 0) {
        z->pending_release |= 1u << p;
        pending_pages++;
        if (!z->in_pending) {
          z->in_pending = true;
          pending.push_back(uint32_t(z->id));
        }
      }
    }
    z->used[idx / 64] &= ~(uint64_t{1} << (idx % 64));
    z->inuse--;
    objs_used--;
  }

  static uint32_t ObjectLen(const Zspage* z, uint32_t idx) {
    return z->len[idx] == 0 ? kZsPageBytes : z->len[idx];
  }

  // MoveObject relocates src's highest object into dst's lowest free slot
  // (src may equal dst: packing in place). The caller holds src->pin at -1.
  // Returns false when there is nothing useful to move or the memory limit
  // forbids the page the move would commit.
  bool MoveObject(Zspage* src, Zspage* dst) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (src->inuse == 0 || dst->inuse == geo.objs_per_zspage) return false;
    uint32_t i = kNone;
    for (uint32_t w = bitmap_words; w-- > 0;) {
      if (src->used[w] != 0) {
        i = w * 64 + 63 - std::countl_zero(src->used[w]);
        break;
      }
    }
    if (src == dst) {  // in place: only worth it if a lower slot is free
      uint32_t lo = kNone;
      for (uint32_t w = 0; w < bitmap_words; ++w) {
        if (~src->used[w] != 0) {
          lo = w * 64 + std::countr_one(src->used[w]);
          break;
        }
      }
      if (lo >= i) return false;
    }
    const uint32_t len = ObjectLen(src, i);
    const uint32_t handle_slot = src->handle[i];
    // Relocation obeys the memory limit too: a move that needs a fresh page
    // first returns the pages already emptied, then gives up. Where
    // returning them cannot bring the pool under its limit (a drain that
    // lowered the limit far below what the pool holds), it gives up at once:
    // a system call for nothing, and Compact releases every class's emptied
    // pages together at its end.
    uint32_t j = TakeSlot(dst, len, handle_slot, true);
    if (j == kNone) {
      if (!pool->FitsAfterReleasing(pending_pages)) return false;
      ReleasePendingPages();
      j = TakeSlot(dst, len, handle_slot, true);
      if (j == kNone) return false;
    }
    std::memcpy(dst->base + uint64_t{j} * geo.size, src->base + uint64_t{i} * geo.size, len);
    pool->HandleWord(handle_slot).store(EncodeLocation(id, dst->id, j), std::memory_order_release);
    ReleaseSlot(src, i);
    return true;
  }

  // ReleasePendingPages returns every emptied page of this class to the OS:
  // each run of adjacent pages is one range, all in one call
  // (page_release.h). Under the class lock, so no slot of them is taken
  // meanwhile.
  uint32_t ReleasePendingPages() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<iovec> runs;
    const uint32_t released = TakePendingRuns(&runs);
    internal::ReleasePageRuns(runs);
    pool->UnchargePages(released);
    return released;
  }

  // TakePendingRuns appends the runs of this class's emptied pages to *runs
  // and forgets them; returns their pages. The caller releases them before
  // it drops the class lock, then uncharges them.
  uint32_t TakePendingRuns(std::vector<iovec>* runs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    uint32_t released = 0;
    for (uint32_t zid : pending) {
      Zspage* z = pool->ZspageAt(zid);
      uint32_t mask = z->pending_release;
      while (mask != 0) {
        uint32_t p = std::countr_zero(mask);
        uint32_t run = std::countr_one(mask >> p);
        runs->push_back({z->base + size_t{p} * kZsPageBytes, size_t{run} * kZsPageBytes});
        mask &= ~(((uint32_t{1} << run) - 1) << p);
        released += run;
      }
      z->pending_release = 0;
      z->in_pending = false;
    }
    pending.clear();
    pending_pages = 0;
    pages_committed -= released;
    return released;
  }
};

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ZsPool>> ZsPool::Create(const ZsPoolOptions& options) {
  if (options.max_pages_per_zspage < 1 || options.max_pages_per_zspage > kMaxChainPages) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pages_per_zspage must be 1..", kMaxChainPages));
  }
  std::unique_ptr<ZsPool> pool(new ZsPool(options));
  absl::Status s = pool->Init();
  if (!s.ok()) return s;
  return pool;
}

ZsPool::ZsPool(const ZsPoolOptions& options)
    : options_(options),
      table_(SizeClassTable::Build({.max_pages_per_zspage = options.max_pages_per_zspage})) {}

absl::Status ZsPool::Init() {
  slot_pages_ = options_.max_pages_per_zspage;
  arena_bytes_ = options_.arena_bytes;
  if (arena_bytes_ == 0) {
    arena_bytes_ = options_.mem_limit == 0
                       ? size_t{64} << 30
                       : std::max<size_t>(options_.mem_limit * 8, size_t{1} << 30);
  }
  const size_t slot_bytes = size_t{slot_pages_} * kZsPageBytes;
  arena_bytes_ = std::max(arena_bytes_ / slot_bytes, size_t{1}) * slot_bytes;
  first_segment_zspages_ = arena_bytes_ / slot_bytes;
  {
    MutexLock l(&arena_mu_);
    FARSWAP_RETURN_IF_ERROR(AddSegmentLocked());
  }
  handle_chunks_.reset(new std::atomic<std::atomic<uint64_t>*>[kHandleChunks]);
  for (uint32_t i = 0; i < kHandleChunks; ++i) handle_chunks_[i].store(nullptr);
  const auto& geometry = table_.classes();
  for (uint32_t i = 0; i < geometry.size(); ++i) {
    classes_.push_back(std::make_unique<Class>(this, i, geometry[i]));
  }
  SetMemLimit(options_.mem_limit);
  empty_cache_limit_pages_.store(options_.empty_cache_pages, std::memory_order_relaxed);
  internal::LearnReleaseMechanism();  // known from the start: GetStats reports it
  return absl::OkStatus();
}

ZsPool::~ZsPool() {
  MutexLock l(&arena_mu_);
  for (uint32_t i = 0; i < next_zspage_id_; ++i) delete ZspageAt(i);
  const size_t slot_bytes = size_t{slot_pages_} * kZsPageBytes;
  for (uint32_t seg = 0; seg < segment_count_; ++seg) {
    const uint64_t slots = segments_[seg].slots;
    munmap(segments_[seg].table.load(), sizeof(std::atomic<Zspage*>) * slots);
    munmap(segments_[seg].base.load(), slots * slot_bytes);
  }
  if (handle_chunks_) {
    for (uint32_t i = 0; i < kHandleChunks; ++i) delete[] handle_chunks_[i].load();
  }
}

uint32_t ZsPool::SegmentOf(uint64_t id) const {
  // Segment i starts at first * (2^i - 1): id / first + 1 has bit width i + 1.
  return uint32_t(std::bit_width(id / first_segment_zspages_ + 1)) - 1;
}

uint64_t ZsPool::FirstIdOf(uint32_t seg) const {
  return first_segment_zspages_ * ((uint64_t{1} << seg) - 1);
}

std::atomic<ZsPool::Zspage*>& ZsPool::TableEntry(uint64_t id) const {
  const uint32_t seg = SegmentOf(id);
  return segments_[seg].table.load(std::memory_order_acquire)[id - FirstIdOf(seg)];
}

uint8_t* ZsPool::SlotBase(uint64_t id) const {
  const uint32_t seg = SegmentOf(id);
  return segments_[seg].base.load(std::memory_order_acquire) +
         (id - FirstIdOf(seg)) * slot_pages_ * kZsPageBytes;
}

ZsPool::Zspage* ZsPool::ZspageAt(uint64_t id) const {
  return TableEntry(id).load(std::memory_order_acquire);
}

uint32_t ZsPool::arena_segments() const {
  MutexLock l(&arena_mu_);
  return segment_count_;
}

absl::Status ZsPool::AddSegmentLocked() {
  arena_mu_.AssertHeld();
  const uint32_t seg = segment_count_;
  // Zspage ids are u32 (kNone is "no zspage"), so no slot past kNone - 1.
  if (seg == kMaxArenaSegments || FirstIdOf(seg) >= kNone - 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("zspool arena exhausted (", zspage_capacity_, " zspages)"));
  }
  // The last segment stops at the last id a handle can name.
  const uint64_t slots =
      std::min<uint64_t>(first_segment_zspages_ << seg, uint64_t{kNone - 1} - FirstIdOf(seg));
  const size_t bytes = slots * size_t{slot_pages_} * kZsPageBytes;
  void* a = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (a == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot reserve a ", bytes, "-byte zspool arena segment"));
  }
  void* t = mmap(nullptr, sizeof(std::atomic<Zspage*>) * slots, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (t == MAP_FAILED) {
    munmap(a, bytes);
    return absl::ResourceExhaustedError("cannot reserve a zspage descriptor table");
  }
  // Zero pages: every descriptor is nullptr. Published before any id in the
  // segment is handed out.
  segments_[seg].slots = slots;
  segments_[seg].base.store(static_cast<uint8_t*>(a), std::memory_order_release);
  segments_[seg].table.store(static_cast<std::atomic<Zspage*>*>(t), std::memory_order_release);
  segment_count_ = seg + 1;
  zspage_capacity_ = FirstIdOf(seg) + slots;
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ZsPool::TakeZspageId(uint32_t chain_pages, uint32_t* committed) {
  MutexLock l(&arena_mu_);
  *committed = 0;
  if (cached_pages_.load(std::memory_order_relaxed) != 0) {
    // Best fit: a zspage whose pages end exactly at this chain's end, then
    // shorter ones (longest first), then longer ones (shortest first).
    const int want = int(chain_pages) - 1;
    for (int k = want, step = -1;;) {
      if (k >= 0 && k < int(kMaxChainPages) && !empty_cache_[k].empty()) {
        const uint32_t id = empty_cache_[k].back();
        empty_cache_[k].pop_back();
        Zspage* z = ZspageAt(id);
        *committed = std::exchange(z->cached_mask, 0);
        cached_pages_.fetch_sub(std::popcount(*committed), std::memory_order_relaxed);
        return id;
      }
      k += step;
      if (k < 0) {
        k = want + 1;
        step = 1;
      }
      if (k >= int(kMaxChainPages)) break;
    }
  }
  if (!free_zspage_ids_.empty()) {
    uint32_t id = free_zspage_ids_.back();
    free_zspage_ids_.pop_back();
    return id;
  }
  if (next_zspage_id_ >= zspage_capacity_) FARSWAP_RETURN_IF_ERROR(AddSegmentLocked());
  return next_zspage_id_++;
}

void ZsPool::ReturnZspageId(uint32_t id) {
  MutexLock l(&arena_mu_);
  free_zspage_ids_.push_back(id);
}

uint32_t ZsPool::RetireZspage(Zspage* z, uint32_t committed) {
  const uint32_t pages = std::popcount(committed);
  if (pages != 0) {
    MutexLock l(&arena_mu_);
    const uint64_t cached = cached_pages_.load(std::memory_order_relaxed);
    if (cached + pages <= empty_cache_limit_pages_.load(std::memory_order_relaxed)) {
      z->cached_mask = committed;
      empty_cache_[std::bit_width(committed) - 1].push_back(uint32_t(z->id));
      // fetch_add, not a store: DrainEmptyCache subtracts outside the lock.
      cached_pages_.fetch_add(pages, std::memory_order_relaxed);
      return pages;
    }
  }
  ReleaseZspage(z, committed);
  return pages;
}

void ZsPool::ReleaseZspage(Zspage* z, uint32_t committed) {
  if (ReleaseBatch* batch = tls_release_batch;
      batch != nullptr && batch->active_ && batch->pool_ == this) {
    batch->Add(z, committed);
    return;
  }
  if (committed != 0) {
    // One call over the span (the holes in it are not resident anyway).
    madvise(z->base, size_t(std::bit_width(committed)) * kZsPageBytes, MADV_DONTNEED);
    UnchargePages(std::popcount(committed));
  }
  ReturnZspageId(uint32_t(z->id));
}

ZsPool::ReleaseBatch::ReleaseBatch(ZsPool& pool) : pool_(&pool) {
  if (tls_release_batch == nullptr) {
    tls_release_batch = this;
    active_ = true;
  }
}

ZsPool::ReleaseBatch::~ReleaseBatch() {
  if (!active_) return;
  Release();
  tls_release_batch = nullptr;
}

void ZsPool::ReleaseBatch::Add(Zspage* z, uint32_t committed) {
  // Reserved on first use: most batches (a writeback pass that frees
  // nothing, a drain of an empty cache) never hold a zspage.
  if (zspages_.capacity() == 0) zspages_.reserve(kReleaseBatchZspages);
  zspages_.emplace_back(z, committed);
  pool_->releasing_pages_.fetch_add(std::popcount(committed), std::memory_order_relaxed);
  if (zspages_.size() >= kReleaseBatchZspages) Release();
}

// Release drops the batch's pages (one call), then uncharges them, then
// hands the ids out again: in that order, so that no zspage is reused
// before its old pages are gone.
uint64_t ZsPool::ReleaseBatch::Release() {
  if (zspages_.empty()) return 0;
  std::vector<iovec> runs;
  runs.reserve(zspages_.size());
  uint64_t pages = 0;
  for (const auto& [z, committed] : zspages_) {
    if (committed == 0) continue;
    runs.push_back({z->base, size_t(std::bit_width(committed)) * kZsPageBytes});
    pages += std::popcount(committed);
  }
  internal::ReleasePageRuns(runs);
  pool_->UnchargePages(pages);
  pool_->releasing_pages_.fetch_sub(pages, std::memory_order_relaxed);
  {
    MutexLock l(&pool_->arena_mu_);
    for (const auto& zc : zspages_) pool_->free_zspage_ids_.push_back(uint32_t(zc.first->id));
  }
  zspages_.clear();
  return pages;
}

uint64_t ZsPool::FlushThreadReleaseBatch() {
  ReleaseBatch* batch = tls_release_batch;
  return batch != nullptr && batch->pool_ == this ? batch->Flush() : 0;
}

uint64_t ZsPool::DrainEmptyCache() {
  // An empty cache (the common case: a Malloc refused at the limit) takes
  // no lock; a retire racing this read is one that came after the drain.
  if (cached_pages_.load(std::memory_order_relaxed) == 0) return FlushThreadReleaseBatch();
  ReleaseBatch batch(*this);  // a no-op where the thread has one open already
  std::vector<uint32_t> ids;
  {
    MutexLock l(&arena_mu_);
    for (std::vector<uint32_t>& bucket : empty_cache_) {
      ids.insert(ids.end(), bucket.begin(), bucket.end());
      bucket.clear();
    }
  }
  // Off every list now: nobody else reaches these zspages, and cached_mask
  // was written under arena_mu_ before they were listed.
  uint64_t released = 0;
  for (uint32_t id : ids) {
    Zspage* z = ZspageAt(id);
    const uint32_t committed = std::exchange(z->cached_mask, 0);
    cached_pages_.fetch_sub(std::popcount(committed), std::memory_order_relaxed);
    ReleaseZspage(z, committed);
    released += std::popcount(committed);
  }
  // Where this thread batches for this pool (this call's batch or an outer
  // one), the cached zspages went into the batch beside what it held, and
  // the flush gives back all of it: a Malloc at the limit counts on that.
  const uint64_t flushed = FlushThreadReleaseBatch();
  return flushed != 0 ? flushed : released;
}

// --- handles ----------------------------------------------------------------

std::atomic<uint64_t>* ZsPool::HandleWordOrNull(uint32_t slot) const {
  uint32_t chunk = slot >> kHandleChunkBits;
  if (chunk >= kHandleChunks) return nullptr;
  std::atomic<uint64_t>* words = handle_chunks_[chunk].load(std::memory_order_acquire);
  return words == nullptr ? nullptr : &words[slot & (kHandleChunkEntries - 1)];
}

absl::StatusOr<uint32_t> ZsPool::AllocHandleSlot() {
  MutexLock l(&handle_mu_);
  if (!free_handle_slots_.empty()) {
    uint32_t s = free_handle_slots_.back();
    free_handle_slots_.pop_back();
    return s;
  }
  uint32_t s = next_handle_slot_;
  uint32_t chunk = s >> kHandleChunkBits;
  if (chunk >= kHandleChunks) return absl::ResourceExhaustedError("zspool handle table full");
  if (handle_chunks_[chunk].load(std::memory_order_relaxed) == nullptr) {
    auto* words = new std::atomic<uint64_t>[kHandleChunkEntries];
    for (uint32_t i = 0; i < kHandleChunkEntries; ++i) words[i].store(kFreeWord);
    handle_chunks_[chunk].store(words, std::memory_order_release);
    handle_chunks_used_.fetch_add(1, std::memory_order_relaxed);
  }
  next_handle_slot_++;
  return s;
}

void ZsPool::FreeHandleSlot(uint32_t slot) {
  MutexLock l(&handle_mu_);
  free_handle_slots_.push_back(slot);
}

// --- accounting ---------------------------------------------------------------

bool ZsPool::ChargePages(uint64_t pages, bool enforce_limit) {
  uint64_t limit = mem_limit_pages_.load(std::memory_order_relaxed);
  uint64_t cur = pages_used_.load(std::memory_order_relaxed);
  do {
    if (enforce_limit && limit != 0 && cur + pages > limit) return false;
  } while (!pages_used_.compare_exchange_weak(cur, cur + pages, std::memory_order_relaxed));
  uint64_t now = cur + pages;
  uint64_t max = pages_used_max_.load(std::memory_order_relaxed);
  while (now > max && !pages_used_max_.compare_exchange_weak(max, now)) {
  }
  return true;
}

bool ZsPool::FitsAfterReleasing(uint64_t pages) const {
  const uint64_t limit = mem_limit_pages_.load(std::memory_order_relaxed);
  const uint64_t used = pages_used_.load(std::memory_order_relaxed);
  return limit == 0 || used < pages || used - pages + 1 <= limit;
}

void ZsPool::UnchargePages(uint64_t pages) {
  pages_used_.fetch_sub(pages, std::memory_order_relaxed);
}

void ZsPool::SetMemLimit(size_t bytes) {
  mem_limit_pages_.store(bytes / kZsPageBytes, std::memory_order_relaxed);
}

void ZsPool::SetEmptyCacheLimit(size_t pages) {
  empty_cache_limit_pages_.store(pages, std::memory_order_relaxed);
  // A lower limit takes effect as zspages retire; a zero one at once.
  if (pages == 0) DrainEmptyCache();
}

uint64_t ZsPool::mem_in_use_bytes() const {
  const uint64_t cached = cached_pages_.load(std::memory_order_relaxed) +
                          releasing_pages_.load(std::memory_order_relaxed);
  const uint64_t used = pages_used_.load(std::memory_order_relaxed);
  return used > cached ? (used - cached) * kZsPageBytes : 0;
}

void ZsPool::AddCallerCounters(int64_t orig_data_size_delta, int64_t same_pages_delta) {
  orig_data_size_.fetch_add(orig_data_size_delta, std::memory_order_relaxed);
  same_pages_.fetch_add(same_pages_delta, std::memory_order_relaxed);
}

// --- allocation -----------------------------------------------------------------

absl::StatusOr<ZsHandle> ZsPool::Malloc(size_t len) {
  if (len == 0 || len > kMaxObjectSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("zspool object length ", len, " is outside 1..", kMaxObjectSize));
  }
  absl::StatusOr<uint32_t> handle_slot = AllocHandleSlot();
  if (!handle_slot.ok()) return handle_slot.status();
  Class& c = *classes_[table_.ClassIdForSlot(SizeClassTable::SlotForSize(uint32_t(len)))];
  {
    MutexLock l(&c.mu);
    // A second attempt follows only a RESOURCE_EXHAUSTED with zspages in
    // the empty cache: the cache is memory within the limit, so it goes
    // back to the OS before the caller hears "full".
    for (int attempt = 0;; ++attempt) {
      absl::Status failed;
      Zspage* z = c.First(kFullGroup - 1, 0);  // the fullest zspage with room
      bool fresh = false;
      if (z == nullptr) {
        absl::StatusOr<Zspage*> n = c.NewZspage();
        if (n.ok()) {
          z = *n;
          fresh = true;
        } else {
          failed = n.status();
        }
      }
      if (failed.ok()) {
        const uint32_t idx = c.TakeSlot(z, uint32_t(len), *handle_slot, true);
        if (idx != kNone) {
          HandleWord(*handle_slot)
              .store(EncodeLocation(c.id, z->id, idx), std::memory_order_release);
          break;
        }
        if (fresh) c.FreeZspage(z, false);
        failed = absl::ResourceExhaustedError(absl::StrCat(
            "zspool memory limit reached (", mem_limit_pages_.load() * 4096, " bytes)"));
      }
      if (attempt == 0 && failed.code() == absl::StatusCode::kResourceExhausted &&
          DrainEmptyCache() != 0) {
        continue;
      }
      FreeHandleSlot(*handle_slot);
      return failed;
    }
  }
  compr_data_size_.fetch_add(len, std::memory_order_relaxed);
  objects_.fetch_add(1, std::memory_order_relaxed);
  if (c.geo.huge) huge_objects_.fetch_add(1, std::memory_order_relaxed);
  return ZsHandle{*handle_slot};
}

void ZsPool::Free(ZsHandle handle) {
  const uint32_t slot = uint32_t(handle.value);
  std::atomic<uint64_t>* word = handle.value > kNone ? nullptr : HandleWordOrNull(slot);
  uint64_t w = word == nullptr ? kFreeWord : word->load(std::memory_order_acquire);
  assert(w != kFreeWord && "ZsPool::Free of a handle that is not live");
  if (w == kFreeWord) return;
  // The class never changes while the object lives; under its lock the
  // location is stable (relocation holds the same lock).
  Class& c = *classes_[Location::Decode(w).class_id];
  // Sync point: resolved, class lock not yet taken; relocation may move the
  // object now. No locks held.
  FARSWAP_SYNC_POINT("ZsPool::Free:resolved");
  uint32_t len;
  {
    MutexLock l(&c.mu);
    Location loc = Location::Decode(word->load(std::memory_order_acquire));
    Zspage* z = ZspageAt(loc.zspage_id);
    len = Class::ObjectLen(z, loc.idx);
    c.ReleaseSlot(z, loc.idx);
    if (z->inuse == 0) {
      c.FreeZspage(z, false);
    } else {
      c.Relink(z);
    }
    if (c.pending_pages >= options_.release_batch_pages) c.ReleasePendingPages();
    word->store(kFreeWord, std::memory_order_release);
  }
  FreeHandleSlot(slot);
  compr_data_size_.fetch_sub(len, std::memory_order_relaxed);
  objects_.fetch_sub(1, std::memory_order_relaxed);
  if (c.geo.huge) huge_objects_.fetch_sub(1, std::memory_order_relaxed);
}

void ZsPool::FreeMany(std::span<const ZsHandle> handles) {
  // (class id, handle slot) of every live handle, by class: each class's
  // objects are freed under one hold of its lock.
  std::vector<std::pair<uint32_t, uint32_t>> live;
  live.reserve(handles.size());
  for (const ZsHandle h : handles) {
    std::atomic<uint64_t>* word = h.value > kNone ? nullptr : HandleWordOrNull(uint32_t(h.value));
    const uint64_t w = word == nullptr ? kFreeWord : word->load(std::memory_order_acquire);
    assert(w != kFreeWord && "ZsPool::FreeMany of a handle that is not live");
    if (w == kFreeWord) continue;
    live.push_back({Location::Decode(w).class_id, uint32_t(h.value)});
  }
  std::sort(live.begin(), live.end());
  // As in Free: the class never changes while the object lives; relocation
  // may move it until the class lock is held. No locks held.
  FARSWAP_SYNC_POINT("ZsPool::Free:resolved");
  uint64_t freed_bytes = 0, huge = 0;
  // Classes left with release_batch_pages or more emptied pages: given back
  // together after the loop, one system call (one TLB flush) for all of
  // them. Released per class, a writeback round's frees made a call for
  // every few pages (server/README.md, "Writeback threads").
  std::vector<Class*> to_release;
  for (size_t i = 0; i < live.size();) {
    const uint32_t class_id = live[i].first;
    Class& c = *classes_[class_id];
    MutexLock l(&c.mu);
    for (; i < live.size() && live[i].first == class_id; ++i) {
      std::atomic<uint64_t>& word = HandleWord(live[i].second);
      Location loc = Location::Decode(word.load(std::memory_order_acquire));
      Zspage* z = ZspageAt(loc.zspage_id);
      freed_bytes += Class::ObjectLen(z, loc.idx);
      c.ReleaseSlot(z, loc.idx);
      if (z->inuse == 0) {
        c.FreeZspage(z, false);
      } else {
        c.Relink(z);
      }
      word.store(kFreeWord, std::memory_order_release);
      huge += c.geo.huge;
    }
    if (c.pending_pages >= options_.release_batch_pages) to_release.push_back(&c);
  }
  if (!to_release.empty()) ReleasePendingPagesOf(to_release, options_.release_batch_pages);
  {
    MutexLock l(&handle_mu_);
    for (const auto& [class_id, slot] : live) free_handle_slots_.push_back(slot);
  }
  compr_data_size_.fetch_sub(freed_bytes, std::memory_order_relaxed);
  objects_.fetch_sub(live.size(), std::memory_order_relaxed);
  if (huge != 0) huge_objects_.fetch_sub(huge, std::memory_order_relaxed);
}

// --- access -------------------------------------------------------------------

ZsPool::Zspage* ZsPool::PinObject(uint32_t slot, Location* loc) const {
  std::atomic<uint64_t>* word = HandleWordOrNull(slot);
  if (word == nullptr) return nullptr;
  for (;;) {
    uint64_t w = word->load(std::memory_order_acquire);
    if (w == kFreeWord) return nullptr;
    // Sync point: the handle is resolved, the zspage not yet pinned; the
    // object may move away now. No locks held.
    FARSWAP_SYNC_POINT("ZsPool::PinObject:resolved");
    Zspage* z = ZspageAt(Location::Decode(w).zspage_id);
    int32_t pins = z->pin.load(std::memory_order_relaxed);
    if (pins < 0) {  // being relocated: wait for the move, then re-resolve
      std::this_thread::yield();
      continue;
    }
    if (!z->pin.compare_exchange_weak(pins, pins + 1, std::memory_order_acquire)) continue;
    if (word->load(std::memory_order_acquire) == w) {
      *loc = Location::Decode(w);
      return z;
    }
    z->pin.fetch_sub(1, std::memory_order_release);  // moved meanwhile: retry
  }
}

absl::StatusOr<ZsPool::ReadGuard> ZsPool::Read(ZsHandle handle) const {
  Location loc;
  Zspage* z = handle.value > kNone ? nullptr : PinObject(uint32_t(handle.value), &loc);
  if (z == nullptr) return absl::NotFoundError("zspool handle is not live");
  const Class& c = *classes_[loc.class_id];
  return ReadGuard(&z->pin, z->base + uint64_t{loc.idx} * c.geo.size, Class::ObjectLen(z, loc.idx));
}

absl::Status ZsPool::Write(ZsHandle handle, const void* src, size_t len) {
  Location loc;
  Zspage* z = handle.value > kNone ? nullptr : PinObject(uint32_t(handle.value), &loc);
  if (z == nullptr) return absl::NotFoundError("zspool handle is not live");
  const Class& c = *classes_[loc.class_id];
  const uint32_t capacity = Class::ObjectLen(z, loc.idx);
  absl::Status status = absl::OkStatus();
  if (len > capacity) {
    status = absl::InvalidArgumentError(
        absl::StrCat("write of ", len, " bytes into a ", capacity, "-byte zspool object refused"));
  } else {
    std::memcpy(z->base + uint64_t{loc.idx} * c.geo.size, src, len);
  }
  z->pin.fetch_sub(1, std::memory_order_release);
  return status;
}

ZsPool::ReadGuard::ReadGuard(ReadGuard&& other) noexcept
    : pin_(std::exchange(other.pin_, nullptr)), data_(other.data_), size_(other.size_) {}

ZsPool::ReadGuard& ZsPool::ReadGuard::operator=(ReadGuard&& other) noexcept {
  if (this != &other) {
    if (pin_ != nullptr) pin_->fetch_sub(1, std::memory_order_release);
    pin_ = std::exchange(other.pin_, nullptr);
    data_ = other.data_;
    size_ = other.size_;
  }
  return *this;
}

ZsPool::ReadGuard::~ReadGuard() {
  if (pin_ != nullptr) pin_->fetch_sub(1, std::memory_order_release);
}

// --- compaction -------------------------------------------------------------------

uint64_t ZsPool::Compact(CompactMode mode) {
  if (!compact_mu_.TryLock()) return 0;  // compaction_in_progress
  uint64_t freed = 0;
  ReleaseBatch batch(*this);  // zspages emptied below go back to the OS together
  for (auto& c : classes_) freed += CompactClass(*c);  // largest class first
  freed += ReleaseAllPendingPages();
  if (mode == CompactMode::kReleaseAll) DrainEmptyCache();  // counted when they were freed
  FlushThreadReleaseBatch();  // this batch or an outer one (writeback's): freed is released
  compact_mu_.Unlock();
  pages_compacted_.fetch_add(freed, std::memory_order_relaxed);
  return freed;
}

// CompactClass packs one class. The kernel moves objects from the emptiest
// zspage into the fullest until no zspage could be emptied (zs_can_compact).
// Because the zspool holds memory per page, not per zspage, it goes on: it
// moves objects from the emptiest zspage's highest slots into the fullest
// zspage's lowest free slots until one partial zspage is left, then packs
// that one towards its start, so every page past its last object goes back
// to the OS. Each source zspage is try-locked; a zspage readers hold ends
// the pass for this class (the relocator backs off).
uint64_t ZsPool::CompactClass(Class& c) {
  uint64_t freed = 0;
  for (;;) {
    // One source zspage per lock hold, so allocations in this class wait at
    // most one zspage's worth of copying.
    MutexLock l(&c.mu);
    Zspage* src = c.First(1, kFullGroup - 1);  // the emptiest partial zspage
    if (src == nullptr) break;
    Zspage* dst = c.First(kFullGroup - 1, 1, src);  // the fullest other one
    int32_t expected = 0;
    if (!src->pin.compare_exchange_strong(expected, -1, std::memory_order_acquire)) {
      break;  // readers hold it: back off (zspage_write_trylock)
    }
    if (dst == nullptr) {  // the last partial zspage: pack it in place
      while (c.MoveObject(src, src)) {
      }
      c.Relink(src);
      src->pin.store(0, std::memory_order_release);
      break;
    }
    while (src->inuse > 0 && dst != nullptr) {
      if (!c.MoveObject(src, dst)) break;
      if (dst->inuse == c.geo.objs_per_zspage) dst = c.First(kFullGroup - 1, 1, src);
    }
    if (src->inuse == 0) {
      freed += c.FreeZspage(src, true);
    } else {
      c.Relink(src);
      src->pin.store(0, std::memory_order_release);
      if (dst != nullptr) break;  // a move failed (memory limit): stop here
    }
  }
  return freed;
}

// ReleaseAllPendingPages gives every class's emptied pages back to the OS,
// many classes to a system call (page_release.h: one TLB flush, where it was
// one per class; a writeback drain compacts hundreds of times, and a
// compaction leaves pages pending in a dozen or two classes).
uint64_t ZsPool::ReleaseAllPendingPages() {
  std::vector<Class*> all;
  all.reserve(classes_.size());
  for (auto& c : classes_) all.push_back(c.get());
  return ReleasePendingPagesOf(all, 1);
}

// ReleasePendingPagesOf holds the lock of each class in a call until its
// pages are gone, so no slot of them is taken meanwhile: up to
// kMaxClassesPerRelease classes' pages in one call. Only this function holds
// two class locks at once. It takes them in class order (`classes` is sorted
// by id: FreeMany's are, and classes_ is), it is never entered with a class
// lock held, and no other holder of a class lock waits for another class
// lock: every thread that holds several takes them in the same order, so it
// cannot deadlock. The bound keeps the locks one thread holds few
// (ThreadSanitizer's deadlock detector stops at 64). The analysis cannot
// follow a set of locks; the text is the proof.
uint64_t ZsPool::ReleasePendingPagesOf(std::span<Class* const> classes,
                                       uint32_t min_pages) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  constexpr size_t kMaxClassesPerRelease = 16;
  std::vector<Class*> locked;
  std::vector<iovec> runs;
  uint64_t released = 0, batch_pages = 0;
  auto release_locked = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    internal::ReleasePageRuns(runs);
    for (Class* c : locked) c->mu.Unlock();
    UnchargePages(batch_pages);
    released += batch_pages;
    locked.clear();
    runs.clear();
    batch_pages = 0;
  };
  for (Class* cp : classes) {
    Class& c = *cp;
    assert((locked.empty() || locked.back()->id_value() < c.id_value()) &&
           "ReleasePendingPagesOf takes class locks in class order");
    c.mu.Lock();
    // Below the bar now (a Malloc took a pending page, another thread gave
    // them back): left for later.
    if (c.pending_pages == 0 || c.pending_pages < min_pages) {
      c.mu.Unlock();
      continue;
    }
    batch_pages += c.TakePendingRuns(&runs);
    locked.push_back(&c);
    if (locked.size() == kMaxClassesPerRelease) release_locked();
  }
  if (!locked.empty()) release_locked();
  return released;
}

// --- stats ------------------------------------------------------------------------

ZsPoolStats ZsPool::GetStats() const {
  ZsPoolStats s;
  s.orig_data_size = uint64_t(std::max<int64_t>(orig_data_size_.load(), 0));
  s.compr_data_size = compr_data_size_.load();
  s.mem_used_total = pages_used_.load() * kZsPageBytes;
  s.mem_cached = cached_pages_.load() * kZsPageBytes;
  s.mem_limit = mem_limit_pages_.load() * kZsPageBytes;
  s.mem_used_max = pages_used_max_.load() * kZsPageBytes;
  s.same_pages = uint64_t(std::max<int64_t>(same_pages_.load(), 0));
  s.pages_compacted = pages_compacted_.load();
  s.huge_pages = huge_objects_.load();
  s.objects = objects_.load();
  s.zspages = live_zspages_.load();
  s.metadata_bytes = handle_chunks_used_.load() * kHandleChunkEntries * sizeof(uint64_t) +
                     descriptors_.load() * (sizeof(Zspage) + sizeof(std::atomic<Zspage*>)) +
                     backptr_bytes_.load() + classes_.size() * sizeof(Class);
  s.page_release = internal::ReleaseMechanismName(internal::CurrentReleaseMechanism());
  return s;
}

std::vector<ZsClassStats> ZsPool::GetClassStats() const {
  std::vector<ZsClassStats> out;
  for (const auto& cp : classes_) {
    Class& c = *cp;
    MutexLock l(&c.mu);
    ZsClassStats s;
    s.size = c.geo.size;
    s.pages_per_zspage = c.geo.pages_per_zspage;
    s.objs_per_zspage = c.geo.objs_per_zspage;
    s.zspages = c.zspages;
    s.obj_allocated = c.zspages * c.geo.objs_per_zspage;
    s.obj_used = c.objs_used;
    s.pages_used = c.pages_committed;
    s.freeable = (s.obj_allocated - s.obj_used) / c.geo.objs_per_zspage * c.geo.pages_per_zspage;
    for (int g = 0; g < kFullnessGroups; ++g) s.fullness[g] = c.zspages_in_group[g];
    out.push_back(s);
  }
  return out;
}

}  // namespace farswap::alloc
