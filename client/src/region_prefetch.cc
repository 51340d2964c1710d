// region_prefetch.cc: stream detection on MISSING faults and the prefetch
// thread. The design is in region.h; the lock order in region_impl.h.
#include <errno.h>
#include <sys/ioctl.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "region_impl.h"

namespace farswap {
namespace {
constexpr uint64_t kPage = 4096;
// Largest stride (in pages) taken for a stream: beyond it two faults are
// unrelated more often than strided.
constexpr int64_t kMaxStride = 64;
// Prefetch requests kept: more streams than this are not worth following,
// and the stalest request is dropped first.
constexpr size_t kMaxQueuedRanges = 64;
// Pages the prefetch thread loads in one batch (one BATCH frame per node):
// a quarter of the largest window, so a window arrives in a few round trips
// while the first pages of it are already installed.
constexpr size_t kPrefetchBatch = 16;
}  // namespace

void RegionImpl::OnMissingFault(uint64_t page_no) {
  if (!options_.prefetch) return;
  const int64_t p = static_cast<int64_t>(page_no);
  MutexLock l(&mu_);
  ++stream_tick_;
  // 1. A confirmed stream this fault continues: it is at or past the
  // stream's last fault along its stride, within the window. The pages the
  // stream stepped over without faulting were used from prefetch: hits.
  for (Stream& s : streams_) {
    if (!s.confirmed) continue;
    const int64_t d = p - s.last;
    if (d == 0 || d % s.stride != 0) continue;
    const int64_t steps = d / s.stride;
    if (steps <= 0 || steps > static_cast<int64_t>(s.window) + 1) continue;
    for (int64_t q = s.last + s.stride; q != p; q += s.stride) {
      uint8_t f = flags_[q].fetch_and(static_cast<uint8_t>(~kFlagPrefetched));
      if (f & kFlagPrefetched) {
        prefetch_hits_.fetch_add(1, std::memory_order_relaxed);
        uint8_t a = age_[q].load(std::memory_order_relaxed);
        if (a < kAgeFault) age_[q].store(kAgeFault, std::memory_order_relaxed);
      }
    }
    s.last = p;
    s.used = stream_tick_;
    // A fault inside the window already queued means the prefetcher is
    // behind, not that the stream needs more: queue nothing new. A fault at
    // or past its end means the window was used up: double it and queue the
    // next one.
    const bool behind = s.stride > 0 ? p < s.next : p > s.next;
    if (behind) return;
    s.window = std::min(s.window * 2, options_.max_prefetch_window);
    QueuePrefetch(p + s.stride, s.stride, s.window);
    s.next = p + s.stride * (static_cast<int64_t>(s.window) + 1);
    return;
  }
  // 2. A candidate with the same stride twice in a row becomes a stream.
  Stream* lru = &streams_[0];
  for (Stream& s : streams_) {
    if (s.used < lru->used) lru = &s;
    if (s.confirmed || s.last < 0) continue;
    const int64_t d = p - s.last;
    if (d == 0 || std::llabs(d) > kMaxStride) continue;
    s.used = stream_tick_;
    if (s.stride == d) {
      s.confirmed = true;
      s.last = p;
      s.window = options_.prefetch_window;
      QueuePrefetch(p + d, d, s.window);
      s.next = p + d * (static_cast<int64_t>(s.window) + 1);
    } else {
      s.stride = d;
      s.last = p;
    }
    return;
  }
  // 3. Otherwise a new candidate replaces the least recently used entry.
  *lru = Stream{};
  lru->last = p;
  lru->used = stream_tick_;
}

void RegionImpl::QueuePrefetch(int64_t from, int64_t stride, uint32_t count) {
  mu_.AssertHeld();
  // Clip to the region.
  uint32_t n = 0;
  while (n < count) {
    const int64_t q = from + stride * static_cast<int64_t>(n);
    if (q < 0 || q >= static_cast<int64_t>(pages_)) break;
    ++n;
  }
  if (n == 0) return;
  if (prefetch_queue_.size() >= kMaxQueuedRanges) prefetch_queue_.pop_front();  // the oldest
  prefetch_queue_.push_back({from, stride, n});
  prefetch_cv_.Signal();
}

bool RegionImpl::PopPrefetch(uint64_t* page) {
  mu_.AssertHeld();
  if (prefetch_queue_.empty()) return false;
  PrefetchRange& r = prefetch_queue_.front();
  *page = static_cast<uint64_t>(r.from);
  r.from += r.stride;
  if (--r.count == 0) prefetch_queue_.pop_front();
  return true;
}

void RegionImpl::PrefetchThread() {
  std::vector<uint64_t> pages;
  std::vector<uint8_t> bufs(kPrefetchBatch * kPage);
  for (;;) {
    pages.clear();
    {
      MutexLock l(&mu_);
      while (prefetch_queue_.empty() && !stop_.load()) prefetch_cv_.Wait(&mu_);
      if (stop_.load()) return;
      uint64_t page;
      while (pages.size() < kPrefetchBatch && PopPrefetch(&page)) pages.push_back(page);
    }
    const size_t done = PrefetchMany(pages, bufs.data());
    if (done < pages.size()) {
      // No room: this thread may wait for the evictor (fault threads never
      // do). The timeout covers a batch that ended before we waited.
      MutexLock l(&mu_);
      for (size_t i = pages.size(); i-- > done;) RequeuePrefetch(pages[i]);
      if (!stop_.load()) room_cv_.WaitWithTimeout(&mu_, absl::Milliseconds(1));
    }
  }
}

size_t RegionImpl::PrefetchMany(std::span<const uint64_t> pages, uint8_t* bufs) {
  // 1. Claim: reserve room and move each page to kFetching. Zeros are
  // installed at once (no transfer); remote pages are loaded together.
  std::vector<uint64_t> fetch;
  size_t claimed = 0;
  for (; claimed < pages.size(); ++claimed) {
    const uint64_t page = pages[claimed];
    uint8_t s = state_[page].load();
    if (s != kRemote && s != kEmpty) continue;  // resident or in flight already
    // Prefetches may use half the batch of slack over the budget, faults
    // all of it: a prefetch never makes a fault park.
    if (!TryReserve(budget_pages_ + evict_batch_ / 2)) {
      NoteResidentGrew();
      break;
    }
    if (!state_[page].compare_exchange_strong(s, kFetching)) {
      Unreserve();
      continue;
    }
    if (s == kRemote) {
      fetch.push_back(page);
      continue;
    }
    // Zeros cost no transfer; installing them ahead saves the scan a fault.
    if (int err = InstallZeros(page); err != 0 && err != EEXIST) {
      // Not installed, so not resident. A faulter waiting on the page is
      // woken and faults again; its own fault path retries or SIGBUSes.
      if (err != EAGAIN) {
        RecordError(absl::StrCat("prefetch zero-fill of page ", page, ": ", strerror(err)));
      }
      Unreserve();
      Publish(page, kEmpty);
      Wake(page);
      continue;
    }
    zero_fills_.fetch_add(1, std::memory_order_relaxed);
    PublishPrefetched(page, kDirty);
  }
  if (fetch.empty()) return claimed;

  // 2. Load every claimed remote page in one batch, then install each.
  std::vector<uint8_t*> outs(fetch.size());
  for (size_t i = 0; i < fetch.size(); ++i) outs[i] = bufs + i * kPage;
  std::vector<absl::StatusOr<size_t>> got(fetch.size());
  backend_->LoadBatch(fetch, outs, std::span<absl::StatusOr<size_t>>(got));
  for (size_t i = 0; i < fetch.size(); ++i) {
    const uint64_t page = fetch[i];
    if (!got[i].ok()) {
      // No retries and no signal here: a faulter waiting on this page is
      // woken and faults again, and its own fault path retries or SIGBUSes.
      Unreserve();
      Publish(page, kRemote);
      Wake(page);
      continue;
    }
    pages_loaded_.fetch_add(1, std::memory_order_relaxed);
    bytes_received_.fetch_add(*got[i], std::memory_order_relaxed);
    // Check and install under read_mu_ (CheckAndInstall): a REMOVE event
    // read in between would let the program's zap run before this copy.
    uint8_t installed;
    int err;
    if (CheckAndInstall(page, outs[i], &installed, &err)) {
      // The program dropped the page while it loaded: not those contents.
      Unreserve();
      Publish(page, kRemote);  // forgotten: kEmpty (or kUnmapped)
      Wake(page);
      continue;
    }
    if (err != 0) {
      // As for a failed load: not resident, and a waiting faulter retries.
      if (err != EAGAIN) {
        RecordError(absl::StrCat("prefetch UFFDIO_COPY of page ", page, ": ", strerror(err)));
      }
      Unreserve();
      Publish(page, kRemote);
      Wake(page);
      continue;
    }
    PublishPrefetched(page, installed);
  }
  return claimed;
}

void RegionImpl::PublishPrefetched(uint64_t page, uint8_t new_state) {
  // Enters cold (age 0): unused prefetches are the first to go.
  age_[page].store(0, std::memory_order_relaxed);
  flags_[page].fetch_or(kFlagPrefetched);
  prefetch_issued_.fetch_add(1, std::memory_order_relaxed);
  Publish(page, new_state);
  NoteResidentGrew();
}

void RegionImpl::RequeuePrefetch(uint64_t page) {
  mu_.AssertHeld();
  prefetch_queue_.push_front({static_cast<int64_t>(page), 1, 1});
}

}  // namespace farswap
