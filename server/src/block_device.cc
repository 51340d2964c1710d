// block_device.cc: MemoryBlockDevice and FaultInjectingBlockDevice.
#include "farswap/server/block_device.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace farswap::server {
namespace {

absl::Status CheckRange(uint64_t block, uint64_t block_count) {
  if (block >= block_count) {
    return absl::OutOfRangeError(
        absl::StrCat("block ", block, " is past the end of a ", block_count, "-block device"));
  }
  return absl::OkStatus();
}

}  // namespace

// --- MemoryBlockDevice -----------------------------------------------------------

MemoryBlockDevice::MemoryBlockDevice(uint64_t block_count)
    : block_count_(block_count), bytes_(block_count * kBlockSize) {}

absl::Status MemoryBlockDevice::ReadBlock(uint64_t block, void* dst) {
  if (absl::Status s = CheckRange(block, block_count_); !s.ok()) return s;
  MutexLock l(&mu_);
  std::memcpy(dst, bytes_.data() + block * kBlockSize, kBlockSize);
  return absl::OkStatus();
}

absl::Status MemoryBlockDevice::WriteBlock(uint64_t block, const void* src) {
  if (absl::Status s = CheckRange(block, block_count_); !s.ok()) return s;
  MutexLock l(&mu_);
  std::memcpy(bytes_.data() + block * kBlockSize, src, kBlockSize);
  return absl::OkStatus();
}

std::string MemoryBlockDevice::Describe() const {
  return absl::StrCat("memory:", block_count_, "x", kBlockSize);
}

// --- FaultInjectingBlockDevice -----------------------------------------------------

void FaultInjectingBlockDevice::FailReads(uint64_t after_ops, uint64_t count, absl::Status error) {
  MutexLock l(&mu_);
  read_plan_ = Plan{after_ops, count, std::move(error)};
}

void FaultInjectingBlockDevice::FailWrites(uint64_t after_ops, uint64_t count, absl::Status error) {
  MutexLock l(&mu_);
  write_plan_ = Plan{after_ops, count, std::move(error)};
}

void FaultInjectingBlockDevice::ClearFaults() {
  MutexLock l(&mu_);
  read_plan_ = Plan{};
  write_plan_ = Plan{};
}

absl::Status FaultInjectingBlockDevice::Consume(Plan& plan) {
  mu_.AssertHeld();
  if (plan.count == 0) return absl::OkStatus();
  if (plan.after_ops > 0) {
    --plan.after_ops;
    return absl::OkStatus();
  }
  if (plan.count != kForever) --plan.count;
  injected_.fetch_add(1, std::memory_order_relaxed);
  return plan.error;
}

absl::Status FaultInjectingBlockDevice::ReadBlock(uint64_t block, void* dst) {
  reads_.fetch_add(1, std::memory_order_relaxed);
  absl::Status injected;
  {
    MutexLock l(&mu_);
    injected = Consume(read_plan_);
  }
  if (!injected.ok()) {
    return absl::Status(injected.code(), absl::StrCat("injected read fault at block ", block, ": ",
                                                      injected.message()));
  }
  return target_->ReadBlock(block, dst);
}

absl::Status FaultInjectingBlockDevice::WriteBlock(uint64_t block, const void* src) {
  writes_.fetch_add(1, std::memory_order_relaxed);
  absl::Status injected;
  {
    MutexLock l(&mu_);
    injected = Consume(write_plan_);
  }
  if (!injected.ok()) {
    return absl::Status(injected.code(), absl::StrCat("injected write fault at block ", block, ": ",
                                                      injected.message()));
  }
  return target_->WriteBlock(block, src);
}

std::string FaultInjectingBlockDevice::Describe() const {
  return absl::StrCat("faulty(", target_->Describe(), ")");
}

}  // namespace farswap::server
