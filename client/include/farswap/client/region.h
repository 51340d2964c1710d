// region.h: far memory a program uses with ordinary loads and stores.
//
//   MemoryPageBackend backend;                       // or the networked Client
//   absl::StatusOr<std::unique_ptr<Region>> r =
//       Region::Create(&backend, 1 << 30, {.local_budget = 256 << 20});
//   uint64_t* a = reinterpret_cast<uint64_t*>((*r)->data());
//   a[12345] = 7;                                     // may fault, fetch, evict
//   RegionStats s = (*r)->stats();
//
// Design
// ------
// A Region is an anonymous private mapping registered with one userfaultfd
// for MISSING and write-protect (WP) faults. Its unit is the 4 KiB page; a
// page's number is its index in the region, and that is its key in the
// PageBackend. Each page is in one of these states (one atomic byte each):
//
//   kEmpty    never stored remotely, not resident: a fault installs zeros
//             locally (a private zeroed page copied in, for a read as for a
//             write; never the shared zero page) without a backend round trip.
//   kRemote   not resident; the backend holds the current contents.
//   kClean    resident and write-protected; the backend copy is current.
//   kDirty    resident and writable; the backend copy is stale or missing.
//   kEvicting resident, snapshot in flight (write-protected by the evictor
//             unless it will be checked after its move, see below).
//   kDropping the evictor has committed to drop it (move or MADV_DONTNEED
//             pending).
//   kFetching a fault handler or the prefetcher is installing it.
//
// Faults. Dedicated fault threads read the userfaultfd (several, so faults
// of different program threads are served in parallel). A MISSING fault on
// a kRemote page loads it (bounded retries) and installs it. By default
// (install_writable) it is mapped writable as kDirty, with the xxh3 of the
// loaded bytes kept: the first write costs nothing, and eviction snapshots
// it like any dirty page but does not send a snapshot whose hash matches
// the backend's copy. Otherwise it is mapped with UFFDIO_COPY_MODE_WP as
// kClean, so the first write after a load is seen as a WP fault (the page
// turns kDirty and is un-protected) and a clean page is dropped without a
// snapshot. Measured side by side, writable is faster (client/README.md).
// The fault threads never wait for eviction: when residency is more than one
// eviction batch over the budget, MISSING faults are parked (the faulting
// thread stays blocked in the kernel) and served as soon as an evictor has
// made room (the park wakes the urgent evictor, which runs at the program's
// priority where the others run nicer: see evict_nice), while WP faults — which an eviction in
// flight may be waiting to see — are always served at once. A thread spins on the (non-blocking) fd
// for `spin_us` after each message before it blocks in poll(): waking a
// blocked thread on the other vCPU costs 70–90 µs here, a spinning one ~25.
//
// Eviction and the stable snapshot. Evictor threads keep residency at or
// under the budget, each taking `evict_batch` victims at a time (claimed
// under a short lock on the CLOCK hand, then written out in parallel; a
// batch's stores leave together, one BATCH frame per node). A kClean victim
// is dropped with no transfer (its remote copy is current: a "clean
// eviction"). A kDirty victim is write-protected (kEvicting), copied out of
// the region (one process_vm_readv for the batch), stored from that copy,
// and then dropped only if its state is still kEvicting; a write in the
// window hits the WP fault, whose handler turns the page kDirty and
// un-protects it, cancelling the drop. A write that arrives after the drop
// was committed (kDropping) stays blocked until the page is gone and then
// faults the page back from the backend, which holds exactly what the
// program last saw. So the remote copy is never newer or older than memory.
// Where pages leave by move (below), the write-protect is left out by
// default (write_protect_evictions): each write-protect of a mapped page
// costs a TLB shootdown, an IPI to every CPU the program runs on. The
// victim stays writable while the copy of it is stored; after the store the
// drop is committed (kDropping: an access now waits), the page is moved out
// of the region, and what was moved is compared with the stored copy. The
// move carries the physical page, so every write the program made before
// it is in what is compared. A page equal to its stored copy is dropped; one
// that changed is put back where it was, writable and dirty (the drop is
// cancelled, as a write-protect fault would have), unless the program
// dropped or unmapped it meanwhile. A page that cannot be moved is
// write-protected and evicted the older way.
//
// Hotness. This kernel has no accessed-bit interface (no page_idle, no
// soft-dirty, no DAMON), so a CLOCK sweeps the page array with a small age
// per resident page fed by what the region does see:
//   - a MISSING fault sets age 1; a WP fault (a write) raises it to 2;
//   - refault distance, as Linux's workingset: each eviction stamps the page
//     with the eviction counter; a page that faults back within `budget`
//     evictions of leaving would have stayed with a little more memory, so
//     it is hot and enters with age 3;
//   - the hand lowers ages it passes and evicts at age 0. Dropping a clean
//     page is free, so this doubles as sampling: cold clean pages are
//     dropped and their refaults (or silence) classify them.
//
// Prefetch. The fault threads feed MISSING faults to a stream detector (a few
// streams, each with a stride). A stream seen twice with the same stride
// has its next `window` pages (growing to `max_prefetch_window`) fetched
// asynchronously by the prefetch thread and installed kClean. A prefetched
// page counts as a hit when its stream later faults past it (it was used
// without a fault) or when a fault lands on it while in flight; one evicted
// before either counts as waste.
//
// Errors. A load that fails with UNAVAILABLE, DATA_LOSS, DEADLINE_EXCEEDED
// or ABORTED is retried `load_attempts` times with a short backoff. If it
// still fails the faulting thread gets SIGBUS (tgkill to the thread id in
// the fault message), as the kernel does for an unreadable swap page; the
// page stays kRemote, so a handler that returns retries the load. Each
// such failure is counted and the last error is kept (stats()).
//
// A page whose install fails (UFFDIO_COPY of its contents or of zeros) is not
// counted resident: the fault is retried (EAGAIN, which the kernel returns
// while a REMOVE or UNMAP event is pending, for up to 5 s; other errors up
// to `load_attempts` installs in all), then its thread gets SIGBUS.
//
// What the program may do to the mapping:
//   - MADV_DONTNEED / MADV_REMOVE of region pages: as for anonymous memory,
//     the pages read as zeros next (resident or evicted), their remote
//     copies are invalidated, and they are stored again when written and
//     evicted (stats: pages_removed). A page resident when the REMOVE is
//     read is not evicted until its zap has surely run (seen missing, or
//     written again): the kernel zaps on the program's thread after the
//     event is read, and a snapshot taken before that would store contents
//     the program threw away (stats: evictions_kept_zap_pending).
//   - munmap of part of the region: those pages are forgotten (remote copies
//     invalidated, stats: pages_unmapped) and never touched by the region
//     again, even if something else is mapped there later; an access is the
//     program's own SIGSEGV. The rest of the region works as before.
//     Unmapping, a limit the kernel sets: an eviction whose MADV_DONTNEED
//     covers the unmapped pages may be in flight when munmap returns (Linux
//     drops mmap_lock while the drop's REMOVE event is read, and looks the
//     range up again after). A mapping the program makes at those addresses
//     before that drop ends may be zapped by it (reads zeros). Map something
//     else into a hole of a live region only after its evictions settle
//     (resident_pages at most one evict_batch under the budget), or not at
//     all. Pages past the hole are dropped again if that drop stopped short.
//   - fork: the child does not inherit the region (MADV_DONTFORK): an access
//     there is SIGSEGV, never a silent zero page. Share far memory with a
//     child through the backend, not the mapping.
//   - mremap of region pages is not supported.
// The region's own evictions do not use MADV_DONTNEED where they can help
// it: its REMOVE event would make each drop wait for a fault thread to read
// it. Evicted pages are moved out (UFFDIO_MOVE, Linux 6.8) into a private
// area registered with a second userfaultfd that reports no events, and
// freed from there, one MADV_DONTNEED per batch (drop_by_move). A page that
// cannot be moved is dropped by MADV_DONTNEED, as on older kernels.
//
// Thread-safety: Region is thread-safe; any number of threads may access
// its memory and call its methods. Destroying it while other threads still
// touch its memory is undefined, as for munmap.
#ifndef FARSWAP_CLIENT_REGION_H_
#define FARSWAP_CLIENT_REGION_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "farswap/client/page_backend.h"

namespace farswap {

// RegionIoctl names the userfaultfd calls that map or protect a page, for
// RegionOptions::ioctl_error_for_testing. kZeroPage is a zero-fill of a
// never-written page (a UFFDIO_COPY of zeros), kCopy any other UFFDIO_COPY.
enum class RegionIoctl { kCopy, kZeroPage, kWriteProtect, kUnprotect };

struct RegionOptions {
  // Bytes of the region that may be resident locally (rounded down to whole
  // pages; at least 2 * evict_batch pages).
  uint64_t local_budget = 64 << 20;
  // Pages evicted per batch; residency may exceed the budget by at most this.
  uint32_t evict_batch = 32;
  // Threads reading the userfaultfd: faults of different program threads
  // are served in parallel, one per fault thread. 0: one per four CPUs,
  // 1..4 (one on a small machine, where a second spinning reader would
  // take the core the program needs).
  int fault_threads = 0;
  // Evictor threads: each claims a batch of victims and stores it on its
  // own, so batches overlap (compression, round trips). 0: as fault_threads.
  int evict_threads = 0;
  // evict_nice: the evictor threads run this much nicer than the thread that
  // created the region (setpriority, capped at 19; 0: as that thread).
  // Eviction ahead of the budget is background work: at the program's own
  // priority it keeps a CPU for a whole scheduler slice while a faulting
  // thread or a memory node's I/O thread waits to run on it. When a fault is
  // parked for room, eviction is no longer background: one more evictor
  // thread ("fs-evict-urgent"), at the creating thread's priority, evicts
  // for as long as faults stay parked, so a region on a CPU-bound machine
  // is never left waiting for a starved background thread.
  int evict_nice = 19;
  // After each fault message a fault thread polls for this long before
  // blocking (0: always block).
  uint32_t spin_us = 50;
  // Prefetch: off, or initial and maximum window in pages.
  bool prefetch = true;
  uint32_t prefetch_window = 8;
  uint32_t max_prefetch_window = 64;
  // Loads tried per fault before SIGBUS.
  int load_attempts = 3;
  // install_writable: a page loaded from the backend is mapped writable and
  // the xxh3 of its contents kept; eviction snapshots it like a dirty page
  // and skips the store when the hash still matches (the backend already
  // has it). false: it is mapped write-protected, and its first write costs
  // a write-protect fault (then a clean page is dropped with no snapshot).
  bool install_writable = true;
  // drop_by_move: evicted pages leave the region by UFFDIO_MOVE (no
  // userfaultfd event; see above). Ignored on kernels before 6.8, which have
  // no UFFDIO_MOVE. false: one MADV_DONTNEED per run of evicted pages, each
  // of which waits for a fault thread to read its REMOVE event.
  bool drop_by_move = true;
  // write_protect_evictions: write-protect each dirty victim before its
  // snapshot, so that a write during the store is seen by a write-protect
  // fault (above). false (the default): where pages leave by move, a victim
  // stays writable while its snapshot is stored, is moved out, and is
  // compared with the snapshot there; one that changed meanwhile is put
  // back (one TLB shootdown per run of pages instead of two; see "Eviction
  // and the stable snapshot"). Without a drop area (drop_by_move off, a
  // kernel before 6.8) and for a page that cannot be moved, the region
  // write-protects whatever this says.
  bool write_protect_evictions = false;
  // Test only (fault injection): called before each UFFDIO_COPY and
  // UFFDIO_WRITEPROTECT the region issues (RegionIoctl says which), with the
  // first page it covers; a nonzero return is taken as that call's errno and
  // the call is not made. Called from the region's threads concurrently.
  std::function<int(RegionIoctl op, uint64_t page)> ioctl_error_for_testing;
  // Test only (fault injection): given the bytes each UFFDIO_MOVE of an
  // eviction reported moved, returns the report the region is to see; a
  // smaller one comes with EAGAIN, as if the kernel had miscounted (see
  // unreported_moves). Called from the region's threads concurrently.
  std::function<int64_t(int64_t reported)> move_report_for_testing;
};

// Fault latency buckets: bucket i counts faults served in [2^i, 2^(i+1)) µs
// (bucket 0 also holds < 1 µs); measured from reading the fault message to
// the resolving ioctl, so it excludes the kernel's wake-up of the faulter.
inline constexpr int kFaultLatencyBuckets = 24;

struct RegionStats {
  uint64_t missing_faults = 0;       // MISSING faults served (incl. zero-fill)
  uint64_t zero_fills = 0;           // of which: never-written pages, no transfer
  uint64_t wp_faults = 0;            // write-protect faults
  uint64_t evictions = 0;            // pages dropped from local memory
  uint64_t clean_evictions = 0;      // of which: dropped with no transfer
  uint64_t evictions_cancelled = 0;  // a write during the snapshot kept the page
  uint64_t unchanged_evictions = 0;  // of which: snapshot matched the backend's copy, not sent
  uint64_t pages_stored = 0, pages_loaded = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;  // as the backend reports (encoded)
  uint64_t prefetch_issued = 0, prefetch_hits = 0, prefetch_waste = 0;
  uint64_t load_retries = 0;
  uint64_t sigbus_delivered = 0;  // faults answered with SIGBUS
  uint64_t store_errors = 0;      // failed stores (the page stays resident)
  uint64_t parked_faults = 0;     // MISSING faults held while over budget
  uint64_t install_retries = 0;   // faults retried because an install or un-protect failed
  uint64_t pages_removed = 0;     // pages emptied by the program's MADV_DONTNEED/MADV_REMOVE
  // evictions_kept_zap_pending: evictions not committed because the page's
  // MADV_DONTNEED zap may still have been to come (see above).
  uint64_t evictions_kept_zap_pending = 0;
  uint64_t pages_unmapped = 0;  // pages the program unmapped
  // moved_evictions: evictions (of `evictions`) that left by UFFDIO_MOVE,
  // raising no event; 0 with drop_by_move off or before Linux 6.8.
  uint64_t moved_evictions = 0;
  // unreported_moves: pages an eviction's UFFDIO_MOVE moved but did not
  // count (found in the drop area past the kernel's report, and taken as
  // moved). 0 unless the kernel miscounts; Linux 6.18 was seen to.
  uint64_t unreported_moves = 0;
  // urgent_evictions: evictions (of `evictions`) made by the urgent evictor,
  // the one that runs at the program's priority while faults are parked
  // (RegionOptions::evict_nice).
  uint64_t urgent_evictions = 0;
  uint64_t resident_pages = 0, max_resident_pages = 0;
  uint64_t budget_pages = 0;
  std::array<uint64_t, kFaultLatencyBuckets> fault_latency_us_log2{};
  // Where a remote fault's time goes, in the fault handler (sums in ns over
  // `remote_faults`: MISSING faults served by a backend load): the whole
  // handler, the backend Load call within it, and the UFFDIO_COPY install.
  uint64_t remote_faults = 0;
  uint64_t remote_fault_ns = 0, remote_load_ns = 0, remote_install_ns = 0;
  std::string last_error;  // last load/store failure, "" if none

  // FaultLatencyPercentileUs estimates the p-th percentile (0..100) of fault
  // latency in µs from the log2 histogram (geometric middle of the bucket).
  double FaultLatencyPercentileUs(double p) const;
};

enum class Advice { kCold, kWillNeed };

class RegionImpl;

// Region: see the essay above. Create it, use data()/size(), destroy it.
class Region {
 public:
  // Create maps `bytes` (rounded up to whole pages) of far memory whose
  // evicted pages go to `backend`, which must outlive the region. Fails with
  // FAILED_PRECONDITION when userfaultfd is unavailable (not root and
  // unprivileged userfaultfd off, or a seccomp filter), INVALID_ARGUMENT
  // for bad options.
  static absl::StatusOr<std::unique_ptr<Region>> Create(PageBackend* backend, uint64_t bytes,
                                                        const RegionOptions& options);
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  uint8_t* data() const;
  uint64_t size() const;

  // Advise: kCold evicts the resident pages of [offset, offset+length) now,
  // on the calling thread (which must not be a thread the region's fault
  // handling needs); kWillNeed queues their prefetch. The range is rounded
  // out to whole pages. INVALID_ARGUMENT if it is outside the region; for
  // kCold, the first store error.
  absl::Status Advise(uint64_t offset, uint64_t length, Advice advice);

  // stats reads each counter on its own, not one snapshot of them all:
  // while the region is faulting or evicting, two counters may disagree by
  // what is in flight (an evictor counts each page into `evictions` as it
  // commits it, and a batch into `urgent_evictions` once the batch is done).
  // Read again once the region is idle for figures that add up.
  RegionStats stats() const;

 private:
  friend class RegionTestPeer;  // white-box tests of the fault paths
  explicit Region(std::unique_ptr<RegionImpl> impl);
  std::unique_ptr<RegionImpl> impl_;
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_REGION_H_
