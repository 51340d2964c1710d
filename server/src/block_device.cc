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

// CheckRun: blocks first..first+count-1 all exist (and count > 0).
absl::Status CheckRun(uint64_t first, uint64_t count, uint64_t block_count) {
  if (count == 0 || first >= block_count || count > block_count - first) {
    return absl::OutOfRangeError(absl::StrCat("blocks ", first, "+", count, " are not within a ",
                                              block_count, "-block device"));
  }
  return absl::OkStatus();
}

}  // namespace

// --- BlockDevice defaults ----------------------------------------------------------

absl::Status BlockDevice::ReadBlocks(uint64_t first, uint64_t count, void* dst) {
  if (absl::Status s = CheckRun(first, count, block_count()); !s.ok()) return s;
  for (uint64_t i = 0; i < count; ++i) {
    if (absl::Status s = ReadBlock(first + i, static_cast<uint8_t*>(dst) + i * kBlockSize);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status BlockDevice::WriteBlocks(uint64_t first, uint64_t count, const void* src) {
  if (absl::Status s = CheckRun(first, count, block_count()); !s.ok()) return s;
  for (uint64_t i = 0; i < count; ++i) {
    if (absl::Status s = WriteBlock(first + i, static_cast<const uint8_t*>(src) + i * kBlockSize);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

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

absl::Status MemoryBlockDevice::ReadBlocks(uint64_t first, uint64_t count, void* dst) {
  if (absl::Status s = CheckRun(first, count, block_count_); !s.ok()) return s;
  MutexLock l(&mu_);
  std::memcpy(dst, bytes_.data() + first * kBlockSize, count * kBlockSize);
  return absl::OkStatus();
}

absl::Status MemoryBlockDevice::WriteBlocks(uint64_t first, uint64_t count, const void* src) {
  if (absl::Status s = CheckRun(first, count, block_count_); !s.ok()) return s;
  MutexLock l(&mu_);
  std::memcpy(bytes_.data() + first * kBlockSize, src, count * kBlockSize);
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

absl::Status FaultInjectingBlockDevice::Injected(bool write, uint64_t first, uint64_t count) {
  (write ? writes_ : reads_).fetch_add(1, std::memory_order_relaxed);
  absl::Status injected;
  {
    MutexLock l(&mu_);
    injected = Consume(write ? write_plan_ : read_plan_);
  }
  if (injected.ok()) return injected;
  const std::string where =
      count == 1 ? absl::StrCat("block ", first) : absl::StrCat("blocks ", first, "+", count);
  return absl::Status(injected.code(), absl::StrCat("injected ", write ? "write" : "read",
                                                    " fault at ", where, ": ", injected.message()));
}

absl::Status FaultInjectingBlockDevice::ReadBlock(uint64_t block, void* dst) {
  if (absl::Status s = Injected(false, block, 1); !s.ok()) return s;
  return target_->ReadBlock(block, dst);
}

absl::Status FaultInjectingBlockDevice::WriteBlock(uint64_t block, const void* src) {
  if (absl::Status s = Injected(true, block, 1); !s.ok()) return s;
  return target_->WriteBlock(block, src);
}

absl::Status FaultInjectingBlockDevice::ReadBlocks(uint64_t first, uint64_t count, void* dst) {
  if (absl::Status s = Injected(false, first, count); !s.ok()) return s;
  return target_->ReadBlocks(first, count, dst);
}

absl::Status FaultInjectingBlockDevice::WriteBlocks(uint64_t first, uint64_t count,
                                                    const void* src) {
  if (absl::Status s = Injected(true, first, count); !s.ok()) return s;
  return target_->WriteBlocks(first, count, src);
}

std::string FaultInjectingBlockDevice::Describe() const {
  return absl::StrCat("faulty(", target_->Describe(), ")");
}

}  // namespace farswap::server
