// writeback.cc: moving the coldest pool entries to the backing store.
//
// Why. The pool is the node's RAM; the backing store is its SSD. When pool
// memory passes the high watermark, the coldest entries' *compressed* bytes
// are written to 4 KiB blocks and their pool objects freed, until memory is
// back at the low watermark (zswap's shrink_worker down to the accept
// threshold; zram's writeback of compressed slots).
//
// The protocol for one entry (zswap's shrink_memcg_cb + zram's
// ZRAM_PP_SLOT; the 2023 zsmalloc crash in shared/seeds/ is what happens
// without it). Locks held at each step are in brackets.
//
//  1. [LRU] Pick the coldest entry, giving referenced ones a second chance;
//     rotate the pick to the head (so a failed attempt leaves it linked) and
//     copy (key, entry, gen). Drop the LRU lock — a key lock is never taken
//     under it.            sync point "PageStore::Writeback:after-lru-unlock" [none]
//  2. [key] Re-validate index[key] == entry && entry.gen == gen && state ==
//     IN_POOL, else abort. Set WRITEBACK_PENDING with this attempt's ticket,
//     copy the compressed bytes to a private buffer. Drop the key lock.
//                          sync point "PageStore::Writeback:pending-unlocked" [none]
//  3. [none] Reserve a block and write the buffer to it.
//                          sync point "PageStore::Writeback:after-io" [none]
//  4. [key] If the entry is still (entry, gen), WRITEBACK_PENDING and ours
//     (ticket): it becomes ON_DISK(block), leaves the LRU, and its pool
//     object is freed. Otherwise the store, invalidate or load that came in
//     between wins: the block is freed and nothing is published — a block
//     is never resurrected over newer data.
//
// Lock order is page_store.cc's: key stripe -> index shard -> LRU ->
// BlockAllocator -> pool; the LRU lock is dropped before any key lock.
//
// Every abort undoes what the attempt started: a reserved block is freed,
// and WRITEBACK_PENDING (when still ours) goes back to IN_POOL. A failed
// write is recorded as the store's sticky backing error; the page stays in
// the pool and later passes stop writing (leveldb's RecordBackgroundError).
#include <xxhash.h>

#include <chrono>
#include <cstring>

#include "farswap/common/page_file.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/page_store.h"
#include "lru_list.h"
#include "page_index.h"
#include "writeback_worker.h"

namespace farswap::server {

using internal::Entry;
using internal::EntryState;
using internal::WritebackCandidate;

WritebackOutcome PageStore::RunWritebackOnce() { return WritebackOne(); }

bool PageStore::AboveLowWatermark() const {
  const uint64_t low = low_watermark_bytes_.load(std::memory_order_relaxed);
  return low != 0 && pool_->GetStats().mem_used_total > low;
}

void PageStore::MaybeKickWriteback() {
  const uint64_t high = high_watermark_bytes_.load(std::memory_order_relaxed);
  if (worker_ != nullptr && high != 0 && pool_->GetStats().mem_used_total > high) {
    worker_->Kick();
  }
}

uint64_t PageStore::RunWritebackPass() {
  // kMaxConsecutiveAborts: a pass that keeps losing races is chasing hot
  // entries; stop and let the next kick retry (zswap's MAX_RECLAIM_RETRIES).
  constexpr int kMaxConsecutiveAborts = 16;
  // kCompactEvery: freed objects leave holes in zspages, and mem_used_total
  // (what the watermarks watch) drops only when whole pages empty; compact
  // now and then so memory actually comes back.
  constexpr uint64_t kCompactEvery = 64;
  uint64_t written = 0;
  int aborts = 0;
  WritebackOutcome last = WritebackOutcome::kNothingToWrite;
  while (AboveLowWatermark()) {
    last = WritebackOne();
    if (last == WritebackOutcome::kWrittenBack) {
      aborts = 0;
      if (++written % kCompactEvery == 0 && AboveLowWatermark()) pool_->Compact();
      continue;
    }
    if (last == WritebackOutcome::kAborted && ++aborts < kMaxConsecutiveAborts) continue;
    break;
  }
  // Writeback frees objects, but pool memory only drops when whole pages
  // empty; entries freed by invalidates leave holes too. Compaction turns
  // the holes into free pages, and may be all it takes when the LRU has
  // nothing (or nothing cold) left.
  if (AboveLowWatermark()) pool_->Compact();
  // A pass that ends at or below the low watermark made room, whatever its
  // last attempt did; otherwise its last attempt says what stopped it.
  if (!AboveLowWatermark()) last = WritebackOutcome::kWrittenBack;
  last_pass_outcome_.store(int(last), std::memory_order_relaxed);
  return written;
}

WritebackOutcome PageStore::WritebackOne() {
  if (backing_ == nullptr) return WritebackOutcome::kNoBackingStore;
  if (backing_failed_.load(std::memory_order_acquire)) return WritebackOutcome::kIoError;

  // Step 1 [LRU lock, inside PickColdest].
  uint64_t second_chances = 0;
  std::optional<WritebackCandidate> c = lru_->PickColdest(&second_chances);
  counters_.second_chances.fetch_add(second_chances, std::memory_order_relaxed);
  if (!c.has_value()) return WritebackOutcome::kNothingToWrite;
  FARSWAP_SYNC_POINT("PageStore::Writeback:after-lru-unlock");

  auto abort = [this] {
    counters_.writeback_aborted.fetch_add(1, std::memory_order_relaxed);
    return WritebackOutcome::kAborted;
  };

  // Step 2 [key lock].
  const uint64_t ticket = next_writeback_ticket_.fetch_add(1, std::memory_order_relaxed);
  alignas(kBlockSize) uint8_t buf[kBlockSize];
  uint32_t length;
  Mutex& key_lock = key_locks_->For(c->key);
  {
    MutexLock kl(&key_lock);
    Entry* e = index_->Find(c->key);
    // The pointer comparison comes first: c->entry may be freed memory
    // until the index says it is live.
    if (e != c->entry || e->gen != c->gen || e->state != EntryState::kInPool) return abort();
    absl::StatusOr<alloc::ZsPool::ReadGuard> g = pool_->Read(e->handle);
    if (!g.ok()) return abort();  // cannot happen while the key lock is held
    length = e->length;
    std::memcpy(buf, g->data(), length);
    e->state = EntryState::kWritebackPending;
    e->writeback_ticket = ticket;
  }
  std::memset(buf + length, 0, kBlockSize - length);
  const uint64_t disk_checksum = XXH3_64bits(buf, length);
  FARSWAP_SYNC_POINT("PageStore::Writeback:pending-unlocked");

  // Step 3 [no lock].
  absl::StatusOr<uint64_t> block = blocks_->Allocate();
  absl::Status io;
  if (block.ok()) {
    counters_.backing_writes.fetch_add(1, std::memory_order_relaxed);
    const auto start = std::chrono::steady_clock::now();
    io = backing_->WriteBlock(*block, buf);
    counters_.writeback_latency.Record(absl::FromChrono(std::chrono::steady_clock::now() - start));
    if (!io.ok()) {
      counters_.backing_write_errors.fetch_add(1, std::memory_order_relaxed);
      RecordBackingError(io);
    }
  }
  FARSWAP_SYNC_POINT("PageStore::Writeback:after-io");

  // Step 4 [key lock].
  MutexLock kl(&key_lock);
  Entry* e = index_->Find(c->key);
  const bool ours = e == c->entry && e->gen == c->gen &&
                    e->state == EntryState::kWritebackPending && e->writeback_ticket == ticket;
  if (!block.ok() || !io.ok()) {
    if (block.ok()) blocks_->Free(*block);
    if (ours) e->state = EntryState::kInPool;  // nothing lost: still in the pool
    return block.ok() ? WritebackOutcome::kIoError : WritebackOutcome::kBackingFull;
  }
  if (!ours) {
    blocks_->Free(*block);  // a store, invalidate or load won; never resurrect
    return abort();
  }
  const alloc::ZsHandle handle = e->handle;
  e->state = EntryState::kOnDisk;
  e->block = *block;
  e->disk_checksum = disk_checksum;
  e->handle = alloc::ZsHandle{};
  lru_->Unlink(e);
  pool_->Free(handle);
  pool_->AddCallerCounters(-int64_t(farswap::kPageSize), 0);
  counters_.pages_on_disk.fetch_add(1, std::memory_order_relaxed);
  counters_.written_back_pages.fetch_add(1, std::memory_order_relaxed);
  return WritebackOutcome::kWrittenBack;
}

}  // namespace farswap::server
