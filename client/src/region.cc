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

const uint8_t* ZeroPage() {
  alignas(4096) static const uint8_t zero[kPage] = {};
  return zero;
}

}  // namespace

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
  api.features = UFFD_FEATURE_THREAD_ID;
  if (ioctl(uffd, UFFDIO_API, &api) != 0) {
    int e = errno;
    close(uffd);
    return absl::FailedPreconditionError(absl::StrCat("UFFDIO_API: ", strerror(e)));
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
  for (int i = 0; i < fault_threads; ++i) threads_.emplace_back([this] { FaultThread(); });
  for (int i = 0; i < evict_threads; ++i) threads_.emplace_back([this] { EvictorThread(); });
  if (options_.prefetch) threads_.emplace_back([this] { PrefetchThread(); });
}

RegionImpl::~RegionImpl() {
  {
    MutexLock l(&mu_);
    stop_.store(true);
    evictor_cv_.SignalAll();
    prefetch_cv_.SignalAll();
    room_cv_.SignalAll();
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  for (std::thread& t : threads_) t.join();
  uffdio_range range{reinterpret_cast<uint64_t>(base_), pages_ * kPage};
  ioctl(uffd_, UFFDIO_UNREGISTER, &range);
  munmap(base_, pages_ * kPage);
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

void RegionImpl::WaitWhileDropping(uint64_t page) {
  // The evictor is between committing the drop and MADV_DONTNEED of this one
  // page: a few microseconds, never a store.
  while (state_[page].load() == kDropping) std::this_thread::yield();
}

void RegionImpl::Wake(uint64_t page) {
  uffdio_range r{reinterpret_cast<uint64_t>(Addr(page)), kPage};
  ioctl(uffd_, UFFDIO_WAKE, &r);
}

bool RegionImpl::Unprotect(uint64_t page) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uint64_t>(Addr(page));
  wp.range.len = kPage;
  wp.mode = 0;  // clear write-protect and wake the writers
  return ioctl(uffd_, UFFDIO_WRITEPROTECT, &wp) == 0;
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
  while (!stop_.load(std::memory_order_relaxed)) {
    ssize_t n = read(uffd_, msgs, sizeof msgs);
    if (n > 0) {
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
        HandleMessage(msgs[i], buf);
      }
      spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(options_.spin_us);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      RecordError(absl::StrCat("userfaultfd read: ", strerror(errno)));
      return;
    }
    bool parked;
    {
      MutexLock l(&mu_);
      parked = !parked_faults_.empty();
    }
    if (parked && (resident_.load() < budget_pages_ + evict_batch_ || overcommit_.load())) {
      DrainParked(buf);
      continue;
    }
    // Adaptive spin-then-block: right after a fault another is likely (a
    // scan, a burst); a spinning reader answers it ~50 µs sooner than one
    // woken from poll() on the other vCPU (toolchain-notes.md).
    // Yielding while spinning: on 2 vCPUs the evictor and the prefetcher
    // must still get a core when they have work.
    // The spin is also when this thread helps the prefetcher: waking that
    // thread costs as much as a fault, and this one is awake anyway.
    if (std::chrono::steady_clock::now() < spin_until) {
      uint64_t page;
      bool have;
      {
        MutexLock l(&mu_);
        have = PopPrefetch(&page);
      }
      if (have && !PrefetchOne(page, buf)) {
        MutexLock l(&mu_);
        RequeuePrefetch(page);  // no room; the prefetch thread may wait for it
        prefetch_cv_.Signal();
      } else if (!have) {
        std::this_thread::yield();
      }
      continue;
    }
    if (poll(fds, 2, -1) < 0 && errno != EINTR) {
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
  if (msg.event != UFFD_EVENT_PAGEFAULT) return;  // no other events were asked for
  const auto start = std::chrono::steady_clock::now();
  const uint64_t addr = msg.arg.pagefault.address;
  const uint64_t page = (addr - reinterpret_cast<uint64_t>(base_)) / kPage;
  if (addr < reinterpret_cast<uint64_t>(base_) || page >= pages_) return;
  const uint64_t flags = msg.arg.pagefault.flags;
  if (flags & UFFD_PAGEFAULT_FLAG_WP) {
    wp_faults_.fetch_add(1, std::memory_order_relaxed);
    HandleWriteProtect(page);
    RecordLatency(start);
    return;
  }
  HandleMissing(page, flags & UFFD_PAGEFAULT_FLAG_WRITE, msg.arg.pagefault.feat.ptid, start, buf,
                /*may_park=*/true);
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
    if (!HandleMissing(f.page, f.write, f.tid, f.start, buf, /*may_park=*/true)) return;
  }
}

bool RegionImpl::HandleMissing(uint64_t page, bool write, uint32_t tid,
                               std::chrono::steady_clock::time_point start,
                               std::vector<uint8_t>& buf, bool may_park) {
  for (;;) {
    uint8_t s = state_[page].load();
    if (s == kDropping) {
      WaitWhileDropping(page);
      continue;
    }
    if (s == kFetching) {
      // The prefetcher (or another fault thread) is installing this page;
      // its UFFDIO_COPY wakes our faulter, and a failed fetch wakes it to
      // fault again.
      uint8_t f = flags_[page].fetch_and(static_cast<uint8_t>(~kFlagPrefetched));
      if (f & kFlagPrefetched) prefetch_hits_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    if (s != kEmpty && s != kRemote) {  // already resident: a stale message
      Wake(page);
      return true;
    }
    if (!TryReserve(budget_pages_ + evict_batch_)) {
      // Over budget by a full batch: hold the fault (its thread stays
      // blocked in the kernel) until the evictor has made room, and keep
      // serving other faults meanwhile.
      MutexLock l(&mu_);
      parked_faults_.push_back({page, write, tid, start});
      parked_now_.fetch_add(1);
      parked_.fetch_add(1, std::memory_order_relaxed);
      evict_wanted_ = true;
      evictor_cv_.Signal();
      return false;
    }
    if (!state_[page].compare_exchange_strong(s, kFetching)) {
      Unreserve();
      continue;
    }
    missing_faults_.fetch_add(1, std::memory_order_relaxed);
    OnMissingFault(page);
    if (s == kEmpty) {
      // Never written: zeros, locally. A write gets a private zero page; a
      // read maps the shared zero page (a later write copies it in the
      // kernel, unseen, so the page counts as dirty from now on).
      zero_fills_.fetch_add(1, std::memory_order_relaxed);
      age_[page].store(kAgeFault, std::memory_order_relaxed);
      int rc;
      if (write) {
        uffdio_copy c{};
        c.dst = reinterpret_cast<uint64_t>(Addr(page));
        c.src = reinterpret_cast<uint64_t>(ZeroPage());
        c.len = kPage;
        rc = ioctl(uffd_, UFFDIO_COPY, &c);
      } else {
        uffdio_zeropage z{};
        z.range.start = reinterpret_cast<uint64_t>(Addr(page));
        z.range.len = kPage;
        rc = ioctl(uffd_, UFFDIO_ZEROPAGE, &z);
      }
      if (rc != 0 && errno != EEXIST) {
        RecordError(absl::StrCat("zero-fill of page ", page, ": ", strerror(errno)));
      }
      state_[page].store(kDirty);
      RecordLatency(start);
      NoteResidentGrew();
      return true;
    }
    const auto load_start = std::chrono::steady_clock::now();
    absl::StatusOr<size_t> got = LoadWithRetry(page, buf.data());
    const auto load_end = std::chrono::steady_clock::now();
    if (!got.ok()) {
      Unreserve();
      state_[page].store(kRemote);
      sigbus_.fetch_add(1, std::memory_order_relaxed);
      RecordError(absl::StrCat("load of page ", page, " failed after ", options_.load_attempts,
                               " attempts: ", got.status().ToString(), "; SIGBUS to thread ", tid));
      // As the kernel does for an unreadable swap page: the faulting thread
      // gets SIGBUS. The signal interrupts its wait in handle_userfault();
      // the wake covers a faulter that is not interruptible.
      syscall(SYS_tgkill, getpid(), tid, SIGBUS);
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
    state_[page].store(InstallLoaded(page, buf.data(), "UFFDIO_COPY"));
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

uint8_t RegionImpl::InstallLoaded(uint64_t page, const uint8_t* data, const char* who) {
  uffdio_copy c{};
  c.dst = reinterpret_cast<uint64_t>(Addr(page));
  c.src = reinterpret_cast<uint64_t>(data);
  c.len = kPage;
  uint8_t state;
  if (options_.install_writable) {
    // Writable: no write-protect fault on the first write; eviction finds
    // out by hash whether the page changed.
    remote_hash_[page].store(XXH3_64bits(data, kPage), std::memory_order_relaxed);
    flags_[page].fetch_or(kFlagRemoteHash);
    c.mode = 0;
    state = kDirty;
  } else {
    c.mode = UFFDIO_COPY_MODE_WP;  // arrives clean: the first write is a WP fault
    state = kClean;
  }
  if (ioctl(uffd_, UFFDIO_COPY, &c) != 0 && errno != EEXIST) {
    RecordError(absl::StrCat(who, " of page ", page, ": ", strerror(errno)));
  }
  return state;
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

void RegionImpl::HandleWriteProtect(uint64_t page) {
  for (;;) {
    uint8_t s = state_[page].load();
    if (s == kDropping) {
      // The drop was committed before this write: let the drop finish, then
      // wake the writer; it faults the page back (MISSING) and writes then.
      WaitWhileDropping(page);
      continue;
    }
    if (s == kClean || s == kEvicting) {
      if (!state_[page].compare_exchange_strong(s, kWriting)) continue;
      // kEvicting → kWriting is what cancels an eviction in flight: the
      // evictor only drops a page it still finds kEvicting.
      uint8_t f = flags_[page].fetch_and(static_cast<uint8_t>(~kFlagPrefetched));
      if (f & kFlagPrefetched) prefetch_hits_.fetch_add(1, std::memory_order_relaxed);
      uint8_t a = age_[page].load(std::memory_order_relaxed);
      if (a < kAgeWrite) age_[page].store(kAgeWrite, std::memory_order_relaxed);
      FARSWAP_SYNC_POINT("Region::WriteProtectFault:before-unprotect");
      if (!Unprotect(page)) {
        RecordError(absl::StrCat("un-protect of page ", page, ": ", strerror(errno)));
      }
      state_[page].store(kDirty);
      return;
    }
    // kDirty/kWriting: another writer's fault is un-protecting it; anything
    // else: the page is not present and the writer will fault MISSING.
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
