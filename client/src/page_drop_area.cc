// page_drop_area.cc: see page_drop_area.h.
#include "page_drop_area.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

// Debian 12's kernel headers (6.1) predate UFFDIO_MOVE (Linux 6.8); the ABI
// is fixed, so it is spelled out here for building on such headers.
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#define _UFFDIO_MOVE (0x05)
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;
  __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

namespace farswap {
namespace {
constexpr uint64_t kPage = 4096;
}  // namespace

absl::StatusOr<std::unique_ptr<PageDropArea>> PageDropArea::Create(
    uint32_t slots, uint32_t slot_pages, MoveReportForTesting move_report_for_testing) {
  if (slots == 0 || slot_pages == 0) {
    return absl::InvalidArgumentError("PageDropArea: slots and slot_pages must be >= 1");
  }
  int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (uffd < 0 && errno == EPERM) {
    uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  }
  if (uffd < 0) {
    return absl::FailedPreconditionError(absl::StrCat("userfaultfd: ", strerror(errno)));
  }
  // No event features: nothing done to the area is ever reported, so
  // nothing done to it ever waits for a reader (there is none).
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_MOVE;
  if (ioctl(uffd, UFFDIO_API, &api) != 0 || !(api.features & UFFD_FEATURE_MOVE)) {
    const int e = errno;
    close(uffd);
    return absl::UnimplementedError(
        absl::StrCat("UFFDIO_MOVE (Linux 6.8) is not offered here: ", strerror(e)));
  }
  const uint64_t bytes = uint64_t{slots} * slot_pages * kPage;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    const int e = errno;
    close(uffd);
    return absl::ResourceExhaustedError(absl::StrCat("mmap of the drop area: ", strerror(e)));
  }
  // As the region's: 4 KiB pages only (a move must not meet a huge page),
  // and nothing in a fork child.
  madvise(mem, bytes, MADV_NOHUGEPAGE);
  madvise(mem, bytes, MADV_DONTFORK);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(mem);
  reg.range.len = bytes;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0 || !(reg.ioctls & (1ull << _UFFDIO_MOVE))) {
    const int e = errno;
    munmap(mem, bytes);
    close(uffd);
    return absl::UnimplementedError(
        absl::StrCat("UFFDIO_REGISTER of the drop area offers no UFFDIO_MOVE: ", strerror(e)));
  }
  return std::unique_ptr<PageDropArea>(new PageDropArea(
      uffd, static_cast<uint8_t*>(mem), slots, slot_pages, std::move(move_report_for_testing)));
}

PageDropArea::PageDropArea(int uffd, uint8_t* base, uint32_t slots, uint32_t slot_pages,
                           MoveReportForTesting move_report_for_testing)
    : uffd_(uffd),
      base_(base),
      slots_(slots),
      slot_pages_(slot_pages),
      move_report_for_testing_(std::move(move_report_for_testing)) {
  MutexLock l(&mu_);
  for (uint32_t i = slots; i > 0; --i) free_.push_back(i - 1);
}

PageDropArea::~PageDropArea() {
  // Every Slot is gone by now (the owner's contract); munmap frees any page
  // a retired slot still holds.
  munmap(base_, uint64_t{slots_} * slot_pages_ * kPage);
  close(uffd_);
}

std::optional<PageDropArea::Slot> PageDropArea::TryAcquire() {
  MutexLock l(&mu_);
  if (free_.empty()) return std::nullopt;
  const uint32_t index = free_.back();
  free_.pop_back();
  return Slot(this, index);
}

void PageDropArea::Release(uint32_t index, bool broken) {
  if (broken) return;  // retired: its pages may still be there
  MutexLock l(&mu_);
  free_.push_back(index);
}

PageDropArea::Slot::Slot(Slot&& other) noexcept
    : area_(std::exchange(other.area_, nullptr)),
      index_(other.index_),
      used_(other.used_),
      broken_(other.broken_) {}

PageDropArea::Slot::~Slot() {
  if (area_ == nullptr) return;
  if (used_ > 0) Free();
  area_->Release(index_, broken_);
}

size_t PageDropArea::Slot::Move(const void* addr, size_t pages, int* err, bool allow_holes) {
  *err = 0;
  if (broken_) {
    *err = EIO;
    return 0;
  }
  if (pages > room()) pages = room();
  if (pages == 0) {
    *err = ENOSPC;
    return 0;
  }
  uffdio_move m{};
  m.dst = reinterpret_cast<uint64_t>(area_->SlotBase(index_) + used_ * kPage);
  m.src = reinterpret_cast<uint64_t>(addr);
  m.len = pages * kPage;
  // Nobody waits on the area. With holes allowed, a page the program
  // already zapped is gone as wanted.
  m.mode = UFFDIO_MOVE_MODE_DONTWAKE | (allow_holes ? UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0);
  int rc = ioctl(area_->uffd_, UFFDIO_MOVE, &m);
  int e = errno;
  if (area_->move_report_for_testing_) {
    const int64_t report = area_->move_report_for_testing_(m.move);
    if (report < m.move) {
      m.move = report;
      rc = -1;
      e = EAGAIN;
    }
  }
  // `move` is what the kernel says it did, also on failure (negative:
  // nothing; a page is moved whole or not at all).
  size_t moved = m.move > 0 ? static_cast<size_t>(m.move) / kPage : 0;
  if (moved < pages) {
    // Checked, not trusted (see Move in the header). A hole leaves no page
    // in the slot, so with holes allowed the count stops at the first one.
    const size_t unreported = area_->CountUnreported(index_, used_ + moved, used_ + pages);
    if (unreported > 0) {
      area_->unreported_moves_.fetch_add(unreported, std::memory_order_relaxed);
      moved += unreported;
    }
  }
  used_ += moved;
  if (moved == pages) return moved;
  *err = rc != 0 ? e : EAGAIN;
  return moved;
}

size_t PageDropArea::CountUnreported(uint32_t index, size_t at, size_t limit) const {
  size_t n = 0;
  for (size_t i = at; i < limit; ++i, ++n) {
    unsigned char resident = 0;
    if (mincore(SlotBase(index) + i * kPage, kPage, &resident) != 0 || !(resident & 1)) break;
  }
  return n;
}

bool PageDropArea::Slot::Free() {
  if (broken_ || used_ == 0) return !broken_;
  if (madvise(area_->SlotBase(index_), used_ * kPage, MADV_DONTNEED) != 0) {
    broken_ = true;
    return false;
  }
  used_ = 0;
  return true;
}

}  // namespace farswap
