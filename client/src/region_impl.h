// region_impl.h: the private side of farswap::Region (region.h has the
// design essay). Split over three files: region.cc (setup, fault threads,
// stats), region_evict.cc (CLOCK and the eviction batch), region_prefetch.cc
// (stream detection and the prefetch thread).
//
// Lock order: read_mu_ → mu_; evict_mu_ → mu_. Fault threads take only mu_, briefly (never
// evict_mu_), so they never wait for a store in flight. Per-page state is
// lock-free (one atomic byte, changed by compare-and-swap only by the thread
// that owns the transition, see kFetching/kEvicting/kDropping/kWriting).
//
// Program events. The program may MADV_DONTNEED/MADV_REMOVE (UFFD_EVENT_REMOVE)
// or munmap (UFFD_EVENT_UNMAP) part of the region; a fault thread reads the
// event (the kernel holds the caller until then, and fails every UFFDIO_COPY,
// ZEROPAGE and WRITEPROTECT with EAGAIN meanwhile). Each page of the range is
// then forgotten — its remote copy invalidated, its state kEmpty (REMOVE) or
// kUnmapped (UNMAP) — by whoever holds it last:
//   1. the event handler sets kFlagForgetRemoved / kFlagForgetUnmapped, then
//      reads the state; a page in a stable state (kEmpty, kRemote, kClean,
//      kDirty, not kFlagInBatch) it forgets itself (TryForget: CAS to
//      kForgetting, so no load, store or install runs meanwhile);
//   2. a page in a transient state has an owner, who publishes its stable
//      state first and reads the flags after (Publish); one of the two sees
//      the other (all these atomics are sequentially consistent), and the
//      CAS to kForgetting makes the forgetting happen once.
// A REMOVE zaps the pages only after the event was read, and the caller
// runs on from the read, before the event is handled; so a resident page is
// forgotten as kDirty with no remote copy (never zapped by the region: the
// program may have written it again). The MISSING fault that follows the
// zap finds a resident state on a missing page, takes the page (kWriting:
// the state it read may be stale, the page dropped by an evictor since) and
// installs zeros (RecoverZapped); an eviction whose snapshot may predate the zap keeps the
// page (commit): one claimed before the event was handled has the forget
// applied after its commit (kFlagInBatch; no other batch claims a page with
// a forget still to run, ClaimVictim, or that forget would fall on what the
// page holds then), one claimed after it sees
// kFlagZapPending until the page is seen missing. A load in flight is not installed if the page was
// forgotten meanwhile (checked and copied under read_mu_, which the reader
// holds from reading an event to marking its pages: CheckAndInstall).
// The evictor drops pages by moving them out (UFFDIO_MOVE into a
// PageDropArea, which raises no event); a page that cannot be moved (an
// older kernel, an unmapped or shared page) is dropped by MADV_DONTNEED,
// which raises REMOVE events too: DropPages lists
// its pages in own_remove_pages_ and the handler skips each page of an event
// that is listed, consuming its entry (by page, not by range or event: a
// MADV_DONTNEED over a run the program has partly unmapped meanwhile fails
// ENOMEM but still zaps, and raises events for, the parts still mapped; and
// a program's drop of one page of the run names that page too, so only the
// page, never the whole event, may pass for the evictor's). No fault thread
// ever waits for kDropping or kForgetting (the evictor's madvise waits for
// a fault thread to read its event): such faults are deferred (retry_).
#ifndef FARSWAP_CLIENT_REGION_IMPL_H_
#define FARSWAP_CLIENT_REGION_IMPL_H_

#include <linux/userfaultfd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"
#include "farswap/common/mutex.h"
#include "page_drop_area.h"

namespace farswap {

// Page states (region.h). kWriting: a WP fault handler is un-protecting the
// page; it becomes kDirty when the ioctl returns (so the evictor can never
// write-protect it again before the un-protect lands).
enum PageState : uint8_t {
  kEmpty = 0,
  kRemote,
  kClean,
  kDirty,
  kEvicting,
  kDropping,
  kFetching,
  kWriting,
  // kForgetting: TryForget is dropping the page's remote copy (program
  // events above); it ends kEmpty, kDirty or kUnmapped.
  kForgetting,
  // kUnmapped: the program unmapped the page; terminal, never touched again.
  kUnmapped,
};

// Per-page flag bits.
inline constexpr uint8_t kFlagPrefetched = 1;  // installed by prefetch, not yet used
inline constexpr uint8_t kFlagHasRemote = 2;   // the backend holds some copy
// kFlagInBatch: an eviction batch owns the page from claiming it as a dirty
// victim until its commit is over, even when a write cancelled the drop in
// between. No other batch may claim the page meanwhile: its store of a
// newer snapshot could land before the first batch's older one (which
// would then overwrite it), and the first batch's commit could drop the
// page while the second's store is still in flight.
inline constexpr uint8_t kFlagInBatch = 4;
// kFlagRemoteHash: remote_hash_[page] is the xxh3-64 of the copy the
// backend holds (set when the page is loaded or stored). A page installed
// writable is evicted like a dirty one, but a snapshot whose hash matches
// is not sent again: it is what the backend has.
inline constexpr uint8_t kFlagRemoteHash = 8;
// kFlagForgetRemoved / kFlagForgetUnmapped: a program event covered the page
// and it is still to be forgotten (region_impl.h, program events).
inline constexpr uint8_t kFlagForgetRemoved = 16;
inline constexpr uint8_t kFlagForgetUnmapped = 32;
// kFlagZeroedAfterZap: RecoverZapped installed zeros since the page was
// claimed for eviction; that batch's snapshot may predate the zap.
inline constexpr uint8_t kFlagZeroedAfterZap = 64;
// kFlagZapPending: a REMOVE forgot the page while it was resident, and the
// program's zap (which the kernel runs after the event is read, on the
// program's thread) may not have happened yet: until it has, the page may
// still hold the contents the program threw away, so an eviction snapshot
// is not the page's contents and is never committed. Cleared once the page
// is seen missing (the zap has run, or had nothing to remove); after that
// only zeros (RecoverZapped) or the program's new writes can appear there.
inline constexpr uint8_t kFlagZapPending = 128;

// ZeroPage: 4 KiB of zeros, the source of zero-filling UFFDIO_COPYs.
const uint8_t* ZeroPage();

// Ages: the CLOCK hand lowers a resident page's age by one per pass and
// evicts it at 0; kMaxAge passes is how long a refaulted (hot) page is
// protected. Small so that a sweep terminates within kMaxAge+1 laps.
inline constexpr uint8_t kAgeFault = 1, kAgeWrite = 2, kMaxAge = 3;

// RegionImpl: everything behind a Region. Thread-safe (see region.h); the
// fields below say which lock guards them, and atomics are lock-free.
class RegionImpl {
 public:
  friend class RegionTestPeer;  // tests/client/region_internals_test.cc

  RegionImpl(PageBackend* backend, const RegionOptions& options, uint8_t* base, uint64_t pages,
             int uffd, int wake_fd);
  ~RegionImpl();

  void Start();
  uint8_t* base() const { return base_; }
  uint64_t pages() const { return pages_; }
  absl::Status Advise(uint64_t first, uint64_t count, Advice advice);
  RegionStats Stats() const;

 private:
  // ParkedFault: a fault message held for later (over budget, or deferred
  // because its page is in flight or an ioctl must be retried).
  struct ParkedFault {
    uint64_t page;
    bool write;
    uint32_t tid;
    std::chrono::steady_clock::time_point start;
    bool wp = false;                 // a write-protect fault (else MISSING)
    int install_failures = 0;        // failed installs so far (not counting EAGAIN)
    bool unprotect_pending = false;  // wp: the page is held kWriting, un-protect it
  };
  struct Stream {
    int64_t last = -1;
    int64_t stride = 0;  // 0: not yet known
    bool confirmed = false;
    uint32_t window = 0;
    int64_t next = 0;   // first page along the stride not yet queued
    uint64_t used = 0;  // for replacement (LRU)
  };

  // --- region.cc: fault threads ---
  void FaultThread();
  void HandleMessage(const uffd_msg& msg, std::vector<uint8_t>& buf);
  // HandleMissing serves one MISSING fault; false if it had to be parked
  // for room (deferred faults return true: they are in retry_).
  bool HandleMissing(ParkedFault f, std::vector<uint8_t>& buf, bool may_park);
  // InstallFailed undoes a claim whose install failed with `err` (the page
  // is back to `prior`) and retries the fault later or sends SIGBUS.
  void InstallFailed(ParkedFault f, uint8_t prior, int err, const char* what);
  // RecoverZapped installs zeros, write-protected, in a page the program
  // zapped while its state says resident (region_events.cc). The caller
  // holds the page (kWriting) and publishes it after.
  void RecoverZapped(const ParkedFault& f);
  void HandleWriteProtect(const ParkedFault& f);
  void DrainParked(std::vector<uint8_t>& buf);
  // Defer queues a fault to be served again once the fault threads have
  // read every pending message (events first).
  void Defer(const ParkedFault& f);
  void DrainRetries(std::vector<uint8_t>& buf);
  // HandleRangeEvent forgets [start, end) after a REMOVE or UNMAP event
  // (`flag` is kFlagForgetRemoved or kFlagForgetUnmapped).
  void HandleRangeEvent(uint64_t start, uint64_t end, uint8_t flag);
  // Publish sets a page's stable state at the end of a transition and
  // forgets the page if a program event covered it meanwhile.
  void Publish(uint64_t page, uint8_t state);
  void TryForget(uint64_t page);
  bool PagePresent(uint64_t page) const;
  // Ioctl issues a userfaultfd ioctl for `page` (or the fault injected by
  // options_.ioctl_error_for_testing); returns 0 or the errno.
  int Ioctl(RegionIoctl op, uint64_t page, unsigned long request, void* arg);
  absl::StatusOr<size_t> LoadWithRetry(uint64_t page, uint8_t* out);
  void RecordLatency(std::chrono::steady_clock::time_point start);
  void RecordError(const std::string& what);
  // TryReserve adds one resident page if that keeps residency <= limit.
  bool TryReserve(uint64_t limit);
  void Unreserve() { resident_.fetch_sub(1); }
  void NoteResidentGrew();
  void Wake(uint64_t page);
  int Unprotect(uint64_t page);  // 0 or errno
  // UnprotectRetrying: for threads that are not fault threads; retries
  // while an event is pending (EAGAIN).
  int UnprotectRetrying(uint64_t page);
  // ProtectRetrying write-protects a resident page, as UnprotectRetrying.
  int ProtectRetrying(uint64_t page);
  uint8_t* Addr(uint64_t page) const { return base_ + page * 4096; }

  // --- region_evict.cc ---
  // EvictorThread: background eviction, RegionOptions::evict_nice nicer
  // than the creating thread. UrgentEvictorThread: at the creating thread's
  // priority, evicts only while faults are parked (woken by urgent_cv_).
  void EvictorThread();
  void UrgentEvictorThread();
  // EvictDownToMark evicts batch after batch until residency is a batch
  // under the budget (or nothing can be evicted and no fault waits), waking
  // parked faults after each; `stuck_batches` is the caller's count of
  // empty batches with faults parked (overcommit_); `evicted_count`, if
  // given, adds the pages evicted.
  void EvictDownToMark(const char* sync_point, std::vector<uint8_t>& snapshot, int& stuck_batches,
                       std::atomic<uint64_t>* evicted_count) ABSL_LOCKS_EXCLUDED(mu_);
  // EvictBatch evicts up to evict_batch_ pages (CLOCK victims, or the pages
  // of `targets` when given); returns how many left local memory.
  // `snapshot` is the calling thread's buffer for the batch's copies.
  size_t EvictBatch(const std::vector<uint64_t>* targets, std::vector<uint8_t>& snapshot)
      ABSL_LOCKS_EXCLUDED(evict_mu_);
  bool ClaimVictim(uint64_t page, bool ignore_age, std::vector<uint64_t>& clean,
                   std::vector<uint64_t>& dirty);
  // EvictProtected evicts claimed dirty victims (kEvicting, sorted) the
  // write-protected way: protect, snapshot, store, commit, drop. Returns
  // how many left local memory.
  size_t EvictProtected(std::vector<uint64_t>& dirty, std::vector<uint8_t>& snapshot);
  // EvictByMove evicts claimed dirty victims (kEvicting, sorted) without
  // write-protecting them: snapshot, store, commit, then move out and
  // compare (MoveOutChecked). The pages it could not move are left in
  // `unmoved`, kEvicting and still in the batch, for EvictProtected.
  // Returns how many left local memory. Needs drop_area_.
  size_t EvictByMove(std::vector<uint64_t>& dirty, std::vector<uint8_t>& snapshot,
                     std::vector<uint64_t>& unmoved);
  // SnapshotPages copies `pages` out of the region into `snapshot` (4 KiB
  // each, in order); readable[i] is false where page i could not be read
  // (the program unmapped it).
  void SnapshotPages(std::span<const uint64_t> pages, std::vector<uint8_t>& snapshot,
                     std::vector<bool>& readable);
  // StoreSnapshots stores the readable snapshots (one StoreBatch); true at
  // i when the backend holds snapshot i, or needs nothing (a never-stored
  // zero page, a copy the backend already has).
  std::vector<bool> StoreSnapshots(std::span<const uint64_t> pages,
                                   const std::vector<uint8_t>& snapshot,
                                   const std::vector<bool>& readable);
  // RuleOutZappedSnapshots clears stored[i] where the snapshot may predate
  // a zap of the program's (kFlagZapPending, kFlagZeroedAfterZap, or the
  // page missing now): such a page is kept. Returns kFlagZapPending per
  // page. `pages` sorted.
  std::vector<bool> RuleOutZappedSnapshots(std::span<const uint64_t> pages,
                                           std::vector<bool>& stored);
  // CommitStored decides each claimed page (kEvicting) after its store:
  // one not stored, or whose snapshot may predate a zap, is kept (kDirty;
  // un-protected if `write_protected`, a zap-pending one left or made
  // write-protected); a stored one is committed (kDropping) unless a write
  // fault got to it first (cancelled). Returns the indexes committed.
  std::vector<size_t> CommitStored(std::span<const uint64_t> pages, std::vector<bool>& stored,
                                   bool write_protected);
  // MoveOutChecked moves committed pages (kDropping, sorted; snaps[i] the
  // copy stored for pages[i]) out of the region into a drop-area slot and
  // compares each with its copy: equal ones are `gone`; changed ones are
  // put back (PutBack) and listed in `put_back`, or `gone` if the program
  // dropped them meanwhile; those the move could not take (no free slot, an
  // error) are `unmoved`, still mapped. Takes read_mu_ per chunk of pages.
  void MoveOutChecked(std::span<const uint64_t> pages, std::span<const uint8_t* const> snaps,
                      std::vector<uint64_t>& gone, std::vector<uint64_t>& put_back,
                      std::vector<uint64_t>& unmoved) ABSL_LOCKS_EXCLUDED(read_mu_, mu_);
  // PutBack maps `moved` (the page as moved out, in a slot) at `page` again;
  // false (not put back) if the program dropped or unmapped the page since,
  // or if the page could not be mapped and its moved contents were stored
  // instead. Takes read_mu_.
  bool PutBack(uint64_t page, const uint8_t* moved) ABSL_LOCKS_EXCLUDED(read_mu_, mu_);
  // DropPages releases pages the evictor committed to drop (kDropping):
  // moved out (MoveOut), the rest by MADV_DONTNEED by runs of consecutive
  // pages (MadviseOwn), then FinishDrops.
  void DropPages(std::vector<uint64_t>& pages);
  // FinishDrops: the bookkeeping of pages that left the region (kDropping):
  // counters, their state (kRemote or kEmpty), out of their batch.
  void FinishDrops(std::span<const uint64_t> pages);
  // MoveOut moves sorted pages out of the region into a slot of the drop
  // area (no event) and frees them; returns the pages it did not move
  // (no drop area or free slot, the move failed, or the program unmapped
  // them). Takes read_mu_ per run of pages; called with no lock held.
  std::vector<uint64_t> MoveOut(const std::vector<uint64_t>& sorted_pages)
      ABSL_LOCKS_EXCLUDED(read_mu_, mu_);
  // MadviseOwn: MADV_DONTNEED of sorted pages by runs, each run's pages
  // listed in own_remove_pages_ while its REMOVE events are in flight.
  // Pages an ENOMEM left mapped are dropped again (see region_evict.cc).
  // Takes read_mu_ briefly, to decide which pages to drop again (never
  // across a madvise, whose REMOVE event a fault thread must read); called
  // with no lock held.
  void MadviseOwn(const std::vector<uint64_t>& sorted_pages) ABSL_LOCKS_EXCLUDED(read_mu_, mu_);
  // MadviseRuns is one pass of MadviseOwn; returns the pages of runs that
  // failed with ENOMEM.
  std::vector<uint64_t> MadviseRuns(const std::vector<uint64_t>& sorted_pages)
      ABSL_LOCKS_EXCLUDED(mu_);
  // EndBatch takes a page out of its eviction batch (kFlagInBatch) and
  // forgets it if a program event covered it meanwhile.
  void EndBatch(uint64_t page);

  // --- region_prefetch.cc ---
  void PrefetchThread();
  void OnMissingFault(uint64_t page);
  void QueuePrefetch(int64_t from, int64_t stride, uint32_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PrefetchMany installs the pages that are not resident, loading the
  // remote ones in one batch into `bufs` (pages.size() x 4 KiB). Returns how
  // many pages (a prefix) it dealt with; it stops at the first for which
  // there was no room.
  size_t PrefetchMany(std::span<const uint64_t> pages, uint8_t* bufs);
  void PublishPrefetched(uint64_t page, uint8_t new_state);
  // InstallZeros maps a private zeroed page at `page` (UFFDIO_COPY, which
  // wakes its faulter); returns 0 or the errno. Never the shared zero page:
  // region.cc says why.
  int InstallZeros(uint64_t page);
  // InstallLoaded maps a page loaded from the backend (`data`): writable
  // with its hash kept (options_.install_writable), or write-protected and
  // kClean. Sets *state to the state to publish; returns 0 or the errno
  // (EEXIST counts as installed).
  int InstallLoaded(uint64_t page, const uint8_t* data, uint8_t* state);
  // CheckAndInstall: true (nothing installed) when the program dropped the
  // page (REMOVE/UNMAP) while it loaded; else InstallLoaded's error in *err.
  // Takes read_mu_ (see region_events.cc).
  bool CheckAndInstall(uint64_t page, const uint8_t* data, uint8_t* state, int* err)
      ABSL_LOCKS_EXCLUDED(read_mu_);
  void RequeuePrefetch(uint64_t page) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PopPrefetch takes the next page to prefetch; false if none.
  bool PopPrefetch(uint64_t* page) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  PageBackend* const backend_;
  const RegionOptions options_;
  uint8_t* const base_;
  const uint64_t pages_;
  const int uffd_;
  const int wake_fd_;  // eventfd: stop, or parked faults may proceed
  const uint64_t budget_pages_;
  const uint32_t evict_batch_;

  // Per-page metadata, indexed by page number.
  std::unique_ptr<std::atomic<uint8_t>[]> state_;
  std::unique_ptr<std::atomic<uint8_t>[]> age_;
  std::unique_ptr<std::atomic<uint8_t>[]> flags_;
  std::unique_ptr<std::atomic<uint64_t>[]> evicted_at_;   // eviction clock stamp, 0 = never
  std::unique_ptr<std::atomic<uint64_t>[]> remote_hash_;  // see kFlagRemoteHash

  std::atomic<uint64_t> resident_{0};
  std::atomic<uint64_t> max_resident_{0};
  std::atomic<uint64_t> eviction_clock_{0};
  std::atomic<bool> stop_{false};        // evictor and prefetch threads
  std::atomic<bool> fault_stop_{false};  // fault threads (stopped last)
  std::atomic<bool> overcommit_{false};  // evictor stuck: let parked faults in
  // evict_asked_: evict_wanted_ was set and the evictor has not taken it up
  // yet; lets NoteResidentGrew skip mu_ (a hint, read relaxed).
  std::atomic<bool> evict_asked_{false};
  // parked_now_: faults in parked_faults_ (read without mu_ by DropPages).
  std::atomic<uint64_t> parked_now_{0};
  std::atomic<uint64_t> retry_now_{0};  // faults in retry_

  // Counters (relaxed; read by Stats()).
  std::atomic<uint64_t> missing_faults_{0}, zero_fills_{0}, wp_faults_{0};
  std::atomic<uint64_t> evictions_{0}, clean_evictions_{0}, evictions_cancelled_{0},
      unchanged_evictions_{0};
  std::atomic<uint64_t> pages_stored_{0}, pages_loaded_{0}, bytes_sent_{0}, bytes_received_{0};
  std::atomic<uint64_t> prefetch_issued_{0}, prefetch_hits_{0}, prefetch_waste_{0};
  std::atomic<uint64_t> load_retries_{0}, sigbus_{0}, store_errors_{0}, parked_{0};
  std::atomic<uint64_t> install_retries_{0}, pages_removed_{0}, pages_unmapped_{0};
  std::atomic<uint64_t> zap_kept_{0};  // RegionStats::evictions_kept_zap_pending
  std::atomic<uint64_t> moved_evictions_{0};
  std::atomic<uint64_t> urgent_evictions_{0};
  std::atomic<uint64_t> remote_faults_{0}, remote_fault_ns_{0}, remote_load_ns_{0},
      remote_install_ns_{0};
  std::array<std::atomic<uint64_t>, kFaultLatencyBuckets> latency_{};

  // Held by a fault thread across read() and the handling of the events it
  // read (region.cc, FaultThread); never across a fault or a store.
  Mutex read_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  // Guards the CLOCK hand while a batch claims its victims (held for the
  // scan only, never across a store).
  Mutex evict_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  uint64_t hand_ ABSL_GUARDED_BY(evict_mu_) = 0;

  mutable Mutex mu_;
  CondVar evictor_cv_;   // resident_ passed the low watermark, or stop_
  CondVar prefetch_cv_;  // prefetch_queue_ non-empty, or stop_
  CondVar room_cv_;      // the evictor finished a batch
  CondVar urgent_cv_;    // a fault was parked, or stop_
  bool evict_wanted_ ABSL_GUARDED_BY(mu_) = false;
  // evict_helpers_wanted_: evictor threads still to join the current round.
  int evict_helpers_wanted_ ABSL_GUARDED_BY(mu_) = 0;
  int evict_threads_ = 1;  // set by Start, before any thread runs
  std::deque<ParkedFault> parked_faults_ ABSL_GUARDED_BY(mu_);
  std::deque<ParkedFault> retry_ ABSL_GUARDED_BY(mu_);
  // own_remove_pages_: page -> how many of the evictor's MADV_DONTNEED
  // calls covering it have a REMOVE event not yet handled; a page of an
  // event that is here is taken as the evictor's (its entry consumed), the
  // others as the program's (region_events.cc). After an
  // ENOMEM (part of the run unmapped meanwhile) the unmapped pages' entries
  // stay: no event can name them again (they are never registered again).
  absl::flat_hash_map<uint64_t, uint32_t> own_remove_pages_ ABSL_GUARDED_BY(mu_);

  // Prefetch requests, served in order (oldest dropped when full).
  struct PrefetchRange {
    int64_t from;
    int64_t stride;
    uint32_t count;
  };
  std::deque<PrefetchRange> prefetch_queue_ ABSL_GUARDED_BY(mu_);
  std::vector<Stream> streams_ ABSL_GUARDED_BY(mu_);
  uint64_t stream_tick_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);

  // drop_area_: where evicted pages are moved out to (MoveOut); null when
  // options_.drop_by_move is off or the kernel has no UFFDIO_MOVE. Set by
  // Start; outlives the threads that use it (destroyed after they join).
  std::unique_ptr<PageDropArea> drop_area_;

  std::vector<std::thread> threads_;        // evictor and prefetch threads
  std::vector<std::thread> fault_threads_;  // joined after threads_
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_REGION_IMPL_H_
