// page_store.h: the memory node's page store — compressed pages of many
// tenants kept in a zspool, the coldest written back to a block device.
//
//   MemoryBlockDevice ssd(1 << 20);
//   absl::StatusOr<std::unique_ptr<PageStore>> store = PageStore::Create(
//       {.limits = {.pool_limit_bytes = 1 << 30}, .backing = &ssd});
//   FARSWAP_RETURN_IF_ERROR((*store)->Store(tenant, page_no,
//       {.payload = compressed, .codec = kLz4, .checksum = xxh3_of_page}));
//   absl::StatusOr<LoadedPage> p = (*store)->Load(tenant, page_no);
//
// The rules (docs/invariants.md rules 1-7):
//  - A key is (tenant, page number); tenants never see each other's pages.
//  - Store allocates exactly the payload length, copies it once, then under
//    the key's lock publishes the entry and links it into the LRU last.
//    Loads never touch the LRU; they only set the entry's referenced bit.
//  - A writeback thread keeps pool memory between two watermarks by writing
//    the coldest entries' compressed bytes to the backing store, giving a
//    referenced entry a second chance first. The backing store is a log of
//    segments: compressed pages are packed end to end and each batch is one
//    large write; a cleaner moves the live pages out of mostly dead segments
//    (segment_table.h, writeback.cc, cleaner.cc; server/README.md).
//  - Every page carries the client's store version. A Store older than the
//    stored page (lower version) is refused with ABORTED ("stale version")
//    and changes nothing: a store delayed past a newer acknowledged one never
//    overwrites it.
//  - A failed Store leaves nothing behind for its key that is not newer than
//    itself: an entry with a version up to its own is erased, because the
//    client got no acknowledgement and will put the page elsewhere; keeping
//    the older version here could later hand it out as if it were current.
//    An entry with a higher version belongs to a newer store and is kept.
//    So a Load returns the newest acknowledged version or NOT_FOUND, never
//    an older one.
//  - TryStore and TryLoad are the non-blocking forms, for threads that must
//    not wait (the data plane's transport I/O threads). Where Store would
//    wait for writeback to make room, or Load would read the backing store,
//    they return std::nullopt ("would block") and have no effect at all —
//    nothing is stored, erased or counted — so the caller retries the
//    blocking form on a thread that may wait, as if the first try never
//    happened. They may still wait briefly for a key's lock (see Load).
//  - Backing-store errors (a failed read or write, or an object that does not
//    read back what was written) are sticky (Health()); after one,
//    writeback stops, pages stay in the pool, stores that need room are
//    refused (io_error), and only pages whose own read fails are lost
//    (DATA_LOSS).
//
// Internals are split by concern: page_index.h (entries, the sharded index,
// the striped key locks), lru_list.h, page_store.cc (store, load,
// invalidate, limits, stats), writeback.cc (the writeback protocol),
// cleaner.cc (segment cleaning), segment_table.h (the on-disk layout),
// writeback_worker.h (the thread), writeback_helpers.h (the threads beside
// it, writeback_threads > 1), cold_recompressor.{h,cc} (the cold
// tier: recompressing cold pool entries into zstd, and its thread).
#ifndef FARSWAP_SERVER_PAGE_STORE_H_
#define FARSWAP_SERVER_PAGE_STORE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "farswap/alloc/zspool.h"
#include "farswap/common/latency_histogram.h"
#include "farswap/common/mutex.h"
#include "farswap/server/block_device.h"

namespace farswap::server {

namespace internal {
struct Entry;
class PageIndex;
class KeyLockTable;
class LruList;
class SegmentTable;
class DiskReadCache;
struct OpenSegment;
struct WritebackCandidate;
struct WritebackPipeline;
struct WritebackRound;
class PageRecompressor;
enum class VictimPolicy;
}  // namespace internal
class WritebackWorker;
class WritebackHelpers;
class ColdPassWorker;

// StoreRequest is one page as the client sent it.
struct StoreRequest {
  // payload: the compressed (or raw, when incompressible) page, 1..4096
  // bytes. Ignored for a same-filled page. Copied before Store returns.
  absl::Span<const uint8_t> payload;
  uint8_t codec = 0;      // opaque to the store; returned with loads
  uint64_t checksum = 0;  // the client's checksum of the page; returned with loads
  // same_filled: the page is one 8-byte value repeated; it costs no pool
  // memory and is never written back.
  bool same_filled = false;
  uint64_t fill = 0;
  // version: the client's store version of this page (transport/README.md,
  // "Page versions"). A Store whose version is lower than the stored page's
  // is refused (ABORTED, "stale version"); an equal one replaces it.
  uint64_t version = 0;
};

// LoadedPage is what Load returns: the bytes and metadata the client stored.
struct LoadedPage {
  std::vector<uint8_t> payload;  // empty for a same-filled page
  uint8_t codec = 0;
  uint64_t checksum = 0;
  bool same_filled = false;
  uint64_t fill = 0;
  uint64_t version = 0;  // the version it was stored with
};

// RejectReason says why a Store was refused.
enum class RejectReason : int {
  kPoolFull = 0,     // pool at its limit and writeback could not make room
  kQuota = 1,        // the tenant is at its page quota
  kBackingFull = 2,  // pool full, no free segment, and the cleaner can reclaim none
  kDraining = 3,     // the node is draining
  kIoError = 4,      // pool full and the backing store has failed (sticky)
};
inline constexpr int kRejectReasonCount = 5;
const char* RejectReasonName(RejectReason reason);

// PageStoreLimits can be changed at run time with SetLimits().
struct PageStoreLimits {
  // pool_limit_bytes: memory the zspool may hold (mem_used_total); 0 means
  // unlimited (and no writeback).
  uint64_t pool_limit_bytes = 0;
  // Writeback starts when pool memory passes high_watermark x limit and
  // stops at low_watermark x limit (zswap's accept_threshold hysteresis).
  // 0 < low_watermark < high_watermark <= 1. "Pool memory" here is what
  // objects hold (ZsPool::mem_in_use_bytes): the headroom between the high
  // watermark and the limit doubles as the pool's cache of emptied zspages
  // (ZsPoolOptions::empty_cache_pages), pages writeback frees and stores
  // refill without giving them back to the OS in between; it still counts
  // in mem_used_total and against the limit.
  double high_watermark = 0.9;
  double low_watermark = 0.8;
  // default_tenant_quota_pages: pages (of any kind: in the pool, same-filled
  // or on disk) a tenant may keep without a quota of its own; 0 = unlimited.
  // Quotas count pages, not bytes: a page costs the client one slot whatever
  // it compresses to, and it keeps costing a slot after writeback.
  uint64_t default_tenant_quota_pages = 0;
};

// kDefaultWriteRequestBytes: a segment flush is cut into write requests of
// this size (PageStoreOptions::write_request_bytes), all in flight at once
// up to write_queue_depth. A writeback round of 64 pages (~115 KiB of
// compressed bytes) fit one request, so a round cost one submission, not
// four: 128 KiB drained the pool 23% faster than 32 KiB on the 2-core VM
// (server/README.md), and it is well past the size where an NVMe SSD's
// sequential write bandwidth levels off. Rounds are 256 pages now (about
// four requests, in flight together); 512 KiB requests, one per round, did
// no better.
inline constexpr uint32_t kDefaultWriteRequestBytes = 128 * 1024;
static_assert(kDefaultWriteRequestBytes % kBlockSize == 0);

// kDefaultWritebackBatchPages: a writeback batch (one round: isolated
// together, written together, published together). 256 drained the pool
// 25% faster than the 64 of one LRU lock hold (server/README.md); stores
// with writeback busy did not move.
inline constexpr uint32_t kDefaultWritebackBatchPages = 256;
inline constexpr uint32_t kMaxWritebackBatchPages = 1024;
inline constexpr uint32_t kMaxWritebackThreads = 16;

struct PageStoreOptions {
  PageStoreLimits limits;
  // backing: where writeback puts cold pages; nullptr means no writeback.
  // Not owned; must outlive the store.
  BlockDevice* backing = nullptr;
  // start_writeback_worker: run the writeback thread. Tests that drive
  // writeback step by step turn it off and call RunWritebackOnce(); a Store
  // that finds the pool full then runs writeback itself (direct reclaim).
  bool start_writeback_worker = true;
  // store_retries: how many writeback passes a Store waits for when the
  // pool is full before it gives up with RESOURCE_EXHAUSTED.
  int store_retries = 4;
  // pool_release_batch_pages: see ZsPoolOptions. Small, so that memory freed
  // by writeback shows up in mem_used_total (which the watermarks watch)
  // soon.
  uint32_t pool_release_batch_pages = 4;
  // pool_arena_bytes: see ZsPoolOptions::arena_bytes (0 = default).
  size_t pool_arena_bytes = 0;
  // segment_bytes: the unit of the backing store's log (server/README.md,
  // "On-disk layout"): a multiple of 4096, at least 4096. A backing store
  // smaller than one segment is one segment of its whole size.
  uint64_t segment_bytes = 1 << 20;
  // cleaner_threshold: the cleaner reclaims a segment only while its live
  // bytes are below this fraction of its size; 0 < threshold <= 1.
  double cleaner_threshold = 0.5;
  // cleaner_max_dead: the writeback thread also cleans, once writeback has
  // been quiet for cleaner_idle_ms, while dead bytes (dead objects and
  // padding) exceed this fraction of the bytes the log holds, so a page on
  // disk at rest costs about its compressed size (1 / (1 - F) of it at
  // most, plus the open segment's padding); 0 < F <= 1, 1 = clean only when
  // free segments run low.
  double cleaner_max_dead = 0.08;
  // cleaner_idle_ms: how long no store must have come and no writeback pass
  // been asked for before that space-driven cleaning runs (it stops early when a pass is
  // asked for). Under steady writeback dead bytes are left on the disk (only
  // low free space makes the cleaner run then): rewriting live bytes to
  // give back space nobody needs yet cost the sort of the demo a third of
  // its disk bandwidth (3.5x write amplification). 0 = right after every
  // pass that ends with no other pass asked for.
  uint32_t cleaner_idle_ms = 100;
  // write_queue_depth: the most write requests one segment flush keeps in
  // flight (a flush is cut into requests of write_request_bytes; through
  // io_uring on a FileBlockDevice, block_write_queue.h); >= 1.
  uint32_t write_queue_depth = 32;
  // write_request_bytes: the size a flush is cut into (the last request of
  // a run shorter); a multiple of 4 KiB from 4 KiB to 16 MiB.
  uint32_t write_request_bytes = kDefaultWriteRequestBytes;
  // writeback_batch_pages: the most entries a writeback batch isolates and
  // writes together (picked in holds of the LRU lock of 64 entries at
  // most); 1..kMaxWritebackBatchPages.
  uint32_t writeback_batch_pages = kDefaultWritebackBatchPages;
  // writeback_threads: threads that write back during a pass: the
  // writeback thread and writeback_threads - 1 helpers beside it
  // (writeback_helpers.h), each with its own open segment and round in
  // flight; 1..kMaxWritebackThreads. Only with start_writeback_worker (a
  // direct reclaim runs on the storing thread alone). More threads drain
  // faster where the cores are free; while stores come in they share the
  // cores with the data plane's I/O threads.
  uint32_t writeback_threads = 1;
  // disk_read_cache_bytes: readahead for loads of written-back pages. A
  // load that reads the disk reads the 64 KiB window around its object
  // (within the segment's written part) and the store keeps the most
  // recently read windows, up to this many bytes, so loads of the pages
  // written back beside it are answered from memory, without a disk read
  // or a worker (disk_read_cache.h). Memory outside the pool limit. 0 = off:
  // a load reads only its object's blocks. A scrub's loads
  // (LoadKind::kScrub) never use it.
  uint64_t disk_read_cache_bytes = 4 << 20;

  // The cold tier (cold_recompressor.cc): pool entries not loaded for a
  // whole cold pass are recompressed from lz4 (or raw) into zstd at
  // cold_zstd_level (1..ZSTD_maxCLevel(), else INVALID_ARGUMENT), kept only
  // when smaller. A pass runs every cold_after_seconds on its own thread, so
  // an entry is recompressed between cold_after and 2 x cold_after seconds
  // after its last store or load. 0 = off.
  uint32_t cold_after_seconds = 0;
  int cold_zstd_level = 5;  // the knee: server/README.md, "The cold zstd tier"
  // start_cold_worker: run the cold pass thread (when cold_after_seconds is
  // set). Tests turn it off and call RunColdPass().
  bool start_cold_worker = true;
};

// ColdPassResult: what one RunColdPass did.
struct ColdPassResult {
  uint64_t scanned = 0;       // LRU entries looked at
  uint64_t recompressed = 0;  // replaced by a smaller zstd object
  uint64_t bytes_saved = 0;   // payload bytes, old length minus zstd length
  uint64_t kept = 0;          // left as they are for good (see ColdState::kKept)
  uint64_t aborted = 0;       // changed while unlocked, or no pool room: retried later
};

// QuotaPagesForBytes converts a byte quota (tenants file, SetLimits) into
// the page quota the store enforces, rounding a partial page up: 0 stays 0
// (no quota), and 1..4096 bytes is one page, never "unlimited".
inline uint64_t QuotaPagesForBytes(uint64_t quota_bytes) {
  return quota_bytes / kBlockSize + (quota_bytes % kBlockSize != 0 ? 1 : 0);
}

// TenantStats: one tenant's pages and refusals.
struct TenantStats {
  uint32_t tenant = 0;
  uint64_t stored_pages = 0;
  uint64_t stored_bytes = 0;  // payload bytes (0 for same-filled pages)
  uint64_t quota_pages = 0;   // 0 = unlimited
  std::array<uint64_t, kRejectReasonCount> rejects{};
};

// PageStoreStats: zswap/zram-style counters for the node. Counters are read
// without a global lock, so they may be mutually inconsistent by a few
// in-flight operations.
struct PageStoreStats {
  alloc::ZsPoolStats pool;          // mm_stat fields
  uint64_t stored_pages = 0;        // every live entry
  uint64_t same_filled_pages = 0;   // of which same-filled
  uint64_t huge_pages = 0;          // of which in the pool's huge class
  uint64_t pages_on_disk = 0;       // of which written back now
  uint64_t written_back_pages = 0;  // cumulative
  uint64_t writeback_aborted = 0;   // lost a race with store/invalidate/load
  uint64_t writeback_second_chances = 0;
  uint64_t backing_reads = 0;  // pages loaded from disk (not requests), cleaner segment reads
  // Loads from disk (LoadBatch): read requests submitted (a request reads
  // one run of touching blocks), the pages that shared a request another
  // page of the run started (coalesced), requests in flight now, and
  // pages promoted back into the pool on their second load from disk.
  uint64_t disk_read_requests = 0;
  uint64_t disk_reads_coalesced = 0;
  uint64_t disk_reads_in_flight = 0;
  uint64_t promotions = 0;
  // The read cache (PageStoreOptions::disk_read_cache_bytes,
  // disk_read_cache.h): loads of on-disk pages answered from it and not
  // (cumulative), the bytes it holds now and its limit, the readahead span
  // it chose last, and cached objects that failed their disk checksum.
  uint64_t read_cache_hits = 0;
  uint64_t read_cache_misses = 0;
  uint64_t read_cache_bytes = 0;
  uint64_t read_cache_limit_bytes = 0;
  uint64_t readahead_bytes = 0;
  uint64_t read_cache_mismatches = 0;
  uint64_t backing_writes = 0;  // write requests (write_request_bytes pieces of a flush)
  uint64_t backing_read_errors = 0;
  uint64_t backing_write_errors = 0;
  // backing_used_blocks: blocks of segments not free (live, dead and
  // padding bytes alike: what the log holds on disk).
  uint64_t backing_used_blocks = 0;
  uint64_t backing_total_blocks = 0;  // whole segments only
  uint64_t segments = 0;              // segments of the backing store
  uint64_t free_segments = 0;
  uint64_t segment_bytes = 0;
  uint64_t disk_live_bytes = 0;  // compressed bytes of the pages on disk
  uint64_t disk_held_bytes = 0;  // backing_used_blocks x 4096
  // backing_bytes_written: every byte written to the backing store, by
  // writeback and by the cleaner, padding included (cumulative).
  uint64_t backing_bytes_written = 0;
  // written_back_bytes: compressed bytes of the pages writeback moved to
  // disk (cumulative; the denominator of write amplification).
  uint64_t written_back_bytes = 0;
  uint64_t cleaner_moves = 0;     // objects the cleaner relocated
  uint64_t cleaner_segments = 0;  // segments the cleaner freed
  // cleaner_space_segments: segments cleaned because dead bytes were above
  // cleaner_max_dead (the rest of cleaner_segments: free segments ran low).
  uint64_t cleaner_space_segments = 0;
  // write_engine: how segment writes reach the device: "io_uring", or
  // "sync" (pwrite / WriteBlocks; the fallback where io_uring_queue_init
  // fails, and every non-file device). Empty without a backing store.
  std::string write_engine;
  uint64_t write_queue_depth = 0;     // PageStoreOptions::write_queue_depth
  uint64_t writeback_threads = 0;     // threads a pass writes back on (0: no writeback thread)
  uint64_t max_writes_in_flight = 0;  // the most write requests in flight at once, so far
  // registered_writes: write requests that went from the segment buffers
  // registered with io_uring (block_write_queue.h, UseRegisteredBuffer),
  // counted when the pass that made them ends; backing_writes less these
  // went plain (a segment beyond the registered ones, or registration
  // refused: the log says why).
  uint64_t registered_writes = 0;
  // writeback_latency: one segment flush of a writeback batch or cleaning
  // round (all its write requests, from the first submitted to the last
  // completed; locks and pool bookkeeping excluded).
  LatencyBuckets writeback_latency;
  uint64_t stores = 0;  // Store calls, accepted or not
  uint64_t loads = 0;
  uint64_t load_misses = 0;
  uint64_t invalidates = 0;   // entries removed by Invalidate / InvalidateRange
  uint64_t stale_stores = 0;  // stores refused for a version below the stored one
  std::array<uint64_t, kRejectReasonCount> rejects{};
  bool draining = false;
  absl::Status health;               // first backing-store error, or OK
  std::vector<TenantStats> tenants;  // sorted by tenant id

  // The cold tier, cumulative (ColdPassResult summed over passes).
  uint64_t cold_passes = 0;
  uint64_t cold_recompressed_pages = 0;
  uint64_t cold_bytes_saved = 0;
  uint64_t cold_kept_pages = 0;
  uint64_t cold_aborted = 0;
  uint64_t cold_loads = 0;  // loads answered from a recompressed entry (pool or disk)
};

// WritebackOutcome is the result of one writeback attempt.
enum class WritebackOutcome {
  kWrittenBack,     // at least one entry moved to the backing store
  kAborted,         // every entry changed while unlocked; nothing published
  kNothingToWrite,  // the LRU had no candidate
  kBackingFull,     // no free segment and the cleaner reclaimed none
  kIoError,         // the write failed (now sticky) or an earlier error was
  kNoBackingStore,  // writeback is not configured
};

// PageStore is safe for concurrent use from any number of threads without
// external synchronisation. Operations on one key are serialised by the
// key's lock; operations on different keys run in parallel.
class PageStore {
 public:
  // Create builds the pool and starts the writeback thread.
  // INVALID_ARGUMENT for bad limits.
  static absl::StatusOr<std::unique_ptr<PageStore>> Create(const PageStoreOptions& options);
  ~PageStore();
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

  // Store keeps a copy of the page, replacing any older version wherever it
  // lives. INVALID_ARGUMENT for a bad payload length; RESOURCE_EXHAUSTED
  // (message names the reason: pool_full, quota, backing_full, io_error) when
  // there is no room; FAILED_PRECONDITION while draining (the node will not
  // take pages again: place the page on another node, do not retry here);
  // ABORTED ("stale version") when the stored page has a higher version,
  // which is then left as it is. On any other error the key holds nothing
  // at or below request.version afterwards (see the file comment).
  absl::Status Store(uint32_t tenant, uint64_t page, const StoreRequest& request);

  // TryStore is Store that never waits for writeback: when the pool is full
  // and only a writeback pass could make room, it returns std::nullopt and
  // has no effect (the key keeps whatever it held, no counter moves);
  // otherwise it returns exactly what Store would.
  std::optional<absl::Status> TryStore(uint32_t tenant, uint64_t page, const StoreRequest& request);

  // LoadKind: what a load is for.
  enum class LoadKind : uint8_t {
    // kUse: the page is wanted. Served from the pool, the read cache or
    // the backing store, and an access: it sets the page's LRU reference,
    // cancels a pending writeback, and a second load of a page on disk
    // promotes it.
    kUse,
    // kScrub: a check of the stored copy (a client's scrub, frame.h
    // kFlagScrub). Served from the pool or the backing store itself, never
    // the read cache, so corruption of the medium is seen; not an access
    // (none of the above); its disk read has no readahead and is not cached.
    kScrub,
  };

  // Load returns the page. NOT_FOUND when it is not stored; DATA_LOSS when
  // it was written back and the backing store cannot return it intact.
  absl::StatusOr<LoadedPage> Load(uint32_t tenant, uint64_t page, LoadKind kind = LoadKind::kUse);

  // LoadBatch loads `pages` of `tenant`, each as Load would, and hands the
  // results to on_loaded(i, result) in order, i = 0, 1, ..., each as soon
  // as pages 0..i are done, on the calling thread. Written-back pages are
  // read from disk all at once: one read request per run of pages whose
  // blocks touch or overlap (pages written back together lie side by
  // side), all in flight together (through io_uring on a file device,
  // block_write_queue.h), completing in any order. No lock is held while
  // they are read (see "load" in page_store.cc). Load is LoadBatch of one.
  //
  // on_ready_done (optional): called after each round of on_loaded calls
  // (the results that became ready together), so a caller can send them
  // together (one write for several replies).
  //
  // kinds: each page's LoadKind, kinds[i] for pages[i]; empty: all kUse.
  using LoadCallback = absl::FunctionRef<void(size_t index, absl::StatusOr<LoadedPage>& result)>;
  void LoadBatch(uint32_t tenant, absl::Span<const uint64_t> pages, LoadCallback on_loaded,
                 const std::function<void()>& on_ready_done = nullptr,
                 absl::Span<const LoadKind> kinds = {});

  // TryLoad is Load that never reads the backing store: for a page that was
  // written back it returns std::nullopt and has no effect (the page's
  // referenced bit and the counters are untouched); otherwise it returns
  // exactly what Load would.
  std::optional<absl::StatusOr<LoadedPage>> TryLoad(uint32_t tenant, uint64_t page,
                                                    LoadKind kind = LoadKind::kUse);

  // Invalidate drops the page; a page that is not stored is not an error.
  // With a nonzero `up_to_version` (a conditional INVALIDATE, frame.h) it
  // drops the page only if its stored version is at most that, and keeps a
  // newer one (OK either way).
  absl::Status Invalidate(uint32_t tenant, uint64_t page, uint64_t up_to_version = 0);
  // InvalidateRange drops pages first..first+count-1 and returns how many
  // were stored. INVALID_ARGUMENT when the range wraps.
  absl::StatusOr<uint64_t> InvalidateRange(uint32_t tenant, uint64_t first, uint64_t count);

  // SetLimits changes the pool limit, watermarks and default quota.
  // INVALID_ARGUMENT (nothing changed) for bad watermarks. Callers that
  // read-modify-write the limits serialise themselves (MemoryNodeService
  // does, under one lock).
  absl::Status SetLimits(const PageStoreLimits& limits);
  // limits returns what the last successful SetLimits (or Create) set.
  PageStoreLimits limits() const;
  // SetTenantQuota sets one tenant's page quota (0 = unlimited). Pages
  // already stored above a lowered quota stay; new pages are refused.
  void SetTenantQuota(uint32_t tenant, uint64_t quota_pages);
  // ClearTenantQuota undoes SetTenantQuota: the tenant gets the default
  // quota (PageStoreLimits::default_tenant_quota_pages) again.
  void ClearTenantQuota(uint32_t tenant);
  // SetDraining: a draining store refuses stores and still serves loads and
  // invalidates.
  void SetDraining(bool draining);
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

  // Compact compacts the pool; returns the pages freed.
  uint64_t Compact();

  // Health returns the first backing-store I/O error, or OK.
  absl::Status Health() const;
  PageStoreStats GetStats() const;

  // RunWritebackOnce writes back the coldest eligible entry (after giving
  // referenced ones their second chance), ignoring the watermarks. For tests
  // and operators; the worker uses the same code with bigger batches.
  WritebackOutcome RunWritebackOnce();
  // RunWritebackBatch writes back up to max_pages of the coldest entries as
  // one batch (one LRU pick, one write per segment filled).
  WritebackOutcome RunWritebackBatch(size_t max_pages);
  // RunCleanerOnce cleans the sealed segment with the lowest live fraction
  // below the cleaner threshold, if any: moves its live pages to the open
  // segment and frees it. Returns whether a segment was freed. Writeback
  // runs it itself when free segments run low.
  bool RunCleanerOnce();
  // RunWritebackPass writes back until pool memory is at or below the low
  // watermark, or nothing more can be written; returns the pages written.
  // `worker`: the writeback thread's worker, told of each batch published
  // (stores waiting for room wake then); nullptr for direct reclaim.
  uint64_t RunWritebackPass(WritebackWorker* worker = nullptr);
  // QuiesceWriteback returns once the writeback thread has finished the pass
  // it may be in the middle of (it runs one more pass and waits for it). A
  // pass in flight holds appended bytes not yet counted as a page on disk,
  // so stats compare disk bytes with pages exactly only when quiescent. For
  // tests and orderly shutdown; no-op without the worker.
  void QuiesceWriteback();

  // RunColdPass walks the LRU once (cold_recompressor.cc): entries not
  // loaded since the previous pass are recompressed into zstd. The worker
  // runs it every cold_after_seconds; tests and operators may call it at
  // any time (also with the tier off), from any thread.
  ColdPassResult RunColdPass();

 private:
  explicit PageStore(const PageStoreOptions& options);

  struct TenantState {
    uint64_t stored_pages = 0;
    uint64_t stored_bytes = 0;
    bool has_quota = false;
    uint64_t quota_pages = 0;
    std::array<uint64_t, kRejectReasonCount> rejects{};
  };

  // Wait says whether a store or load may wait for writeback or the
  // backing store (the blocking forms) or must not (the Try forms).
  enum class Wait { kAllowed, kNever };

  // StoreImpl is Store and TryStore; nullopt (only with Wait::kNever)
  // means "would block", with no effect.
  std::optional<absl::Status> StoreImpl(uint32_t tenant, uint64_t page, const StoreRequest& request,
                                        Wait wait);
  // DiskRead: a load of a written-back page between BeginLoad and
  // FinishLoad: where the object lies, what it must hash to, the entry it
  // was (gen), the page's metadata as of BeginLoad, and the segment it
  // holds a pin on (segment_table.h).
  struct DiskRead {
    uint64_t offset = 0;  // byte offset on the backing store
    uint32_t length = 0;
    uint64_t disk_checksum = 0;
    uint64_t gen = 0;
    uint64_t segment = 0;  // pinned until FinishLoad
    bool promote = false;  // the entry's second disk load: promote after the read
    bool scrub = false;    // LoadKind::kScrub: no readahead, nothing cached
    LoadedPage page;       // metadata; FinishLoad adds the payload
    // The segment as pinned (disk_read_cache.h): its epoch, and the device
    // byte offset where its written part ended (the bytes below are final
    // while it is pinned).
    uint64_t epoch = 0;
    uint64_t written_end = 0;
    // What LoadBatch reads for it: the object's blocks, or with the read
    // cache the readahead span around it, below written_end. Device byte
    // offsets, block-aligned.
    uint64_t read_begin = 0, read_end = 0;
  };
  using LoadStep = std::variant<absl::StatusOr<LoadedPage>, DiskRead>;
  // BeginLoad is the first half of a load, under the key lock: the result
  // for a page in the pool, same-filled or missing; for a page on disk a
  // DiskRead (its segment pinned, the key lock dropped). nullopt (only
  // with Wait::kNever) for a page on disk, with no effect.
  std::optional<LoadStep> BeginLoad(uint32_t tenant, uint64_t page, Wait wait, LoadKind kind);
  // FinishLoad is the second half: `io` is the read's result and `bytes`
  // the object as read. Verifies the disk checksum (DATA_LOSS for this page
  // on a mismatch or a failed read), promotes when read.promote, unpins.
  absl::StatusOr<LoadedPage> FinishLoad(uint32_t tenant, uint64_t page, DiskRead& read,
                                        const absl::Status& io, const uint8_t* bytes);
  // Promote moves a page just read from disk into the pool if its entry is
  // unchanged and the pool has room without waiting (page_store.cc).
  void Promote(uint32_t tenant, uint64_t page, const DiskRead& read, const uint8_t* bytes);
  // PromoteLocked is Promote's last step: the caller holds the key lock and
  // has checked that `e` is the entry the bytes were read for.
  void PromoteLocked(internal::Entry* e, const uint8_t* bytes);
  // LoadFromReadCache answers a load of on-disk entry `e` (key lock held)
  // from the read cache into *out: false, with no effect, when the cache
  // does not hold its object (or its bytes do not hash to the disk
  // checksum). count_miss: whether a false counts as a miss.
  bool LoadFromReadCache(internal::Entry* e, LoadedPage* out, bool count_miss);
  // AllocateInPool mallocs `len` bytes, waiting for (or running) writeback
  // while the pool is full. On RESOURCE_EXHAUSTED sets *reason. With
  // Wait::kNever, where it would wait or run writeback it returns nullopt
  // instead, having allocated nothing.
  std::optional<absl::StatusOr<alloc::ZsHandle>> AllocateInPool(size_t len, Wait wait,
                                                                RejectReason* reason);
  // Reject counts a refusal by reason, then FailStore()s.
  absl::Status Reject(uint32_t tenant, uint64_t page, uint64_t version, RejectReason reason,
                      absl::Status status);
  // FailStore erases the key's entry unless it is newer than `version` (see
  // the file comment) and returns `status`, the answer the client gets. The
  // caller holds no lock.
  absl::Status FailStore(uint32_t tenant, uint64_t page, uint64_t version, absl::Status status);
  // EraseLocked removes the key's entry, if any; the caller holds the key lock.
  bool EraseLocked(uint32_t tenant, uint64_t page);
  // ReleaseEntryResources frees what an entry holds (LRU link, pool object,
  // backing block) and updates node counters; the caller holds the key lock
  // and has already taken the entry out of the index.
  void ReleaseEntryResources(internal::Entry& entry);
  void MaybeKickWriteback();
  // The writeback pipeline (writeback.cc). WritebackBatch picks up to
  // max_pages of the coldest entries and isolates them round by round (a
  // round: what fits in `pipeline`'s open segment), starting each round's
  // writes without waiting. A round is completed — its writes waited for,
  // its entries published — only once the next round's writes have
  // started, so the device writes one round while this thread isolates the
  // next; with leave_last_in_flight the batch's last round stays in flight
  // for the next batch (a pass), else it is completed before returning.
  // FinishWriteback completes what is in flight and returns the open
  // segment; call it before `pipeline` goes away.
  WritebackOutcome WritebackBatch(size_t max_pages, internal::WritebackPipeline& pipeline,
                                  bool leave_last_in_flight);
  struct RoundResult {
    uint64_t published = 0;
    bool io_failed = false;
  };
  RoundResult FinishWriteback(internal::WritebackPipeline& pipeline);
  // MoreWritebackNeeded: pool memory is above the low watermark by more
  // than what `pipeline`'s round in flight will free.
  bool MoreWritebackNeeded(const internal::WritebackPipeline& pipeline) const;
  // RunWritebackHelper is a helper thread's share of a pass: batches with
  // its own pipeline while MoreWritebackNeeded (and the LRU is long enough
  // for several threads), reporting each to `worker`. Returns whether it
  // wrote anything back.
  bool RunWritebackHelper(WritebackWorker* worker);
  // CompleteRound waits for a round's writes and publishes its entries
  // (step 4 of writeback.cc's protocol), then releases the segment the
  // round retires, if any.
  RoundResult CompleteRound(internal::WritebackRound& round);
  // AcquireSegment checks out a segment to append to; for writeback
  // (not the cleaner) it cleans first when only the reserve is free.
  std::unique_ptr<internal::OpenSegment> AcquireSegment(bool for_cleaner);
  // FlushSegment writes the blocks appended to `open` since its last flush
  // (one WriteBlocks) and moves its extent to the next block boundary. An
  // error is recorded as the sticky backing error.
  absl::Status FlushSegment(internal::OpenSegment& open);
  // StartRequests submits, through `queue`, the requests of `open`'s bytes
  // from *started up to `end` — whole requests only, or with
  // `partial_last` the shorter last one too — while the queue has room,
  // and starts them without waiting; *started moves past them. A Submit
  // error goes to *start_error (then nothing more is started).
  void StartRequests(BlockWriteQueue& queue, const internal::OpenSegment& open, uint64_t end,
                     bool partial_last, uint64_t* started, absl::Status* start_error);
  // FinishFlush is FlushSegment for a flush whose writes up to `started`
  // are already in flight on `queue` (started == open.flushed: none): it
  // writes the rest and waits for all; start_error fails the flush.
  absl::Status FinishFlush(internal::OpenSegment& open, BlockWriteQueue& queue, uint64_t started,
                           absl::Status start_error);
  // CompleteWrites finishes a run of `segment`'s bytes [first, end) from
  // `buf` (indexed by segment offset) whose writes up to `started` are in
  // flight on `queue`: it writes the rest, waits for all, records the
  // latency, and then either extends the segment to `end` and counts the
  // bytes written, or records the error (start_error too) as the sticky
  // backing error and returns it. Shared by FinishFlush and CompleteRound.
  absl::Status CompleteWrites(BlockWriteQueue& queue, uint64_t segment, const uint8_t* buf,
                              uint64_t first, uint64_t started, uint64_t end,
                              absl::Status start_error);
  // NoteWritesInFlight: a queue holds `depth` writes now (stats' maximum).
  void NoteWritesInFlight(uint64_t depth);
  // WriteRun writes blocks first..first+count-1 from `src` through `queue`
  // as requests of write_request_bytes, up to its depth in flight, and
  // waits for all of them (completions in any order); the first error.
  absl::Status WriteRun(BlockWriteQueue& queue, uint64_t first, uint64_t count, const uint8_t* src);
  // TakeWriteQueue / ReturnWriteQueue: a pool of write queues, one per
  // thread flushing at a time (writeback, the cleaner, direct reclaim).
  // ReturnWriteQueue also counts the queue's registered writes.
  std::unique_ptr<BlockWriteQueue> TakeWriteQueue();
  void ReturnWriteQueue(std::unique_ptr<BlockWriteQueue> queue);
  // NewWriteQueue: a queue on the backing store that knows the segment
  // table's buffer arena (BlockWriteQueue::UseRegisteredBuffer).
  std::unique_ptr<BlockWriteQueue> NewWriteQueue();
  // CleanWhileLow runs the cleaner while free segments are few.
  void CleanWhileLow();
  // CleanWhileDead runs the cleaner (cost-benefit) while dead bytes are
  // above cleaner_max_dead, a bounded number of segments, stopping early
  // when `worker` has a pass asked for; returns whether it stopped with
  // dead bytes still over the target. The writeback thread's idle work.
  bool CleanWhileDead(WritebackWorker& worker);
  // MaybeKickCleaner asks the writeback thread for idle work when dead
  // bytes are over the target (at most one request outstanding). Call with
  // no lock held.
  void MaybeKickCleaner();
  // CleanOneSegment cleans the best victim under `policy` whose live bytes
  // are below threshold x segment size; returns whether it was freed.
  bool CleanOneSegment(double threshold, internal::VictimPolicy policy);
  // ReleaseDiskObject: an on-disk entry's bytes are no longer its.
  void ReleaseDiskObject(const internal::Entry& entry);
  void RecordBackingError(const absl::Status& status);
  bool AboveLowWatermark() const;
  uint64_t TenantQuotaLocked(const TenantState& t) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(tenants_mu_);
  // The cold tier (cold_recompressor.cc). StartColdTier validates the cold
  // options and starts the worker; RecompressOne runs the protocol for one
  // candidate and adds its outcome to *result.
  absl::Status StartColdTier();
  void RecompressOne(const internal::WritebackCandidate& c, internal::PageRecompressor& codec,
                     ColdPassResult* result);

  const PageStoreOptions options_;
  std::unique_ptr<alloc::ZsPool> pool_;
  BlockDevice* const backing_;
  std::unique_ptr<internal::SegmentTable> segments_;  // null without a backing store
  // read_cache_: windows read by loads (disk_read_cache.h); null without a
  // backing store or with disk_read_cache_bytes 0.
  std::unique_ptr<internal::DiskReadCache> read_cache_;
  // clean_below_free_: the cleaner runs while fewer segments are free.
  uint64_t clean_below_free_ = 0;
  std::unique_ptr<internal::KeyLockTable> key_locks_;
  std::unique_ptr<internal::PageIndex> index_;
  std::unique_ptr<internal::LruList> lru_;
  // helpers_: writeback_threads - 1 threads beside the worker's passes;
  // null with one. Destroyed after worker_ (a pass waits for them).
  std::unique_ptr<WritebackHelpers> helpers_;
  std::unique_ptr<WritebackWorker> worker_;

  std::atomic<uint64_t> next_gen_{1};
  std::atomic<uint32_t> next_writeback_ticket_{1};  // wraps; see Entry::writeback_ticket
  std::atomic<bool> draining_{false};
  // cleaner_kicked_: a MaybeKickCleaner request is outstanding.
  std::atomic<bool> cleaner_kicked_{false};
  // Watermarks in bytes of pool memory; 0 = no writeback by watermark.
  std::atomic<uint64_t> high_watermark_bytes_{0};
  std::atomic<uint64_t> low_watermark_bytes_{0};
  // The outcome that ended the most recent writeback pass, for a Store that
  // waited on it to name its reject reason.
  std::atomic<int> last_pass_outcome_{int(WritebackOutcome::kNothingToWrite)};

  // Lock order: see page_store.cc. tenants_mu_ and error_mu_ are leaves.
  mutable Mutex tenants_mu_;
  absl::flat_hash_map<uint32_t, TenantState> tenants_ ABSL_GUARDED_BY(tenants_mu_);
  uint64_t default_quota_pages_ ABSL_GUARDED_BY(tenants_mu_) = 0;

  Mutex write_queues_mu_;  // a leaf
  std::vector<std::unique_ptr<BlockWriteQueue>> idle_write_queues_
      ABSL_GUARDED_BY(write_queues_mu_);
  std::string write_engine_;  // set at construction, from the first queue

  mutable Mutex limits_mu_;  // a leaf
  PageStoreLimits limits_ ABSL_GUARDED_BY(limits_mu_);

  mutable Mutex error_mu_;
  absl::Status backing_error_ ABSL_GUARDED_BY(error_mu_);
  std::atomic<bool> backing_failed_{false};

  struct Counters {
    std::atomic<uint64_t> stored_pages{0}, same_filled_pages{0}, pages_on_disk{0};
    std::atomic<uint64_t> written_back_pages{0}, writeback_aborted{0}, second_chances{0};
    std::atomic<uint64_t> backing_reads{0}, backing_writes{0};
    std::atomic<uint64_t> disk_read_requests{0}, disk_reads_coalesced{0}, disk_reads_in_flight{0};
    std::atomic<uint64_t> read_cache_mismatches{0};
    std::atomic<uint64_t> promotions{0};
    std::atomic<uint64_t> backing_read_errors{0}, backing_write_errors{0};
    std::atomic<uint64_t> backing_bytes_written{0}, written_back_bytes{0};
    std::atomic<uint64_t> cleaner_moves{0}, cleaner_segments{0}, cleaner_space_segments{0};
    std::atomic<uint64_t> max_writes_in_flight{0}, registered_writes{0};
    std::atomic<uint64_t> stores{0}, loads{0}, load_misses{0}, invalidates{0}, stale_stores{0};
    std::array<std::atomic<uint64_t>, kRejectReasonCount> rejects{};
    LatencyHistogram writeback_latency;
    std::atomic<uint64_t> cold_passes{0}, cold_recompressed{0}, cold_bytes_saved{0};
    std::atomic<uint64_t> cold_kept{0}, cold_aborted{0}, cold_loads{0};
  };
  Counters counters_;
  // cold_worker_: null unless cold_after_seconds and start_cold_worker.
  std::unique_ptr<ColdPassWorker> cold_worker_;
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_PAGE_STORE_H_
