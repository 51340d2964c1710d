// lru_list.h: the page store's LRU of pool-resident entries. Private to
// server/.
//
// An intrusive doubly linked list of Entry (page_index.h), hot end at the
// head, cold end at the tail, with one mutex. The rules that keep it sane
// (docs/invariants.md rule 1, from the 2023 zsmalloc LRU crash):
//  - An entry is linked once, as the last step of publishing a Store, and
//    unlinked only when it is freed or written back. Loads never touch the
//    list; they set the entry's referenced bit.
//  - The writeback scan (PickColdest) never unlinks: it rotates the entry it
//    picks to the head before dropping the lock, so if writeback fails the
//    entry is still where a free will find it (zswap's shrink_memcg_cb).
//  - The LRU lock is innermost of the page store's locks: it is taken under
//    a key lock (link / unlink) or alone (PickColdest), and no key lock is
//    ever taken while it is held.
//  - A Store holds its key stripe while it waits to Link, so PickColdest
//    holds the lock for at most kMaxScanPerHold entries at a time and drops
//    it between such chunks: a scan over a long run of referenced entries
//    never stalls stores for longer than one chunk.
#ifndef FARSWAP_SERVER_LRU_LIST_H_
#define FARSWAP_SERVER_LRU_LIST_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"
#include "page_index.h"

namespace farswap::server::internal {

// WritebackCandidate is what the scan hands to writeback: enough to find
// and re-validate the entry later, copied while the LRU lock was held.
// PickColdest's candidates are pinned (page_index.h, Entry::writeback_pins):
// the entry is live memory until the caller unpins it, and still the key's
// entry while EntryRetired says no under the key lock; its other fields are
// read only under that lock. ScanCold's are not pinned: the cold pass
// validates its entry pointer against the index under the key lock before
// it dereferences it.
struct WritebackCandidate {
  PageKey key;
  const Entry* entry = nullptr;
  uint64_t gen = 0;
};

// LruList is safe for concurrent use from any number of threads.
class LruList {
 public:
  // Link puts the entry at the hot end. The entry must not be linked.
  void Link(Entry* e) {
    MutexLock l(&mu_);
    PushHeadLocked(e);
    ++size_;
  }

  // Unlink removes the entry if it is linked.
  void Unlink(Entry* e) {
    MutexLock l(&mu_);
    if (!e->on_lru) return;
    RemoveLocked(e);
    --size_;
  }

  // kMaxScanPerHold: entries PickColdest looks at per hold of the lock.
  // Each is a few pointer writes, so a chunk is well under a microsecond or
  // two: the longest a Link (holding a key stripe) waits behind a scan.
  static constexpr uint64_t kMaxScanPerHold = 64;

  // PickColdest walks from the cold end: a referenced entry has its bit
  // cleared and moves to the head (second chance, counted in
  // *second_chances); unreferenced entries also move to the head and are
  // returned, up to `max` of them, each once. Empty when the list is empty
  // or every entry it looked at (`max` more than the list held when it
  // started: a full rotation of second chances, then the picks) was
  // referenced. It holds the lock for at most kMaxScanPerHold entries at a
  // time, dropping it between chunks (sync point
  // "LruList::PickColdest:between-chunks", no lock held), and goes on
  // until it has `max` picks, has looked at that many entries, or comes
  // round to an entry it picked itself (marked with this call's
  // lru_scan_mark: every entry has been looked at since, and entries
  // unlinked meanwhile cannot hide that). In each hold, recompressed
  // entries just past the picks replace that hold's picks that are not
  // recompressed (PreferRecompressedLocked). Every entry returned is pinned
  // (PinEntry): the caller unpins each (UnpinEntry) once it is done with it.
  std::vector<WritebackCandidate> PickColdest(size_t max, uint64_t* second_chances) {
    std::vector<WritebackCandidate> out;
    uint64_t left = 0;        // entries still to look at; set on the first hold
    uint64_t start_size = 0;  // size_ on the first hold
    uint16_t mark = 0;        // this call's lru_scan_mark
    for (bool first_hold = true;; first_hold = false) {
      {
        MutexLock l(&mu_);
        if (first_hold) {
          start_size = size_;
          left = size_ + max;
          if (++scan_mark_ == 0) ++scan_mark_;  // 0 is "never picked"
          mark = scan_mark_;
        }
        const size_t hold_picks = out.size();  // picks of earlier holds
        const Entry* first_moved = nullptr;    // the first entry this hold moved to the head
        uint64_t n = 0;                        // entries this hold looked at
        bool came_round = false;
        for (; n < kMaxScanPerHold && left > 0 && tail_ != nullptr && out.size() < max;
             ++n, --left) {
          Entry* e = tail_;
          // Back at a pick of this call: every entry has been looked at
          // since. (A mark left by a call 65,536 calls ago only ends a
          // batch early, never repeats a pick; with no pick yet, it means
          // nothing.)
          if (e->lru_scan_mark == mark && !out.empty()) {
            came_round = true;
            break;
          }
          RemoveLocked(e);
          PushHeadLocked(e);
          if (first_moved == nullptr) first_moved = e;
          if (e->referenced.exchange(false, std::memory_order_relaxed)) {
            ++*second_chances;
            continue;
          }
          e->lru_scan_mark = mark;
          PinEntry(e);
          out.push_back(WritebackCandidate{e->key, e, e->gen});
        }
        // Past the picks: only entries this call has not looked at (not
        // the ones it just gave a second chance), and only when this hold
        // moved fewer entries than the list holds (else some moved twice
        // and first_moved no longer bounds the entries not looked at).
        const uint64_t looked = start_size + max - left;
        if (any_recompressed_.load(std::memory_order_relaxed) && out.size() > hold_picks &&
            n < size_ && looked < start_size) {
          PreferRecompressedLocked(first_moved, start_size - looked, mark, hold_picks, &out);
        }
        if (out.size() >= max || came_round || left == 0 || tail_ == nullptr) return out;
      }
      FARSWAP_SYNC_POINT("LruList::PickColdest:between-chunks");
    }
  }

  uint64_t size() const {
    MutexLock l(&mu_);
    return size_;
  }

  // NoteRecompressed: the cold tier has recompressed an entry (it calls
  // this after each, under the entry's key lock). Until the first, no entry
  // is kRecompressed and PickColdest skips PreferRecompressedLocked: on a
  // node without the cold tier (the default) its look past the picks was
  // 64 cold cache misses a batch for nothing, ~4% of a writeback thread's
  // time (server/README.md, "Writeback threads"). Never cleared: a
  // preference, not a rule, costs only that look once the tier is in use.
  void NoteRecompressed() { any_recompressed_.store(true, std::memory_order_relaxed); }

  // kPreferLookahead: entries past a batch's picks that PickColdest reads
  // for recompressed ones (PreferRecompressedLocked) in the same lock hold.
  static constexpr uint64_t kPreferLookahead = 64;

  // ScanCold is one lock hold of the cold tier's walk (cold_recompressor.cc).
  // It looks at up to kMaxScanPerHold entries from the cold end, moving each
  // to the head as PickColdest does (so the walk resumes at the tail after
  // the lock is dropped, and nothing it rotates is lost if it stops), and
  // decrements *left for each. Entries whose cold_state is not kHot are
  // passed over; of the others, one whose cold_referenced bit was set has it
  // cleared, and one whose bit was already clear is appended to *out.
  // A walk of size() entries rotates the list by its own length, which
  // leaves the order writeback sees as it was (entries linked meanwhile end
  // up a little closer to the cold end). The writeback `referenced` bit is
  // never touched. Sets *left to 0 when the list is empty.
  void ScanCold(uint64_t* left, std::vector<WritebackCandidate>* out) {
    MutexLock l(&mu_);
    for (uint64_t n = 0; n<kMaxScanPerHold&& * left> 0 && tail_ != nullptr; ++n, --*left) {
      Entry* e = tail_;
      RemoveLocked(e);
      PushHeadLocked(e);
      if (e->cold_state.load(std::memory_order_relaxed) != uint8_t(ColdState::kHot)) continue;
      if (e->cold_referenced.exchange(false, std::memory_order_relaxed)) continue;
      out->push_back(WritebackCandidate{e->key, e, e->gen});
    }
    if (tail_ == nullptr) *left = 0;
  }

 private:
  // PreferRecompressedLocked: writeback takes the coldest already-recompressed
  // entries first (cold_recompressor.cc): their smaller objects cost less
  // disk and cleaning, and the hot lz4 pages left in the pool load faster.
  // It reads up to min(kPreferLookahead, `limit`) entries from the cold
  // end, past the picks (`first_moved` is the first entry this hold moved
  // to the head: the walk stops there, or at a pick of this call marked
  // `mark`, before the picks), without touching their bits or moving them.
  // Each unreferenced kRecompressed entry it finds, coldest first, replaces
  // the warmest pick of this hold (picks[from..]: an earlier hold's pick
  // may have been unlinked and freed since) that is not recompressed:
  // the found entry moves to the head as a pick does (marked), and the
  // replaced pick goes back to the cold end (the coldest of them at the
  // tail, unmarked), so the next scan looks at it first. Costs at most
  // kPreferLookahead reads and as many moves on top of the scan's chunk.
  void PreferRecompressedLocked(const Entry* first_moved, uint64_t limit, uint16_t mark,
                                size_t from, std::vector<WritebackCandidate>* picks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto recompressed = [](const Entry* e) {
      return e->cold_state.load(std::memory_order_relaxed) == uint8_t(ColdState::kRecompressed);
    };
    size_t replaceable = 0;
    for (size_t i = from; i < picks->size(); ++i) {
      replaceable += recompressed((*picks)[i].entry) ? 0 : 1;
    }
    if (replaceable == 0) return;
    Entry* found[kPreferLookahead];
    size_t n_found = 0;
    uint64_t looked = 0;
    limit = std::min(limit, kPreferLookahead);
    for (Entry* e = tail_; e != nullptr && e != first_moved && e->lru_scan_mark != mark &&
                           looked < limit && n_found < replaceable;
         e = e->lru_prev, ++looked) {
      if (recompressed(e) && !e->referenced.load(std::memory_order_relaxed)) found[n_found++] = e;
    }
    // Picks are coldest first: replace from the warmest end.
    size_t i = picks->size();
    for (size_t f = 0; f < n_found; ++f) {
      do --i;
      while (recompressed((*picks)[i].entry));
      // Linked (the index frees an entry only after Unlink, which needs
      // this lock), so it is this list's to move.
      Entry* replaced = const_cast<Entry*>((*picks)[i].entry);
      UnpinEntry(replaced);  // linked, so not retired: never the last unpin
      PinEntry(found[f]);
      replaced->lru_scan_mark = 0;
      RemoveLocked(replaced);
      PushTailLocked(replaced);
      found[f]->lru_scan_mark = mark;
      RemoveLocked(found[f]);
      PushHeadLocked(found[f]);
      (*picks)[i] = WritebackCandidate{found[f]->key, found[f], found[f]->gen};
    }
  }

  void PushTailLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    e->lru_next = nullptr;
    e->lru_prev = tail_;
    if (tail_ != nullptr) tail_->lru_next = e;
    tail_ = e;
    if (head_ == nullptr) head_ = e;
    e->on_lru = true;
  }

  void PushHeadLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    e->lru_prev = nullptr;
    e->lru_next = head_;
    if (head_ != nullptr) head_->lru_prev = e;
    head_ = e;
    if (tail_ == nullptr) tail_ = e;
    e->on_lru = true;
  }

  void RemoveLocked(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    (e->lru_prev != nullptr ? e->lru_prev->lru_next : head_) = e->lru_next;
    (e->lru_next != nullptr ? e->lru_next->lru_prev : tail_) = e->lru_prev;
    e->lru_prev = e->lru_next = nullptr;
    e->on_lru = false;
  }

  mutable Mutex mu_;
  Entry* head_ ABSL_GUARDED_BY(mu_) = nullptr;  // hottest
  Entry* tail_ ABSL_GUARDED_BY(mu_) = nullptr;  // coldest
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  // scan_mark_: the last PickColdest call's mark (Entry::lru_scan_mark);
  // never 0.
  uint16_t scan_mark_ ABSL_GUARDED_BY(mu_) = 0;
  // any_recompressed_: NoteRecompressed was called. Relaxed: an entry
  // recompressed just before a scan that misses the flag is preferred by
  // the next one.
  std::atomic<bool> any_recompressed_{false};
};

}  // namespace farswap::server::internal

#endif  // FARSWAP_SERVER_LRU_LIST_H_
