// cleaner.cc: reclaiming segments of the backing store's log.
//
// Why. Writeback appends; an object whose entry is invalidated or replaced
// leaves dead bytes in its segment, and a segment is freed by itself only
// when all of its bytes are dead. The cleaner takes a sealed segment, moves
// its live objects to the open segment and frees it (the log-structured
// file system's cleaner). It runs for two reasons:
//  - Space is low (CleanWhileLow, before a writeback batch): free segments
//    are few. Greedy: the lowest live fraction below cleaner_threshold, the
//    most space back for the least copying, now.
//  - Dead bytes are many (CleanWhileDead, the writeback thread's idle
//    work, asked for by invalidates and stores that leave dead bytes
//    behind; it runs once no store has come and no writeback pass has been
//    asked for during cleaner_idle_ms, and stops early when a pass is): dead bytes exceed
//    cleaner_max_dead of the bytes held, so a page on disk costs more than
//    its compressed size. Only when writeback is quiet, because cleaning
//    for space rewrites live bytes (under churn about 3 bytes per byte
//    written back) to give back space nobody needs while free segments are
//    plenty; under steady writeback the first reason alone runs. Cost-benefit
//    (segment_table.h, VictimPolicy), among segments whose own dead
//    fraction is above cleaner_max_dead — if none is, the held bytes
//    overall cannot be over the target by more than the open segments'
//    padding, and cleaning would only shuffle bytes. It stops at the
//    target, after a bounded number of segments per pass (the worker kicks
//    itself for another pass), or when a segment cleaned gave nothing back.
//
// The protocol (the same isolate-and-revalidate discipline as writeback.cc;
// shared/seeds/ for what happens without it). Locks held at each step are
// in brackets.
//
//  1. [SegmentTable] Pick the victim; it becomes CLEANING (not freed by
//     its live bytes reaching 0; no other cleaner picks it) and its object
//     records are copied.
//  2. [none] Read the victim's extent with one ReadBlocks.
//                          sync point "PageStore::Cleaner:after-read" [none]
//  Then, round by round, until every record is done:
//  3. [key, one at a time] For each record whose entry is STILL the disk
//     copy it names — index[key] has the record's gen, is ON_DISK, and its
//     disk_offset is the record's place in the victim — copy its bytes (as
//     read, with the entry's disk checksum unchanged) into the open segment.
//     Records that fail the check are dead: nothing to move.
//  4. [none] Write the appended blocks.
//                          sync point "PageStore::Cleaner:after-io" [none]
//  5. [key, one at a time] Re-check each moved entry exactly as in 3. If it
//     still holds, point it at the new copy (the new bytes count live, the
//     victim's dead). Otherwise a store, invalidate or load-and-restore won
//     while the key was unlocked: the newer version stays, the relocated
//     copy is dead and is never served.
//  6. [SegmentTable] Free the victim if nothing live is left in it (else
//     it is sealed again: an object could not be moved this time).
//
// Why a load never reads a freed victim: a load pins the object's segment
// under its key lock before it reads (with no lock held), and a pinned
// victim is not freed at step 6 — it is sealed with no live bytes and the
// load's unpin frees it (segment_table.h). A load in flight while its
// entry is moved reads the old copy, intact.
#include <xxhash.h>

#include <cstdlib>
#include <cstring>

#include "farswap/common/sync_point.h"
#include "farswap/server/page_store.h"
#include "page_index.h"
#include "segment_table.h"
#include "writeback_worker.h"

namespace farswap::server {

using internal::Entry;
using internal::EntryState;
using internal::ObjectRecord;
using internal::OpenSegment;

namespace {

// Moved: one object copied to the open segment in this round.
struct Moved {
  size_t record = 0;
  uint32_t offset = 0;  // in the open segment
};

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

void PageStore::CleanWhileLow() {
  // Bounded, so one batch never turns into a long cleaning run; the next
  // batch continues.
  constexpr int kMaxSegmentsPerBatch = 4;
  for (int i = 0; i < kMaxSegmentsPerBatch && segments_->free_segments() < clean_below_free_; ++i) {
    if (!RunCleanerOnce()) return;
  }
}

bool PageStore::CleanWhileDead(WritebackWorker& worker) {
  // Bounded per round, so a pass asked for meanwhile waits for at most one
  // segment (KickPending below) and a round for at most this many.
  constexpr int kMaxSegmentsPerRound = 8;
  if (segments_ == nullptr) return false;
  cleaner_kicked_.store(false, std::memory_order_relaxed);
  const double threshold = 1.0 - options_.cleaner_max_dead;
  auto round = [&] {
    for (int i = 0; i < kMaxSegmentsPerRound; ++i) {
      if (!segments_->DeadOverTarget()) return false;
      // Writeback is needed again: it goes first; the next quiet time goes on.
      if (worker.KickPending()) return true;
      const uint64_t dead_before = segments_->dead_bytes();
      if (!CleanOneSegment(threshold, internal::VictimPolicy::kCostBenefit)) return false;
      counters_.cleaner_space_segments.fetch_add(1, std::memory_order_relaxed);
      // Nothing came back (tiny segments whose moved bytes pad out to what
      // was freed, or stores racing in): stop rather than shuffle bytes.
      if (segments_->dead_bytes() >= dead_before) return false;
    }
    return segments_->DeadOverTarget();
  };
  const bool more = round();
  FARSWAP_SYNC_POINT("PageStore::Cleaner:idle-round-end");  // [none]
  return more;
}

void PageStore::MaybeKickCleaner() {
  if (worker_ == nullptr || segments_ == nullptr || !segments_->DeadOverTarget()) return;
  // One request outstanding at a time: CleanWhileDead clears the flag when
  // it starts, so a burst of invalidates costs one worker wake-up.
  if (cleaner_kicked_.exchange(true, std::memory_order_relaxed)) return;
  worker_->RequestIdleWork();
}

bool PageStore::RunCleanerOnce() {
  return CleanOneSegment(options_.cleaner_threshold, internal::VictimPolicy::kGreedy);
}

bool PageStore::CleanOneSegment(double threshold, internal::VictimPolicy policy) {
  if (segments_ == nullptr || backing_failed_.load(std::memory_order_acquire)) return false;
  // Nowhere to move live objects to (a store of one or two segments, all in
  // use): do not read a victim only to put it back.
  if (!segments_->CanAppend()) return false;
  // Step 1 [SegmentTable].
  std::optional<internal::SegmentTable::Victim> victim = segments_->PickVictim(threshold, policy);
  if (!victim.has_value()) return false;
  const uint64_t segment_bytes = segments_->segment_bytes();
  const uint64_t victim_base = victim->segment * segment_bytes;

  // Step 2 [no lock].
  std::unique_ptr<uint8_t, FreeDeleter> data(
      static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, segment_bytes)));
  if (victim->extent > 0) {
    counters_.backing_reads.fetch_add(1, std::memory_order_relaxed);
    absl::Status read =
        backing_->ReadBlocks(victim_base / kBlockSize, victim->extent / kBlockSize, data.get());
    if (!read.ok()) {
      counters_.backing_read_errors.fetch_add(1, std::memory_order_relaxed);
      RecordBackingError(read);
      segments_->FinishCleaning(victim->segment);  // sealed again; its pages stay where they are
      return false;
    }
  }
  FARSWAP_SYNC_POINT("PageStore::Cleaner:after-read");

  // The entry still is the disk copy `r` names. Key lock held.
  auto still_there = [&](const ObjectRecord& r, Entry* e) {
    return e != nullptr && e->gen == r.gen && e->state == EntryState::kOnDisk &&
           e->disk_offset == victim_base + r.offset;
  };
  const std::vector<ObjectRecord>& records = victim->records;
  std::vector<Moved> round;
  bool stuck = false;
  for (size_t next = 0; next < records.size() && !stuck;) {
    std::unique_ptr<OpenSegment> open = AcquireSegment(/*for_cleaner=*/true);
    if (open == nullptr) break;  // nowhere to move to: the victim stays sealed
    // Step 3 [key lock, one record at a time].
    round.clear();
    for (; next < records.size(); ++next) {
      const ObjectRecord& r = records[next];
      MutexLock kl(&key_locks_->For(r.key));
      if (!still_there(r, index_->Find(r.key))) continue;
      if (open->fill + r.length > segment_bytes) break;
      const uint32_t offset = uint32_t(open->fill);
      std::memcpy(open->buf.get() + offset, data.get() + r.offset, r.length);
      open->fill += r.length;
      round.push_back({.record = next, .offset = offset});
    }
    // Step 4 [no lock].
    const uint64_t base = open->segment * segment_bytes;
    const absl::Status io = FlushSegment(*open);
    FARSWAP_SYNC_POINT("PageStore::Cleaner:after-io");
    if (!io.ok()) stuck = true;  // sticky error recorded; nothing below is published
    // Step 5 [key lock, one entry at a time].
    for (const Moved& m : round) {
      if (!io.ok()) break;
      const ObjectRecord& r = records[m.record];
      MutexLock kl(&key_locks_->For(r.key));
      Entry* e = index_->Find(r.key);
      if (!still_there(r, e)) continue;  // a newer version won: the copy is dead
      segments_->AddLive(open->segment,
                         {.key = r.key, .gen = r.gen, .offset = m.offset, .length = r.length});
      segments_->Drop(victim->segment, r.length);
      e->disk_offset = base + m.offset;
      counters_.cleaner_moves.fetch_add(1, std::memory_order_relaxed);
    }
    segments_->Release(std::move(open));
  }
  // Step 6 [SegmentTable].
  const bool freed = segments_->FinishCleaning(victim->segment);
  if (freed) counters_.cleaner_segments.fetch_add(1, std::memory_order_relaxed);
  return freed;
}

}  // namespace farswap::server
