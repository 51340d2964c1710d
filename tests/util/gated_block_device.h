// gated_block_device.h: a block device whose writes wait for the test.
//
// GatedBlockDevice is a MemoryBlockDevice whose writes wait until the test
// opens the gate: a node's writeback, and every store waiting for it to
// make room, is stuck until then — a store the node cannot finish, held
// for as long as a test needs, with no sleeps. Reads pass. Thread-safe.
#ifndef FARSWAP_TESTS_UTIL_GATED_BLOCK_DEVICE_H_
#define FARSWAP_TESTS_UTIL_GATED_BLOCK_DEVICE_H_

#include <cstdint>
#include <string>

#include "farswap/common/mutex.h"
#include "farswap/server/block_device.h"

namespace farswap::testing {

class GatedBlockDevice final : public server::BlockDevice {
 public:
  explicit GatedBlockDevice(uint64_t blocks) : disk_(blocks) {}
  void OpenGate() {
    MutexLock l(&mu_);
    open_ = true;
    cv_.SignalAll();
  }
  void CloseGate() {
    MutexLock l(&mu_);
    open_ = false;
  }
  absl::Status ReadBlock(uint64_t block, void* dst) override { return disk_.ReadBlock(block, dst); }
  absl::Status WriteBlock(uint64_t block, const void* src) override {
    {
      MutexLock l(&mu_);
      while (!open_) cv_.Wait(&mu_);
    }
    return disk_.WriteBlock(block, src);
  }
  absl::Status Sync() override { return disk_.Sync(); }
  uint64_t block_count() const override { return disk_.block_count(); }
  std::string Describe() const override { return "gated " + disk_.Describe(); }

 private:
  server::MemoryBlockDevice disk_;
  Mutex mu_;
  CondVar cv_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_GATED_BLOCK_DEVICE_H_
