// region_evict.cc: the evictor thread, the CLOCK, and one eviction batch
// (write-protect → snapshot → store → commit → drop). The design is in
// region.h; the lock order (evict_mu_ → mu_) in region_impl.h.
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"
#include "region_impl.h"

namespace farswap {
namespace {
constexpr uint64_t kPage = 4096;
// process_vm_readv takes at most IOV_MAX (1024) segments per call.
constexpr size_t kMaxIov = 1024;
// Empty batches in a row, with faults parked, before over-committing.
constexpr int kStuckBatches = 64;

// LowerThisThreadsPriority makes the calling thread `by` nicer (at most 19),
// as a background thread should be. Raising a priority back needs
// CAP_SYS_NICE, so it is done once, never undone. A failure (a seccomp
// filter) leaves the thread as it was.
void LowerThisThreadsPriority(int by) {
  if (by <= 0) return;
  const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  const int now = getpriority(PRIO_PROCESS, tid);
  if (now == -1 && errno != 0) return;
  (void)setpriority(PRIO_PROCESS, tid, std::min(19, now + by));
}

}  // namespace

void RegionImpl::EvictorThread() {
  LowerThisThreadsPriority(options_.evict_nice);
  std::vector<uint8_t> snapshot;  // this thread's batch copies
  int stuck_batches = 0;
  for (;;) {
    {
      MutexLock l(&mu_);
      while (!evict_wanted_ && evict_helpers_wanted_ == 0 && !stop_.load()) {
        evictor_cv_.Wait(&mu_);
      }
      if (stop_.load()) return;
      if (evict_wanted_) {
        evict_wanted_ = false;
        evict_asked_.store(false, std::memory_order_relaxed);
        // The other evictor threads join in, each with batches of its own.
        evict_helpers_wanted_ = evict_threads_ - 1;
        if (evict_helpers_wanted_ > 0) evictor_cv_.SignalAll();
      } else {
        --evict_helpers_wanted_;
      }
    }
    // Sync point: woken to evict (or to help), before the first batch; no
    // lock held.
    FARSWAP_SYNC_POINT("Region::EvictorThread:woken");
    // Evict down to one batch under the budget, so faults and prefetches
    // find room without waiting for the next batch.
    EvictDownToMark("Region::EvictorThread:before-batch", snapshot, stuck_batches, nullptr);
  }
}

void RegionImpl::UrgentEvictorThread() {
  std::vector<uint8_t> snapshot;
  int stuck_batches = 0;
  for (;;) {
    {
      // Parked faults with residency still high: they wait for room. (With
      // residency low again they only wait for a fault thread to read the
      // evictor's wake-up.) A park signals urgent_cv_ under mu_.
      MutexLock l(&mu_);
      while ((parked_faults_.empty() || resident_.load() + evict_batch_ <= budget_pages_) &&
             !stop_.load()) {
        urgent_cv_.Wait(&mu_);
      }
      if (stop_.load()) return;
    }
    // Whatever the background evictors are doing (or waiting to be
    // scheduled for), evict at the program's own priority, down to the mark
    // they evict to.
    EvictDownToMark("Region::UrgentEvictor:before-batch", snapshot, stuck_batches,
                    &urgent_evictions_);
  }
}

void RegionImpl::EvictDownToMark(const char* sync_point, std::vector<uint8_t>& snapshot,
                                 int& stuck_batches, std::atomic<uint64_t>* evicted_count) {
  while (!stop_.load() && resident_.load() + evict_batch_ > budget_pages_) {
    // Sync point (named by the caller): a batch is about to start; no lock held.
    FARSWAP_SYNC_POINT(sync_point);
    const size_t evicted = EvictBatch(nullptr, snapshot);
    if (evicted_count != nullptr) evicted_count->fetch_add(evicted, std::memory_order_relaxed);
    bool parked;
    {
      MutexLock l(&mu_);
      parked = !parked_faults_.empty();
      room_cv_.SignalAll();
    }
    // Several batches in a row evicted nothing while faults wait (stores
    // failing, or every page in flight): let parked faults in over the
    // budget rather than hang their threads. Each evictor counts its own
    // (the background one may be the one starved).
    stuck_batches = evicted == 0 && parked ? stuck_batches + 1 : 0;
    overcommit_.store(stuck_batches >= kStuckBatches);
    if (parked) {
      uint64_t one = 1;
      (void)!write(wake_fd_, &one, sizeof one);
    }
    if (evicted == 0) {
      if (!parked) break;
      std::this_thread::yield();  // pages in flight settle within an ioctl
    }
  }
}

bool RegionImpl::ClaimVictim(uint64_t page, bool ignore_age, std::vector<uint64_t>& clean,
                             std::vector<uint64_t>& dirty) {
  uint8_t s = state_[page].load();
  if (ignore_age) {
    // An explicit eviction (Advise) waits out the transient states: a fault
    // thread is between its resolving ioctl and publishing the result, or
    // a fetch is in flight. Neither waits for eviction, so this ends.
    while (s == kFetching || s == kWriting) {
      std::this_thread::yield();
      s = state_[page].load();
    }
  }
  if (s != kClean && s != kDirty) return false;
  if (!ignore_age) {
    uint8_t a = age_[page].load(std::memory_order_relaxed);
    if (a > 0) {
      age_[page].store(a - 1, std::memory_order_relaxed);
      return false;
    }
  }
  // A page with a program event's forget still to run is not claimed: the
  // forget is of what the page held before the program's madvise (or
  // munmap), and it runs when the page leaves the batch it is in — after
  // this claim's drop, had this batch taken it, where it would throw away
  // what the program wrote since (region_test's
  // AForgetLeftByOneBatchIsNotAppliedToTheNextBatchsEviction).
  if (flags_[page].load() & (kFlagForgetRemoved | kFlagForgetUnmapped)) return false;
  if (s == kClean) {
    // Already write-protected and current remotely: commit the drop now.
    if (!state_[page].compare_exchange_strong(s, kDropping)) return false;
    clean.push_back(page);
  } else {
    // Take the batch flag first, then the state: see kFlagInBatch.
    if (flags_[page].fetch_or(kFlagInBatch) & kFlagInBatch) return false;
    // Looked at again with the batch flag held: the batch that held the
    // page before may have left its forget to run just now (EndBatch).
    // Leaving the batch runs it (TryForget), as that batch's end would have.
    if (flags_[page].load() & (kFlagForgetRemoved | kFlagForgetUnmapped)) {
      EndBatch(page);
      return false;
    }
    if (!state_[page].compare_exchange_strong(s, kEvicting)) {
      EndBatch(page);
      return false;
    }
    flags_[page].fetch_and(static_cast<uint8_t>(~kFlagZeroedAfterZap));
    dirty.push_back(page);
  }
  return true;
}

template <typename Fn>
void ForEachRun(std::span<const uint64_t> sorted_pages, Fn fn) {
  for (size_t i = 0; i < sorted_pages.size();) {
    size_t j = i + 1;
    while (j < sorted_pages.size() && sorted_pages[j] == sorted_pages[j - 1] + 1) ++j;
    fn(i, j);  // sorted_pages[i..j) are consecutive pages
    i = j;
  }
}

void RegionImpl::MadviseOwn(const std::vector<uint64_t>& pages) {
  // Pages the program has unmapped are left out: that range may hold
  // another mapping by now.
  std::vector<uint64_t> mapped;
  mapped.reserve(pages.size());
  for (uint64_t p : pages) {
    if (!(flags_[p].load() & kFlagForgetUnmapped)) mapped.push_back(p);
  }
  // A run that failed with ENOMEM (the program unmapped part of it while
  // its REMOVE event waited to be read) may have been zapped only up to
  // the unmapped part: Linux drops mmap_lock while that event is read, then
  // looks the range's start up again and, finding it unmapped, returns
  // ENOMEM without zapping the rest of the range. Such pages stay mapped —
  // write-protected, as eviction left them — while their state says they
  // are gone, and the program's next write to one would fault WP forever.
  // So the run's pages still present are dropped again; which those are is
  // decided under read_mu_ (below), so that no page the program unmapped —
  // and may have mapped something else at — is among them.
  constexpr int kMaxAttempts = 8;
  for (int attempt = 1; !mapped.empty(); ++attempt) {
    std::vector<uint64_t> unfinished = MadviseRuns(mapped);
    mapped.clear();
    if (unfinished.empty()) break;
    if (attempt == kMaxAttempts) {
      RecordError(absl::StrCat("MADV_DONTNEED: ", unfinished.size(), " pages still mapped after ",
                               kMaxAttempts, " attempts"));
      break;
    }
    {
      // Held while looking: no event is read meanwhile, so no munmap of
      // these pages can return (it waits for its UNMAP event to be read)
      // and nothing else can be mapped there yet. A page unmapped by an
      // event already read is flagged (the reader handles events under
      // this lock); one whose event is still unread is not present.
      MutexLock l(&read_mu_);
      for (uint64_t p : unfinished) {
        if (!(flags_[p].load() & kFlagForgetUnmapped) && PagePresent(p)) mapped.push_back(p);
      }
    }
    if (!mapped.empty()) std::this_thread::yield();  // an UNMAP may still be unread
  }
}

std::vector<uint64_t> RegionImpl::MadviseRuns(const std::vector<uint64_t>& mapped) {
  std::vector<uint64_t> unfinished;
  ForEachRun(mapped, [&](size_t i, size_t j) {
    {
      MutexLock l(&mu_);
      for (size_t k = i; k < j; ++k) ++own_remove_pages_[mapped[k]];
    }
    // [none] The run is listed; the program may unmap part of it here.
    FARSWAP_SYNC_POINT("Region::Evict:before-madvise");
    // Returns once a fault thread has read the REMOVE events; the entries
    // are taken out when that thread handles them, which may come later (it
    // handles the messages of one read in order).
    if (madvise(Addr(mapped[i]), (j - i) * kPage, MADV_DONTNEED) != 0) {
      const int e = errno;
      // ENOMEM: the program unmapped part of the run meanwhile (its UNMAP
      // event may not be handled yet). The REMOVE event for the whole run
      // was raised before the kernel found out, so every entry is kept
      // (region_impl.h), and the caller drops what is still mapped again.
      if (e == ENOMEM) {
        unfinished.insert(unfinished.end(), mapped.begin() + long(i), mapped.begin() + long(j));
        return;
      }
      RecordError(absl::StrCat("MADV_DONTNEED of pages ", mapped[i], "..", mapped[j - 1], ": ",
                               strerror(e)));
      // Any other error zapped nothing and raised no event.
      std::vector<uint64_t> taken;  // entries a program event consumed
      {
        MutexLock l(&mu_);
        for (size_t k = i; k < j; ++k) {
          auto it = own_remove_pages_.find(mapped[k]);
          if (it == own_remove_pages_.end()) {
            taken.push_back(mapped[k]);
          } else if (--it->second == 0) {
            own_remove_pages_.erase(it);
          }
        }
      }
      // A program REMOVE of such a page was taken for this call's, which
      // raised none: forget the page now, as that event would have.
      for (uint64_t p : taken) {
        flags_[p].fetch_or(kFlagForgetRemoved);
        TryForget(p);
      }
    }
  });
  return unfinished;
}

std::vector<uint64_t> RegionImpl::MoveOut(const std::vector<uint64_t>& pages) {
  if (drop_area_ == nullptr || pages.empty()) return pages;
  std::optional<PageDropArea::Slot> slot = drop_area_->TryAcquire();
  if (!slot) return pages;  // every slot in use (Advise callers): madvise
  std::vector<uint64_t> rest;
  uint64_t moved_total = 0;
  // read_mu_ is held while looking and moving, as MadviseOwn's second look:
  // no UNMAP event is read meanwhile, so a page not flagged unmapped is
  // still the region's (its munmap, if any, has not returned). This matters
  // more than for madvise: the kernel checks only the destination's
  // registration, so a page of another mapping at that address would be
  // moved away as readily (region.h, munmap, has the window left). Never
  // held across a wait for a fault thread: a move raises no event.
  //
  // One hold covers up to kPagesPerReadHold pages (an eviction batch), not
  // one run: on a random workload every page is a run of its own, and a
  // fault thread that met the lock held slept and was woken once per run
  // (about 18,000 times in 49,000 faults of `farswap-bench region --spawn 1
  // --replicas 1 --workload random`, most of them an IPI on this VM); the
  // bound keeps an Advise of a large range from holding it for long.
  constexpr size_t kPagesPerReadHold = 64;
  const std::span<const uint64_t> all(pages);
  for (size_t first = 0; first < all.size(); first += kPagesPerReadHold) {
    const std::span<const uint64_t> chunk =
        all.subspan(first, std::min(kPagesPerReadHold, all.size() - first));
    // [none] The program may drop or unmap some of the pages here.
    FARSWAP_SYNC_POINT("Region::Evict:before-move");
    MutexLock l(&read_mu_);
    ForEachRun(chunk, [&](size_t i, size_t j) {
      for (size_t k = i; k < j;) {
        if (flags_[chunk[k]].load() & kFlagForgetUnmapped) {
          ++k;  // the program's now: left alone (MadviseOwn skips it too)
          continue;
        }
        size_t end = k + 1;
        while (end < j && !(flags_[chunk[end]].load() & kFlagForgetUnmapped)) ++end;
        if (slot->room() == 0 && !slot->Free()) {
          RecordError("MADV_DONTNEED of a drop-area slot failed; the slot is retired");
        }
        int err = 0;
        const size_t moved = slot->Move(Addr(chunk[k]), end - k, &err);
        moved_total += moved;
        k += moved;
        // The page the move stopped at (unmapped meanwhile, shared, or the
        // area is full or broken) goes the old way: MadviseOwn handles
        // every such case.
        if (err != 0 && k < end) rest.push_back(chunk[k++]);
      }
    });
  }
  moved_evictions_.fetch_add(moved_total, std::memory_order_relaxed);
  return rest;  // the slot frees the moved pages as it goes
}

void RegionImpl::DropPages(std::vector<uint64_t>& pages) {
  // The pages leave by UFFDIO_MOVE into the drop area, freed with one
  // MADV_DONTNEED that raises no event (page_drop_area.h); what cannot be
  // moved by one MADV_DONTNEED per run of consecutive pages, each waiting
  // for a fault thread to read its REMOVE event. Then each page's
  // bookkeeping. Every page here is kDropping: nobody else touches it.
  std::sort(pages.begin(), pages.end());
  MadviseOwn(MoveOut(pages));
  FinishDrops(pages);
}

void RegionImpl::FinishDrops(std::span<const uint64_t> pages) {
  for (uint64_t page : pages) {
    uint8_t f = flags_[page].fetch_and(static_cast<uint8_t>(~kFlagPrefetched));
    if (f & kFlagPrefetched) prefetch_waste_.fetch_add(1, std::memory_order_relaxed);
    evicted_at_[page].store(eviction_clock_.fetch_add(1) + 1, std::memory_order_relaxed);
    // The counter drops before the state is published: a fault that finds
    // kRemote may reserve the slot at once.
    resident_.fetch_sub(1);
    evictions_.fetch_add(1, std::memory_order_relaxed);
    // The state first, then out of the batch: a program event that came
    // meanwhile is forgotten by EndBatch, after the store it must follow.
    state_[page].store((f & kFlagHasRemote) ? kRemote : kEmpty);
    EndBatch(page);
  }
  // Room was made: wake the fault threads if a fault is parked. Whoever
  // evicted (an evictor thread or Advise(kCold)) must do it, or a parked
  // fault waits for the next fault message, which may never come when
  // every program thread is blocked in a fault.
  // A fault deferred because its page was kDropping is retried now, not
  // when the fault threads next time out.
  if (!pages.empty() && (parked_now_.load() > 0 || retry_now_.load() > 0)) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
}

size_t RegionImpl::EvictBatch(const std::vector<uint64_t>* targets,
                              std::vector<uint8_t>& snapshot_) {
  // Victims are claimed under evict_mu_ (the CLOCK hand is shared); the
  // rest runs unlocked, so several evictor threads work on their batches in
  // parallel. Claiming is a compare-and-swap per page, so batches never
  // share a page.
  std::vector<uint64_t> clean, dirty;
  if (targets != nullptr) {
    for (uint64_t p : *targets) ClaimVictim(p, /*ignore_age=*/true, clean, dirty);
  } else {
    MutexLock l(&evict_mu_);
    // CLOCK: at most kMaxAge+1 laps find any page at age 0.
    const uint64_t limit = pages_ * (kMaxAge + 1);
    for (uint64_t scanned = 0; scanned < limit && clean.size() + dirty.size() < evict_batch_;
         ++scanned) {
      uint64_t p = hand_;
      hand_ = hand_ + 1 == pages_ ? 0 : hand_ + 1;
      ClaimVictim(p, /*ignore_age=*/false, clean, dirty);
    }
  }

  // Clean victims: the remote copy is current; drop with no transfer.
  clean_evictions_.fetch_add(clean.size(), std::memory_order_relaxed);
  DropPages(clean);
  if (dirty.empty()) return clean.size();

  std::sort(dirty.begin(), dirty.end());
  size_t dropped = clean.size();
  if (drop_area_ != nullptr && !options_.write_protect_evictions) {
    std::vector<uint64_t> unmoved;
    dropped += EvictByMove(dirty, snapshot_, unmoved);
    dirty.swap(unmoved);
    if (dirty.empty()) return dropped;
  }
  return dropped + EvictProtected(dirty, snapshot_);
}

void RegionImpl::SnapshotPages(std::span<const uint64_t> pages, std::vector<uint8_t>& snapshot,
                               std::vector<bool>& readable) {
  // The kernel copies, so the region's memory is read by no user-space
  // thread but its owners'. The store works from this copy, so even a
  // cancelled eviction never has its page change under the codec
  // (docs/invariants.md rule 3).
  snapshot.resize(pages.size() * kPage);
  readable.assign(pages.size(), true);
  for (size_t off = 0; off < pages.size(); off += kMaxIov) {
    const size_t n = std::min(kMaxIov, pages.size() - off);
    std::vector<iovec> local(n), remote(n);
    for (size_t i = 0; i < n; ++i) {
      local[i] = {snapshot.data() + (off + i) * kPage, kPage};
      remote[i] = {Addr(pages[off + i]), kPage};
    }
    ssize_t got = process_vm_readv(getpid(), local.data(), n, remote.data(), n, 0);
    if (got == static_cast<ssize_t>(n * kPage)) continue;
    // Page by page: one may be unmapped (EFAULT). A plain copy only where
    // the call itself is refused (e.g. a seccomp filter): memcpy from an
    // unmapped page would crash.
    for (size_t i = 0; i < n; ++i) {
      if (process_vm_readv(getpid(), &local[i], 1, &remote[i], 1, 0) == kPage) continue;
      if (errno == EPERM || errno == ENOSYS) {
        std::memcpy(local[i].iov_base, remote[i].iov_base, kPage);
      } else {
        readable[off + i] = false;
      }
    }
  }
}

std::vector<bool> RegionImpl::StoreSnapshots(std::span<const uint64_t> pages,
                                             const std::vector<uint8_t>& snapshot,
                                             const std::vector<bool>& readable) {
  // All at once (one BATCH per node for a networked backend). A
  // never-stored page that is all zeros needs no store: dropping it makes
  // it kEmpty again, which faults in as zeros.
  std::vector<bool> stored(pages.size(), false);
  std::vector<size_t> send_index;
  std::vector<uint64_t> send_pages;
  std::vector<const uint8_t*> send_data;
  for (size_t i = 0; i < pages.size(); ++i) {
    const uint64_t p = pages[i];
    if (!readable[i]) continue;
    const uint8_t* snap = snapshot.data() + i * kPage;
    const uint8_t f = flags_[p].load();
    const bool has_remote = f & kFlagHasRemote;
    uint64_t fill;
    if (!has_remote && IsSameFilled(snap, &fill) && fill == 0) {
      stored[i] = true;
      continue;
    }
    if (has_remote && (f & kFlagRemoteHash) &&
        XXH3_64bits(snap, kPage) == remote_hash_[p].load(std::memory_order_relaxed)) {
      // Installed writable and never changed: the backend has exactly this.
      unchanged_evictions_.fetch_add(1, std::memory_order_relaxed);
      stored[i] = true;
      continue;
    }
    send_index.push_back(i);
    send_pages.push_back(p);
    send_data.push_back(snap);
  }
  FARSWAP_SYNC_POINT("Region::Evict:before-store");
  if (send_pages.empty()) return stored;
  std::vector<absl::StatusOr<size_t>> results(send_pages.size());
  backend_->StoreBatch(send_pages, send_data, std::span<absl::StatusOr<size_t>>(results));
  for (size_t k = 0; k < send_pages.size(); ++k) {
    const uint64_t p = send_pages[k];
    if (!results[k].ok()) {
      // What the backend holds now is unknown (old or new): no hash.
      flags_[p].fetch_and(static_cast<uint8_t>(~kFlagRemoteHash));
      store_errors_.fetch_add(1, std::memory_order_relaxed);
      RecordError(absl::StrCat("store of page ", p, ": ", results[k].status().ToString()));
      continue;
    }
    if (options_.install_writable) {
      // A cancelled eviction leaves the page resident and writable: its
      // next eviction sends it again only if it changed since this store.
      remote_hash_[p].store(XXH3_64bits(send_data[k], kPage), std::memory_order_relaxed);
      flags_[p].fetch_or(kFlagRemoteHash);
    }
    flags_[p].fetch_or(kFlagHasRemote);
    pages_stored_.fetch_add(1, std::memory_order_relaxed);
    bytes_sent_.fetch_add(*results[k], std::memory_order_relaxed);
    stored[send_index[k]] = true;
  }
  return stored;
}

std::vector<bool> RegionImpl::RuleOutZappedSnapshots(std::span<const uint64_t> pages,
                                                     std::vector<bool>& stored) {
  // A page the program zapped (MADV_DONTNEED) since it was claimed may have
  // been snapshotted before the zap: it is not dropped (its remote copy is
  // never loaded), and its next eviction stores what it holds then. It is
  // missing now, or RecoverZapped filled it with zeros.
  std::vector<unsigned char> present(pages.back() - pages.front() + 1, 1);
  mincore(Addr(pages.front()), present.size() * kPage, present.data());
  std::vector<bool> zap_pending(pages.size(), false);
  for (size_t i = 0; i < pages.size(); ++i) {
    const uint64_t p = pages[i];
    // Flags read after mincore: a page seen missing has had any pending zap.
    const bool missing = !(present[p - pages.front()] & 1);
    if (missing) flags_[p].fetch_and(static_cast<uint8_t>(~kFlagZapPending));
    const uint8_t f = flags_[p].load();
    // zap_pending: the snapshot may be of contents the program threw away
    // (a REMOVE handled before this batch claimed the page, its zap still
    // to come).
    zap_pending[i] = (f & kFlagZapPending) != 0;
    if (stored[i] && (missing || zap_pending[i] || (f & kFlagZeroedAfterZap))) stored[i] = false;
  }
  return zap_pending;
}

std::vector<size_t> RegionImpl::CommitStored(std::span<const uint64_t> pages,
                                             std::vector<bool>& stored, bool write_protected) {
  const std::vector<bool> zap_pending = RuleOutZappedSnapshots(pages, stored);
  std::vector<size_t> committed;
  committed.reserve(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    const uint64_t p = pages[i];
    uint8_t s = kEvicting;
    if (!stored[i]) {
      // Kept: writable again, except a page whose zap may still be to come,
      // left (or made) write-protected so that the program's next write
      // shows the madvise is over (a REMOVE's handler protects the range
      // too, but only where no other event is pending). Best effort: a
      // page whose protection fails either way is put right by its next
      // write's fault, or waits to be seen missing.
      if (state_[p].compare_exchange_strong(s, kWriting)) {
        int err = 0;
        if (zap_pending[i]) {
          zap_kept_.fetch_add(1, std::memory_order_relaxed);
          if (!write_protected) err = ProtectRetrying(p);
        } else if (write_protected) {
          err = UnprotectRetrying(p);
        }
        if (err != 0 && err != ENOENT) {
          RecordError(absl::StrCat(zap_pending[i] ? "write-protect" : "un-protect", " of page ", p,
                                   ": ", strerror(err)));
        }
        Publish(p, kDirty);
      }
      continue;
    }
    if (!state_[p].compare_exchange_strong(s, kDropping)) {
      evictions_cancelled_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    FARSWAP_SYNC_POINT("Region::Evict:after-commit");
    committed.push_back(i);
  }
  return committed;
}

size_t RegionImpl::EvictProtected(std::vector<uint64_t>& dirty, std::vector<uint8_t>& snapshot) {
  // 1. Write-protect, one ioctl per run of consecutive pages: from here a
  // write to a victim blocks in a WP fault. A run whose write-protect
  // fails is not evicted (a write in that window would otherwise be lost):
  // its pages go back to kDirty.
  std::vector<uint64_t> protected_pages;
  protected_pages.reserve(dirty.size());
  ForEachRun(dirty, [&](size_t i, size_t j) {
    uffdio_writeprotect wp{};
    wp.range.start = reinterpret_cast<uint64_t>(Addr(dirty[i]));
    wp.range.len = (j - i) * kPage;
    wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
    // EAGAIN: a REMOVE or UNMAP event (maybe another evictor's drop) is
    // pending; a fault thread reads it within a scheduler tick or two.
    int err;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while ((err = Ioctl(RegionIoctl::kWriteProtect, dirty[i], UFFDIO_WRITEPROTECT, &wp)) ==
               EAGAIN &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::yield();
    }
    if (err != 0) {
      // Part of the run may be
      // protected now: a kDirty page that is write-protected is un-protected
      // by its next write's fault.
      RecordError(absl::StrCat("write-protect of pages ", dirty[i], "..", dirty[j - 1], ": ",
                               strerror(err), "; kept resident"));
      for (size_t k = i; k < j; ++k) {
        uint8_t s = kEvicting;
        state_[dirty[k]].compare_exchange_strong(s, kDirty);
        EndBatch(dirty[k]);
      }
      return;
    }
    protected_pages.insert(protected_pages.end(), dirty.begin() + i, dirty.begin() + j);
  });
  dirty.swap(protected_pages);
  if (dirty.empty()) return 0;
  FARSWAP_SYNC_POINT("Region::Evict:after-write-protect");

  // 2. Snapshot: copy the protected pages out. 3. Store the snapshots.
  std::vector<bool> readable;
  SnapshotPages(dirty, snapshot, readable);
  std::vector<bool> stored = StoreSnapshots(dirty, snapshot, readable);
  FARSWAP_SYNC_POINT("Region::Evict:before-commit");

  // 4. Commit and drop. A page a writer got to meanwhile is kWriting or
  // kDirty now: its drop is cancelled (the remote copy is stale, and the
  // page stays dirty, so the next eviction stores it again).
  std::vector<uint64_t> committed;
  for (size_t i : CommitStored(dirty, stored, /*write_protected=*/true)) {
    committed.push_back(dirty[i]);
  }
  const size_t dropped = committed.size();
  DropPages(committed);  // clears their kFlagInBatch
  // The pages kept (cancelled, or their store failed) leave the batch only
  // now, after every commit of this batch is decided.
  for (uint64_t p : dirty) {
    if (!std::binary_search(committed.begin(), committed.end(), p)) EndBatch(p);
  }
  return dropped;
}

size_t RegionImpl::EvictByMove(std::vector<uint64_t>& dirty, std::vector<uint8_t>& snapshot,
                               std::vector<uint64_t>& unmoved) {
  // 1. Snapshot and store, the victims still writable.
  std::vector<bool> readable;
  SnapshotPages(dirty, snapshot, readable);
  // [none] The program may write the victims from here on, unseen: what it
  // wrote is found when the page is compared after its move.
  FARSWAP_SYNC_POINT("Region::Evict:after-snapshot");
  std::vector<bool> stored = StoreSnapshots(dirty, snapshot, readable);
  FARSWAP_SYNC_POINT("Region::Evict:before-commit");

  // 2. Commit: from kDropping on, an access to the page waits (its fault is
  // deferred) until the page is gone or put back. The commit fails only
  // where the page was write-protected by someone else (a REMOVE's
  // handler, RecoverZapped) and a write faulted.
  std::vector<uint64_t> committed;
  std::vector<const uint8_t*> committed_snaps;
  for (size_t i : CommitStored(dirty, stored, /*write_protected=*/false)) {
    committed.push_back(dirty[i]);
    committed_snaps.push_back(snapshot.data() + i * kPage);
  }

  // 3. Move out and compare.
  std::vector<uint64_t> gone, put_back;
  MoveOutChecked(committed, committed_snaps, gone, put_back, unmoved);
  FinishDrops(gone);  // clears their kFlagInBatch
  for (uint64_t p : put_back) {
    evictions_cancelled_.fetch_add(1, std::memory_order_relaxed);
    Publish(p, kDirty);
  }
  // Back to the claim's state, for EvictProtected: this batch has owned
  // the page since its commit, and it is still where it was.
  for (uint64_t p : unmoved) state_[p].store(kEvicting);
  // The pages kept leave the batch only now, after every commit of this
  // batch is decided; the unmoved stay in it.
  std::sort(gone.begin(), gone.end());
  for (uint64_t p : dirty) {
    if (!std::binary_search(gone.begin(), gone.end(), p) &&
        !std::binary_search(unmoved.begin(), unmoved.end(), p)) {
      EndBatch(p);
    }
  }
  return gone.size();
}

void RegionImpl::MoveOutChecked(std::span<const uint64_t> pages,
                                std::span<const uint8_t* const> snaps, std::vector<uint64_t>& gone,
                                std::vector<uint64_t>& put_back, std::vector<uint64_t>& unmoved) {
  if (pages.empty()) return;
  std::optional<PageDropArea::Slot> slot = drop_area_->TryAcquire();
  if (!slot) {  // every slot in use (Advise callers): the older way
    unmoved.assign(pages.begin(), pages.end());
    return;
  }
  // read_mu_ is held while looking and moving, as in MoveOut (which says
  // why, and why a hold covers up to kPagesPerReadHold pages).
  constexpr size_t kPagesPerReadHold = 64;
  uint64_t moved_total = 0;
  std::vector<std::pair<size_t, size_t>> changed;  // (index in pages, index in the slot)
  for (size_t first = 0; first < pages.size(); first += kPagesPerReadHold) {
    const std::span<const uint64_t> chunk =
        pages.subspan(first, std::min(kPagesPerReadHold, pages.size() - first));
    // [none] The program may drop or unmap some of the pages here.
    FARSWAP_SYNC_POINT("Region::Evict:before-move");
    {
      MutexLock l(&read_mu_);
      ForEachRun(chunk, [&](size_t i, size_t j) {
        for (size_t k = i; k < j;) {
          if (flags_[chunk[k]].load() & kFlagForgetUnmapped) {
            gone.push_back(chunk[k++]);  // the program's now: left alone
            continue;
          }
          size_t end = k + 1;
          while (end < j && !(flags_[chunk[end]].load() & kFlagForgetUnmapped)) ++end;
          // Holes not allowed: a page missing now was zapped by the
          // program after the commit looked; the older way sorts it out.
          const size_t at = slot->used();
          int err = 0;
          const size_t moved = slot->Move(Addr(chunk[k]), end - k, &err, /*allow_holes=*/false);
          for (size_t m = 0; m < moved; ++m) {
            const size_t index = first + k + m;
            // The move took the physical page: whatever the program wrote
            // before it is here, and nothing can write it now.
            if (std::memcmp(slot->PageAt(at + m), snaps[index], kPage) == 0) {
              gone.push_back(pages[index]);
              ++moved_total;
            } else {
              changed.emplace_back(index, at + m);
            }
          }
          k += moved;
          if (err != 0 && k < end) unmoved.push_back(chunk[k++]);
        }
      });
    }
    // Before the slot is freed (at the latest when `slot` goes).
    for (const auto& [index, at] : changed) {
      (PutBack(pages[index], slot->PageAt(at)) ? put_back : gone).push_back(pages[index]);
    }
    changed.clear();
  }
  moved_evictions_.fetch_add(moved_total, std::memory_order_relaxed);
}

bool RegionImpl::PutBack(uint64_t page, const uint8_t* moved) {
  // [none] The page is moved out and differs from its stored copy; the
  // program may drop or unmap it here.
  FARSWAP_SYNC_POINT("Region::Evict:before-put-back");
  for (;;) {
    int err;
    {
      // Held while looking and mapping: an event read before is handled
      // (its flags are set), and one not read yet makes the copy fail
      // with EAGAIN, so no page the program dropped or unmapped is mapped
      // again.
      MutexLock l(&read_mu_);
      if (flags_[page].load() & (kFlagForgetRemoved | kFlagForgetUnmapped)) {
        // What the move took is what the program threw away. The drop
        // stands; the batch's end forgets the page (its remote copy too).
        return false;
      }
      uffdio_copy c{};
      c.dst = reinterpret_cast<uint64_t>(Addr(page));
      c.src = reinterpret_cast<uint64_t>(moved);
      c.len = kPage;
      err = Ioctl(RegionIoctl::kCopy, page, UFFDIO_COPY, &c);  // wakes a waiting faulter
      if (err == 0) return true;
    }
    if (err == EAGAIN) {  // a program event is pending: read it first
      std::this_thread::yield();
      continue;
    }
    // The contents exist in the slot only: store them, so that the drop
    // stands with a remote copy that is current.
    RecordError(absl::StrCat("putting back page ", page, " (changed during its eviction): ",
                             strerror(err), "; stored again instead"));
    const uint64_t p = page;
    const uint8_t* data = moved;
    absl::StatusOr<size_t> result;
    backend_->StoreBatch(std::span<const uint64_t>(&p, 1),
                         std::span<const uint8_t* const>(&data, 1),
                         std::span<absl::StatusOr<size_t>>(&result, 1));
    if (result.ok()) {
      if (options_.install_writable) {
        remote_hash_[page].store(XXH3_64bits(moved, kPage), std::memory_order_relaxed);
        flags_[page].fetch_or(kFlagRemoteHash);
      } else {
        flags_[page].fetch_and(static_cast<uint8_t>(~kFlagRemoteHash));
      }
      flags_[page].fetch_or(kFlagHasRemote);
      pages_stored_.fetch_add(1, std::memory_order_relaxed);
      bytes_sent_.fetch_add(*result, std::memory_order_relaxed);
      return false;
    }
    store_errors_.fetch_add(1, std::memory_order_relaxed);
    RecordError(absl::StrCat("store of page ", page, " after a failed put-back: ",
                             result.status().ToString(), "; trying again"));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace farswap
