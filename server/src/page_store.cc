// page_store.cc: PageStore's store, load and invalidate paths, limits,
// tenants and stats. The writeback protocol is in writeback.cc.
//
// Lock order (each lock may be taken while holding the ones before it,
// never the other way round):
//
//   key stripe (KeyLockTable) -> index shard (PageIndex) -> LRU (LruList)
//     -> tenants_mu_ / error_mu_ -> SegmentTable -> zspool locks
//
// - The LRU lock is never held while a key lock is taken: the writeback scan
//   copies (key, entry, gen) and drops it first (writeback.cc).
// - Index shard locks are held only inside PageIndex calls.
// - A thread holds at most one key stripe at a time (InvalidateRange takes
//   them one key after another, with no index lock held).
// - limits_mu_ is a leaf, taken alone; so is write_queues_mu_ (a queue is
//   taken out of the pool and used with no lock held).
// - The writeback worker's mutex (writeback_worker.h) is never held with
//   any of these; a Store waiting for writeback holds no lock.
// - Backing-store reads for loads run with no lock held: the object's
//   segment is pinned instead (see "load" below).
// - The read cache's mutex (disk_read_cache.h) is a leaf: a load looks up
//   under its key lock (after reading the segment's epoch from the
//   SegmentTable, whose lock it has dropped by then), and LoadBatch inserts
//   with no lock held.
// - Segment writes (writeback.cc) and the cleaner's segment reads
//   (cleaner.cc) run with no lock held.
#include "farswap/server/page_store.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "cold_recompressor.h"
#include "disk_read_cache.h"
#include "farswap/common/page_file.h"
#include "farswap/common/sync_point.h"
#include "lru_list.h"
#include "page_index.h"
#include "segment_table.h"
#include "writeback_helpers.h"
#include "writeback_worker.h"

namespace farswap::server {

using internal::Entry;
using internal::EntryState;
using internal::PageKey;

const char* RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kPoolFull:
      return "pool_full";
    case RejectReason::kQuota:
      return "quota";
    case RejectReason::kBackingFull:
      return "backing_full";
    case RejectReason::kDraining:
      return "draining";
    case RejectReason::kIoError:
      return "io_error";
  }
  return "unknown";
}

namespace {

// kMaxWriteRequestBytes: the largest write request a store accepts (one
// io_uring write's length is 32 bits; 16 MiB is far past any gain).
constexpr uint32_t kMaxWriteRequestBytes = 16u << 20;

absl::Status ValidateLimits(const PageStoreLimits& limits) {
  if (!(limits.low_watermark > 0 && limits.low_watermark < limits.high_watermark &&
        limits.high_watermark <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("watermarks must satisfy 0 < low < high <= 1; got low=", limits.low_watermark,
                     " high=", limits.high_watermark));
  }
  return absl::OkStatus();
}

absl::Status ValidateLogOptions(const PageStoreOptions& options) {
  if (options.segment_bytes < kBlockSize || options.segment_bytes % kBlockSize != 0 ||
      options.segment_bytes > (uint64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat("segment size must be a multiple of ",
                                                   kBlockSize, " bytes from ", kBlockSize,
                                                   " to 2 GiB; got ", options.segment_bytes));
  }
  if (!(options.cleaner_threshold > 0 && options.cleaner_threshold <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cleaner threshold must satisfy 0 < threshold <= 1; got ", options.cleaner_threshold));
  }
  if (!(options.cleaner_max_dead > 0 && options.cleaner_max_dead <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cleaner max dead fraction must satisfy 0 < F <= 1; got ", options.cleaner_max_dead));
  }
  if (options.write_queue_depth == 0 || options.write_queue_depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("write queue depth must be from 1 to 4096; got ", options.write_queue_depth));
  }
  if (options.write_request_bytes < kBlockSize ||
      options.write_request_bytes > kMaxWriteRequestBytes ||
      options.write_request_bytes % kBlockSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "write request size must be a multiple of 4096 bytes from 4 KiB to 16 MiB; got ",
        options.write_request_bytes));
  }
  if (options.writeback_batch_pages == 0 ||
      options.writeback_batch_pages > kMaxWritebackBatchPages) {
    return absl::InvalidArgumentError(absl::StrCat("writeback batch must be from 1 to ",
                                                   kMaxWritebackBatchPages, " pages; got ",
                                                   options.writeback_batch_pages));
  }
  if (options.writeback_threads == 0 || options.writeback_threads > kMaxWritebackThreads) {
    return absl::InvalidArgumentError(absl::StrCat("writeback threads must be from 1 to ",
                                                   kMaxWritebackThreads, "; got ",
                                                   options.writeback_threads));
  }
  return absl::OkStatus();
}

std::string KeyName(uint32_t tenant, uint64_t page) {
  return absl::StrCat("tenant ", tenant, " page ", page);
}

}  // namespace

// --- construction ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PageStore>> PageStore::Create(const PageStoreOptions& options) {
  if (absl::Status s = ValidateLimits(options.limits); !s.ok()) return s;
  if (absl::Status s = ValidateLogOptions(options); !s.ok()) return s;
  if (options.backing != nullptr && options.backing->block_count() == 0) {
    return absl::InvalidArgumentError("backing store has no blocks");
  }
  std::unique_ptr<PageStore> store(new PageStore(options));
  absl::StatusOr<std::unique_ptr<alloc::ZsPool>> pool = alloc::ZsPool::Create({
      .mem_limit = options.limits.pool_limit_bytes,
      .arena_bytes = options.pool_arena_bytes,
      .release_batch_pages = options.pool_release_batch_pages,
  });
  if (!pool.ok()) return pool.status();
  store->pool_ = std::move(*pool);
  if (absl::Status s = store->SetLimits(options.limits); !s.ok()) return s;
  if (options.start_writeback_worker && store->backing_ != nullptr) {
    PageStore* self = store.get();
    if (options.writeback_threads > 1) {
      store->helpers_ = std::make_unique<WritebackHelpers>(options.writeback_threads - 1);
    }
    store->worker_ = std::make_unique<WritebackWorker>(
        [self](WritebackWorker& worker) {
          self->RunWritebackPass(&worker);
          return false;
        },
        // Space-driven cleaning in the writeback thread's quiet time; a
        // round that stopped with dead bytes over the target asks for more.
        [self](WritebackWorker& worker) { return self->CleanWhileDead(worker); },
        absl::Milliseconds(options.cleaner_idle_ms),
        // Quiet: no store either (stores soon need writeback).
        [self] { return self->counters_.stores.load(std::memory_order_relaxed); });
  }
  if (absl::Status s = store->StartColdTier(); !s.ok()) return s;
  return store;
}

PageStore::PageStore(const PageStoreOptions& options)
    : options_(options),
      backing_(options.backing),
      key_locks_(std::make_unique<internal::KeyLockTable>()),
      index_(std::make_unique<internal::PageIndex>()),
      lru_(std::make_unique<internal::LruList>()) {
  if (backing_ == nullptr) return;
  // A device smaller than one segment is one segment of its whole size.
  const uint64_t device_bytes = backing_->block_count() * kBlockSize;
  const uint64_t segment_bytes = std::min(options.segment_bytes, device_bytes);
  const uint64_t count = device_bytes / segment_bytes;
  // One segment is kept for the cleaner (it needs somewhere to move live
  // pages to when writeback has filled the rest), where there are enough
  // segments to spare one. The cleaner starts when free segments fall to
  // the reserve plus 1/32 of the store (at least one more).
  const uint64_t reserve = count >= 3 ? 1 : 0;
  clean_below_free_ = reserve + std::max<uint64_t>(1, count / 32) + 1;
  segments_ = std::make_unique<internal::SegmentTable>(
      count, segment_bytes, reserve, options.cleaner_max_dead,
      // One parked segment per thread that writes back at once (its own
      // open segment, kept filling across passes).
      options.start_writeback_worker ? options.writeback_threads : 1);
  if (options.disk_read_cache_bytes > 0) {
    read_cache_ =
        std::make_unique<internal::DiskReadCache>(segment_bytes, options.disk_read_cache_bytes);
  }
  // One write queue now, so stats and the log say which engine runs.
  std::unique_ptr<BlockWriteQueue> queue = NewWriteQueue();
  write_engine_ = queue->engine();
  MutexLock l(&write_queues_mu_);
  idle_write_queues_.push_back(std::move(queue));
}

PageStore::~PageStore() {
  cold_worker_.reset();  // joins the cold pass thread, which walks the entries too
  worker_.reset();       // joins the thread before the entries go away
  helpers_.reset();      // idle: a pass waits for them before it ends
  index_->Clear();       // the pool and segment table are discarded whole
}

// --- store ----------------------------------------------------------------------------

std::optional<absl::StatusOr<alloc::ZsHandle>> PageStore::AllocateInPool(size_t len, Wait wait,
                                                                         RejectReason* reason) {
  *reason = RejectReason::kPoolFull;
  WritebackWorker::PassWaiter waiter;
  for (int attempt = 0;;) {
    absl::StatusOr<alloc::ZsHandle> h = pool_->Malloc(len);
    if (h.ok() || h.status().code() != absl::StatusCode::kResourceExhausted) return h;
    // The pool is at its limit; writeback is the only way to make room.
    if (backing_ == nullptr) return h.status();
    if (backing_failed_.load(std::memory_order_acquire)) {
      *reason = RejectReason::kIoError;
      return h.status();
    }
    if (attempt >= options_.store_retries) return h.status();
    // Only the first try can get here without having waited: a failed Malloc
    // takes nothing, so "would block" leaves no trace.
    if (wait == Wait::kNever) return std::nullopt;
    if (worker_ != nullptr) {
      // Block until writeback publishes a batch (try again: its freed
      // objects may be room; this costs no attempt) or a whole pass that
      // started after this request has finished: conditions signalled by
      // writeback progress, not a sleep.
      const WritebackWorker::RoomWait woke = worker_->WaitForRoom(&waiter);
      if (woke == WritebackWorker::RoomWait::kStopping) return h.status();
      if (woke == WritebackWorker::RoomWait::kProgress) continue;
    } else {
      RunWritebackPass();  // direct reclaim, as zswap's shrink_memcg()
    }
    ++attempt;
    switch (WritebackOutcome(last_pass_outcome_.load(std::memory_order_relaxed))) {
      case WritebackOutcome::kWrittenBack:
      case WritebackOutcome::kAborted:
        continue;  // progress, or a race: the next pass may find room
      case WritebackOutcome::kBackingFull:
        *reason = RejectReason::kBackingFull;
        break;
      case WritebackOutcome::kIoError:
        *reason = RejectReason::kIoError;
        break;
      case WritebackOutcome::kNothingToWrite:
      case WritebackOutcome::kNoBackingStore:
        break;
    }
    return pool_->Malloc(len);  // a last try: invalidates may have made room meanwhile
  }
}

absl::Status PageStore::Store(uint32_t tenant, uint64_t page, const StoreRequest& request) {
  return *StoreImpl(tenant, page, request, Wait::kAllowed);  // never nullopt when it may wait
}

std::optional<absl::Status> PageStore::TryStore(uint32_t tenant, uint64_t page,
                                                const StoreRequest& request) {
  return StoreImpl(tenant, page, request, Wait::kNever);
}

std::optional<absl::Status> PageStore::StoreImpl(uint32_t tenant, uint64_t page,
                                                 const StoreRequest& request, Wait wait) {
  // Nothing before AllocateInPool has an effect, so a "would block" there
  // leaves no trace; `stores` is counted once the attempt is certain to be
  // answered (it is counted before the answer, as the stats always were).
  auto count_store = [this] { counters_.stores.fetch_add(1, std::memory_order_relaxed); };
  if (draining_.load(std::memory_order_relaxed)) {
    count_store();
    return Reject(tenant, page, request.version, RejectReason::kDraining,
                  absl::FailedPreconditionError(
                      absl::StrCat("store of ", KeyName(tenant, page),
                                   " refused: memory node is draining; place the page elsewhere")));
  }
  const size_t len = request.same_filled ? 0 : request.payload.size();
  if (!request.same_filled && (len == 0 || len > kBlockSize)) {
    count_store();
    return FailStore(
        tenant, page, request.version,
        absl::InvalidArgumentError(absl::StrCat("store of ", KeyName(tenant, page), ": payload of ",
                                                len, " bytes is outside 1..", kBlockSize)));
  }

  // Allocate exactly the payload's length and copy it once (docs/invariants.md rule 3).
  alloc::ZsHandle handle;
  if (!request.same_filled) {
    RejectReason reason = RejectReason::kPoolFull;
    std::optional<absl::StatusOr<alloc::ZsHandle>> allocated = AllocateInPool(len, wait, &reason);
    if (!allocated.has_value()) return std::nullopt;  // would block: nothing done
    count_store();
    absl::StatusOr<alloc::ZsHandle>& h = *allocated;
    if (!h.ok()) {
      if (h.status().code() != absl::StatusCode::kResourceExhausted) {
        return FailStore(tenant, page, request.version, h.status());
      }
      return Reject(tenant, page, request.version, reason,
                    absl::ResourceExhaustedError(
                        absl::StrCat("store of ", KeyName(tenant, page), " refused (",
                                     RejectReasonName(reason), "): ", h.status().message())));
    }
    handle = *h;
    if (absl::Status s = pool_->Write(handle, request.payload.data(), len); !s.ok()) {
      pool_->Free(handle);
      return FailStore(
          tenant, page, request.version,
          absl::InternalError(absl::StrCat("store of ", KeyName(tenant, page), ": ", s.message())));
    }
  } else {
    count_store();
  }

  // Sync point: allocated and copied, not yet published. No locks held.
  FARSWAP_SYNC_POINT("PageStore::Store:before-publish");

  const PageKey key{tenant, page};
  {
    MutexLock kl(&key_locks_->For(key));
    const Entry* old = index_->Find(key);
    if (old != nullptr && old->version > request.version) {
      // A newer store got here first (this one was delayed past it): keep
      // the newer page, change nothing.
      const uint64_t stored_version = old->version;
      counters_.stale_stores.fetch_add(1, std::memory_order_relaxed);
      if (handle) pool_->Free(handle);
      return absl::AbortedError(absl::StrCat("store of ", KeyName(tenant, page),
                                             " refused: stale version ", request.version,
                                             " (the node holds version ", stored_version, ")"));
    }
    bool over_quota = false;
    {
      MutexLock tl(&tenants_mu_);
      TenantState& t = tenants_[tenant];
      const uint64_t quota = TenantQuotaLocked(t);
      // Only a new key adds a page; replacing a stored one never exceeds.
      over_quota = old == nullptr && quota != 0 && t.stored_pages >= quota;
      if (over_quota) {
        ++t.rejects[int(RejectReason::kQuota)];
      } else {
        t.stored_pages += old == nullptr ? 1 : 0;
        t.stored_bytes += len - (old != nullptr ? old->length : 0);
      }
    }
    if (over_quota) {
      counters_.rejects[int(RejectReason::kQuota)].fetch_add(1, std::memory_order_relaxed);
      if (handle) pool_->Free(handle);
      return absl::ResourceExhaustedError(absl::StrCat("store of ", KeyName(tenant, page),
                                                       " refused (quota): tenant ", tenant,
                                                       " is at its page quota"));
    }

    auto entry = std::make_unique<Entry>(key, next_gen_.fetch_add(1, std::memory_order_relaxed));
    Entry* e = entry.get();
    e->length = uint16_t(len);  // at most kBlockSize (checked above)
    e->codec = request.codec;
    e->checksum = request.checksum;
    e->version = request.version;
    if (request.same_filled) {
      e->state = EntryState::kSameFilled;
      e->fill = request.fill;
    } else {
      e->state = EntryState::kInPool;
      e->handle = handle;
    }
    std::unique_ptr<Entry> replaced = index_->Replace(std::move(entry));
    if (replaced != nullptr) {
      // Wherever the old version lives (pool, disk, or mid-writeback: the
      // writeback will fail its re-validation and count its bytes dead), it goes.
      ReleaseEntryResources(*replaced);
      internal::RetireEntry(std::move(replaced));  // a writeback batch may hold it
    }
    counters_.stored_pages.fetch_add(1, std::memory_order_relaxed);
    if (request.same_filled) {
      counters_.same_filled_pages.fetch_add(1, std::memory_order_relaxed);
      pool_->AddCallerCounters(int64_t(farswap::kPageSize), 1);
    } else {
      pool_->AddCallerCounters(int64_t(farswap::kPageSize), 0);
      lru_->Link(e);  // last: writeback must never see a half-published entry
    }
  }
  MaybeKickWriteback();
  MaybeKickCleaner();  // a replaced page on disk left dead bytes
  return absl::OkStatus();
}

uint64_t PageStore::TenantQuotaLocked(const TenantState& t) const {
  tenants_mu_.AssertHeld();
  return t.has_quota ? t.quota_pages : default_quota_pages_;
}

absl::Status PageStore::Reject(uint32_t tenant, uint64_t page, uint64_t version,
                               RejectReason reason, absl::Status status) {
  counters_.rejects[int(reason)].fetch_add(1, std::memory_order_relaxed);
  {
    MutexLock tl(&tenants_mu_);
    ++tenants_[tenant].rejects[int(reason)];
  }
  return FailStore(tenant, page, version, std::move(status));
}

absl::Status PageStore::FailStore(uint32_t tenant, uint64_t page, uint64_t version,
                                  absl::Status status) {
  // The client got no ack: leave no older version behind. But an entry with
  // a higher version is a newer store's, acknowledged or about to be: this
  // store never created it and must not erase it.
  FARSWAP_SYNC_POINT("PageStore::FailStore:before-lock");
  MutexLock kl(&key_locks_->For({tenant, page}));
  const Entry* e = index_->Find({tenant, page});
  if (e != nullptr && e->version <= version) EraseLocked(tenant, page);
  return status;
}

bool PageStore::EraseLocked(uint32_t tenant, uint64_t page) {
  std::unique_ptr<Entry> e = index_->Erase({tenant, page});
  if (e == nullptr) return false;
  {
    MutexLock tl(&tenants_mu_);
    TenantState& t = tenants_[tenant];
    --t.stored_pages;
    t.stored_bytes -= e->length;
  }
  ReleaseEntryResources(*e);
  internal::RetireEntry(std::move(e));  // a writeback batch may hold it
  return true;
}

void PageStore::ReleaseEntryResources(Entry& e) {
  lru_->Unlink(&e);
  counters_.stored_pages.fetch_sub(1, std::memory_order_relaxed);
  switch (e.state) {
    case EntryState::kInPool:
    case EntryState::kWritebackPending:
      pool_->Free(e.handle);
      pool_->AddCallerCounters(-int64_t(farswap::kPageSize), 0);
      break;
    case EntryState::kSameFilled:
      counters_.same_filled_pages.fetch_sub(1, std::memory_order_relaxed);
      pool_->AddCallerCounters(-int64_t(farswap::kPageSize), -1);
      break;
    case EntryState::kOnDisk:
      ReleaseDiskObject(e);
      counters_.pages_on_disk.fetch_sub(1, std::memory_order_relaxed);
      break;
  }
}

void PageStore::ReleaseDiskObject(const Entry& e) {
  segments_->Drop(e.disk_offset / segments_->segment_bytes(), e.length);
}

// --- load -------------------------------------------------------------------------------
//
// A load is two halves (BeginLoad, FinishLoad) with the disk read between
// them, and no lock is held across the read:
//  1. [key lock] BeginLoad finds the entry. In the pool, same-filled or
//     missing: the answer, at once. On disk: pin the object's segment
//     (segment_table.h), note where the object is, its disk checksum, the
//     entry's gen and metadata, and drop the lock.
//                       sync point "PageStore::LoadBatch:after-begin" [none]
//  2. [none] Read the object's blocks (LoadBatch: every read of the batch
//     at once, touching ranges coalesced into one request).
//  3. [none] FinishLoad checks the bytes against the disk checksum, then
//     (the second disk load of the entry) promotes it [key lock], and
//     unpins.
//
// Meanwhile the entry may be replaced, invalidated, or moved by the cleaner.
// The load still returns the version it found at step 1: it is
// linearizable at step 1, as a load that came a moment earlier would have
// been, and nothing since can have been acknowledged to the client before
// it (the data plane runs a connection's requests in order). What makes the
// old bytes safe to read is the pin alone: releasing or moving the entry
// only Drops the object's live bytes, and a pinned segment is never freed,
// so never handed to writeback again, so its blocks are not rewritten until
// the last reader unpins. Without the pin the segment could be freed and
// refilled and the read would return another page's bytes (the disk
// checksum would catch it, as DATA_LOSS for a page that was not lost).
//
// Promotion. The first disk load of an entry sets its disk_loaded bit (key
// lock; the writeback and the LRU never look at it); a second load while it
// is still on disk promotes it: after the read, under the key lock, if the
// entry is unchanged (same gen, still ON_DISK at the same offset) and the
// pool has room without waiting (below the high watermark, and Malloc
// succeeds), the object is copied into the pool, the entry becomes IN_POOL
// and joins the LRU, and its disk object is dropped — all in that one key
// lock hold, so no reader ever sees it in both places or neither, and no
// stale disk copy stays live.
//                       sync point "PageStore::Promote:before-lock" [none]
//
// A scrub's load (LoadKind::kScrub) takes the same steps but is not an
// access: it sets no referenced or disk_loaded bit, promotes nothing,
// leaves a pending writeback pending, and reads the disk even when the read
// cache holds the object (what it checks is the medium); it reads only its
// object's blocks and caches nothing, so a scrub pass neither evicts the
// cache nor skews its readahead decisions.

absl::StatusOr<LoadedPage> PageStore::Load(uint32_t tenant, uint64_t page, LoadKind kind) {
  absl::StatusOr<LoadedPage> out;
  LoadBatch(
      tenant, absl::MakeConstSpan(&page, 1),
      [&out](size_t, absl::StatusOr<LoadedPage>& r) { out = std::move(r); }, nullptr,
      absl::MakeConstSpan(&kind, 1));
  return out;
}

std::optional<absl::StatusOr<LoadedPage>> PageStore::TryLoad(uint32_t tenant, uint64_t page,
                                                             LoadKind kind) {
  std::optional<LoadStep> step = BeginLoad(tenant, page, Wait::kNever, kind);
  if (!step.has_value()) return std::nullopt;  // on disk: would block
  return std::get<absl::StatusOr<LoadedPage>>(std::move(*step));
}

std::optional<PageStore::LoadStep> PageStore::BeginLoad(uint32_t tenant, uint64_t page, Wait wait,
                                                        LoadKind kind) {
  const PageKey key{tenant, page};
  const bool use = kind == LoadKind::kUse;
  MutexLock kl(&key_locks_->For(key));
  Entry* e = index_->Find(key);
  // Decided before anything is touched, so "would block" has no effect; a
  // page on disk whose bytes the read cache holds does not block (a
  // scrub's load reads the disk whatever the cache holds).
  LoadedPage cached;
  const bool on_disk = e != nullptr && e->state == EntryState::kOnDisk;
  const bool from_cache = on_disk && use && LoadFromReadCache(e, &cached, wait != Wait::kNever);
  if (wait == Wait::kNever && on_disk && !from_cache) return std::nullopt;
  counters_.loads.fetch_add(1, std::memory_order_relaxed);
  if (e == nullptr) {
    counters_.load_misses.fetch_add(1, std::memory_order_relaxed);
    return LoadStep(absl::NotFoundError(absl::StrCat(KeyName(tenant, page), " is not stored")));
  }
  if (use) {
    e->referenced.store(true, std::memory_order_relaxed);  // never the LRU itself
    e->cold_referenced.store(true, std::memory_order_relaxed);
    if (e->cold_state.load(std::memory_order_relaxed) ==
        uint8_t(internal::ColdState::kRecompressed)) {
      counters_.cold_loads.fetch_add(1, std::memory_order_relaxed);
    }
  }
  LoadedPage out;
  out.codec = e->codec;
  out.checksum = e->checksum;
  out.version = e->version;
  switch (e->state) {
    case EntryState::kSameFilled:
      out.same_filled = true;
      out.fill = e->fill;
      return LoadStep(std::move(out));
    case EntryState::kWritebackPending:
      // The page is hot after all: cancel the writeback (zram clears
      // ZRAM_PP_SLOT on access). The writeback sees the state change when
      // it comes back and counts its appended bytes dead. A scrub reads
      // the pool object, which stays valid until the writeback publishes
      // under this key lock.
      if (use) e->state = EntryState::kInPool;
      [[fallthrough]];
    case EntryState::kInPool: {
      absl::StatusOr<alloc::ZsPool::ReadGuard> g = pool_->Read(e->handle);
      if (!g.ok()) {
        return LoadStep(absl::InternalError(
            absl::StrCat(KeyName(tenant, page), ": pool object lost: ", g.status().message())));
      }
      out.payload.assign(g->data(), g->data() + e->length);
      return LoadStep(std::move(out));
    }
    case EntryState::kOnDisk: {
      if (from_cache) {
        out.payload = std::move(cached.payload);
        if (e->disk_loaded) {
          PromoteLocked(e, out.payload.data());
        } else {
          e->disk_loaded = true;
        }
        return LoadStep(std::move(out));
      }
      DiskRead read{.offset = e->disk_offset,
                    .length = e->length,
                    .disk_checksum = e->disk_checksum,
                    .gen = e->gen,
                    .segment = e->disk_offset / segments_->segment_bytes(),
                    .promote = use && e->disk_loaded,
                    .scrub = !use,
                    .page = std::move(out)};
      if (use) e->disk_loaded = true;
      const internal::SegmentTable::PinnedSegment pinned =
          segments_->Pin(read.segment);  // unpinned by FinishLoad
      read.epoch = pinned.epoch;
      read.written_end = read.segment * segments_->segment_bytes() + pinned.extent;
      counters_.backing_reads.fetch_add(1, std::memory_order_relaxed);
      return LoadStep(std::move(read));
    }
  }
  return LoadStep(absl::InternalError("unreachable entry state"));
}

absl::StatusOr<LoadedPage> PageStore::FinishLoad(uint32_t tenant, uint64_t page, DiskRead& read,
                                                 const absl::Status& io, const uint8_t* bytes) {
  absl::StatusOr<LoadedPage> out;
  if (!io.ok()) {
    counters_.backing_read_errors.fetch_add(1, std::memory_order_relaxed);
    RecordBackingError(io);
    out = absl::DataLossError(absl::StrCat(KeyName(tenant, page),
                                           ": reading its backing-store object at byte ",
                                           read.offset, " failed: ", io.message()));
  } else if (XXH3_64bits(bytes, read.length) != read.disk_checksum) {
    counters_.backing_read_errors.fetch_add(1, std::memory_order_relaxed);
    out = absl::DataLossError(absl::StrCat(KeyName(tenant, page), ": the backing store at byte ",
                                           read.offset, " does not hold what was written"));
  } else {
    read.page.payload.assign(bytes, bytes + read.length);
    if (read.promote) Promote(tenant, page, read, bytes);
    out = std::move(read.page);
  }
  segments_->Unpin(read.segment);  // last: `bytes` came from it
  return out;
}

void PageStore::Promote(uint32_t tenant, uint64_t page, const DiskRead& read,
                        const uint8_t* bytes) {
  FARSWAP_SYNC_POINT("PageStore::Promote:before-lock");
  const PageKey key{tenant, page};
  MutexLock kl(&key_locks_->For(key));
  Entry* e = index_->Find(key);
  if (e == nullptr || e->gen != read.gen || e->state != EntryState::kOnDisk ||
      e->disk_offset != read.offset) {
    return;  // replaced, invalidated or moved meanwhile: nothing to promote
  }
  PromoteLocked(e, bytes);
}

void PageStore::PromoteLocked(Entry* e, const uint8_t* bytes) {
  // Room without waiting, and without pushing the pool over the high
  // watermark (which would only write it back again).
  const uint64_t high = high_watermark_bytes_.load(std::memory_order_relaxed);
  if (high != 0 && pool_->mem_in_use_bytes() + e->length > high) return;
  absl::StatusOr<alloc::ZsHandle> h = pool_->Malloc(e->length);
  if (!h.ok()) return;  // full after all; it stays on disk
  if (!pool_->Write(*h, bytes, e->length).ok()) {
    pool_->Free(*h);
    return;
  }
  ReleaseDiskObject(*e);  // no stale disk copy stays live
  e->state = EntryState::kInPool;
  e->handle = *h;
  e->disk_loaded = false;
  counters_.pages_on_disk.fetch_sub(1, std::memory_order_relaxed);
  counters_.promotions.fetch_add(1, std::memory_order_relaxed);
  pool_->AddCallerCounters(int64_t(farswap::kPageSize), 0);
  lru_->Link(e);
}

bool PageStore::LoadFromReadCache(Entry* e, LoadedPage* out, bool count_miss) {
  if (read_cache_ == nullptr) return false;
  const uint64_t segment = e->disk_offset / segments_->segment_bytes();
  out->payload.clear();
  if (!read_cache_->Lookup(e->disk_offset, e->length, segments_->epoch(segment), &out->payload,
                           count_miss)) {
    return false;
  }
  if (XXH3_64bits(out->payload.data(), e->length) != e->disk_checksum) {
    // Not expected (disk_read_cache.h says why a window's bytes are final);
    // counted, and the load reads the disk instead.
    counters_.read_cache_mismatches.fetch_add(1, std::memory_order_relaxed);
    out->payload.clear();
    return false;
  }
  return true;
}

namespace {

// ReadRequest: one read of a LoadBatch: blocks first..first+count-1, into
// the batch buffer at block `buf_block`, for the DiskReads in `reads`.
struct ReadRequest {
  uint64_t first = 0;
  uint64_t count = 0;
  uint64_t buf_block = 0;
  std::vector<size_t> reads;
};

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

void PageStore::LoadBatch(uint32_t tenant, absl::Span<const uint64_t> pages, LoadCallback on_loaded,
                          const std::function<void()>& on_ready_done,
                          absl::Span<const LoadKind> kinds) {
  const size_t n = pages.size();
  assert(kinds.empty() || kinds.size() == n);
  std::vector<std::optional<absl::StatusOr<LoadedPage>>> results(n);
  std::vector<DiskRead> reads;
  std::vector<size_t> read_index;  // reads[k] is for pages[read_index[k]]
  for (size_t i = 0; i < n; ++i) {
    const LoadKind kind = kinds.empty() ? LoadKind::kUse : kinds[i];
    LoadStep step = *BeginLoad(tenant, pages[i], Wait::kAllowed, kind);  // never nullopt
    if (DiskRead* r = std::get_if<DiskRead>(&step)) {
      reads.push_back(std::move(*r));
      read_index.push_back(i);
    } else {
      results[i] = std::get<absl::StatusOr<LoadedPage>>(std::move(step));
    }
  }
  size_t next_reply = 0;
  auto reply_ready = [&] {
    const size_t before = next_reply;
    for (; next_reply < n && results[next_reply].has_value(); ++next_reply) {
      on_loaded(next_reply, *results[next_reply]);
    }
    if (next_reply != before && on_ready_done) on_ready_done();
  };
  reply_ready();
  if (reads.empty()) return;
  FARSWAP_SYNC_POINT("PageStore::LoadBatch:after-begin");

  // Coalesce: sort by first block; a read whose blocks touch or overlap the
  // request before it joins that request.
  // What each read reads: its object's blocks, and with the read cache the
  // readahead span around it (DiskReadCache::NextReadahead, one decision
  // per batch), as far as the segment's written part goes. The object lies
  // within that part: it was published after its write.
  // A scrub's reads take no part: no span, no decision.
  const bool any_use =
      std::any_of(reads.begin(), reads.end(), [](const DiskRead& r) { return !r.scrub; });
  const uint64_t readahead = read_cache_ != nullptr && any_use ? read_cache_->NextReadahead() : 0;
  for (DiskRead& r : reads) {
    r.read_begin = r.offset / kBlockSize * kBlockSize;
    r.read_end = (r.offset + r.length + kBlockSize - 1) / kBlockSize * kBlockSize;
    if (readahead > 0 && !r.scrub) {
      const internal::DiskReadCache::Span span = read_cache_->SpanOf(r.offset, readahead);
      r.read_begin = std::min(r.read_begin, span.begin);
      r.read_end = std::max(r.read_end, std::min(span.end, r.written_end));
    }
  }
  auto first_block = [](const DiskRead& r) { return r.read_begin / kBlockSize; };
  auto end_block = [](const DiskRead& r) { return r.read_end / kBlockSize; };
  std::vector<size_t> order(reads.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return reads[a].read_begin < reads[b].read_begin; });
  std::vector<ReadRequest> requests;
  uint64_t total_blocks = 0;
  for (size_t k : order) {
    const uint64_t first = first_block(reads[k]);
    const uint64_t end = end_block(reads[k]);
    if (!requests.empty() && first <= requests.back().first + requests.back().count) {
      ReadRequest& r = requests.back();
      const uint64_t grown = std::max(r.first + r.count, end) - r.first;
      total_blocks += grown - r.count;
      r.count = grown;
      r.reads.push_back(k);
      counters_.disk_reads_coalesced.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    requests.push_back({.first = first, .count = end - first, .buf_block = total_blocks});
    requests.back().reads.push_back(k);
    total_blocks += end - first;
  }
  std::unique_ptr<uint8_t, FreeDeleter> buf(
      static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, total_blocks * kBlockSize)));

  // Every page of a finished request gets its result. The windows it read
  // go to the read cache first, while their segments are still pinned (so
  // each epoch is still the segment's).
  auto finish = [&](const ReadRequest& r, const absl::Status& io) {
    const uint8_t* base = buf.get() + r.buf_block * kBlockSize;
    if (io.ok() && read_cache_ != nullptr) {
      for (size_t k : r.reads) {
        const DiskRead& d = reads[k];
        if (d.scrub) continue;
        read_cache_->Insert(d.offset, d.read_begin, d.read_end, d.epoch,
                            base + (d.read_begin - r.first * kBlockSize));
      }
    }
    for (size_t k : r.reads) {
      const uint8_t* bytes = base + (reads[k].offset - r.first * kBlockSize);
      results[read_index[k]] = FinishLoad(tenant, pages[read_index[k]], reads[k], io, bytes);
    }
  };
  std::unique_ptr<BlockWriteQueue> queue = TakeWriteQueue();
  size_t submitted = 0, finished = 0;
  while (finished < requests.size()) {
    // Everything the queue takes goes in at once; the rest as it drains.
    for (; submitted < requests.size() && queue->in_flight() < queue->depth(); ++submitted) {
      const ReadRequest& r = requests[submitted];
      counters_.disk_read_requests.fetch_add(1, std::memory_order_relaxed);
      absl::Status s =
          queue->SubmitRead(r.first, r.count, buf.get() + r.buf_block * kBlockSize, submitted);
      if (!s.ok()) {
        finish(r, s);
        ++finished;
        continue;
      }
      counters_.disk_reads_in_flight.fetch_add(1, std::memory_order_relaxed);
    }
    for (const BlockWriteQueue::Completion& c : queue->Reap()) {
      counters_.disk_reads_in_flight.fetch_sub(1, std::memory_order_relaxed);
      finish(requests[c.tag], c.status);
      ++finished;
    }
    reply_ready();
  }
  ReturnWriteQueue(std::move(queue));
  reply_ready();
}

// --- invalidate -------------------------------------------------------------------------

absl::Status PageStore::Invalidate(uint32_t tenant, uint64_t page, uint64_t up_to_version) {
  {
    MutexLock kl(&key_locks_->For({tenant, page}));
    if (up_to_version != 0) {
      const Entry* e = index_->Find({tenant, page});
      if (e == nullptr || e->version > up_to_version) return absl::OkStatus();  // a newer store won
    }
    if (EraseLocked(tenant, page)) counters_.invalidates.fetch_add(1, std::memory_order_relaxed);
  }
  MaybeKickCleaner();
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> PageStore::InvalidateRange(uint32_t tenant, uint64_t first,
                                                    uint64_t count) {
  if (count == 0) return 0;
  if (first + (count - 1) < first) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalidate range of ", count, " pages from ", first, " wraps around"));
  }
  const uint64_t last = first + (count - 1);
  // Small ranges: visit each key. Large ones: walk the index's ordered
  // list of this tenant's pages, a bounded chunk per index-lock hold, with
  // no lock held between chunks (a key stored meanwhile may be missed, as
  // it would be had the store come a moment later). Neither way looks at
  // another tenant's entries.
  constexpr uint64_t kVisitEachKeyBelow = 4096;
  uint64_t removed = 0;
  if (count < kVisitEachKeyBelow) {
    // Not `p <= last`: that is always true when last is UINT64_MAX, and
    // the loop would wrap to page 0 and erase every page of the tenant.
    for (uint64_t p = first;; ++p) {
      MutexLock kl(&key_locks_->For({tenant, p}));
      removed += EraseLocked(tenant, p) ? 1 : 0;
      if (p == last) break;
    }
  } else {
    internal::RangeCursor cursor{.tenant = tenant, .first = first, .last = last};
    std::vector<PageKey> keys;
    keys.reserve(internal::PageIndex::kRangeChunk);
    while (index_->NextKeysInRange(&cursor, &keys)) {
      for (const PageKey& k : keys) {
        MutexLock kl(&key_locks_->For(k));
        removed += EraseLocked(k.tenant, k.page) ? 1 : 0;
      }
      keys.clear();
      FARSWAP_SYNC_POINT("PageStore::InvalidateRange:between-chunks");
    }
  }
  counters_.invalidates.fetch_add(removed, std::memory_order_relaxed);
  MaybeKickCleaner();
  return removed;
}

// --- limits, control, stats -----------------------------------------------------------

absl::Status PageStore::SetLimits(const PageStoreLimits& limits) {
  if (absl::Status s = ValidateLimits(limits); !s.ok()) return s;
  {
    MutexLock l(&limits_mu_);
    limits_ = limits;
  }
  pool_->SetMemLimit(limits.pool_limit_bytes);
  // The headroom above the high watermark doubles as the pool's cache of
  // emptied zspages (see PageStoreLimits).
  pool_->SetEmptyCacheLimit(
      uint64_t(double(limits.pool_limit_bytes) * (1.0 - limits.high_watermark)) / 4096);
  high_watermark_bytes_.store(uint64_t(double(limits.pool_limit_bytes) * limits.high_watermark));
  low_watermark_bytes_.store(uint64_t(double(limits.pool_limit_bytes) * limits.low_watermark));
  {
    MutexLock tl(&tenants_mu_);
    default_quota_pages_ = limits.default_tenant_quota_pages;
  }
  MaybeKickWriteback();
  return absl::OkStatus();
}

PageStoreLimits PageStore::limits() const {
  MutexLock l(&limits_mu_);
  return limits_;
}

void PageStore::SetTenantQuota(uint32_t tenant, uint64_t quota_pages) {
  MutexLock tl(&tenants_mu_);
  TenantState& t = tenants_[tenant];
  t.has_quota = true;
  t.quota_pages = quota_pages;
}

void PageStore::ClearTenantQuota(uint32_t tenant) {
  MutexLock tl(&tenants_mu_);
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) return;
  it->second.has_quota = false;
  it->second.quota_pages = 0;
}

void PageStore::SetDraining(bool draining) { draining_.store(draining); }

void PageStore::QuiesceWriteback() {
  if (worker_ != nullptr) worker_->WaitForPass();
}

uint64_t PageStore::Compact() { return pool_->Compact(); }

void PageStore::RecordBackingError(const absl::Status& status) {
  MutexLock l(&error_mu_);
  if (backing_error_.ok()) {
    backing_error_ =
        absl::Status(status.code(),
                     absl::StrCat("backing store ", backing_->Describe(), ": ", status.message()));
    backing_failed_.store(true, std::memory_order_release);
  }
}

absl::Status PageStore::Health() const {
  MutexLock l(&error_mu_);
  return backing_error_;
}

PageStoreStats PageStore::GetStats() const {
  PageStoreStats s;
  s.pool = pool_->GetStats();
  s.stored_pages = counters_.stored_pages.load();
  s.same_filled_pages = counters_.same_filled_pages.load();
  s.huge_pages = s.pool.huge_pages;
  s.pages_on_disk = counters_.pages_on_disk.load();
  s.written_back_pages = counters_.written_back_pages.load();
  s.writeback_aborted = counters_.writeback_aborted.load();
  s.writeback_second_chances = counters_.second_chances.load();
  s.backing_reads = counters_.backing_reads.load();
  s.disk_read_requests = counters_.disk_read_requests.load();
  s.disk_reads_coalesced = counters_.disk_reads_coalesced.load();
  s.read_cache_mismatches = counters_.read_cache_mismatches.load();
  if (read_cache_ != nullptr) {
    const internal::DiskReadCacheStats c = read_cache_->GetStats();
    s.read_cache_hits = c.hits;
    s.read_cache_misses = c.misses;
    s.read_cache_bytes = c.bytes;
    s.read_cache_limit_bytes = options_.disk_read_cache_bytes;
    s.readahead_bytes = c.readahead_bytes;
  }
  s.disk_reads_in_flight = counters_.disk_reads_in_flight.load();
  s.promotions = counters_.promotions.load();
  s.backing_writes = counters_.backing_writes.load();
  s.backing_read_errors = counters_.backing_read_errors.load();
  s.backing_write_errors = counters_.backing_write_errors.load();
  if (segments_ != nullptr) {
    const internal::SegmentTableStats t = segments_->GetStats();
    s.segments = t.segments;
    s.free_segments = t.free_segments;
    s.segment_bytes = segments_->segment_bytes();
    s.disk_live_bytes = t.live_bytes;
    s.disk_held_bytes = t.held_bytes;
    s.backing_used_blocks = t.held_bytes / kBlockSize;
    s.backing_total_blocks = t.segments * (segments_->segment_bytes() / kBlockSize);
  }
  s.backing_bytes_written = counters_.backing_bytes_written.load();
  s.written_back_bytes = counters_.written_back_bytes.load();
  s.cleaner_moves = counters_.cleaner_moves.load();
  s.cleaner_segments = counters_.cleaner_segments.load();
  s.cleaner_space_segments = counters_.cleaner_space_segments.load();
  s.write_engine = write_engine_;
  s.write_queue_depth = backing_ != nullptr ? options_.write_queue_depth : 0;
  s.writeback_threads = worker_ != nullptr ? options_.writeback_threads : 0;
  s.max_writes_in_flight = counters_.max_writes_in_flight.load();
  s.registered_writes = counters_.registered_writes.load();
  s.writeback_latency = SnapshotOf(counters_.writeback_latency);
  s.stores = counters_.stores.load();
  s.loads = counters_.loads.load();
  s.load_misses = counters_.load_misses.load();
  s.invalidates = counters_.invalidates.load();
  s.stale_stores = counters_.stale_stores.load();
  for (int r = 0; r < kRejectReasonCount; ++r) s.rejects[r] = counters_.rejects[r].load();
  s.draining = draining();
  s.health = Health();
  s.cold_passes = counters_.cold_passes.load();
  s.cold_recompressed_pages = counters_.cold_recompressed.load();
  s.cold_bytes_saved = counters_.cold_bytes_saved.load();
  s.cold_kept_pages = counters_.cold_kept.load();
  s.cold_aborted = counters_.cold_aborted.load();
  s.cold_loads = counters_.cold_loads.load();
  MutexLock tl(&tenants_mu_);
  for (const auto& [id, t] : tenants_) {
    s.tenants.push_back({.tenant = id,
                         .stored_pages = t.stored_pages,
                         .stored_bytes = t.stored_bytes,
                         .quota_pages = TenantQuotaLocked(t),
                         .rejects = t.rejects});
  }
  std::sort(s.tenants.begin(), s.tenants.end(),
            [](const TenantStats& a, const TenantStats& b) { return a.tenant < b.tenant; });
  return s;
}

}  // namespace farswap::server
