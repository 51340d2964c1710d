// page_release.cc: see page_release.h.
#include "page_release.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>

#include "farswap/common/mutex.h"

namespace farswap::alloc::internal {
namespace {

// kMaxRunsPerCall: UIO_MAXIOV, the most ranges one process_madvise takes.
constexpr size_t kMaxRunsPerCall = 1024;

// SelfPidfd is a pidfd of this process for process_madvise, or a note that
// the kernel refused it. A forked child inherits its parent's pidfd, which
// names the parent: the pid it was opened for is kept and checked.
struct SelfPidfd {
  Mutex mu;
  pid_t pid ABSL_GUARDED_BY(mu) = 0;  // 0: not learned for any process yet
  int fd ABSL_GUARDED_BY(mu) = -1;
  ReleaseMechanism mechanism ABSL_GUARDED_BY(mu) = ReleaseMechanism::kUnknown;
};

SelfPidfd& Self() {
  static SelfPidfd* self = new SelfPidfd();  // never destroyed: used at exit
  return *self;
}

std::atomic<bool> force_madvise{false};

void MadviseEach(std::span<const iovec> runs) {
  for (const iovec& r : runs) madvise(r.iov_base, r.iov_len, MADV_DONTNEED);
}

// PidfdForThisProcess returns the pidfd to use, or -1 for madvise.
int PidfdForThisProcess() {
  SelfPidfd& s = Self();
  MutexLock l(&s.mu);
  const pid_t pid = getpid();
  if (s.pid != pid) {                          // first call, or a forked child
    if (s.fd >= 0 && s.pid != 0) close(s.fd);  // the parent's, in a child
    s.pid = pid;
    s.fd = int(syscall(SYS_pidfd_open, pid, 0));
    // An empty vector advises nothing: a kernel that takes MADV_DONTNEED on
    // the process itself (6.13) returns 0; an older one refuses the advice
    // (EINVAL) before it looks at the vector. So the choice is known before
    // the first release (and said in the pool's stats).
    if (s.fd >= 0 &&
        syscall(SYS_process_madvise, s.fd, nullptr, size_t{0}, MADV_DONTNEED, 0u) != 0) {
      close(s.fd);
      s.fd = -1;
    }
    s.mechanism = s.fd >= 0 ? ReleaseMechanism::kProcessMadvise : ReleaseMechanism::kMadvise;
  }
  return s.mechanism == ReleaseMechanism::kProcessMadvise ? s.fd : -1;
}

void FallBackToMadvise() {
  SelfPidfd& s = Self();
  MutexLock l(&s.mu);
  s.mechanism = ReleaseMechanism::kMadvise;
}

}  // namespace

void ReleasePageRuns(std::span<const iovec> runs) {
  if (runs.empty()) return;
  const int pidfd = force_madvise.load(std::memory_order_relaxed) ? -1 : PidfdForThisProcess();
  if (pidfd < 0) {
    MadviseEach(runs);
    return;
  }
  while (!runs.empty()) {
    const std::span<const iovec> chunk = runs.first(std::min(runs.size(), kMaxRunsPerCall));
    size_t want = 0;
    for (const iovec& r : chunk) want += r.iov_len;
    const long done =
        syscall(SYS_process_madvise, pidfd, chunk.data(), chunk.size(), MADV_DONTNEED, 0u);
    if (done < 0 || size_t(done) != want) {
      // EINVAL (a kernel before 6.13 takes only MADV_COLD, PAGEOUT and
      // WILLNEED), ENOSYS or EPERM: this kernel will not do it. A short
      // count stops at the first range it could not advise. Either way the
      // rest of the runs go one madvise each, from the first run not
      // wholly done (advising a run twice is harmless).
      if (done < 0 && (errno == EINVAL || errno == ENOSYS || errno == EPERM)) FallBackToMadvise();
      size_t skip = 0;
      for (size_t covered = 0; skip < chunk.size(); ++skip) {
        covered += chunk[skip].iov_len;
        if (done < 0 || covered > size_t(done)) break;
      }
      MadviseEach(runs.subspan(skip));
      return;
    }
    runs = runs.subspan(chunk.size());
  }
}

ReleaseMechanism LearnReleaseMechanism() {
  PidfdForThisProcess();
  return CurrentReleaseMechanism();
}

const char* ReleaseMechanismName(ReleaseMechanism m) {
  switch (m) {
    case ReleaseMechanism::kProcessMadvise:
      return "process_madvise";
    case ReleaseMechanism::kMadvise:
      return "madvise";
    case ReleaseMechanism::kUnknown:
      break;
  }
  return "";
}

ReleaseMechanism CurrentReleaseMechanism() {
  if (force_madvise.load(std::memory_order_relaxed)) return ReleaseMechanism::kMadvise;
  SelfPidfd& s = Self();
  MutexLock l(&s.mu);
  return s.pid == getpid() ? s.mechanism : ReleaseMechanism::kUnknown;
}

void ForceMadviseForTesting(bool force) { force_madvise.store(force, std::memory_order_relaxed); }

}  // namespace farswap::alloc::internal
