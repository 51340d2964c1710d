// block_device.h: the backing store a memory node writes cold pages to.
//
// A BlockDevice is an array of fixed 4 KiB blocks addressed by block number,
// read and written a block or a run of consecutive blocks at a time
// (ReadBlocks / WriteBlocks: one I/O for the whole run). The page store packs
// compressed pages end to end into large segments (server/README.md, "On-disk
// layout"): writeback writes a run of a segment's blocks at once, and a load
// reads only the one or two blocks its object lies in. Every offset and
// length is whole blocks, so each I/O maps onto one O_DIRECT request.
//
//   absl::StatusOr<std::unique_ptr<FileBlockDevice>> dev =
//       FileBlockDevice::Open({.path = "/var/lib/farswap/backing", .size_bytes = 64 << 30});
//   FARSWAP_RETURN_IF_ERROR((*dev)->WriteBlock(17, buf));   // buf: kBlockSize bytes
//   FARSWAP_RETURN_IF_ERROR((*dev)->WriteBlocks(256, 64, seg));  // 64 blocks, one I/O
//
// Implementations: FileBlockDevice (a file or a block device), MemoryBlockDevice
// (tests) and FaultInjectingBlockDevice (wraps another and fails I/O on
// command, like leveldb's ErrorEnv).
#ifndef FARSWAP_SERVER_BLOCK_DEVICE_H_
#define FARSWAP_SERVER_BLOCK_DEVICE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "farswap/common/mutex.h"
#include "farswap/server/block_write_queue.h"

namespace farswap::server {

// kBlockSize: the unit of every I/O and of every offset; the O_DIRECT
// alignment of every common SSD. A compressed page is never longer than
// one block, so it lies in at most two consecutive blocks.
inline constexpr size_t kBlockSize = 4096;

// BlockDevice reads and writes whole blocks. Implementations are safe for
// concurrent use from any number of threads; concurrent I/O to the same
// block has no defined order (the page store never writes a block that a
// read may be reading, nor one block from two writers).
class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  // ReadBlock fills `dst` (kBlockSize bytes) with block `block`.
  // OUT_OF_RANGE for a block past the end; another code for an I/O error.
  virtual absl::Status ReadBlock(uint64_t block, void* dst) = 0;
  // WriteBlock writes `src` (kBlockSize bytes) to block `block`.
  virtual absl::Status WriteBlock(uint64_t block, const void* src) = 0;
  // ReadBlocks fills `dst` (count x kBlockSize bytes) with blocks
  // first..first+count-1, as one I/O where the device can. OUT_OF_RANGE
  // when the run passes the end; another code for an I/O error. The
  // default reads block by block.
  virtual absl::Status ReadBlocks(uint64_t first, uint64_t count, void* dst);
  // WriteBlocks writes `src` (count x kBlockSize bytes) to blocks
  // first..first+count-1, as one I/O where the device can. On an error
  // any part of the run may have been written. The default writes block by
  // block.
  virtual absl::Status WriteBlocks(uint64_t first, uint64_t count, const void* src);
  // NewWriteQueue returns a queue for up to `depth` asynchronous writes
  // and reads (block_write_queue.h). The default is the synchronous form
  // over this device's WriteBlocks and ReadBlocks.
  virtual std::unique_ptr<BlockWriteQueue> NewWriteQueue(size_t depth) {
    return NewSyncWriteQueue(this, depth);
  }
  // Sync makes completed writes durable (fdatasync).
  virtual absl::Status Sync() = 0;
  // block_count: the number of blocks; fixed for the life of the device.
  virtual uint64_t block_count() const = 0;
  // Describe names the device for log lines and stats ("file:/path", ...).
  virtual std::string Describe() const = 0;
};

// MemoryBlockDevice keeps its blocks in memory, for tests. Thread-safe.
class MemoryBlockDevice final : public BlockDevice {
 public:
  explicit MemoryBlockDevice(uint64_t block_count);

  absl::Status ReadBlock(uint64_t block, void* dst) override;
  absl::Status WriteBlock(uint64_t block, const void* src) override;
  absl::Status ReadBlocks(uint64_t first, uint64_t count, void* dst) override;
  absl::Status WriteBlocks(uint64_t first, uint64_t count, const void* src) override;
  absl::Status Sync() override { return absl::OkStatus(); }
  uint64_t block_count() const override { return block_count_; }
  std::string Describe() const override;

 private:
  const uint64_t block_count_;
  Mutex mu_;
  std::vector<uint8_t> bytes_ ABSL_GUARDED_BY(mu_);
};

struct FileBlockDeviceOptions {
  // path: a regular file (created if missing, then sized to size_bytes) or a
  // block device (used as is; size_bytes must not exceed its size).
  std::string path;
  // size_bytes: the usable size, rounded down to whole blocks. 0 for a block
  // device means "all of it"; a regular file needs a size.
  uint64_t size_bytes = 0;
  // direct_io: try O_DIRECT (no page-cache copy of cold pages). Falls back to
  // buffered I/O, with a log line, where the filesystem refuses it (tmpfs).
  bool direct_io = true;
};

// FileBlockDevice does pread/pwrite on a file or block device. Thread-safe:
// positional I/O on one descriptor needs no lock.
class FileBlockDevice final : public BlockDevice {
 public:
  // Open opens (and for a regular file creates and truncates to size) the
  // path. INVALID_ARGUMENT for a bad size, NOT_FOUND / PERMISSION_DENIED /
  // INTERNAL from open(2) and friends, with the path in the message.
  static absl::StatusOr<std::unique_ptr<FileBlockDevice>> Open(
      const FileBlockDeviceOptions& options);
  ~FileBlockDevice() override;

  absl::Status ReadBlock(uint64_t block, void* dst) override;
  absl::Status WriteBlock(uint64_t block, const void* src) override;
  absl::Status ReadBlocks(uint64_t first, uint64_t count, void* dst) override;
  absl::Status WriteBlocks(uint64_t first, uint64_t count, const void* src) override;
  // NewWriteQueue: an io_uring ring on this file (uring_write_queue.cc);
  // the synchronous form, with one log line, where io_uring_queue_init fails.
  std::unique_ptr<BlockWriteQueue> NewWriteQueue(size_t depth) override;
  absl::Status Sync() override;
  uint64_t block_count() const override { return block_count_; }
  std::string Describe() const override;
  // direct_io: whether O_DIRECT is in use (false after a fallback).
  bool direct_io() const { return direct_io_; }

 private:
  FileBlockDevice(int fd, std::string path, uint64_t block_count, bool direct_io)
      : fd_(fd), path_(std::move(path)), block_count_(block_count), direct_io_(direct_io) {}

  const int fd_;
  const std::string path_;
  const uint64_t block_count_;
  const bool direct_io_;
};

// FaultInjectingBlockDevice forwards to another device and fails reads or
// writes on command: after `after_ops` more successful operations of that
// kind (a ReadBlocks / WriteBlocks run is one operation, whatever its
// length), the next `count` operations fail with `error` (for example
// absl::ResourceExhaustedError("ENOSPC") or absl::DataLossError("EIO")).
// Thread-safe; the wrapped device must outlive it.
class FaultInjectingBlockDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kForever = UINT64_MAX;

  explicit FaultInjectingBlockDevice(BlockDevice* target) : target_(target) {}

  void FailReads(uint64_t after_ops, uint64_t count, absl::Status error);
  void FailWrites(uint64_t after_ops, uint64_t count, absl::Status error);
  // ClearFaults stops injecting faults.
  void ClearFaults();

  uint64_t reads() const { return reads_.load(); }
  uint64_t writes() const { return writes_.load(); }
  uint64_t injected_faults() const { return injected_.load(); }

  absl::Status ReadBlock(uint64_t block, void* dst) override;
  absl::Status WriteBlock(uint64_t block, const void* src) override;
  absl::Status ReadBlocks(uint64_t first, uint64_t count, void* dst) override;
  absl::Status WriteBlocks(uint64_t first, uint64_t count, const void* src) override;
  absl::Status Sync() override { return target_->Sync(); }
  uint64_t block_count() const override { return target_->block_count(); }
  std::string Describe() const override;

 private:
  struct Plan {
    uint64_t after_ops = 0;
    uint64_t count = 0;
    absl::Status error;
  };
  // Consume returns the error to inject for the next operation under `plan`,
  // or OK.
  absl::Status Consume(Plan& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Injected returns the fault to inject for one read (or write), counted,
  // with `where` in its message; OK to go ahead.
  absl::Status Injected(bool write, uint64_t first, uint64_t count);

  BlockDevice* const target_;
  Mutex mu_;
  Plan read_plan_ ABSL_GUARDED_BY(mu_);
  Plan write_plan_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> writes_{0};
  std::atomic<uint64_t> injected_{0};
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_BLOCK_DEVICE_H_
