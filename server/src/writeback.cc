// writeback.cc: moving the coldest pool entries to the backing store.
//
// Why. The pool is the node's RAM; the backing store is its SSD. When pool
// memory passes the high watermark, the coldest entries' *compressed* bytes
// are appended to the backing store's log (segment_table.h) and their pool
// objects freed, until memory is back at the low watermark (zswap's
// shrink_worker down to the accept threshold; zram's writeback of
// compressed slots, packed as a log-structured store packs them).
//
// The protocol for one batch (zswap's shrink_memcg_cb + zram's
// ZRAM_PP_SLOT, for many entries at once; the 2023 zsmalloc crash in
// shared/seeds/ is what happens without it). Locks held at each step are in
// brackets.
//
//  1. [LRU] Pick up to writeback_batch_pages of the coldest entries, in
//     holds of at most 64 entries (lru_list.h), giving referenced ones a
//     second chance; rotate each pick to the head (so a failed attempt
//     leaves it linked), pin it (page_index.h: the entry is not freed
//     until the batch unpins it, when its last round is done) and copy
//     (key, entry, gen). Drop the LRU lock — a key lock is never taken
//     under it.
//                          sync point "PageStore::Writeback:after-lru-unlock" [none]
//  Then, round by round, until every candidate is done:
//  2. [key, one at a time] Take the pipeline's open segment (check one out
//     if it has none). For each candidate
//     that fits: re-validate !EntryRetired(entry) (it has not left the
//     index: no lookup of the key) && entry.gen == gen &&
//     state == IN_POOL (else skip it: aborted), set WRITEBACK_PENDING with
//     this batch's ticket and copy the compressed bytes into the segment's
//     buffer at its fill point. Each whole write_request_bytes of appended
//     bytes is submitted and started at once [none: after the candidate's
//     key lock is dropped], without waiting (it holds only this round's
//     unpublished objects), so the device writes while the round is still
//     isolating. Where writes are synchronous (no io_uring), starting one
//     is the write itself, so no key lock may be held across it.
//                          sync point "PageStore::Writeback:request-started" [none]
//     The round's last block is zero-padded and started too: the next
//     round appends after it, and its writes are in flight while the next
//     round isolates.
//                          sync point "PageStore::Writeback:pending-unlocked" [none]
//     Steps 3 and 4 run for the round *before* this one, once this one's
//     writes have started (the pipeline: the device writes one round while
//     the thread isolates the next, SOSP'25's cross-batch pipelining). A
//     pass keeps a batch's last round in flight into the next batch and
//     completes it before it ends; RunWritebackBatch completes every round
//     before it returns. A segment goes back to the table (step 4's end)
//     with the last round that wrote to it.
//  3. [none] Write the rest of the round's blocks: requests of
//     write_request_bytes, up to write_queue_depth in flight through a
//     BlockWriteQueue (io_uring on a file; completions in any order), and
//     wait for all of them, early ones included, in one wait; the
//     segment's extent moves to the round's end. One failed request fails
//     the whole round (nothing of it is published; the error is sticky, so
//     no later round is started, and a round already in flight beside it
//     is completed and published on its own writes' outcome).
//                          sync point "PageStore::Writeback:after-io" [none]
//  4. [key, one at a time] Each entry still (entry, gen) and not retired, WRITEBACK_PENDING
//     and ours (ticket) becomes ON_DISK(offset), leaves the LRU and its
//     bytes count live in the segment; its pool object is freed with the
//     round's others once every key lock is dropped (nothing reads the old
//     handle of an ON_DISK entry).
//                          sync point "PageStore::Writeback:before-free" [none]
//     Otherwise the
//     store, invalidate or load that came in between wins: its appended
//     bytes stay dead, and nothing is published — an object is never
//     resurrected over newer data. Return the segment (parked while it has
//     room, else sealed).
//
// Lock order is page_store.cc's: key stripe -> index shard -> LRU ->
// SegmentTable -> pool; the LRU lock is dropped before any key lock, and no
// lock is held across a write.
//
// Every abort undoes what the attempt started: WRITEBACK_PENDING (when still
// ours) goes back to IN_POOL, and bytes appended for it are dead (a segment
// whose live bytes are 0 is freed). A failed write is recorded as the
// store's sticky backing error; the pages stay in the pool and later
// passes stop writing (leveldb's RecordBackgroundError).
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "farswap/common/page_file.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/page_store.h"
#include "lru_list.h"
#include "page_index.h"
#include "segment_table.h"
#include "writeback_helpers.h"
#include "writeback_worker.h"

namespace farswap::server {

using internal::Entry;
using internal::EntryState;
using internal::OpenSegment;
using internal::WritebackCandidate;

namespace internal {

// Appended: one entry isolated into the open segment in a round.
struct Appended {
  size_t candidate = 0;  // index into the round's candidates
  uint32_t offset = 0;   // within the segment
  uint32_t length = 0;
  uint64_t disk_checksum = 0;
};

// WritebackRound: one round isolated into a segment, its writes started
// and not yet waited for. Owned by the writeback thread (or a direct
// reclaimer) running the pipeline; not thread-safe.
struct WritebackRound {
  std::shared_ptr<const std::vector<WritebackCandidate>> candidates;  // the batch's
  uint32_t ticket = 0;
  uint64_t segment = 0;
  const uint8_t* buf = nullptr;  // the segment's buffer (its OpenSegment outlives the round)
  uint64_t first = 0;            // the round's bytes: [first, end) of the segment
  uint64_t end = 0;              // block-aligned, padding included
  uint64_t started = 0;          // bytes from `first` submitted so far
  absl::Status start_error;      // a Submit that failed: the round fails
  std::vector<Appended> appended;
  std::unique_ptr<BlockWriteQueue> queue;
  // The segment, when this round is the last to write to it (full): it goes
  // back to the segment table once the round is complete.
  std::unique_ptr<OpenSegment> release_after;
};

// WritebackPipeline: the open segment rounds append to, and the round in
// flight. See PageStore::WritebackBatch.
struct WritebackPipeline {
  std::unique_ptr<OpenSegment> open;
  std::unique_ptr<WritebackRound> in_flight;
};

}  // namespace internal

using internal::Appended;

namespace {

// kMaxConsecutiveWritebackAborts: a pass that keeps losing races is chasing
// hot entries; stop and let the next kick retry (zswap's
// MAX_RECLAIM_RETRIES).
constexpr int kMaxConsecutiveWritebackAborts = 16;

// kHelperMinBatchesPerThread: a helper writes back only while the LRU holds
// at least this many batches for every writeback thread. Below that, the
// threads' scans come round the whole list and pick each other's isolated
// entries (a pick is marked for its own scan only): every thread's batch
// then aborts, and stores waiting for room run out of passes.
constexpr uint64_t kHelperMinBatchesPerThread = 4;

}  // namespace

WritebackOutcome PageStore::RunWritebackOnce() { return RunWritebackBatch(1); }

WritebackOutcome PageStore::RunWritebackBatch(size_t max_pages) {
  internal::WritebackPipeline pipeline;
  const WritebackOutcome out = WritebackBatch(std::max<size_t>(1, max_pages), pipeline,
                                              /*leave_last_in_flight=*/false);
  FinishWriteback(pipeline);  // nothing in flight: returns the open segment
  return out;
}

bool PageStore::AboveLowWatermark() const {
  const uint64_t low = low_watermark_bytes_.load(std::memory_order_relaxed);
  return low != 0 && pool_->mem_in_use_bytes() > low;
}

void PageStore::MaybeKickWriteback() {
  const uint64_t high = high_watermark_bytes_.load(std::memory_order_relaxed);
  if (worker_ != nullptr && high != 0 && pool_->mem_in_use_bytes() > high) {
    worker_->Kick();
  }
}

uint64_t PageStore::RunWritebackPass(WritebackWorker* worker) {
  // Pool memory already at or below the low watermark (a kick that came as
  // the last pass ended, or a store's that found the pool full of cached and
  // released-batch pages): that is room, not "nothing to write". A store
  // waiting for room tries again; one told kNothingToWrite gives up. With
  // helpers to start and wait for, stores had time to fill the pool above
  // the low watermark again before such a pass ended, and were refused.
  if (!MoreWritebackNeeded(internal::WritebackPipeline{})) {
    last_pass_outcome_.store(int(WritebackOutcome::kWrittenBack), std::memory_order_relaxed);
    return 0;
  }
  uint64_t written = 0;
  int aborts = 0;
  WritebackOutcome last = WritebackOutcome::kNothingToWrite;
  // Freed objects leave holes in zspages, and mem_used_total (what the
  // watermarks watch) drops only when whole pages empty, so the pass
  // compacts as it goes — but once per compact_every bytes written back,
  // a quarter of the watermarks' gap, not after every batch: each
  // compaction scans every class and moves objects, and what it empties
  // past the pool's empty-zspage cache goes back to the OS (madvise, a TLB
  // flush on every CPU) for stores to fault straight back in. A pass
  // overshoots the low watermark by at most that quarter.
  const uint64_t high = high_watermark_bytes_.load(std::memory_order_relaxed);
  const uint64_t low = low_watermark_bytes_.load(std::memory_order_relaxed);
  const uint64_t compact_every = std::max<uint64_t>((high > low ? high - low : 0) / 4, 1);
  uint64_t since_compact = 0;  // compressed bytes written back since the last compaction
  // Each batch's last round stays in flight while the next batch isolates
  // (cross-batch pipelining). Its pages leave the pool when it completes,
  // so the pass isolates no more once that will bring the pool to the low
  // watermark: it overshoots by no more than without the pipeline.
  internal::WritebackPipeline pipeline;
  // Zspages the pass empties (its frees, its compactions) go back to the OS
  // many to a system call (zspool.h, ReleaseBatch): a drain used to spend
  // half its time in one madvise per zspage. Pages on their way out do not
  // count in mem_in_use_bytes; each compaction and the pass's end release
  // them.
  alloc::ZsPool::ReleaseBatch release_batch(*pool_);
  // Helper threads (writeback_threads > 1) run the same loop beside this
  // one, each with its own pipeline, until the same condition ends it;
  // only this thread compacts. The pass ends once they have returned.
  const bool with_helpers = worker != nullptr && helpers_ != nullptr;
  std::atomic<bool> helpers_progressed{false};  // a helper wrote back this pass
  if (with_helpers) {
    helpers_->Start([this, worker, &helpers_progressed] {
      if (RunWritebackHelper(worker)) helpers_progressed.store(true, std::memory_order_relaxed);
    });
  }
  while (MoreWritebackNeeded(pipeline)) {
    const uint64_t before = counters_.written_back_pages.load(std::memory_order_relaxed);
    const uint64_t bytes_before = counters_.written_back_bytes.load(std::memory_order_relaxed);
    last = WritebackBatch(options_.writeback_batch_pages, pipeline,
                          /*leave_last_in_flight=*/true);
    if (last == WritebackOutcome::kWrittenBack) {
      aborts = 0;
      written += counters_.written_back_pages.load(std::memory_order_relaxed) - before;
      since_compact += counters_.written_back_bytes.load(std::memory_order_relaxed) - bytes_before;
      if (since_compact >= compact_every && AboveLowWatermark()) {
        // Zspages this empties stay committed in the pool's empty cache (up
        // to the headroom above the high watermark): stores refill them.
        pool_->Compact(alloc::ZsPool::CompactMode::kKeepEmptyCache);
        since_compact = 0;
      }
      // Stores waiting for room try again now, not at the end of the pass.
      if (worker != nullptr) worker->NotifyProgress();
      continue;
    }
    if (last == WritebackOutcome::kAborted && ++aborts < kMaxConsecutiveWritebackAborts) continue;
    break;
  }
  const RoundResult tail = FinishWriteback(pipeline);
  if (with_helpers) helpers_->Wait();
  release_batch.Flush();
  written += tail.published;
  // The helpers' pages are this pass's progress too: where this thread's
  // last batch found nothing (the helpers had the cold entries) or lost
  // races, a store waiting for room goes on waiting rather than giving up.
  if (helpers_progressed.load(std::memory_order_relaxed) &&
      (last == WritebackOutcome::kNothingToWrite || last == WritebackOutcome::kAborted)) {
    last = WritebackOutcome::kWrittenBack;
  }
  if (tail.published > 0 && worker != nullptr) worker->NotifyProgress();
  if (tail.io_failed) last = WritebackOutcome::kIoError;
  // Writeback frees objects, but pool memory only drops when whole pages
  // empty; entries freed by invalidates leave holes too. Compaction turns
  // the holes into free pages, and may be all it takes when the LRU has
  // nothing (or nothing cold) left.
  if (AboveLowWatermark()) pool_->Compact(alloc::ZsPool::CompactMode::kKeepEmptyCache);
  // A pass that ends at or below the low watermark made room, whatever its
  // last attempt did; otherwise its last attempt says what stopped it.
  if (!AboveLowWatermark()) last = WritebackOutcome::kWrittenBack;
  last_pass_outcome_.store(int(last), std::memory_order_relaxed);
  return written;
}

bool PageStore::MoreWritebackNeeded(const internal::WritebackPipeline& pipeline) const {
  const uint64_t low = low_watermark_bytes_.load(std::memory_order_relaxed);
  const uint64_t in_flight =
      pipeline.in_flight != nullptr ? pipeline.in_flight->end - pipeline.in_flight->first : 0;
  return low != 0 && pool_->mem_in_use_bytes() > low + in_flight;
}

bool PageStore::RunWritebackHelper(WritebackWorker* worker) {
  bool progress = false;
  internal::WritebackPipeline pipeline;
  alloc::ZsPool::ReleaseBatch release_batch(*pool_);
  int aborts = 0;
  const uint64_t min_lru =
      kHelperMinBatchesPerThread * options_.writeback_threads * options_.writeback_batch_pages;
  while (MoreWritebackNeeded(pipeline) && lru_->size() >= min_lru) {
    FARSWAP_SYNC_POINT("PageStore::Writeback:helper-batch");
    const WritebackOutcome out = WritebackBatch(options_.writeback_batch_pages, pipeline,
                                                /*leave_last_in_flight=*/true);
    if (out == WritebackOutcome::kWrittenBack) {
      aborts = 0;
      progress = true;
      worker->NotifyProgress();
      continue;
    }
    // Failures (a full or failed backing store) are the pass's to report:
    // it meets them too.
    if (out == WritebackOutcome::kAborted && ++aborts < kMaxConsecutiveWritebackAborts) continue;
    break;
  }
  const RoundResult tail = FinishWriteback(pipeline);
  if (tail.published > 0) worker->NotifyProgress();
  return progress && !tail.io_failed;
}

std::unique_ptr<OpenSegment> PageStore::AcquireSegment(bool for_cleaner) {
  if (for_cleaner) return segments_->AcquireOpen(/*use_reserve=*/true);
  for (;;) {
    std::unique_ptr<OpenSegment> open = segments_->AcquireOpen(/*use_reserve=*/false);
    if (open != nullptr) return open;
    // Only the reserve is left: reclaim a mostly dead segment, or give up
    // (the backing store is full).
    if (!RunCleanerOnce()) return nullptr;
  }
}

absl::Status PageStore::FlushSegment(OpenSegment& open) {
  std::unique_ptr<BlockWriteQueue> queue = TakeWriteQueue();
  absl::Status io = FinishFlush(open, *queue, /*started=*/open.flushed, absl::OkStatus());
  ReturnWriteQueue(std::move(queue));
  return io;
}

void PageStore::StartRequests(BlockWriteQueue& queue, const OpenSegment& open, uint64_t end,
                              bool partial_last, uint64_t* started, absl::Status* start_error) {
  if (!start_error->ok()) return;  // the round has failed: start nothing more of it
  const uint64_t base = open.segment * segments_->segment_bytes();
  bool any = false;
  const uint64_t request_bytes = options_.write_request_bytes;
  while (end > *started && (partial_last || end - *started >= request_bytes) &&
         queue.in_flight() < queue.depth()) {
    const uint64_t bytes = std::min(request_bytes, end - *started);
    absl::Status s = queue.Submit((base + *started) / kBlockSize, bytes / kBlockSize,
                                  open.buf.get() + *started, /*tag=*/*started);
    if (!s.ok()) {  // not started: no completion comes for it
      *start_error = std::move(s);
      break;
    }
    counters_.backing_writes.fetch_add(1, std::memory_order_relaxed);
    NoteWritesInFlight(queue.in_flight());
    *started += bytes;
    any = true;
  }
  if (any) {
    queue.Start();
    // Requests of this round are in flight while it goes on isolating.
    FARSWAP_SYNC_POINT("PageStore::Writeback:request-started");
  }
}

absl::Status PageStore::FinishFlush(OpenSegment& open, BlockWriteQueue& queue, uint64_t started,
                                    absl::Status start_error) {
  const uint64_t end = (open.fill + kBlockSize - 1) / kBlockSize * kBlockSize;
  if (end == open.flushed) return absl::OkStatus();
  // The padding after the last object is zeros, not a recycled buffer's
  // old bytes.
  std::memset(open.buf.get() + open.fill, 0, end - open.fill);
  absl::Status io = CompleteWrites(queue, open.segment, open.buf.get(), open.flushed, started, end,
                                   std::move(start_error));
  if (!io.ok()) {
    open.fill = open.flushed;  // nothing of this write is published
    return io;
  }
  open.fill = open.flushed = end;
  return absl::OkStatus();
}

absl::Status PageStore::CompleteWrites(BlockWriteQueue& queue, uint64_t segment, const uint8_t* buf,
                                       uint64_t first, uint64_t started, uint64_t end,
                                       absl::Status start_error) {
  const uint64_t base = segment * segments_->segment_bytes();
  const auto start = std::chrono::steady_clock::now();
  // The rest of the run (all of it when nothing was started early), then
  // every write of the run in flight, early ones included, in one wait.
  absl::Status io = std::move(start_error);
  absl::Status rest = WriteRun(queue, (base + started) / kBlockSize,
                               io.ok() ? (end - started) / kBlockSize : 0, buf + started);
  if (io.ok()) io = std::move(rest);
  counters_.writeback_latency.Record(absl::FromChrono(std::chrono::steady_clock::now() - start));
  if (!io.ok()) {
    counters_.backing_write_errors.fetch_add(1, std::memory_order_relaxed);
    RecordBackingError(io);
    return io;
  }
  counters_.backing_bytes_written.fetch_add(end - first, std::memory_order_relaxed);
  segments_->Extend(segment, end);
  return absl::OkStatus();
}

void PageStore::NoteWritesInFlight(uint64_t depth) {
  uint64_t seen = counters_.max_writes_in_flight.load(std::memory_order_relaxed);
  while (depth > seen && !counters_.max_writes_in_flight.compare_exchange_weak(
                             seen, depth, std::memory_order_relaxed)) {
  }
}

std::unique_ptr<BlockWriteQueue> PageStore::TakeWriteQueue() {
  {
    MutexLock l(&write_queues_mu_);
    if (!idle_write_queues_.empty()) {
      std::unique_ptr<BlockWriteQueue> q = std::move(idle_write_queues_.back());
      idle_write_queues_.pop_back();
      return q;
    }
  }
  return NewWriteQueue();  // a second flusher at once
}

std::unique_ptr<BlockWriteQueue> PageStore::NewWriteQueue() {
  std::unique_ptr<BlockWriteQueue> queue = backing_->NewWriteQueue(options_.write_queue_depth);
  const internal::SegmentTable::BufferRegion arena = segments_->buffer_region();
  queue->UseRegisteredBuffer(arena.base, arena.bytes);
  return queue;
}

void PageStore::ReturnWriteQueue(std::unique_ptr<BlockWriteQueue> queue) {
  counters_.registered_writes.fetch_add(queue->TakeRegisteredWrites(), std::memory_order_relaxed);
  MutexLock l(&write_queues_mu_);
  idle_write_queues_.push_back(std::move(queue));
}

absl::Status PageStore::WriteRun(BlockWriteQueue& queue, uint64_t first, uint64_t count,
                                 const uint8_t* src) {
  const uint64_t request_blocks = options_.write_request_bytes / kBlockSize;
  absl::Status first_error;
  uint64_t next = 0;  // blocks of the run submitted so far
  while (next < count || queue.in_flight() > 0) {
    while (next < count && queue.in_flight() < queue.depth()) {
      const uint64_t n = std::min(request_blocks, count - next);
      absl::Status s = queue.Submit(first + next, n, src + next * kBlockSize, /*tag=*/next);
      if (!s.ok()) {  // not started: no completion comes for it
        if (first_error.ok()) first_error = std::move(s);
        next = count;
        break;
      }
      counters_.backing_writes.fetch_add(1, std::memory_order_relaxed);
      next += n;
      NoteWritesInFlight(queue.in_flight());
    }
    // Completions in whatever order the device finished them; the run is
    // written when all are in, and fails with the first error seen. Once
    // every request is submitted, one wait covers all of them (a wake-up
    // per completion costs a reschedule each on a busy machine).
    for (BlockWriteQueue::Completion& c : next < count ? queue.Reap() : queue.ReapAll()) {
      if (!c.status.ok() && first_error.ok()) {
        first_error = std::move(c.status);
        next = count;  // submit nothing more; drain what is in flight
      }
    }
  }
  return first_error;
}

WritebackOutcome PageStore::WritebackBatch(size_t max_pages, internal::WritebackPipeline& pipeline,
                                           bool leave_last_in_flight) {
  if (backing_ == nullptr) return WritebackOutcome::kNoBackingStore;
  if (backing_failed_.load(std::memory_order_acquire)) return WritebackOutcome::kIoError;
  CleanWhileLow();

  // Step 1 [LRU lock, inside PickColdest].
  uint64_t second_chances = 0;
  // The picks are pinned (page_index.h): their entries stay live memory
  // until the last round holding the batch lets go of it, which unpins them.
  std::shared_ptr<const std::vector<WritebackCandidate>> candidates(
      new std::vector<WritebackCandidate>(lru_->PickColdest(max_pages, &second_chances)),
      [](const std::vector<WritebackCandidate>* picks) {
        for (const WritebackCandidate& c : *picks) internal::UnpinEntry(c.entry);
        delete picks;
      });
  counters_.second_chances.fetch_add(second_chances, std::memory_order_relaxed);
  if (candidates->empty()) return WritebackOutcome::kNothingToWrite;
  FARSWAP_SYNC_POINT("PageStore::Writeback:after-lru-unlock");

  const uint32_t ticket = next_writeback_ticket_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t segment_bytes = segments_->segment_bytes();
  uint64_t published = 0, aborted = 0;
  bool left_in_flight = false;
  std::optional<WritebackOutcome> failed;  // kBackingFull or kIoError
  // complete finishes the round that was in flight before this one.
  auto complete = [&](std::unique_ptr<internal::WritebackRound>& round) {
    if (round == nullptr) return;
    const RoundResult r = CompleteRound(*round);
    published += r.published;
    if (r.io_failed) failed = WritebackOutcome::kIoError;
    round.reset();
  };
  for (size_t next = 0; next < candidates->size();) {
    if (pipeline.open == nullptr) {
      pipeline.open = AcquireSegment(/*for_cleaner=*/false);
      if (pipeline.open == nullptr) {
        failed = WritebackOutcome::kBackingFull;
        break;
      }
    }
    OpenSegment& open = *pipeline.open;
    // Step 2 [key lock, one candidate at a time]. Whole requests' worth of
    // appended bytes go to the device as soon as they are in the buffer
    // (they hold only this round's unpublished objects), so the disk works
    // while the round is still isolating; they are started [no lock] after
    // the candidate's key lock is dropped: where writes are synchronous (no
    // io_uring), starting one is the write itself, and a store or load on
    // the same lock stripe (an I/O thread's, run to completion) must not
    // wait for the disk.
    auto round = std::make_unique<internal::WritebackRound>(
        internal::WritebackRound{.candidates = candidates,
                                 .ticket = ticket,
                                 .segment = open.segment,
                                 .buf = open.buf.get(),
                                 .first = open.fill,
                                 .started = open.fill});
    std::unique_ptr<BlockWriteQueue> queue = TakeWriteQueue();
    bool segment_full = false;
    for (; next < candidates->size(); ++next) {
      const WritebackCandidate& c = (*candidates)[next];
      {
        MutexLock kl(&key_locks_->For(c.key));
        // Pinned, so live memory; still the key's entry unless retired
        // (under this lock). The index is not searched again.
        Entry* e = const_cast<Entry*>(c.entry);
        if (internal::EntryRetired(*e) || e->gen != c.gen || e->state != EntryState::kInPool) {
          ++aborted;
          continue;
        }
        if (open.fill + e->length > segment_bytes) {  // full: this round ends here
          segment_full = true;
          break;
        }
        absl::StatusOr<alloc::ZsPool::ReadGuard> g = pool_->Read(e->handle);
        if (!g.ok()) {  // cannot happen while the key lock is held
          ++aborted;
          continue;
        }
        const uint32_t offset = uint32_t(open.fill);
        std::memcpy(open.buf.get() + offset, g->data(), e->length);
        open.fill += e->length;
        e->state = EntryState::kWritebackPending;
        e->writeback_ticket = ticket;
        round->appended.push_back({.candidate = next,
                                   .offset = offset,
                                   .length = e->length,
                                   .disk_checksum = XXH3_64bits(g->data(), e->length)});
      }
      StartRequests(*queue, open, open.fill, /*partial_last=*/false, &round->started,
                    &round->start_error);
    }
    FARSWAP_SYNC_POINT("PageStore::Writeback:pending-unlocked");
    std::unique_ptr<internal::WritebackRound> previous = std::move(pipeline.in_flight);
    if (round->appended.empty()) {
      ReturnWriteQueue(std::move(queue));
    } else {
      // The round's last block is padded with zeros, not a recycled
      // buffer's old bytes, and started with the rest: the next round
      // appends after it.
      round->end = (open.fill + kBlockSize - 1) / kBlockSize * kBlockSize;
      std::memset(open.buf.get() + open.fill, 0, round->end - open.fill);
      // Flushed as far as whoever takes the segment next is concerned (the
      // cleaner's FlushSegment writes from here): the segment goes back to
      // the table only once this round is complete, and a failed round
      // stops every later write (the sticky error).
      open.fill = open.flushed = round->end;
      StartRequests(*queue, open, round->end, /*partial_last=*/true, &round->started,
                    &round->start_error);
      round->queue = std::move(queue);
      pipeline.in_flight = std::move(round);
    }
    if (segment_full || open.fill + kBlockSize > segment_bytes) {
      // The segment goes back once the last round writing to it is done.
      if (pipeline.in_flight != nullptr) {
        pipeline.in_flight->release_after = std::move(pipeline.open);
      } else if (previous != nullptr && previous->segment == open.segment) {
        previous->release_after = std::move(pipeline.open);
      } else {
        segments_->Release(std::move(pipeline.open));
      }
    }
    // Step 3 for the round before, whose writes have had this round's
    // isolation to finish in.
    complete(previous);
    if (failed.has_value()) break;
  }
  if (!leave_last_in_flight || failed.has_value()) {
    complete(pipeline.in_flight);
  } else {
    left_in_flight = pipeline.in_flight != nullptr;
  }
  counters_.writeback_aborted.fetch_add(aborted, std::memory_order_relaxed);
  if (published > 0 || left_in_flight) return WritebackOutcome::kWrittenBack;
  if (failed.has_value()) return *failed;
  return WritebackOutcome::kAborted;
}

PageStore::RoundResult PageStore::FinishWriteback(internal::WritebackPipeline& pipeline) {
  RoundResult result;
  if (pipeline.in_flight != nullptr) {
    result = CompleteRound(*pipeline.in_flight);
    pipeline.in_flight.reset();
  }
  if (pipeline.open != nullptr) segments_->Release(std::move(pipeline.open));
  return result;
}

PageStore::RoundResult PageStore::CompleteRound(internal::WritebackRound& round) {
  // Step 3 [no lock]. The rest of the round's blocks, then every write of
  // the round in flight, early ones included, in one wait. On an error
  // nothing of the round is published; the error is sticky (no later round
  // is started), so its bytes are never reused.
  const uint64_t base = round.segment * segments_->segment_bytes();
  absl::Status io = CompleteWrites(*round.queue, round.segment, round.buf, round.first,
                                   round.started, round.end, std::move(round.start_error));
  ReturnWriteQueue(std::move(round.queue));
  FARSWAP_SYNC_POINT("PageStore::Writeback:after-io");

  // Step 4 [key lock, one entry at a time]. The published entries' pool
  // objects are freed after the loop [no lock]: once an entry says
  // kOnDisk, under its key lock, nothing reads its old handle again. One
  // FreeMany and one update of each counter per round, not per page: two
  // writeback threads publishing at once otherwise queue on the pool's
  // class and handle-table locks and bounce the counters' cache lines
  // (server/README.md, "Writeback threads").
  RoundResult result{.io_failed = !io.ok()};
  uint64_t aborted = 0, published_bytes = 0;
  std::vector<alloc::ZsHandle> freed;
  freed.reserve(round.appended.size());
  // pages_on_disk counts every entry the round may publish before the first
  // one is, and gives back the ones it did not after: a store or invalidate
  // of a published entry (which takes one off) may come before the round's
  // end, and the gauge must never pass below zero.
  if (io.ok()) {
    counters_.pages_on_disk.fetch_add(round.appended.size(), std::memory_order_relaxed);
  }
  for (const Appended& a : round.appended) {
    const WritebackCandidate& c = (*round.candidates)[a.candidate];
    MutexLock kl(&key_locks_->For(c.key));
    Entry* e = const_cast<Entry*>(c.entry);  // pinned by the batch: see step 2
    const bool ours = !internal::EntryRetired(*e) && e->gen == c.gen &&
                      e->state == EntryState::kWritebackPending &&
                      e->writeback_ticket == round.ticket;
    if (!io.ok()) {
      if (ours) e->state = EntryState::kInPool;  // nothing lost: still in the pool
      continue;
    }
    if (!ours) {
      ++aborted;  // a store, invalidate or load won: its bytes stay dead
      continue;
    }
    const alloc::ZsHandle handle = e->handle;  // first: disk_offset shares its bytes
    e->state = EntryState::kOnDisk;
    e->disk_offset = base + a.offset;
    e->disk_checksum = a.disk_checksum;
    segments_->AddLive(round.segment,
                       {.key = c.key, .gen = c.gen, .offset = a.offset, .length = a.length});
    lru_->Unlink(e);
    freed.push_back(handle);
    published_bytes += a.length;
    ++result.published;
  }
  FARSWAP_SYNC_POINT("PageStore::Writeback:before-free");
  pool_->FreeMany(freed);
  if (io.ok() && result.published != round.appended.size()) {
    counters_.pages_on_disk.fetch_sub(round.appended.size() - result.published,
                                      std::memory_order_relaxed);
  }
  if (result.published != 0) {
    pool_->AddCallerCounters(-int64_t(farswap::kPageSize * result.published), 0);
    counters_.written_back_pages.fetch_add(result.published, std::memory_order_relaxed);
    counters_.written_back_bytes.fetch_add(published_bytes, std::memory_order_relaxed);
  }
  counters_.writeback_aborted.fetch_add(aborted, std::memory_order_relaxed);
  if (round.release_after != nullptr) segments_->Release(std::move(round.release_after));
  return result;
}

}  // namespace farswap::server
