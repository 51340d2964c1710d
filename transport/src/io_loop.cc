// io_loop.cc: the epoll event loop (io_loop.h). Level-triggered epoll: a
// target that stops early (a read budget) is simply called again.
#include "io_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"
#include "farswap/common/thread_name.h"
#include "spdlog/spdlog.h"

namespace farswap::transport {
namespace {
constexpr IoLoop::Registration kWakeRegistration = 0;
// kInnerRegistration: the inner epoll instance in the outer one (never a
// target's: registrations count up from 1).
constexpr IoLoop::Registration kInnerRegistration = ~IoLoop::Registration{0};
// kMaxEvents: events taken per epoll_wait; more just wait for the next call.
constexpr int kMaxEvents = 64;

// running_loop: the loop whose work the calling thread runs now.
thread_local const IoLoop* running_loop = nullptr;

absl::Status ErrnoStatus(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}
}  // namespace

absl::StatusOr<std::shared_ptr<IoLoop>> IoLoop::Create(int index, absl::Duration busy_poll,
                                                       bool quiet_helping) {
  int fds[3] = {-1, -1, -1};  // targets' epoll, eventfd, outer epoll (quiet helping)
  auto fail = [&fds](absl::string_view what) {
    absl::Status s = ErrnoStatus(what);
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
    return s;
  };
  if ((fds[0] = epoll_create1(EPOLL_CLOEXEC)) < 0) return fail("epoll_create1");
  if ((fds[1] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) return fail("eventfd");
  // The loop's thread waits on `wait_fd`: the targets' instance itself, or
  // with quiet helping an outer one holding it (file comment in io_loop.h).
  int wait_fd = fds[0];
  if (quiet_helping) {
    if ((fds[2] = epoll_create1(EPOLL_CLOEXEC)) < 0) return fail("epoll_create1");
    epoll_event inner{};
    inner.events = EPOLLIN;
    inner.data.u64 = kInnerRegistration;
    if (epoll_ctl(fds[2], EPOLL_CTL_ADD, fds[0], &inner) != 0) return fail("epoll_ctl(epoll)");
    wait_fd = fds[2];
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeRegistration;
  if (epoll_ctl(wait_fd, EPOLL_CTL_ADD, fds[1], &ev) != 0) return fail("epoll_ctl(eventfd)");
  std::shared_ptr<IoLoop> loop(new IoLoop(index, wait_fd, fds[0], fds[1], busy_poll));
  loop->thread_ = std::thread([raw = loop.get()] { raw->Run(); });
  return loop;
}

IoLoop::IoLoop(int index, int wait_fd, int epoll_fd, int wake_fd, absl::Duration busy_poll)
    : index_(index),
      wait_fd_(wait_fd),
      epoll_fd_(epoll_fd),
      wake_fd_(wake_fd),
      busy_poll_(busy_poll) {}

IoLoop::~IoLoop() {
  Stop();
  if (wait_fd_ != epoll_fd_) close(wait_fd_);
  close(epoll_fd_);
  close(wake_fd_);
}

bool IoLoop::InLoopThread() const { return running_loop == this; }

bool IoLoop::HelpPoll() {
  if (running_loop != nullptr) return false;  // not from inside a callback
  if (!work_mu_.TryLock()) return false;
  bool handled = false;
  if (!help_refused_) {
    epoll_event events[kMaxEvents];
    const int n = epoll_wait(epoll_fd_, events, kMaxEvents, 0);
    if (n > 0) {
      running_loop = this;
      // Only the wake eventfd ready (left to the loop's thread), or targets
      // removed meanwhile: nothing handled, so the caller yields and that
      // thread gets the CPU.
      handled = Dispatch(events, n, /*loop_thread=*/false, nullptr) > 0;
      running_loop = nullptr;
    }
  }
  work_mu_.Unlock();
  return handled;
}

void IoLoop::BeginHelping() {
  // Not from a callback (HelpPoll would refuse), nor without quiet helping.
  if (running_loop != nullptr || wait_fd_ == epoll_fd_) return;
  MutexLock l(&help_mu_);
  if (helpers_++ != 0) return;
  // Interest in nothing: EPOLLERR and EPOLLHUP, which the kernel adds, are
  // never raised by an epoll instance.
  epoll_event ev{};
  ev.data.u64 = kInnerRegistration;
  epoll_ctl(wait_fd_, EPOLL_CTL_MOD, epoll_fd_, &ev);
}

void IoLoop::EndHelping() {
  if (running_loop != nullptr || wait_fd_ == epoll_fd_) return;
  MutexLock l(&help_mu_);
  if (--helpers_ != 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kInnerRegistration;
  epoll_ctl(wait_fd_, EPOLL_CTL_MOD, epoll_fd_, &ev);
}

int IoLoop::Dispatch(const epoll_event* events, int n, bool loop_thread, bool* inner_ready) {
  int delivered = 0;
  for (int i = 0; i < n; ++i) {
    const Registration reg = events[i].data.u64;
    if (reg == kWakeRegistration) {
      if (loop_thread) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = read(wake_fd_, &count, sizeof(count));
      }
      continue;
    }
    if (reg == kInnerRegistration) {
      *inner_ready = true;
      continue;
    }
    auto it = targets_.find(reg);
    if (it == targets_.end()) continue;                // removed earlier (or by a helper)
    std::shared_ptr<EpollTarget> target = it->second;  // may Remove itself
    target->OnEvents(events[i].events);
    ++delivered;
  }
  return delivered;
}

void IoLoop::Wake() {
  uint64_t one = 1;
  // The eventfd counter cannot overflow in practice; EAGAIN would mean a
  // wakeup is already pending, which is all we need.
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

bool IoLoop::Post(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    if (stopped_) return false;
    tasks_.push_back(std::move(task));
  }
  Wake();
  return true;
}

bool IoLoop::RunSync(std::function<void()> task) {
  if (InLoopThread()) {
    task();
    return true;
  }
  Mutex mu;
  CondVar cv;
  bool done = false;  // guarded by mu (a local: not annotatable)
  if (!Post([&] {
        task();
        MutexLock lock(&mu);
        done = true;
        cv.Signal();
      })) {
    return false;
  }
  // Queued tasks always run, even when the loop is stopping.
  MutexLock lock(&mu);
  while (!done) cv.Wait(&mu);
  return true;
}

void IoLoop::Stop() {
  {
    MutexLock lock(&mu_);
    stop_requested_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<IoLoop::Registration> IoLoop::Add(int fd, uint32_t events,
                                                 std::shared_ptr<EpollTarget> target) {
  const Registration reg = next_registration_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = reg;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return ErrnoStatus("epoll_ctl(ADD)");
  targets_.emplace(reg, std::move(target));
  return reg;
}

absl::Status IoLoop::Modify(Registration reg, int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = reg;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0) return ErrnoStatus("epoll_ctl(MOD)");
  return absl::OkStatus();
}

void IoLoop::Remove(Registration reg, int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  targets_.erase(reg);
}

void IoLoop::Run() {
  SetCurrentThreadName("fs-io-" + std::to_string(index_));
  running_loop = this;
  epoll_event events[kMaxEvents];
  std::vector<std::function<void()>> tasks;
  // Busy-poll (TransportOptions::busy_poll): after handling events the
  // loop keeps polling without blocking for a while, yielding the CPU
  // between polls, so a reply that comes within a round trip is read by a
  // thread that is already awake instead of one woken by the kernel.
  const auto spin = std::chrono::nanoseconds(absl::ToInt64Nanoseconds(busy_poll_));
  auto spin_until = std::chrono::steady_clock::now();
  for (;;) {
    int n;
    if (spin.count() > 0 && std::chrono::steady_clock::now() < spin_until) {
      n = epoll_wait(wait_fd_, events, kMaxEvents, 0);
      if (n == 0) {
        std::this_thread::yield();
        continue;
      }
    } else {
      n = epoll_wait(wait_fd_, events, kMaxEvents, -1);
    }
    if (n > 0 && spin.count() > 0) spin_until = std::chrono::steady_clock::now() + spin;
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("farswap io loop {}: epoll_wait failed: {}; stopping", index_,
                    std::strerror(errno));
      break;
    }
    // The work, under work_mu_ (a helper may be running it: then this
    // waits for it, and the events above may have been handled already).
    FARSWAP_SYNC_POINT("IoLoop::Run:before-work");  // [none], the loop's thread
    MutexLock work(&work_mu_);
    bool inner_ready = false;
    Dispatch(events, n, /*loop_thread=*/true, &inner_ready);
    if (inner_ready) {
      // Quiet helping: the targets' events are in the inner instance.
      const int m = epoll_wait(epoll_fd_, events, kMaxEvents, 0);
      if (m > 0) Dispatch(events, m, /*loop_thread=*/true, &inner_ready);
    }
    bool stop;
    {
      MutexLock lock(&mu_);
      tasks.swap(tasks_);
      stop = stop_requested_;
    }
    for (auto& task : tasks) task();
    tasks.clear();
    if (stop) break;
  }
  // Refuse helpers and new tasks, run those already accepted, then close
  // every target.
  MutexLock work(&work_mu_);
  help_refused_ = true;
  {
    MutexLock lock(&mu_);
    stopped_ = true;
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();
  std::vector<std::shared_ptr<EpollTarget>> remaining;
  for (auto& [reg, target] : targets_) remaining.push_back(target);
  for (auto& target : remaining) target->OnLoopShutdown();
  targets_.clear();
}

}  // namespace farswap::transport
