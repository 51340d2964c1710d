// io_loop.h: one epoll event loop on its own thread (private to transport/).
//
// The TCP backend runs TransportOptions::io_threads of these. A loop owns
// the sockets registered with it: it is the only thread that reads, writes
// or closes them, so socket state needs no lock. Other threads hand work to
// a loop with Post(), which queues a task and wakes epoll_wait through an
// eventfd.
//
// Registrations are keyed by a generation number (not the fd) in the epoll
// data, so an event still pending for an fd that was closed and reused in
// the same epoll_wait batch is dropped rather than delivered to the new
// owner.
#ifndef FARSWAP_TRANSPORT_SRC_IO_LOOP_H_
#define FARSWAP_TRANSPORT_SRC_IO_LOOP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "farswap/common/mutex.h"

namespace farswap::transport {

// EpollTarget is an object whose fd a loop watches. Both methods run on the
// loop thread.
class EpollTarget {
 public:
  virtual ~EpollTarget() = default;
  // OnEvents handles epoll events (EPOLLIN, EPOLLOUT, EPOLLERR, ...).
  virtual void OnEvents(uint32_t events) = 0;
  // OnLoopShutdown closes the target because the loop is stopping; it must
  // call IoLoop::Remove for itself.
  virtual void OnLoopShutdown() = 0;
};

// IoLoop: Post/RunSync/Stop/InLoopThread are thread-safe; Add, Modify and
// Remove must be called on the loop thread.
class IoLoop {
 public:
  // Registration names one fd's registration with this loop.
  using Registration = uint64_t;

  // busy_poll: how long the loop keeps polling without blocking after it
  // handled events (0: it blocks at once).
  static absl::StatusOr<std::shared_ptr<IoLoop>> Create(
      int index, absl::Duration busy_poll = absl::ZeroDuration());
  ~IoLoop();
  IoLoop(const IoLoop&) = delete;
  IoLoop& operator=(const IoLoop&) = delete;

  // Post queues `task` to run on the loop thread, in FIFO order with other
  // tasks. Returns false, dropping the task, once the loop has stopped.
  bool Post(std::function<void()> task);
  // RunSync runs `task` on the loop thread and waits for it (inline when
  // called on the loop thread). False, without running it, once stopped.
  bool RunSync(std::function<void()> task);
  // Stop runs the tasks already queued, shuts down every target, and joins
  // the thread. Idempotent; must not be called on the loop thread.
  void Stop();
  bool InLoopThread() const { return std::this_thread::get_id() == thread_.get_id(); }

  // Add watches `fd` for `events` on behalf of `target` (loop thread only).
  absl::StatusOr<Registration> Add(int fd, uint32_t events, std::shared_ptr<EpollTarget> target);
  absl::Status Modify(Registration reg, int fd, uint32_t events);
  void Remove(Registration reg, int fd);

 private:
  IoLoop(int index, int epoll_fd, int wake_fd, absl::Duration busy_poll);
  void Run();
  void Wake();

  const int index_;
  const int epoll_fd_;
  const int wake_fd_;  // eventfd
  const absl::Duration busy_poll_;
  std::thread thread_;

  Mutex mu_;
  std::vector<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // no more tasks accepted

  // Loop thread only.
  std::unordered_map<Registration, std::shared_ptr<EpollTarget>> targets_;
  Registration next_registration_ = 1;  // 0 is the eventfd
};

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_SRC_IO_LOOP_H_
