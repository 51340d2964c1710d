// block_write_queue.cc: the synchronous BlockWriteQueue (see
// block_write_queue.h), the fallback where io_uring is unavailable and the
// default for devices without a ring of their own.
#include "farswap/server/block_write_queue.h"

#include <deque>

#include "absl/strings/str_cat.h"
#include "farswap/server/block_device.h"

namespace farswap::server {
namespace {

// SyncWriteQueue writes at Submit and hands the results back, in
// submission order, at the next Reap.
class SyncWriteQueue final : public BlockWriteQueue {
 public:
  SyncWriteQueue(BlockDevice* device, size_t depth) : device_(device), depth_(depth) {}

  absl::Status Submit(uint64_t first, uint64_t count, const void* src, uint64_t tag) override {
    if (done_.size() >= depth_) {
      return absl::FailedPreconditionError(
          absl::StrCat("write queue full: ", depth_, " writes in flight"));
    }
    done_.push_back({.tag = tag, .status = device_->WriteBlocks(first, count, src)});
    return absl::OkStatus();
  }
  absl::Status SubmitRead(uint64_t first, uint64_t count, void* dst, uint64_t tag) override {
    if (done_.size() >= depth_) {
      return absl::FailedPreconditionError(
          absl::StrCat("I/O queue full: ", depth_, " requests in flight"));
    }
    done_.push_back({.tag = tag, .status = device_->ReadBlocks(first, count, dst)});
    return absl::OkStatus();
  }
  std::vector<Completion> Reap() override {
    std::vector<Completion> out(done_.begin(), done_.end());
    done_.clear();
    return out;
  }
  size_t in_flight() const override { return done_.size(); }
  size_t depth() const override { return depth_; }
  const char* engine() const override { return "sync"; }

 private:
  BlockDevice* const device_;
  const size_t depth_;
  std::deque<Completion> done_;
};

}  // namespace

std::unique_ptr<BlockWriteQueue> NewSyncWriteQueue(BlockDevice* device, size_t depth) {
  return std::make_unique<SyncWriteQueue>(device, depth == 0 ? 1 : depth);
}

}  // namespace farswap::server
