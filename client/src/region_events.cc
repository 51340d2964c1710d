// region_events.cc: the program's MADV_DONTNEED/MADV_REMOVE and munmap of
// region pages (UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP), and the forgetting
// protocol that makes every page they cover forgotten exactly once, by the
// event handler or by the thread that held the page in a transient state.
// The protocol is in region_impl.h ("Program events"); the lock order too.
#include <errno.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"
#include "region_impl.h"

namespace farswap {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint8_t kForgetFlags = kFlagForgetRemoved | kFlagForgetUnmapped;

// Stable: no thread owns the page, so TryForget may take it.
bool IsStable(uint8_t s) {
  return s == kEmpty || s == kRemote || s == kClean || s == kDirty || s == kUnmapped;
}

}  // namespace

void RegionImpl::HandleRangeEvent(uint64_t start, uint64_t end, uint8_t flag) {
  const uint64_t base = reinterpret_cast<uint64_t>(base_);
  const uint64_t lo = std::max(start, base), hi = std::min(end, base + pages_ * kPage);
  if (lo >= hi) return;
  const uint64_t first = (lo - base) / kPage, last = (hi - base + kPage - 1) / kPage;
  // program[p - first]: the page is the program's to forget.
  std::vector<bool> program(last - first, true);
  if (flag == kFlagForgetRemoved) {
    // The evictor's own MADV_DONTNEED (DropPages) is not the program's: its
    // pages are accounted for by the evictor. Attributed page by page, not
    // by event: the program may drop one page of a run the evictor is
    // dropping, and the two events name the same page. Whichever comes
    // first consumes the evictor's entry, the other forgets the page; so
    // the page is forgotten once (after the program's madvise, which is
    // all the program can tell), and the evictor's event never forgets the
    // other pages of its run. (Matching whole events did: the program's
    // one-page event, all of whose pages were listed, passed for the
    // evictor's, and the evictor's own event then forgot its whole run,
    // stored pages included: they read as zeros.)
    MutexLock l(&mu_);
    bool any = false;
    for (uint64_t p = first; p < last; ++p) {
      auto it = own_remove_pages_.find(p);
      if (it == own_remove_pages_.end()) {
        any = true;
        continue;
      }
      program[p - first] = false;
      if (--it->second == 0) own_remove_pages_.erase(it);
    }
    if (!any) return;
  }
  if (flag == kFlagForgetRemoved) {
    // Write-protect the range first, so that the program's next write to a
    // page that stays resident (MADV_FREE does not zap; a DONTNEED's zap
    // may come after this) is seen, and clears kFlagZapPending: it proves
    // the madvise has returned. Best effort: EAGAIN (another event is
    // queued, and only this thread may read it) or any error leaves the
    // pages pending until they are seen missing, which is only slower.
    uffdio_writeprotect wp{};
    wp.range.start = base + first * kPage;
    wp.range.len = (last - first) * kPage;
    wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
    Ioctl(RegionIoctl::kWriteProtect, first, UFFDIO_WRITEPROTECT, &wp);
  }
  uint64_t forgotten = 0;
  for (uint64_t p = first; p < last; ++p) {
    if (!program[p - first]) continue;
    // 1. Mark, then look (region_impl.h): a page some thread holds is
    // forgotten by that thread when it publishes.
    flags_[p].fetch_or(flag);
    TryForget(p);
    ++forgotten;
  }
  (flag == kFlagForgetUnmapped ? pages_unmapped_ : pages_removed_)
      .fetch_add(forgotten, std::memory_order_relaxed);
}

void RegionImpl::Publish(uint64_t page, uint8_t state) {
  // 2. Publish, then look: pairs with HandleRangeEvent's mark-then-look.
  state_[page].store(state);
  if (flags_[page].load() & kForgetFlags) TryForget(page);
}

void RegionImpl::EndBatch(uint64_t page) {
  const uint8_t f = flags_[page].fetch_and(static_cast<uint8_t>(~kFlagInBatch));
  // [none] Out of the batch, a forget it deferred not yet run: another
  // batch may claim the page here (ClaimVictim backs off from it).
  FARSWAP_SYNC_POINT("Region::EndBatch:before-forget");
  if (f & kForgetFlags) TryForget(page);
}

void RegionImpl::TryForget(uint64_t page) {
  for (;;) {
    const uint8_t f = flags_[page].load();
    if (!(f & kForgetFlags)) return;  // nothing (left) to forget
    // In an eviction batch, its store may be in flight: the batch's end
    // (EndBatch) forgets the page, so no Invalidate races that Store.
    if (f & kFlagInBatch) return;
    uint8_t s = state_[page].load();
    if (!IsStable(s)) return;  // its owner forgets it when it publishes
    if (!state_[page].compare_exchange_strong(s, kForgetting)) continue;
    const uint8_t taken = flags_[page].fetch_and(
        static_cast<uint8_t>(~(kForgetFlags | kFlagHasRemote | kFlagRemoteHash | kFlagPrefetched)));
    if (taken & kFlagPrefetched) prefetch_waste_.fetch_add(1, std::memory_order_relaxed);
    if (taken & kFlagHasRemote) {
      // The backend's copy is of contents the program has thrown away.
      if (absl::Status st = backend_->Invalidate(page); !st.ok()) {
        RecordError(absl::StrCat("invalidate of forgotten page ", page, ": ", st.ToString()));
      }
    }
    const bool resident = s == kClean || s == kDirty;
    if (s == kUnmapped || (taken & kFlagForgetUnmapped)) {
      // Gone with its mapping: never touched again.
      if (resident) resident_.fetch_sub(1);
      state_[page].store(kUnmapped);
      continue;  // (no flag can be set again; the loop just returns)
    }
    // A resident page stays resident, with no remote copy: the program's
    // zap may not have run yet (its contents are the program's until then),
    // or the program may already have faulted it back as zeros and written
    // it (the caller runs on once the event is read, before it is handled).
    // After the zap its next fault installs zeros (RecoverZapped).
    // The zap may still be to come: no eviction may commit a snapshot of
    // what the page holds until it is seen missing (kFlagZapPending).
    if (resident && (taken & kFlagForgetRemoved)) flags_[page].fetch_or(kFlagZapPending);
    state_[page].store(resident ? kDirty : kEmpty);  // and look again: another event may have come
  }
}

void RegionImpl::RecoverZapped(const ParkedFault& f) {
  // MADV_DONTNEED made the page empty after the region last saw it: it
  // reads as zeros, as the kernel would have it. The caller holds the page
  // (kWriting) and publishes it kDirty after this. Installed
  // write-protected, so that the next write is seen (a WP fault on kDirty
  // just un-protects).
  // An eviction that held the page before may have a snapshot taken before
  // the zap: its commit fails (the page left kEvicting), and the flag below
  // keeps it from dropping the page all the same (region_evict.cc, commit).
  flags_[f.page].fetch_or(kFlagZeroedAfterZap);
  uffdio_copy c{};
  c.dst = reinterpret_cast<uint64_t>(Addr(f.page));
  c.src = reinterpret_cast<uint64_t>(ZeroPage());
  c.len = kPage;
  c.mode = UFFDIO_COPY_MODE_WP;
  const int err = Ioctl(RegionIoctl::kCopy, f.page, UFFDIO_COPY, &c);
  if (err == 0) return;  // the copy woke the faulter
  if (err == EEXIST || err == ENOENT) {
    Wake(f.page);
    return;
  }
  install_retries_.fetch_add(1, std::memory_order_relaxed);
  ParkedFault again = f;
  if (err != EAGAIN) {
    RecordError(absl::StrCat("zero-fill of zapped page ", f.page, ": ", strerror(err)));
    if (++again.install_failures >= options_.load_attempts) {
      sigbus_.fetch_add(1, std::memory_order_relaxed);
      syscall(SYS_tgkill, getpid(), f.tid, SIGBUS);
      Wake(f.page);
      return;
    }
  }
  Defer(again);  // served again after the pending event, or by its new state
}

}  // namespace farswap
