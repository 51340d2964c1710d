// uring_write_queue.cc: BlockWriteQueue on io_uring.
//
// Submit and SubmitRead only fill a submission queue entry (one
// IORING_OP_WRITE or IORING_OP_READ of the whole run at its byte offset); Reap submits every entry
// filled since the last Reap with one io_uring_submit_and_wait and drains every completion ready
// (io_uring_for_each_cqe + io_uring_cq_advance), so a segment's requests reach the kernel together
// and come back in batches, in whatever order the device finished them. A short write or read is an
// error: every run is whole 4 KiB blocks on an O_DIRECT descriptor (or a buffered one, which writes
// whole runs), so a short count means the device failed part of it.
//
// Registered buffers. The page store names the segment table's buffers (one mapping that lives as
// long as the store; segment_table.h) with UseRegisteredBuffer. The first write from it registers
// the region with the ring (io_uring_register_buffers, one iovec); after that a write from within
// it is an IORING_OP_WRITE_FIXED of buffer 0, which the kernel maps from the pages it pinned once,
// instead of pinning (get_user_pages) and releasing the run's pages at every request. Reads go to
// the read cache's buffers and stay plain. A registration the kernel refuses (ENOMEM: the region
// is over RLIMIT_MEMLOCK and the process lacks CAP_IPC_LOCK; EFAULT: memory it cannot pin) is
// logged once and not tried again on that ring; writes go plain, as before.
#include "uring_write_queue.h"

#include <liburing.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "farswap/server/block_device.h"
#include "spdlog/spdlog.h"

namespace farswap::server::internal {
namespace {

class UringWriteQueue final : public BlockWriteQueue {
 public:
  UringWriteQueue(int fd, uint64_t block_count, size_t depth, std::string path)
      : fd_(fd), block_count_(block_count), depth_(depth), path_(std::move(path)), slots_(depth) {
    free_slots_.reserve(depth);
    for (size_t i = depth; i > 0; --i) free_slots_.push_back(i - 1);
  }
  ~UringWriteQueue() override {
    // The kernel may still be writing from caller buffers: wait for them.
    while (in_flight_ > 0 && broken_.ok()) Reap();
    io_uring_queue_exit(&ring_);
  }

  absl::Status Init() {
    const int rc = io_uring_queue_init(unsigned(depth_), &ring_, 0);
    if (rc < 0) {
      return absl::UnavailableError(
          absl::StrCat("io_uring_queue_init(", depth_, "): ", std::strerror(-rc)));
    }
    return absl::OkStatus();
  }

  absl::Status Submit(uint64_t first, uint64_t count, const void* src, uint64_t tag) override {
    return Prep(/*read=*/false, first, count, const_cast<void*>(src), tag);
  }
  absl::Status SubmitRead(uint64_t first, uint64_t count, void* dst, uint64_t tag) override {
    return Prep(/*read=*/true, first, count, dst, tag);
  }

  // Prep fills one submission queue entry; io_uring_submit_and_wait in
  // Reap hands it to the kernel.
  absl::Status Prep(bool read, uint64_t first, uint64_t count, void* buf, uint64_t tag) {
    if (count == 0 || first >= block_count_ || count > block_count_ - first) {
      return absl::OutOfRangeError(
          absl::StrCat("blocks ", first, "+", count, " are not within ", path_));
    }
    if (!broken_.ok()) return broken_;
    if (free_slots_.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("write queue full: ", depth_, " writes in flight"));
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // cannot happen: the ring has depth_ entries
      return absl::ResourceExhaustedError("io_uring submission queue full");
    }
    const size_t slot = free_slots_.back();
    free_slots_.pop_back();
    slots_[slot] = {.tag = tag, .first = first, .count = count, .busy = true, .read = read};
    const unsigned bytes = unsigned(count * kBlockSize);
    if (read) {
      io_uring_prep_read(sqe, fd_, buf, bytes, first * kBlockSize);
    } else if (InRegisteredBuffer(buf, bytes)) {
      io_uring_prep_write_fixed(sqe, fd_, buf, bytes, first * kBlockSize, /*buf_index=*/0);
      ++registered_writes_;
    } else {
      io_uring_prep_write(sqe, fd_, buf, bytes, first * kBlockSize);
    }
    io_uring_sqe_set_data64(sqe, slot);
    ++in_flight_;
    return absl::OkStatus();
  }

  void Start() override {
    // A failure here leaves the requests queued; the next Reap submits
    // them again and reports what fails.
    if (in_flight_ > 0 && broken_.ok()) io_uring_submit(&ring_);
  }

  std::vector<Completion> Reap() override { return ReapWaiting(1); }

  std::vector<Completion> ReapAll() override {
    std::vector<Completion> out;
    while (in_flight_ > 0) {
      // Every write in flight is in the completion queue or on its way
      // there, so waiting for in_flight_ completions ends.
      for (Completion& c : ReapWaiting(unsigned(in_flight_))) out.push_back(std::move(c));
    }
    return out;
  }

  void UseRegisteredBuffer(const void* base, size_t bytes) override {
    if (region_ != Region::kNone || base == nullptr || bytes == 0) return;
    region_base_ = static_cast<const uint8_t*>(base);
    region_bytes_ = bytes;
    region_ = Region::kNamed;
  }

  uint64_t TakeRegisteredWrites() override { return std::exchange(registered_writes_, 0); }

  size_t in_flight() const override { return in_flight_; }
  size_t depth() const override { return depth_; }
  const char* engine() const override { return "io_uring"; }

 private:
  // ReapWaiting submits what is queued, waits until at least `wait_nr`
  // completions are available, and returns every available one.
  std::vector<Completion> ReapWaiting(unsigned wait_nr) {
    std::vector<Completion> out;
    if (in_flight_ == 0) return out;
    int rc;
    do {
      rc = io_uring_submit_and_wait(&ring_, wait_nr);
    } while (rc == -EINTR);
    if (rc < 0) {
      // The ring itself failed (not a write): nothing in flight can be
      // accounted for any more. Every write in flight fails with it and the
      // queue is broken (later Submits fail). A request the kernel did take
      // reads from pinned pages of its buffer, so freeing the buffer
      // afterwards is memory-safe; the writes are reported failed, so
      // nothing they held is published.
      broken_ = absl::InternalError(
          absl::StrCat("io_uring_submit_and_wait on ", path_, ": ", std::strerror(-rc)));
      for (size_t slot = 0; slot < slots_.size(); ++slot) {
        if (!slots_[slot].busy) continue;
        slots_[slot].busy = false;
        out.push_back({.tag = slots_[slot].tag, .status = broken_});
        free_slots_.push_back(slot);
      }
      in_flight_ = 0;
      return out;
    }
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      const size_t slot = size_t(io_uring_cqe_get_data64(cqe));
      Slot& s = slots_[slot];
      s.busy = false;
      absl::Status status;
      const int64_t want = int64_t(s.count * kBlockSize);
      if (cqe->res < 0) {
        status = Errno(-cqe->res, s);
      } else if (cqe->res != want) {
        status = absl::DataLossError(absl::StrCat("short ", s.read ? "read" : "write",
                                                  " of blocks ", s.first, "+", s.count, " of ",
                                                  path_, ": ", cqe->res, " of ", want, " bytes"));
      }
      out.push_back({.tag = s.tag, .status = std::move(status)});
      free_slots_.push_back(slot);
      --in_flight_;
    }
    io_uring_cq_advance(&ring_, seen);
    return out;
  }

  // InRegisteredBuffer: whether [buf, buf + bytes) lies within the named
  // region, registering the region with the ring the first time.
  bool InRegisteredBuffer(const void* buf, size_t bytes) {
    if (region_ == Region::kNone || region_ == Region::kRefused) return false;
    const auto* p = static_cast<const uint8_t*>(buf);
    if (p < region_base_ || bytes > region_bytes_ ||
        size_t(p - region_base_) > region_bytes_ - bytes) {
      return false;
    }
    if (region_ == Region::kNamed) {
      iovec iov{.iov_base = const_cast<uint8_t*>(region_base_), .iov_len = region_bytes_};
      const int rc = io_uring_register_buffers(&ring_, &iov, 1);
      if (rc < 0) {
        region_ = Region::kRefused;
        static std::atomic<bool> logged{false};
        if (!logged.exchange(true)) {
          spdlog::warn(
              "io_uring would not register the {} KiB of segment buffers ({}); segment writes to "
              "{} pin their pages at every request{}",
              region_bytes_ / 1024, std::strerror(-rc), path_,
              rc == -ENOMEM ? " (raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK)" : "");
        }
        return false;
      }
      region_ = Region::kRegistered;
    }
    return true;
  }

  struct Slot {
    uint64_t tag = 0;
    uint64_t first = 0;
    uint64_t count = 0;
    bool busy = false;  // submitted, completion not reaped
    bool read = false;  // IORING_OP_READ (else WRITE)
  };

  absl::Status Errno(int err, const Slot& s) const {
    std::string msg = absl::StrCat(s.read ? "read" : "write", " blocks ", s.first, "+", s.count,
                                   " of ", path_, ": ", std::strerror(err));
    if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
    if (err == EIO) return absl::DataLossError(msg);
    return absl::InternalError(msg);
  }

  const int fd_;
  const uint64_t block_count_;
  const size_t depth_;
  const std::string path_;
  io_uring ring_{};
  std::vector<Slot> slots_;
  std::vector<size_t> free_slots_;
  size_t in_flight_ = 0;
  absl::Status broken_;  // a failed io_uring_submit_and_wait; then sticky
  // The region UseRegisteredBuffer named: none yet, named (registered at
  // its first write), registered, or refused by the kernel.
  enum class Region { kNone, kNamed, kRegistered, kRefused };
  Region region_ = Region::kNone;
  const uint8_t* region_base_ = nullptr;
  size_t region_bytes_ = 0;
  uint64_t registered_writes_ = 0;  // since the last TakeRegisteredWrites
};

}  // namespace

absl::StatusOr<std::unique_ptr<BlockWriteQueue>> NewUringWriteQueue(int fd, uint64_t block_count,
                                                                    size_t depth,
                                                                    std::string path) {
  auto q =
      std::make_unique<UringWriteQueue>(fd, block_count, depth == 0 ? 1 : depth, std::move(path));
  if (absl::Status s = q->Init(); !s.ok()) return s;
  return q;
}

}  // namespace farswap::server::internal
