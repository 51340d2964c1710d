// io_loop.h: one epoll event loop on its own thread (private to transport/).
//
// The TCP backend runs TransportOptions::io_threads of these. A loop owns
// the sockets registered with it: only the thread running the loop's work
// reads, writes or closes them, so socket state needs no lock of its own.
// Other threads hand work to a loop with Post(), which queues a task and
// wakes epoll_wait through an eventfd.
//
// The loop's work is usually run by its own thread, but a thread that
// waits for a reply may run it instead (HelpPoll): it handles the events
// ready now on the calling thread, so the reply is read without a kernel
// wake-up of the loop's thread on the waiter's path. Whoever runs the work
// holds work_mu_, so it is always one thread at a time; the loop's thread
// gives the mutex up only while it blocks in epoll_wait. An event the
// helper already handled may still be reported to the loop's thread (both
// saw it ready): level-triggered targets find nothing to do (EAGAIN) and
// return, and a target removed meanwhile is no longer looked up.
//
// Registrations are keyed by a generation number (not the fd) in the epoll
// data, so an event still pending for an fd that was closed and reused in
// the same epoll_wait batch is dropped rather than delivered to the new
// owner.
//
// Quiet helping (a loop created with quiet_helping). The sockets are
// watched by an inner epoll instance; the loop's thread blocks on an outer
// one that holds the inner one and the wake eventfd. A thread about to spin on HelpPoll calls
// BeginHelping: while any helper is there the outer instance stops watching the inner one, so a
// reply the helper will read does not also wake the loop's thread (a kernel
// wake-up, tens of microseconds of the other vCPU on a small machine, for an
// event it would find already handled). EndHelping by the last helper
// watches it again; being level-triggered, the outer instance then reports
// at once whatever arrived meanwhile and nobody read. Posted tasks still
// wake the loop's thread (the eventfd stays watched).
#ifndef FARSWAP_TRANSPORT_SRC_IO_LOOP_H_
#define FARSWAP_TRANSPORT_SRC_IO_LOOP_H_

#include <sys/epoll.h>

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
// thread running the loop's work (InLoopThread), under the loop's work_mu_.
class EpollTarget {
 public:
  virtual ~EpollTarget() = default;
  // OnEvents handles epoll events (EPOLLIN, EPOLLOUT, EPOLLERR, ...).
  virtual void OnEvents(uint32_t events) = 0;
  // OnLoopShutdown closes the target because the loop is stopping; it must
  // call IoLoop::Remove for itself.
  virtual void OnLoopShutdown() = 0;
};

// IoLoop: Post/RunSync/Stop/InLoopThread/HelpPoll are thread-safe; Add,
// Modify and Remove must be called where InLoopThread() is true.
class IoLoop {
 public:
  // Registration names one fd's registration with this loop.
  using Registration = uint64_t;

  // busy_poll: how long the loop keeps polling without blocking after it
  // handled events (0: it blocks at once). quiet_helping: see the file
  // comment.
  static absl::StatusOr<std::shared_ptr<IoLoop>> Create(
      int index, absl::Duration busy_poll = absl::ZeroDuration(), bool quiet_helping = false);
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
  // InLoopThread: the calling thread runs this loop's work now (the loop's
  // own thread, or a thread inside HelpPoll).
  bool InLoopThread() const;

  // HelpPoll handles, on the calling thread, the events ready on this loop
  // now (callbacks included), unless another thread is running the loop's
  // work (then it returns false at once). Queued tasks are left to the
  // loop's thread. Returns true if it handled an event. For a thread that
  // waits for a reply and would otherwise spin: callbacks of any connection
  // of this loop may run on it, so it must hold no lock a callback takes,
  // and must not be in a callback itself.
  bool HelpPoll();
  // BeginHelping / EndHelping bracket a spell of HelpPoll calls (file
  // comment): paired, on the same thread. No-ops from inside a callback
  // and in a loop made without quiet_helping.
  void BeginHelping();
  void EndHelping();

  // Add watches `fd` for `events` on behalf of `target` (loop thread only).
  absl::StatusOr<Registration> Add(int fd, uint32_t events, std::shared_ptr<EpollTarget> target);
  absl::Status Modify(Registration reg, int fd, uint32_t events);
  void Remove(Registration reg, int fd);

 private:
  IoLoop(int index, int wait_fd, int epoll_fd, int wake_fd, absl::Duration busy_poll);
  void Run();
  void Wake();
  // Dispatch hands `n` events to their targets; returns how many reached
  // one. The wake eventfd's event is read when `loop_thread` (a helper
  // leaves it to the loop's thread); the inner instance's (quiet helping)
  // sets *inner_ready.
  int Dispatch(const epoll_event* events, int n, bool loop_thread, bool* inner_ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_);

  const int index_;
  const int wait_fd_;   // the loop's thread waits here: epoll_fd_, or the outer instance
  const int epoll_fd_;  // the targets (and the wake eventfd unless quiet); HelpPoll polls here
  const int wake_fd_;   // eventfd
  const absl::Duration busy_poll_;
  std::thread thread_;

  Mutex mu_;
  std::vector<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // no more tasks accepted

  // work_mu_: held by whoever runs the loop's work (file comment). Lock
  // order: work_mu_, then mu_; work_mu_ before any lock a callback takes.
  Mutex work_mu_;
  // helpers_: threads between BeginHelping and EndHelping; the first and
  // the last change the outer instance's interest under help_mu_.
  Mutex help_mu_;
  int helpers_ ABSL_GUARDED_BY(help_mu_) = 0;

  // help_refused_: the loop is shutting down; HelpPoll does nothing.
  bool help_refused_ ABSL_GUARDED_BY(work_mu_) = false;

  // Touched only where InLoopThread() is true (so under work_mu_; not
  // annotated: Add, Modify and Remove are called from callbacks, which
  // cannot name the lock).
  std::unordered_map<Registration, std::shared_ptr<EpollTarget>> targets_;
  Registration next_registration_ = 1;  // 0 is the eventfd
};

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_SRC_IO_LOOP_H_
