// region.cc: Region setup and teardown, the fault threads, stats. The design
// is in region.h; the lock order in region_impl.h.
#include "farswap/client/region.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"
#include "farswap/common/thread_name.h"
#include "region_impl.h"

// UFFD_USER_MODE_ONLY arrived in 5.11 headers; kept behind #ifndef like the
// other constants newer than Debian's 6.1 uapi (toolchain-notes.md).
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

namespace farswap {
namespace {

constexpr uint64_t kPage = 4096;
// Messages read per read(2): a burst of faults from several threads costs
// one system call.
constexpr int kMessagesPerRead = 16;

int OpenUserfaultfd() {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0 && errno == EPERM) {
    // Unprivileged: kernel faults are not ours to handle anyway.
    fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  }
  return fd;
}

}  // namespace

const uint8_t* ZeroPage() {
  alignas(4096) static const uint8_t zero[kPage] = {};
  return zero;
}

double RegionStats::FaultLatencyPercentileUs(double p) const {
  uint64_t total = 0;
  for (uint64_t c : fault_latency_us_log2) total += c;
  if (total == 0) return 0;
  const double rank = p / 100.0 * static_cast<double>(total);
  uint64_t seen = 0;
  for (int i = 0; i < kFaultLatencyBuckets; ++i) {
    seen += fault_latency_us_log2[i];
    if (static_cast<double>(seen) >= rank && fault_latency_us_log2[i] > 0) {
      return i == 0 ? 1.0 : std::sqrt(double(1ull << i) * double(2ull << i));
    }
  }
  return double(1ull << (kFaultLatencyBuckets - 1));
}

// ---------------------------------------------------------------- Region

absl::StatusOr<std::unique_ptr<Region>> Region::Create(PageBackend* backend, uint64_t bytes,
                                                       const RegionOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("Region::Create: null backend");
  if (bytes == 0) return absl::InvalidArgumentError("Region::Create: size is 0");
  if (options.evict_batch == 0 || options.load_attempts < 1) {
    return absl::InvalidArgumentError("Region::Create: evict_batch and load_attempts must be >= 1");
  }
  if (options.fault_threads < 0 || options.fault_threads > 64 || options.evict_threads < 0 ||
      options.evict_threads > 64) {
    return absl::InvalidArgumentError(
        "Region::Create: fault_threads and evict_threads must be 0 (auto) .. 64");
  }
  if (options.evict_nice < 0 || options.evict_nice > 39) {
    return absl::InvalidArgumentError(
        "Region::Create: evict_nice must be 0 .. 39 (a nice value is at most 19 in the end)");
  }
  const uint64_t pages = (bytes + kPage - 1) / kPage;
  const uint64_t budget = options.local_budget / kPage;
  if (budget < 4 * uint64_t{options.evict_batch}) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Region::Create: local_budget of ", budget, " pages is under 4 eviction batches (",
        4 * options.evict_batch, " pages): lower evict_batch or raise the budget"));
  }
  int uffd = OpenUserfaultfd();
  if (uffd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "userfaultfd: ", strerror(errno),
        " (needs root, vm.unprivileged_userfaultfd=1, and no seccomp filter blocking it)"));
  }
  uffdio_api api{};
  api.api = UFFD_API;
  // EVENT_REMOVE / EVENT_UNMAP: the program's MADV_DONTNEED and munmap of
  // region pages are reported (region_impl.h, program events).
  constexpr uint64_t kFeatures =
      UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP;
  api.features = kFeatures;
  if (ioctl(uffd, UFFDIO_API, &api) != 0 || (api.features & kFeatures) != kFeatures) {
    int e = errno;
    close(uffd);
    return absl::FailedPreconditionError(
        absl::StrCat("UFFDIO_API (thread id, remove and unmap events): ", strerror(e)));
  }
  void* mem = mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    int e = errno;
    close(uffd);
    return absl::ResourceExhaustedError(absl::StrCat("mmap of ", bytes, " bytes: ", strerror(e)));
  }
  // 4 KiB pages only: a huge page would be one 2 MiB fault and eviction unit.
  madvise(mem, pages * kPage, MADV_NOHUGEPAGE);
  // A fork child gets no mapping (SIGSEGV on access) rather than a copy in
  // which every evicted page would read as zeros: the child has neither the
  // region's threads nor a userfaultfd registration (region.h).
  if (madvise(mem, pages * kPage, MADV_DONTFORK) != 0) {
    int e = errno;
    munmap(mem, pages * kPage);
    close(uffd);
    return absl::FailedPreconditionError(absl::StrCat("MADV_DONTFORK: ", strerror(e)));
  }
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(mem);
  reg.range.len = pages * kPage;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0 || !(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)) ||
      !(reg.ioctls & (1ull << _UFFDIO_COPY))) {
    int e = errno;
    munmap(mem, pages * kPage);
    close(uffd);
    return absl::FailedPreconditionError(
        absl::StrCat("UFFDIO_REGISTER (missing + write-protect): ", strerror(e),
                     " (this kernel must support userfaultfd write-protect on anonymous memory)"));
  }
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    int e = errno;
    munmap(mem, pages * kPage);
    close(uffd);
    return absl::ResourceExhaustedError(absl::StrCat("eventfd: ", strerror(e)));
  }
  auto impl =
      std::make_unique<RegionImpl>(backend, options, static_cast<uint8_t*>(mem), pages, uffd, wake);
  impl->Start();
  return std::unique_ptr<Region>(new Region(std::move(impl)));
}

Region::Region(std::unique_ptr<RegionImpl> impl) : impl_(std::move(impl)) {}
Region::~Region() = default;
uint8_t* Region::data() const { return impl_->base(); }
uint64_t Region::size() const { return impl_->pages() * kPage; }
RegionStats Region::stats() const { return impl_->Stats(); }

absl::Status Region::Advise(uint64_t offset, uint64_t length, Advice advice) {
  if (offset > size() || length > size() - offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Advise: range [", offset, ", +", length, ") is outside the region of ", size(), " bytes"));
  }
  if (length == 0) return absl::OkStatus();
  const uint64_t first = offset / kPage;
  const uint64_t last = (offset + length - 1) / kPage;
  return impl_->Advise(first, last - first + 1, advice);
}

// ---------------------------------------------------------------- RegionImpl

RegionImpl::RegionImpl(PageBackend* backend, const RegionOptions& options, uint8_t* base,
                       uint64_t pages, int uffd, int wake_fd)
    : backend_(backend),
      options_(options),
      base_(base),
      pages_(pages),
      uffd_(uffd),
      wake_fd_(wake_fd),
      budget_pages_(options.local_budget / kPage),
      evict_batch_(options.evict_batch),
      state_(new std::atomic<uint8_t>[pages]),
      age_(new std::atomic<uint8_t>[pages]),
      flags_(new std::atomic<uint8_t>[pages]),
      evicted_at_(new std::atomic<uint64_t>[pages]),
      remote_hash_(new std::atomic<uint64_t>[pages]) {
  for (uint64_t i = 0; i < pages; ++i) {
    state_[i].store(kEmpty, std::memory_order_relaxed);
    age_[i].store(0, std::memory_order_relaxed);
    flags_[i].store(0, std::memory_order_relaxed);
    evicted_at_[i].store(0, std::memory_order_relaxed);
    remote_hash_[i].store(0, std::memory_order_relaxed);
  }
  streams_.resize(8);
}

void RegionImpl::Start() {
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int auto_threads = std::clamp(cpus / 4, 1, 4);
  const int fault_threads = options_.fault_threads > 0 ? options_.fault_threads : auto_threads;
  const int evict_threads = options_.evict_threads > 0 ? options_.evict_threads : fault_threads;
  evict_threads_ = evict_threads;
  if (options_.drop_by_move) {
    // A slot per evictor thread (the urgent one too), and two for Advise(kCold) callers (more
    // callers at once drop by madvise).
    absl::StatusOr<std::unique_ptr<PageDropArea>> area = PageDropArea::Create(
        static_cast<uint32_t>(evict_threads) + 3, evict_batch_, options_.move_report_for_testing);
    // Unavailable (a kernel before 6.8): every drop is a MADV_DONTNEED, as
    // moved_evictions staying 0 shows.
    if (area.ok()) drop_area_ = std::move(*area);
  }
  // Named here, not by the threads themselves: the names are in place when
  // Region::Create returns.
  for (int i = 0; i < fault_threads; ++i) {
    SetThreadName(fault_threads_.emplace_back([this] { FaultThread(); }), "fs-fault");
  }
  for (int i = 0; i < evict_threads; ++i) {
    SetThreadName(threads_.emplace_back([this] { EvictorThread(); }), "fs-evict");
  }
  SetThreadName(threads_.emplace_back([this] { UrgentEvictorThread(); }), "fs-evict-urgent");
  if (options_.prefetch) {
    SetThreadName(threads_.emplace_back([this] { PrefetchThread(); }), "fs-prefetch");
  }
}

RegionImpl::~RegionImpl() {
  {
    MutexLock l(&mu_);
    stop_.store(true);
    evictor_cv_.SignalAll();
    urgent_cv_.SignalAll();
    prefetch_cv_.SignalAll();
    room_cv_.SignalAll();
  }
  // Evictor and prefetch threads first: an evictor in MADV_DONTNEED waits
  // for a fault thread to read its REMOVE event.
  for (std::thread& t : threads_) t.join();
  fault_stop_.store(true);
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  for (std::thread& t : fault_threads_) t.join();
  // Only what is still the region's: the program may have unmapped parts
  // of it, and something else may be mapped there now.
  for (uint64_t p = 0; p < pages_;) {
    if (state_[p].load() == kUnmapped) {
      ++p;
      continue;
    }
    uint64_t end = p + 1;
    while (end < pages_ && state_[end].load() != kUnmapped) ++end;
    uffdio_range range{reinterpret_cast<uint64_t>(Addr(p)), (end - p) * kPage};
    ioctl(uffd_, UFFDIO_UNREGISTER, &range);
    munmap(Addr(p), (end - p) * kPage);
    p = end;
  }
  close(wake_fd_);
  close(uffd_);
}

RegionStats RegionImpl::Stats() const {
  RegionStats s;
  auto r = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  s.missing_faults = r(missing_faults_);
  s.zero_fills = r(zero_fills_);
  s.wp_faults = r(wp_faults_);
  s.evictions = r(evictions_);
  s.clean_evictions = r(clean_evictions_);
  s.evictions_cancelled = r(evictions_cancelled_);
  s.unchanged_evictions = r(unchanged_evictions_);
  s.pages_stored = r(pages_stored_);
  s.pages_loaded = r(pages_loaded_);
  s.bytes_sent = r(bytes_sent_);
  s.bytes_received = r(bytes_received_);
  s.prefetch_issued = r(prefetch_issued_);
  s.prefetch_hits = r(prefetch_hits_);
  s.prefetch_waste = r(prefetch_waste_);
  s.load_retries = r(load_retries_);
  s.sigbus_delivered = r(sigbus_);
  s.store_errors = r(store_errors_);
  s.parked_faults = r(parked_);
  s.install_retries = r(install_retries_);
  s.pages_removed = r(pages_removed_);
  s.evictions_kept_zap_pending = r(zap_kept_);
  s.pages_unmapped = r(pages_unmapped_);
  s.moved_evictions = r(moved_evictions_);
  s.unreported_moves = drop_area_ != nullptr ? drop_area_->unreported_moves() : 0;
  s.urgent_evictions = r(urgent_evictions_);
  s.resident_pages = r(resident_);
  s.max_resident_pages = r(max_resident_);
  s.budget_pages = budget_pages_;
  for (int i = 0; i < kFaultLatencyBuckets; ++i) s.fault_latency_us_log2[i] = r(latency_[i]);
  s.remote_faults = r(remote_faults_);
  s.remote_fault_ns = r(remote_fault_ns_);
  s.remote_load_ns = r(remote_load_ns_);
  s.remote_install_ns = r(remote_install_ns_);
  MutexLock l(&mu_);
  s.last_error = last_error_;
  return s;
}

void RegionImpl::RecordLatency(std::chrono::steady_clock::time_point start) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  int b = 0;
  while (b + 1 < kFaultLatencyBuckets && (int64_t{1} << (b + 1)) <= us) ++b;
  latency_[b].fetch_add(1, std::memory_order_relaxed);
}

void RegionImpl::RecordError(const std::string& what) {
  MutexLock l(&mu_);
  last_error_ = what;
}

bool RegionImpl::TryReserve(uint64_t limit) {
  uint64_t cur = resident_.load();
  do {
    if (cur >= limit && !overcommit_.load(std::memory_order_relaxed)) return false;
  } while (!resident_.compare_exchange_weak(cur, cur + 1));
  uint64_t m = max_resident_.load(std::memory_order_relaxed);
  while (cur + 1 > m && !max_resident_.compare_exchange_weak(m, cur + 1)) {
  }
  return true;
}

void RegionImpl::NoteResidentGrew() {
  // The evictor starts one batch below the budget so that faults and
  // prefetches usually find room without waiting.
  if (resident_.load(std::memory_order_relaxed) + evict_batch_ <= budget_pages_) return;
  // Asked already and not yet taken up: no need for the lock (which every
  // fault at the budget would otherwise take).
  if (evict_asked_.load(std::memory_order_relaxed)) return;
  MutexLock l(&mu_);
  if (!evict_wanted_) {
    evict_wanted_ = true;
    evict_asked_.store(true, std::memory_order_relaxed);
    evictor_cv_.Signal();
  }
}

void RegionImpl::Wake(uint64_t page) {
  uffdio_range r{reinterpret_cast<uint64_t>(Addr(page)), kPage};
  ioctl(uffd_, UFFDIO_WAKE, &r);
}

int RegionImpl::Ioctl(RegionIoctl op, uint64_t page, unsigned long request, void* arg) {
  if (options_.ioctl_error_for_testing) {
    if (int e = options_.ioctl_error_for_testing(op, page); e != 0) return e;
  }
  return ioctl(uffd_, request, arg) == 0 ? 0 : errno;
}

int RegionImpl::Unprotect(uint64_t page) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uint64_t>(Addr(page));
  wp.range.len = kPage;
  wp.mode = 0;  // clear write-protect and wake the writers
  return Ioctl(RegionIoctl::kUnprotect, page, UFFDIO_WRITEPROTECT, &wp);
}

int RegionImpl::UnprotectRetrying(uint64_t page) {
  // EAGAIN: a program event is pending; a fault thread reads it and its
  // caller runs on, within a few scheduler ticks. Give up after a second.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (;;) {
    const int e = Unprotect(page);
    if (e != EAGAIN || std::chrono::steady_clock::now() > give_up) return e;
    std::this_thread::yield();
  }
}

int RegionImpl::ProtectRetrying(uint64_t page) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uint64_t>(Addr(page));
  wp.range.len = kPage;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  // EAGAIN as for UnprotectRetrying.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (;;) {
    const int e = Ioctl(RegionIoctl::kWriteProtect, page, UFFDIO_WRITEPROTECT, &wp);
    if (e != EAGAIN || std::chrono::steady_clock::now() > give_up) return e;
    std::this_thread::yield();
  }
}

bool RegionImpl::PagePresent(uint64_t page) const {
  unsigned char v = 0;
  return mincore(Addr(page), kPage, &v) == 0 && (v & 1);
}

// ---------------------------------------------------------------- fault threads

void RegionImpl::FaultThread() {
  std::vector<uint8_t> buf(kPage);
  uffd_msg msgs[kMessagesPerRead];
  pollfd fds[2] = {{uffd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  auto spin_until = std::chrono::steady_clock::now();
  // On the way out, pass the stop wake-up on: another fault thread may be
  // in poll() and this one may have consumed the eventfd's only count.
  struct PassOnWake {
    int fd;
    ~PassOnWake() {
      uint64_t one = 1;
      (void)!write(fd, &one, sizeof one);
    }
  } pass_on{wake_fd_};
  while (!fault_stop_.load(std::memory_order_relaxed)) {
    ssize_t n;
    FARSWAP_SYNC_POINT("Region::FaultThread:before-read");
    {
      // Reading an event releases its caller (madvise, munmap), who may
      // fault on the range at once; that fault must not be served (by
      // another fault thread) before the event is: events are handled
      // before any other thread reads again.
      MutexLock l(&read_mu_);
      n = read(uffd_, msgs, sizeof msgs);
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
        if (msgs[i].event != UFFD_EVENT_PAGEFAULT) HandleMessage(msgs[i], buf);
      }
    }
    if (n > 0) {
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) HandleMessage(msgs[i], buf);
      }
      spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(options_.spin_us);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      RecordError(absl::StrCat("userfaultfd read: ", strerror(errno)));
      return;
    }
    // Every message has been read (events included): deferred faults may
    // go on.
    if (retry_now_.load() > 0) DrainRetries(buf);
    bool parked;
    {
      MutexLock l(&mu_);
      parked = !parked_faults_.empty();
    }
    if (parked && (resident_.load() < budget_pages_ + evict_batch_ || overcommit_.load())) {
      DrainParked(buf);
      continue;
    }
    // Spin-then-block: right after a fault another is likely (a scan, a
    // burst); a spinning reader answers it ~50 µs sooner than one woken
    // from poll() on the other vCPU (toolchain-notes.md). Yielding while
    // spinning: on 2 vCPUs the evictor and the prefetcher must still get a
    // core when they have work. The spin does nothing else: it once helped
    // the prefetcher by loading queued pages one at a time, which turned the
    // prefetcher's 16-page batches into single-page round trips and kept
    // the next fault waiting behind a load (from a node's disk, hundreds of
    // µs); measured side by side, the demo ran 31.5 s without that help
    // against 37.8 s with it, and `farswap-bench region --workload seq`'s
    // thread-seen fault p50 went from 80 to 30 µs.
    if (std::chrono::steady_clock::now() < spin_until) {
      std::this_thread::yield();
      continue;
    }
    // Deferred faults wait for a transition of another thread, not for a
    // message: look again within a millisecond.
    if (poll(fds, 2, retry_now_.load() > 0 ? 1 : -1) < 0 && errno != EINTR) {
      RecordError(absl::StrCat("userfaultfd poll: ", strerror(errno)));
      return;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      (void)!read(wake_fd_, &v, sizeof v);
    }
  }
}

void RegionImpl::HandleMessage(const uffd_msg& msg, std::vector<uint8_t>& buf) {
  switch (msg.event) {
    case UFFD_EVENT_PAGEFAULT:
      break;
    case UFFD_EVENT_REMOVE:
      HandleRangeEvent(msg.arg.remove.start, msg.arg.remove.end, kFlagForgetRemoved);
      return;
    case UFFD_EVENT_UNMAP:
      HandleRangeEvent(msg.arg.remove.start, msg.arg.remove.end, kFlagForgetUnmapped);
      return;
    default:
      return;  // no other events were asked for
  }
  const auto start = std::chrono::steady_clock::now();
  const uint64_t addr = msg.arg.pagefault.address;
  const uint64_t page = (addr - reinterpret_cast<uint64_t>(base_)) / kPage;
  if (addr < reinterpret_cast<uint64_t>(base_) || page >= pages_) return;
  const uint64_t flags = msg.arg.pagefault.flags;
  ParkedFault f{page, (flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0, msg.arg.pagefault.feat.ptid, start};
  if (flags & UFFD_PAGEFAULT_FLAG_WP) {
    wp_faults_.fetch_add(1, std::memory_order_relaxed);
    f.wp = true;
    HandleWriteProtect(f);
    RecordLatency(start);
    return;
  }
  HandleMissing(f, buf, /*may_park=*/true);
}

void RegionImpl::DrainParked(std::vector<uint8_t>& buf) {
  for (;;) {
    ParkedFault f;
    {
      MutexLock l(&mu_);
      if (parked_faults_.empty()) return;
      f = parked_faults_.front();
      parked_faults_.pop_front();
      parked_now_.fetch_sub(1);
    }
    if (!HandleMissing(f, buf, /*may_park=*/true)) return;
  }
}

void RegionImpl::Defer(const ParkedFault& f) {
  MutexLock l(&mu_);
  retry_.push_back(f);
  retry_now_.fetch_add(1);
}

void RegionImpl::DrainRetries(std::vector<uint8_t>& buf) {
  // Each deferred fault once: one deferred again goes back to retry_.
  std::deque<ParkedFault> batch;
  {
    MutexLock l(&mu_);
    batch.swap(retry_);
    retry_now_.fetch_sub(batch.size());
  }
  for (const ParkedFault& f : batch) {
    if (f.wp) {
      HandleWriteProtect(f);
    } else {
      HandleMissing(f, buf, /*may_park=*/true);
    }
  }
}

void RegionImpl::InstallFailed(ParkedFault f, uint8_t prior, int err, const char* what) {
  // The install did not happen: the page is not resident. Undo the claim
  // (the kernel still holds the faulting thread), then retry the fault or
  // give the thread SIGBUS, as for a load that fails.
  Unreserve();
  Publish(f.page, prior);
  install_retries_.fetch_add(1, std::memory_order_relaxed);
  if (err == ENOENT) {
    // The program unmapped the page: the thread faults again, now SIGSEGV.
    Wake(f.page);
    return;
  }
  // EAGAIN: a program event (REMOVE, UNMAP) is pending; retry once it is
  // read. Anything else is retried load_attempts times in all.
  constexpr auto kEagainPatience = std::chrono::seconds(5);
  if (err == EAGAIN && std::chrono::steady_clock::now() - f.start < kEagainPatience) {
    Defer(f);
    return;
  }
  RecordError(absl::StrCat(what, " of page ", f.page, ": ", strerror(err)));
  if (++f.install_failures < options_.load_attempts) {
    Defer(f);
    return;
  }
  sigbus_.fetch_add(1, std::memory_order_relaxed);
  RecordError(absl::StrCat(what, " of page ", f.page, " failed ", f.install_failures,
                           " times: ", strerror(err), "; SIGBUS to thread ", f.tid));
  syscall(SYS_tgkill, getpid(), f.tid, SIGBUS);
  Wake(f.page);
}

bool RegionImpl::HandleMissing(ParkedFault f, std::vector<uint8_t>& buf, bool may_park) {
  const uint64_t page = f.page;
  const auto start = f.start;
  for (;;) {
    uint8_t s = state_[page].load();
    switch (s) {
      case kDropping:
      case kForgetting:
        // The evictor is dropping it (its MADV_DONTNEED may be waiting for
        // this very thread to read the REMOVE event), or it is being
        // forgotten: serve the fault once that is over.
        Defer(f);
        return true;
      case kFetching: {
        // The prefetcher (or another fault thread) is installing this page;
        // its UFFDIO_COPY wakes our faulter, and a failed fetch wakes it to
        // fault again.
        uint8_t fl = flags_[page].fetch_and(static_cast<uint8_t>(~kFlagPrefetched));
        if (fl & kFlagPrefetched) prefetch_hits_.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      case kUnmapped:
        Wake(page);  // a fault deferred before the unmap: it faults again (SIGSEGV)
        return true;
      case kClean:
      case kDirty:
      case kEvicting:
      case kWriting:
        // Resident: a stale message (another thread's fault installed it),
        // or the program zapped the page (MADV_DONTNEED) after the REMOVE
        // event was handled: then it reads as zeros.
        FARSWAP_SYNC_POINT("Region::MissingFault:resident-before-look");
        if (PagePresent(page)) {
          Wake(page);
          return true;
        }
        if (s == kWriting) {
          // Another fault thread holds it: look again once it publishes.
          Defer(f);
          return true;
        }
        // Missing. Hold the page before filling it: `s` may be stale, and
        // an evictor may have committed, dropped and published kRemote since
        // (its own zap is why the page is missing); zeros over a page whose
        // contents live remotely would lose them. Holding it (kWriting) also
        // keeps any evictor from dropping it until the zeros are in, and
        // cancels an eviction in flight as a write would. A page held here
        // that is missing was zapped by the program: only an eviction that
        // has committed (kDropping) zaps.
        if (!state_[page].compare_exchange_strong(s, kWriting)) continue;
        // Any zap the program had pending has run.
        flags_[page].fetch_and(static_cast<uint8_t>(~kFlagZapPending));
        RecoverZapped(f);
        Publish(page, kDirty);
        return true;
      default:
        break;  // kEmpty, kRemote
    }
    if (!TryReserve(budget_pages_ + evict_batch_)) {
      if (!may_park) {
        Defer(f);
        return true;
      }
      // Over budget by a full batch: hold the fault (its thread stays
      // blocked in the kernel) until the evictor has made room, and keep
      // serving other faults meanwhile.
      MutexLock l(&mu_);
      parked_faults_.push_back(f);
      parked_now_.fetch_add(1);
      parked_.fetch_add(1, std::memory_order_relaxed);
      evict_wanted_ = true;
      evictor_cv_.Signal();
      urgent_cv_.Signal();
      return false;
    }
    if (!state_[page].compare_exchange_strong(s, kFetching)) {
      Unreserve();
      continue;
    }
    OnMissingFault(page);
    if (s == kEmpty) {
      // Never written: zeros, locally, in a private page for a read as for
      // a write (InstallZeros says why never the shared zero page).
      age_[page].store(kAgeFault, std::memory_order_relaxed);
      const int err = InstallZeros(page);
      if (err != 0 && err != EEXIST) {
        InstallFailed(f, kEmpty, err, "zero-fill");
        return true;
      }
      missing_faults_.fetch_add(1, std::memory_order_relaxed);
      zero_fills_.fetch_add(1, std::memory_order_relaxed);
      Publish(page, kDirty);
      RecordLatency(start);
      NoteResidentGrew();
      return true;
    }
    const auto load_start = std::chrono::steady_clock::now();
    absl::StatusOr<size_t> got = LoadWithRetry(page, buf.data());
    const auto load_end = std::chrono::steady_clock::now();
    if (!got.ok()) {
      Unreserve();
      Publish(page, kRemote);
      sigbus_.fetch_add(1, std::memory_order_relaxed);
      RecordError(absl::StrCat("load of page ", page, " failed after ", options_.load_attempts,
                               " attempts: ", got.status().ToString(), "; SIGBUS to thread ",
                               f.tid));
      // As the kernel does for an unreadable swap page: the faulting thread
      // gets SIGBUS. The signal interrupts its wait in handle_userfault();
      // the wake covers a faulter that is not interruptible.
      syscall(SYS_tgkill, getpid(), f.tid, SIGBUS);
      Wake(page);
      return true;
    }
    pages_loaded_.fetch_add(1, std::memory_order_relaxed);
    bytes_received_.fetch_add(*got, std::memory_order_relaxed);
    // Refault distance (region.h): back within a budget's worth of
    // evictions means it would have stayed with a little more memory.
    const uint64_t stamp = evicted_at_[page].load(std::memory_order_relaxed);
    const bool hot = stamp != 0 && eviction_clock_.load() - stamp < budget_pages_;
    age_[page].store(hot ? kMaxAge : kAgeFault, std::memory_order_relaxed);
    uint8_t installed;
    int err;
    if (CheckAndInstall(page, buf.data(), &installed, &err)) {
      // The program dropped the page while it loaded: not those contents.
      Unreserve();
      Publish(page, kRemote);  // forgotten: kEmpty (or kUnmapped)
      continue;
    }
    if (err != 0) {
      InstallFailed(f, kRemote, err, "UFFDIO_COPY");
      return true;
    }
    missing_faults_.fetch_add(1, std::memory_order_relaxed);
    Publish(page, installed);
    RecordLatency(start);
    const auto end = std::chrono::steady_clock::now();
    auto ns = [](auto d) {
      return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
    };
    remote_faults_.fetch_add(1, std::memory_order_relaxed);
    remote_fault_ns_.fetch_add(ns(end - start), std::memory_order_relaxed);
    remote_load_ns_.fetch_add(ns(load_end - load_start), std::memory_order_relaxed);
    remote_install_ns_.fetch_add(ns(end - load_end), std::memory_order_relaxed);
    NoteResidentGrew();
    return true;
  }
}

int RegionImpl::InstallZeros(uint64_t page) {
  // A private zeroed page (UFFDIO_COPY), never the shared zero page
  // (UFFDIO_ZEROPAGE), although that costs a page and a copy. A program's
  // write to the shared zero page is copied in the kernel with no event,
  // and an eviction's UFFDIO_MOVE racing that copy (Linux 6.18) has been
  // seen to take the page out of the region while reporting it not moved:
  // the program's writes were then freed with the drop slot and the page
  // read back as zeros (RegionTest.DataWrittenEvictedAndFaultedBackIsIdentical,
  // about 1 run in 300, always a page prefetched as zeros).
  uffdio_copy c{};
  c.dst = reinterpret_cast<uint64_t>(Addr(page));
  c.src = reinterpret_cast<uint64_t>(ZeroPage());
  c.len = kPage;
  return Ioctl(RegionIoctl::kZeroPage, page, UFFDIO_COPY, &c);  // injected as a zero-fill
}

bool RegionImpl::CheckAndInstall(uint64_t page, const uint8_t* data, uint8_t* state, int* err) {
  // Under read_mu_, which a fault thread holds from reading an event to
  // marking its pages: the program's MADV_DONTNEED zaps right after its
  // REMOVE event is read, so a copy made after that read but before the
  // mark would put back contents the program threw away. Either this copy
  // lands before the event is read (and the zap removes it: the next touch
  // reads zeros), or the mark is seen here and nothing is installed.
  MutexLock l(&read_mu_);
  if (flags_[page].load() & (kFlagForgetRemoved | kFlagForgetUnmapped)) {
    *err = 0;
    return true;
  }
  *err = InstallLoaded(page, data, state);
  return false;
}

int RegionImpl::InstallLoaded(uint64_t page, const uint8_t* data, uint8_t* state) {
  uffdio_copy c{};
  c.dst = reinterpret_cast<uint64_t>(Addr(page));
  c.src = reinterpret_cast<uint64_t>(data);
  c.len = kPage;
  if (options_.install_writable) {
    // Writable: no write-protect fault on the first write; eviction finds
    // out by hash whether the page changed. (The hash is the backend copy's
    // whether or not the install succeeds.)
    remote_hash_[page].store(XXH3_64bits(data, kPage), std::memory_order_relaxed);
    flags_[page].fetch_or(kFlagRemoteHash);
    c.mode = 0;
    *state = kDirty;
  } else {
    c.mode = UFFDIO_COPY_MODE_WP;  // arrives clean: the first write is a WP fault
    *state = kClean;
  }
  const int err = Ioctl(RegionIoctl::kCopy, page, UFFDIO_COPY, &c);
  return err == EEXIST ? 0 : err;
}

absl::StatusOr<size_t> RegionImpl::LoadWithRetry(uint64_t page, uint8_t* out) {
  absl::Status last;
  for (int attempt = 0; attempt < options_.load_attempts; ++attempt) {
    if (attempt > 0) {
      load_retries_.fetch_add(1, std::memory_order_relaxed);
      // Backoff for a node that is failing over: 1, 2, 4 ... ms.
      std::this_thread::sleep_for(std::chrono::milliseconds(1 << std::min(attempt - 1, 6)));
    }
    absl::StatusOr<size_t> r = backend_->Load(page, out);
    if (r.ok()) return r;
    last = r.status();
    const absl::StatusCode c = last.code();
    if (c != absl::StatusCode::kUnavailable && c != absl::StatusCode::kDataLoss &&
        c != absl::StatusCode::kDeadlineExceeded && c != absl::StatusCode::kAborted) {
      break;  // not transient: retrying cannot help
    }
  }
  return last;
}

void RegionImpl::HandleWriteProtect(const ParkedFault& fault) {
  ParkedFault f = fault;
  const uint64_t page = f.page;
  for (;;) {
    uint8_t s = state_[page].load();
    if (f.unprotect_pending) {
      // Deferred with the page held kWriting: only the un-protect is left.
      f.unprotect_pending = false;
    } else if (s == kDropping || s == kForgetting || s == kWriting) {
      // The drop was committed before this write, the page is being
      // forgotten, or another writer's fault holds it: look again once that
      // is over (then the writer is woken, or faults MISSING and writes).
      Defer(f);
      return;
    } else if (s == kClean || s == kEvicting || s == kDirty) {
      // kEvicting → kWriting is what cancels an eviction in flight: the
      // evictor only drops a page it still finds kEvicting. kDirty: a stale
      // message, or a page left write-protected (a failed un-protect, zeros
      // after a zap); un-protecting again is harmless.
      if (!state_[page].compare_exchange_strong(s, kWriting)) continue;
      // A write after a REMOVE was handled: the program's madvise has
      // returned, so its zap (if any) has run (kFlagZapPending).
      uint8_t fl =
          flags_[page].fetch_and(static_cast<uint8_t>(~(kFlagPrefetched | kFlagZapPending)));
      if (fl & kFlagPrefetched) prefetch_hits_.fetch_add(1, std::memory_order_relaxed);
      uint8_t a = age_[page].load(std::memory_order_relaxed);
      if (a < kAgeWrite) age_[page].store(kAgeWrite, std::memory_order_relaxed);
    } else {
      // Not present: the writer will fault MISSING (or SIGSEGV if unmapped).
      Wake(page);
      return;
    }
    FARSWAP_SYNC_POINT("Region::WriteProtectFault:before-unprotect");
    const int err = Unprotect(page);
    if (err == 0 || err == ENOENT) {  // ENOENT: unmapped; the writer gets SIGSEGV
      Publish(page, kDirty);
      if (err != 0) Wake(page);
      return;
    }
    // The page stays kWriting and the writer blocked until it is writable.
    install_retries_.fetch_add(1, std::memory_order_relaxed);
    f.unprotect_pending = true;
    if (err == EAGAIN) {  // a program event is pending: after it is read
      Defer(f);
      return;
    }
    RecordError(absl::StrCat("un-protect of page ", page, ": ", strerror(err)));
    if (++f.install_failures < options_.load_attempts) {
      Defer(f);
      return;
    }
    // Give up: the writer gets SIGBUS; the page stays resident and
    // write-protected as kDirty (its next write faults and tries again).
    Publish(page, kDirty);
    sigbus_.fetch_add(1, std::memory_order_relaxed);
    syscall(SYS_tgkill, getpid(), f.tid, SIGBUS);
    Wake(page);
    return;
  }
}

absl::Status RegionImpl::Advise(uint64_t first, uint64_t count, Advice advice) {
  if (advice == Advice::kWillNeed) {
    MutexLock l(&mu_);
    QueuePrefetch(static_cast<int64_t>(first), 1,
                  static_cast<uint32_t>(std::min<uint64_t>(count, budget_pages_)));
    return absl::OkStatus();
  }
  std::vector<uint64_t> targets;
  std::vector<uint8_t> snapshot;
  const uint64_t before = store_errors_.load();
  for (uint64_t p = first; p < first + count; ++p) {
    targets.push_back(p);
    if (targets.size() == evict_batch_ || p + 1 == first + count) {
      EvictBatch(&targets, snapshot);
      targets.clear();
    }
  }
  if (store_errors_.load() != before) {
    MutexLock l(&mu_);
    return absl::UnavailableError(absl::StrCat("Advise(cold): a store failed: ", last_error_));
  }
  return absl::OkStatus();
}

}  // namespace farswap
