// page_index.h: the page store's entries, its sharded index and its striped
// per-key locks. Private to server/.
//
// Entry. One per stored page. Its identity is (key, gen): gen is a 64-bit
// number assigned at publish and never reused, so a thread that dropped its
// locks and comes back with a remembered Entry* validates it by
// `index.Find(key) == entry && entry->gen == gen` under the key lock — the
// pointer alone could name a new entry that happens to reuse the address
// (zsmalloc-notes §5.2: user space has no locked swapcache folio to stop a
// slot from being recycled). Writeback does without the lookup: its
// candidates are pinned (writeback_pins), so their memory outlives their
// place in the index, and a retired bit, set under the key lock when the
// entry leaves the index, says whether it is still the key's entry. A stored
// entry's payload never changes: a new version of a page is a new Entry.
//
// Which lock guards what (clang cannot check a lock picked by hashing, so it
// is written here):
//  - key, gen: immutable once published (written before the entry becomes
//    visible through the index shard lock or the LRU lock).
//  - state, length, codec, checksum, version, fill, handle, disk_offset,
//    disk_checksum, writeback_ticket, disk_loaded: the key's stripe lock
//    (KeyLockTable::For(key)).
//  - referenced: atomic; set by loads under the key lock, cleared by the LRU
//    scan under the LRU lock.
//  - lru_prev, lru_next, on_lru: LruList's lock.
//  - cold_referenced, cold_state: atomic (the cold tier; see the fields).
// An entry is deleted only under its key lock, after it has left the index
// and the LRU.
#ifndef FARSWAP_SERVER_PAGE_INDEX_H_
#define FARSWAP_SERVER_PAGE_INDEX_H_

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "farswap/alloc/zspool.h"
#include "farswap/common/mutex.h"

namespace farswap::server::internal {

// PageKey names one page of one tenant.
struct PageKey {
  uint32_t tenant = 0;
  uint64_t page = 0;
  friend bool operator==(const PageKey& a, const PageKey& b) {
    return a.tenant == b.tenant && a.page == b.page;
  }
  template <typename H>
  friend H AbslHashValue(H h, const PageKey& k) {
    return H::combine(std::move(h), k.tenant, k.page);
  }
};

enum class EntryState : uint8_t {
  kInPool,            // payload in the pool (handle); on the LRU
  kSameFilled,        // payload is `fill` repeated; no pool memory, not on the LRU
  kWritebackPending,  // in the pool and on the LRU, being appended to a segment
  kOnDisk,            // payload at `disk_offset` of the backing store; not on the LRU
};

// Entry: see the file comment for which lock guards which field.
struct Entry {
  Entry(PageKey k, uint64_t g) : key(k), gen(g) {}

  // Widest fields first, so that no padding sits between them (see the
  // static_assert below).
  const PageKey key;
  const uint64_t gen;

  uint64_t checksum = 0;  // the client's, returned with loads
  uint64_t version = 0;   // the client's store version, returned with loads
  // Where the payload is: one of three, by state. No state uses two of
  // them, and every reader checks `state` first under the key lock, so they
  // share their 8 bytes. A writer that moves the entry to another state
  // reads what it still needs (the old handle) before it writes the new
  // member: writing one overwrites the others.
  union {
    uint64_t fill = 0;       // kSameFilled: the 8-byte pattern
    alloc::ZsHandle handle;  // kInPool, kWritebackPending: the pool object
    // disk_offset: kOnDisk: the payload's first byte on the backing store
    // (segment x segment_bytes + offset in the segment; segment_table.h).
    uint64_t disk_offset;
  };
  uint64_t disk_checksum = 0;  // kOnDisk: xxh3 of the payload as written

  Entry* lru_prev = nullptr;
  Entry* lru_next = nullptr;

  // writeback_ticket: which writeback attempt owns kWritebackPending, so an
  // attempt that lost the entry to another attempt never publishes or undoes
  // the other's work. 32 bits: a ticket is one round of up to 256 pages, and
  // an entry is pending for one round, far fewer than 2^32 rounds.
  uint32_t writeback_ticket = 0;
  // length: payload bytes (0 when same-filled); a store takes at most one
  // page (4096 bytes: PageStore::Store refuses more).
  uint16_t length = 0;
  EntryState state = EntryState::kInPool;
  uint8_t codec = 0;

  std::atomic<bool> referenced{true};  // second chance, as zswap sets at store
  // disk_loaded: kOnDisk: a load has read this copy from disk already, so
  // the next load promotes it into the pool (page_store.cc, "promotion").
  // Key lock; the writeback and the LRU never look at it.
  bool disk_loaded = false;
  bool on_lru = false;
  // writeback_pins: how many writeback batches hold this entry as a
  // candidate (LruList::PickColdest pins under the LRU lock, the batch
  // unpins when it is done with it), and kEntryRetired once it has left the
  // index (RetireEntry, under the key lock). A pinned entry is not freed
  // when it leaves the index: the last unpin frees it. So a batch's entry
  // pointer is always live memory, and the batch re-validates it under the
  // key lock by this bit, not by looking the key up again (EntryRetired).
  mutable std::atomic<uint8_t> writeback_pins{0};
  // lru_scan_mark: LRU lock. The PickColdest call that last picked this
  // entry (LruList::scan_mark_), so a batch gathered over several holds of
  // the lock knows it has come round to its own picks.
  uint16_t lru_scan_mark = 0;

  // The cold tier (cold_recompressor.cc). Both atomic: the cold scan reads
  // them under the LRU lock only, as hints that the key lock re-checks.
  //  - cold_referenced: set at store (here) and by every load, cleared by
  //    the cold scan; clear at the next scan = not loaded for a whole pass.
  //  - cold_state: ColdState; written only under the key lock.
  std::atomic<bool> cold_referenced{true};
  std::atomic<uint8_t> cold_state{0};
};

// An Entry is allocated per stored page: after the pool, it is the node's
// largest memory cost per page. glibc's malloc gives a request of n bytes a
// chunk of n + 8 rounded up to 16: at 88 bytes a 96-byte chunk. It was 128
// bytes in a 144-byte chunk with the small fields between the wide ones,
// then 112 in 128 ordered widest first, then 88 in 96 with the payload's
// location as one union and a 16-bit length and 32-bit ticket.
static_assert(sizeof(Entry) <= 88, "Entry grew past a 96-byte malloc chunk");

// Entry lifetime past the index (Entry::writeback_pins). kEntryRetired is
// the top bit; the low bits count pins (at most one per writeback batch in
// flight: a few).
inline constexpr uint8_t kEntryRetired = 0x80;

// PinEntry: the entry is linked on the LRU and the caller holds its lock.
inline void PinEntry(const Entry* e) { e->writeback_pins.fetch_add(1); }

// UnpinEntry drops a pin; the last pin of a retired entry frees it. No lock
// needed: a retired entry is out of the index and the LRU, and its
// resources were released when it left.
inline void UnpinEntry(const Entry* e) {
  if (e->writeback_pins.fetch_sub(1) == (kEntryRetired | 1)) delete e;
}

// RetireEntry disposes of an entry that has left the index (Replace's or
// Erase's result), under its key lock, after its resources were released:
// freed now, or by the last unpin if a writeback batch holds it.
inline void RetireEntry(std::unique_ptr<Entry> e) {
  if (e == nullptr) return;
  if ((e->writeback_pins.fetch_or(kEntryRetired) & ~kEntryRetired) != 0) (void)e.release();
}

// EntryRetired: the entry has left the index. Read under its key lock by a
// writeback batch that holds it pinned: the bit is set under that lock.
inline bool EntryRetired(const Entry& e) { return (e.writeback_pins.load() & kEntryRetired) != 0; }

// ColdState says what the cold tier did with an entry (Entry::cold_state).
// A new version of a page is a new Entry, so it starts at kHot again.
enum class ColdState : uint8_t {
  kHot = 0,           // not (yet) looked at: a candidate once it stays cold
  kRecompressed = 1,  // its payload is now the node's zstd recompression
  kKept = 2,          // looked at and left as it is (not lz4/raw, did not
                      // decode to one page, or zstd would not take a
                      // smaller pool slot)
};

// KeyLockTable: a fixed array of mutexes; a key's lock is the stripe its
// hash picks. Two keys may share a stripe, which only costs parallelism.
// It plays the part of zswap's folio lock and zram's slot lock. Thread-safe.
class KeyLockTable {
 public:
  // kStripes: enough that two of a few dozen concurrent operations rarely
  // share a stripe (birthday bound: 32 ops, 4096 stripes -> ~12%), small
  // enough to stay in cache (4096 x 8-byte Mutex = 32 KiB).
  static constexpr size_t kStripes = 4096;
  static_assert((kStripes & (kStripes - 1)) == 0, "stripe count is a power of two");

  Mutex& For(const PageKey& key) {
    // Mix differently from the index shards so one hot shard does not
    // concentrate on a few stripes.
    uint64_t h = absl::HashOf(key.page, key.tenant, uint8_t{0x5a});
    return stripes_[h & (kStripes - 1)].mu;
  }

 private:
  struct alignas(64) PaddedMutex {
    Mutex mu;
  };
  std::array<PaddedMutex, kStripes> stripes_;
};

// RangeCursor is where a walk of one tenant's pages in [first, last] stands
// (PageIndex::NextKeysInRange). Start it with {.tenant, .first, .last}.
struct RangeCursor {
  uint32_t tenant = 0;
  uint64_t first = 0;
  uint64_t last = 0;
  size_t shard = 0;      // the shard being walked
  uint64_t next = 0;     // the lowest page not yet walked in that shard
  bool started = false;  // `next` is valid for `shard`
};

// PageIndex maps keys to entries: hash-sharded flat_hash_sets of entries,
// found by key, each shard with its own mutex (held only for one bounded
// operation). Callers hold the key's lock around every call that reads or
// changes that key, so a Find() result stays valid until they drop it.
// Thread-safe.
//
// Each shard also keeps every tenant's page numbers in order, so a range
// walk (InvalidateRange) looks only at the pages of the tenant it is for, a
// bounded number per shard-lock hold: one tenant's large range never holds
// a shard lock over other tenants' entries, or for long over its own.
class PageIndex {
 public:
  // kShards: enough to keep index-lock contention below key-lock contention
  // on a few dozen cores.
  static constexpr size_t kShards = 64;
  // kRangeChunk: the most keys NextKeysInRange collects under one shard-lock
  // hold: a few microseconds of b-tree iteration, so a store or load waiting
  // for that shard waits no longer than for a handful of its own kind.
  static constexpr size_t kRangeChunk = 256;

  // Find returns the key's entry or nullptr.
  Entry* Find(const PageKey& key);
  // Replace installs `entry` and returns the entry it replaced, if any.
  std::unique_ptr<Entry> Replace(std::unique_ptr<Entry> entry);
  // Erase removes and returns the key's entry, if any.
  std::unique_ptr<Entry> Erase(const PageKey& key);
  // NextKeysInRange appends to *out the next at most kRangeChunk of the
  // cursor's tenant's keys in [first, last], all from one shard, taking that
  // shard's lock once, and advances the cursor. Returns false when the walk
  // is over (nothing was appended then). Keys stored or erased meanwhile
  // may or may not be seen, as if the walk had run a moment earlier or
  // later; no key present throughout is missed or listed twice.
  bool NextKeysInRange(RangeCursor* cursor, std::vector<PageKey>* out);
  uint64_t size() const { return size_.load(std::memory_order_relaxed); }
  // Clear deletes every entry; only for the store's destructor.
  void Clear();

 private:
  // EntryKeyHash, EntryKeyEq: an entry is hashed and compared by its key,
  // and a PageKey finds it (heterogeneous lookup), so the table's slot is
  // the entry's pointer alone: 8 bytes, not a 24-byte key and pointer. A
  // lookup reads the entry of a slot whose 7-bit tag matches, which is the
  // entry it wants but for one slot in 128; every caller reads it next.
  struct EntryKeyHash {
    using is_transparent = void;
    size_t operator()(const PageKey& k) const { return absl::HashOf(k); }
    size_t operator()(const std::unique_ptr<Entry>& e) const { return absl::HashOf(e->key); }
  };
  struct EntryKeyEq {
    using is_transparent = void;
    static const PageKey& KeyOf(const PageKey& k) { return k; }
    static const PageKey& KeyOf(const std::unique_ptr<Entry>& e) { return e->key; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return KeyOf(a) == KeyOf(b);
    }
  };
  struct alignas(64) Shard {
    Mutex mu;
    absl::flat_hash_set<std::unique_ptr<Entry>, EntryKeyHash, EntryKeyEq> entries
        ABSL_GUARDED_BY(mu);
    // pages[tenant]: the page numbers of that tenant's keys in `entries`.
    absl::flat_hash_map<uint32_t, absl::btree_set<uint64_t>> pages ABSL_GUARDED_BY(mu);
  };
  // ShardFor picks a shard by the hash's top bits. Not its low bits: the
  // shard's table keeps the low 7 bits of the same hash as each slot's tag
  // (absl's H2), so low-bit shards would leave every key of a shard with
  // one of two tags, and a lookup would compare keys in half the slots it
  // probes.
  static constexpr int kShardBits = std::countr_zero(kShards);
  static_assert(size_t{1} << kShardBits == kShards, "kShards is a power of two");
  Shard& ShardFor(const PageKey& key) {
    return shards_[uint64_t(absl::HashOf(key)) >> (64 - kShardBits)];
  }

  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> size_{0};
};

}  // namespace farswap::server::internal

#endif  // FARSWAP_SERVER_PAGE_INDEX_H_
