// page_drop_area.h: frees pages of a userfaultfd-registered region without
// raising userfaultfd events.
//
// The region's userfaultfd reports the program's MADV_DONTNEED and munmap
// (UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP), and the kernel holds the caller of
// each until a fault thread has read its event. The region's own
// MADV_DONTNEED of evicted pages raises those events too: each run of pages
// an eviction drops costs a fault thread a read and the evictor a sleep (on
// a random workload, about one of each per evicted page).
//
// A PageDropArea is a private anonymous area registered with a second
// userfaultfd that asks for no events. UFFDIO_MOVE (Linux 6.8) issued on that
// second descriptor takes a region page out of the region (its page table
// entry becomes empty, as a zap leaves it) into the area, and one
// MADV_DONTNEED of the area then frees a whole batch, raising nothing: the
// kernel checks only that the destination is registered with the descriptor
// the move is issued on. The area's memory is read only where a page was
// moved in (PageAt), never where a hole is: a fault there would wait for a
// reader that does not exist.
//
//   auto area = PageDropArea::Create(/*slots=*/2, /*slot_pages=*/32);
//   if (area.ok()) {
//     if (std::optional<PageDropArea::Slot> slot = (*area)->TryAcquire()) {
//       int err;
//       size_t moved = slot->Move(addr, 4, &err);  // a prefix of the run
//     }  // the slot's pages are freed, and the slot returned
//   }
//
// Thread-safety: PageDropArea is thread-safe. A Slot belongs to the thread
// that acquired it (not thread-safe; movable, not copyable).
#ifndef FARSWAP_CLIENT_PAGE_DROP_AREA_H_
#define FARSWAP_CLIENT_PAGE_DROP_AREA_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "farswap/common/mutex.h"

namespace farswap {

class PageDropArea {
 public:
  // MoveReportForTesting (test only): given the bytes a UFFDIO_MOVE reported
  // moved (its `move`), returns the report Move is to see instead. A smaller
  // report is seen with EAGAIN, as the kernel's report of a move that
  // stopped short: this is how a test makes the kernel's count short of what
  // it moved (see Move). Called from the slots' threads concurrently.
  using MoveReportForTesting = std::function<int64_t(int64_t reported)>;

  // Create maps `slots` slots of `slot_pages` pages each. UNIMPLEMENTED when
  // the kernel has no UFFDIO_MOVE (before 6.8); FAILED_PRECONDITION or
  // RESOURCE_EXHAUSTED for the other failures (no userfaultfd, no memory).
  static absl::StatusOr<std::unique_ptr<PageDropArea>> Create(
      uint32_t slots, uint32_t slot_pages, MoveReportForTesting move_report_for_testing = nullptr);
  ~PageDropArea();
  PageDropArea(const PageDropArea&) = delete;
  PageDropArea& operator=(const PageDropArea&) = delete;

  // Slot: room for slot_pages pages, held by one thread. Destroying it frees
  // the pages moved in (Free) and gives the slot back.
  class Slot {
   public:
    Slot(Slot&& other) noexcept;
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    ~Slot();

    // room: pages that can still be moved in before Free.
    size_t room() const { return area_->slot_pages_ - used_; }
    // Move moves the `pages` consecutive pages at `addr` (at most room())
    // into the slot. Returns how many left `addr..` (a prefix) and sets *err
    // to 0 when all did, else to the errno that stopped the move at the next
    // page (ENOENT: not mapped there; a missing page without allow_holes:
    // ENOENT or, on Linux 6.18 at least, EAGAIN; EBUSY:
    // shared with another process; EAGAIN: retry later; others as
    // UFFDIO_MOVE documents). With allow_holes a page that was already
    // missing counts as moved (it is gone, as wanted) and leaves a hole in
    // the slot; without, every page moved is in the slot to read (PageAt).
    //
    // The kernel's count is checked, not trusted, where the move stopped
    // short: the slot's pages past it are looked at (mincore), and each one
    // there (from the first on, in order) was moved, whatever the count
    // said, and counts as moved (unreported_moves). Linux 6.18 was seen to
    // report EAGAIN with one page fewer than it had moved; taken at its
    // word, that page would be gone from the region and in no one's hands.
    // A slot page past used() is never there otherwise: nothing but a move
    // maps one, and Free zaps what was moved in. (A hole moved leaves no
    // page, so with holes allowed the look stops at the first hole.)
    size_t Move(const void* addr, size_t pages, int* err, bool allow_holes = true);
    // used: pages moved in since the last Free; the next Move's first page
    // lands at PageAt(used()).
    size_t used() const { return used_; }
    // PageAt: the index-th page moved in since the last Free (index <
    // used()). Readable only if that Move did not allow holes.
    const uint8_t* PageAt(size_t index) const {
      return area_->SlotBase(index_) + index * uint64_t{4096};
    }
    // Free frees what was moved in with one MADV_DONTNEED (no event);
    // room() is slot_pages again. Returns false (and the slot is retired,
    // never used again) if the kernel refused.
    bool Free();

   private:
    friend class PageDropArea;
    Slot(PageDropArea* area, uint32_t index) : area_(area), index_(index) {}
    PageDropArea* area_;  // null once moved from
    uint32_t index_;
    size_t used_ = 0;
    bool broken_ = false;
  };

  // TryAcquire: a free slot, or nullopt when every slot is held or retired.
  std::optional<Slot> TryAcquire() ABSL_LOCKS_EXCLUDED(mu_);

  uint32_t slot_pages() const { return slot_pages_; }
  // unreported_moves: pages found moved past what the kernel reported (see
  // Slot::Move); 0 unless the kernel miscounted (or a test made it seem so).
  uint64_t unreported_moves() const { return unreported_moves_.load(std::memory_order_relaxed); }

 private:
  PageDropArea(int uffd, uint8_t* base, uint32_t slots, uint32_t slot_pages,
               MoveReportForTesting move_report_for_testing);
  // CountUnreported: how many of the slot's pages from `at` on (fewer than
  // `limit`) are there, counted from `at` until the first that is not.
  size_t CountUnreported(uint32_t index, size_t at, size_t limit) const;
  void Release(uint32_t index, bool broken) ABSL_LOCKS_EXCLUDED(mu_);
  uint8_t* SlotBase(uint32_t index) const { return base_ + uint64_t{index} * slot_pages_ * 4096; }

  const int uffd_;  // the second userfaultfd: UFFD_FEATURE_MOVE, no events
  uint8_t* const base_;
  const uint32_t slots_;
  const uint32_t slot_pages_;
  const MoveReportForTesting move_report_for_testing_;
  std::atomic<uint64_t> unreported_moves_{0};

  Mutex mu_;
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);  // slot indexes
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_PAGE_DROP_AREA_H_
