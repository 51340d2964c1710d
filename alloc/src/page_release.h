// page_release.h: returning runs of a process's own anonymous pages to the
// OS, many runs per system call.
//
// Why. Each madvise(MADV_DONTNEED) ends with a TLB flush on every CPU that
// runs the process: an inter-processor interrupt, about 30 us in a VM. A
// memory node's writeback frees thousands of zspages a second, one or a few
// pages each, and in a long drain its thread spent half its time there.
// process_madvise(2) takes a vector of ranges; on the process itself it
// accepts MADV_DONTNEED (Linux 6.13) and flushes the TLB once for the whole
// vector (6.16). Measured here: 36 us per range with madvise, 2 us with
// process_madvise over 64 ranges (a second thread busy on the other CPU).
//
// Thread safety: ReleasePageRuns is safe from any thread. The caller owns
// the runs: nothing may use their pages while the call runs, and what they
// held reads back as zeros after it.
#ifndef FARSWAP_ALLOC_SRC_PAGE_RELEASE_H_
#define FARSWAP_ALLOC_SRC_PAGE_RELEASE_H_

#include <sys/uio.h>

#include <span>

namespace farswap::alloc::internal {

// ReleasePageRuns gives every run (page-aligned base and length, anonymous
// private memory of this process) back to the OS, as MADV_DONTNEED does:
// with process_madvise over up to 1024 runs at a time where the kernel
// accepts it, else with one madvise per run. Which one works is learned at
// the first call or LearnReleaseMechanism (and again in a forked child,
// whose process differs).
void ReleasePageRuns(std::span<const iovec> runs);

// ReleaseMechanism: how ReleasePageRuns releases pages in this process.
enum class ReleaseMechanism { kUnknown, kProcessMadvise, kMadvise };
// CurrentReleaseMechanism: what this process uses, kUnknown until learned.
ReleaseMechanism CurrentReleaseMechanism();
// LearnReleaseMechanism learns it now (one process_madvise with an empty
// vector: accepted by kernels that take MADV_DONTNEED on the process
// itself) unless already learned, and returns it. A later refusal of a real
// call still falls back to madvise.
ReleaseMechanism LearnReleaseMechanism();
// ReleaseMechanismName: "process_madvise", "madvise", or "" for kUnknown.
const char* ReleaseMechanismName(ReleaseMechanism m);

// ForceMadviseForTesting makes every later call use madvise (true) or learn
// again (false), so tests cover the fallback on kernels that have both.
void ForceMadviseForTesting(bool force);

}  // namespace farswap::alloc::internal

#endif  // FARSWAP_ALLOC_SRC_PAGE_RELEASE_H_
