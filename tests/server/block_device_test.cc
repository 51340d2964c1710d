// BlockDevice implementations: single blocks and runs of blocks.
#include "farswap/server/block_device.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace farswap::server {
namespace {

std::vector<uint8_t> Block(uint8_t seed) {
  std::vector<uint8_t> b(kBlockSize);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(seed * 31 + i * 7);
  return b;
}

void RoundTrip(BlockDevice& dev) {
  for (uint64_t blk : {uint64_t{0}, dev.block_count() - 1, dev.block_count() / 2}) {
    std::vector<uint8_t> in = Block(uint8_t(blk + 1)), out(kBlockSize);
    ASSERT_TRUE(dev.WriteBlock(blk, in.data()).ok());
    ASSERT_TRUE(dev.ReadBlock(blk, out.data()).ok());
    EXPECT_EQ(in, out) << "block " << blk;
  }
  std::vector<uint8_t> buf(kBlockSize);
  EXPECT_EQ(dev.ReadBlock(dev.block_count(), buf.data()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(dev.WriteBlock(dev.block_count(), buf.data()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(dev.Sync().ok());

  // A run of blocks in one call, read back whole and block by block; the
  // buffer is deliberately not 4 KiB-aligned (a direct-I/O device bounces it).
  const uint64_t n = std::min<uint64_t>(5, dev.block_count() - 1);
  std::vector<uint8_t> run(n * kBlockSize + 1);
  for (uint64_t i = 0; i < n; ++i) {
    std::vector<uint8_t> b = Block(uint8_t(100 + i));
    std::memcpy(run.data() + 1 + i * kBlockSize, b.data(), kBlockSize);
  }
  ASSERT_TRUE(dev.WriteBlocks(1, n, run.data() + 1).ok());
  std::vector<uint8_t> back(n * kBlockSize + 1);
  ASSERT_TRUE(dev.ReadBlocks(1, n, back.data() + 1).ok());
  EXPECT_TRUE(std::equal(run.begin() + 1, run.end(), back.begin() + 1));
  for (uint64_t i = 0; i < n; ++i) {
    std::vector<uint8_t> out(kBlockSize);
    ASSERT_TRUE(dev.ReadBlock(1 + i, out.data()).ok());
    EXPECT_EQ(out, Block(uint8_t(100 + i))) << "block " << 1 + i << " of the run";
  }
  // A run that passes the end, or is empty, is refused and writes nothing.
  std::vector<uint8_t> two(2 * kBlockSize, 0xAB);
  EXPECT_EQ(dev.WriteBlocks(dev.block_count() - 1, 2, two.data()).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(dev.ReadBlocks(dev.block_count() - 1, 2, two.data()).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(dev.ReadBlocks(0, 0, two.data()).code(), absl::StatusCode::kOutOfRange);
}

TEST(MemoryBlockDeviceTest, ReadsBackWhatWasWritten) {
  MemoryBlockDevice dev(16);
  RoundTrip(dev);
}

class FileBlockDeviceTest : public ::testing::TestWithParam<bool> {
 protected:
  std::string path_ = absl::StrCat(FARSWAP_BINARY_DIR, "/block_device_test.", getpid(), ".",
                                   GetParam() ? "direct" : "buffered");
  ~FileBlockDeviceTest() override { ::unlink(path_.c_str()); }
};

TEST_P(FileBlockDeviceTest, CreatesSizedFileAndReadsBack) {
  absl::StatusOr<std::unique_ptr<FileBlockDevice>> dev = FileBlockDevice::Open(
      {.path = path_, .size_bytes = 64 * kBlockSize + 100, .direct_io = GetParam()});
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ((*dev)->block_count(), 64u);  // rounded down to whole blocks
  EXPECT_EQ(::access(path_.c_str(), F_OK), 0);
  RoundTrip(**dev);
  // Unaligned caller buffers work too (bounced under O_DIRECT).
  std::vector<uint8_t> in(kBlockSize + 1), out(kBlockSize + 1);
  std::memcpy(in.data() + 1, Block(9).data(), kBlockSize);
  ASSERT_TRUE((*dev)->WriteBlock(3, in.data() + 1).ok());
  ASSERT_TRUE((*dev)->ReadBlock(3, out.data() + 1).ok());
  EXPECT_EQ(0, std::memcmp(in.data() + 1, out.data() + 1, kBlockSize));
}

// The file's write queue (io_uring where the kernel allows it, else the
// synchronous fallback): 40 runs submitted 16 at a time, every completion
// tagged once, every block read back as written; a run past the end is
// refused at Submit and takes no slot.
TEST_P(FileBlockDeviceTest, WriteQueueWritesManyRunsInFlight) {
  absl::StatusOr<std::unique_ptr<FileBlockDevice>> dev = FileBlockDevice::Open(
      {.path = path_, .size_bytes = 128 * kBlockSize, .direct_io = GetParam()});
  ASSERT_TRUE(dev.ok()) << dev.status();
  std::unique_ptr<BlockWriteQueue> q = (*dev)->NewWriteQueue(16);
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(std::string(q->engine()) == "io_uring" || std::string(q->engine()) == "sync");
  EXPECT_EQ(q->depth(), 16u);
  constexpr uint64_t kRuns = 40, kRunBlocks = 3;
  std::unique_ptr<uint8_t, decltype(&std::free)> buf(
      static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, kRuns * kRunBlocks * kBlockSize)),
      &std::free);
  for (uint64_t b = 0; b < kRuns * kRunBlocks; ++b) {
    std::memcpy(buf.get() + b * kBlockSize, Block(uint8_t(b + 3)).data(), kBlockSize);
  }
  EXPECT_EQ(q->Submit(127, 2, buf.get(), 999).code(), absl::StatusCode::kOutOfRange);
  std::set<uint64_t> tags;
  uint64_t next = 0;
  while (next < kRuns || q->in_flight() > 0) {
    while (next < kRuns && q->in_flight() < q->depth()) {
      ASSERT_TRUE(
          q->Submit(next * kRunBlocks, kRunBlocks, buf.get() + next * kRunBlocks * kBlockSize, next)
              .ok());
      ++next;
    }
    if (next < kRuns) {
      EXPECT_EQ(q->Submit(0, 1, buf.get(), 1000).code(), absl::StatusCode::kFailedPrecondition);
    }
    for (const BlockWriteQueue::Completion& c : q->Reap()) {
      EXPECT_TRUE(c.status.ok()) << c.status;
      EXPECT_TRUE(tags.insert(c.tag).second) << "tag " << c.tag << " completed twice";
    }
  }
  EXPECT_EQ(tags.size(), kRuns);
  EXPECT_TRUE(q->Reap().empty());
  for (uint64_t b = 0; b < kRuns * kRunBlocks; ++b) {
    std::vector<uint8_t> out(kBlockSize);
    ASSERT_TRUE((*dev)->ReadBlock(b, out.data()).ok());
    EXPECT_EQ(out, Block(uint8_t(b + 3))) << "block " << b;
  }
}

// Writes from the region named with UseRegisteredBuffer: through io_uring,
// a run within it goes as a fixed-buffer write (counted), one that only
// starts in it or lies outside it goes plain; either way every block lands
// as written. A region the kernel will not pin (read-only memory) is refused
// and its writes go plain.
TEST_P(FileBlockDeviceTest, WritesFromTheRegisteredBufferLandAsWritten) {
  absl::StatusOr<std::unique_ptr<FileBlockDevice>> dev = FileBlockDevice::Open(
      {.path = path_, .size_bytes = 64 * kBlockSize, .direct_io = GetParam()});
  ASSERT_TRUE(dev.ok()) << dev.status();
  const bool uring = std::string((*dev)->NewWriteQueue(4)->engine()) == "io_uring";
  constexpr size_t kMapped = 12, kRegion = 8;
  auto* map = static_cast<uint8_t*>(::mmap(nullptr, kMapped * kBlockSize, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(map, MAP_FAILED);
  for (size_t b = 0; b < kMapped; ++b) {
    std::memcpy(map + b * kBlockSize, Block(uint8_t(b + 40)).data(), kBlockSize);
  }
  std::unique_ptr<uint8_t, decltype(&std::free)> outside(
      static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, kBlockSize)), &std::free);
  std::memcpy(outside.get(), Block(99).data(), kBlockSize);

  std::unique_ptr<BlockWriteQueue> q = (*dev)->NewWriteQueue(8);
  q->UseRegisteredBuffer(map, kRegion * kBlockSize);
  // Blocks 0-3 and 4-7 of the region (fixed), 6-9 (past the region's end:
  // plain), and the heap block (plain), to file blocks 10-13, 20-23, 30-33, 40.
  ASSERT_TRUE(q->Submit(10, 4, map, 1).ok());
  ASSERT_TRUE(q->Submit(20, 4, map + 4 * kBlockSize, 2).ok());
  ASSERT_TRUE(q->Submit(30, 4, map + 6 * kBlockSize, 3).ok());
  ASSERT_TRUE(q->Submit(40, 1, outside.get(), 4).ok());
  for (const BlockWriteQueue::Completion& c : q->ReapAll()) {
    EXPECT_TRUE(c.status.ok()) << "tag " << c.tag << ": " << c.status;
  }
  EXPECT_EQ(q->TakeRegisteredWrites(), uring ? 2u : 0u);
  EXPECT_EQ(q->TakeRegisteredWrites(), 0u);  // taken
  auto expect_blocks = [&](uint64_t first, uint64_t count, uint8_t seed) {
    for (uint64_t i = 0; i < count; ++i) {
      std::vector<uint8_t> out(kBlockSize);
      ASSERT_TRUE((*dev)->ReadBlock(first + i, out.data()).ok());
      EXPECT_EQ(out, Block(uint8_t(seed + i))) << "file block " << first + i;
    }
  };
  expect_blocks(10, 4, 40);
  expect_blocks(20, 4, 44);
  expect_blocks(30, 4, 46);
  expect_blocks(40, 1, 99);

  // Read-only memory cannot be pinned for writing into, so the ring
  // refuses to register it; the write from it still lands, plain.
  ASSERT_EQ(::mprotect(map, kMapped * kBlockSize, PROT_READ), 0);
  std::unique_ptr<BlockWriteQueue> refused = (*dev)->NewWriteQueue(4);
  refused->UseRegisteredBuffer(map, kRegion * kBlockSize);
  ASSERT_TRUE(refused->Submit(50, 2, map + kBlockSize, 5).ok());
  for (const BlockWriteQueue::Completion& c : refused->ReapAll()) {
    EXPECT_TRUE(c.status.ok()) << c.status;
  }
  EXPECT_EQ(refused->TakeRegisteredWrites(), 0u);
  expect_blocks(50, 2, 41);
  q.reset();
  refused.reset();
  ::munmap(map, kMapped * kBlockSize);
}

// Reads through the queue: many runs in flight at once (a depth's worth),
// each reading back exactly what was written, whatever order they finish
// in; a run past the end is refused at submit.
TEST_P(FileBlockDeviceTest, QueueReadsManyRunsInFlight) {
  absl::StatusOr<std::unique_ptr<FileBlockDevice>> dev = FileBlockDevice::Open(
      {.path = path_, .size_bytes = 128 * kBlockSize, .direct_io = GetParam()});
  ASSERT_TRUE(dev.ok()) << dev.status();
  constexpr uint64_t kRuns = 40, kRunBlocks = 3;
  for (uint64_t b = 0; b < kRuns * kRunBlocks; ++b) {
    ASSERT_TRUE((*dev)->WriteBlock(b, Block(uint8_t(b + 5)).data()).ok());
  }
  std::unique_ptr<BlockWriteQueue> q = (*dev)->NewWriteQueue(16);
  std::unique_ptr<uint8_t, decltype(&std::free)> buf(
      static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, kRuns * kRunBlocks * kBlockSize)),
      &std::free);
  std::memset(buf.get(), 0, kRuns * kRunBlocks * kBlockSize);
  EXPECT_EQ(q->SubmitRead(127, 2, buf.get(), 999).code(), absl::StatusCode::kOutOfRange);
  std::set<uint64_t> tags;
  uint64_t next = 0;
  size_t most_in_flight = 0;
  while (next < kRuns || q->in_flight() > 0) {
    // Runs in reverse block order, so completions need not follow blocks.
    while (next < kRuns && q->in_flight() < q->depth()) {
      const uint64_t run = kRuns - 1 - next;
      ASSERT_TRUE(q->SubmitRead(run * kRunBlocks, kRunBlocks,
                                buf.get() + run * kRunBlocks * kBlockSize, run)
                      .ok());
      ++next;
    }
    most_in_flight = std::max(most_in_flight, q->in_flight());
    for (const BlockWriteQueue::Completion& c : q->Reap()) {
      EXPECT_TRUE(c.status.ok()) << c.status;
      EXPECT_TRUE(tags.insert(c.tag).second) << "tag " << c.tag << " completed twice";
    }
  }
  EXPECT_EQ(tags.size(), kRuns);
  if (std::string(q->engine()) == "io_uring") {
    EXPECT_EQ(most_in_flight, q->depth());
  }
  for (uint64_t b = 0; b < kRuns * kRunBlocks; ++b) {
    std::vector<uint8_t> got(buf.get() + b * kBlockSize, buf.get() + (b + 1) * kBlockSize);
    EXPECT_EQ(got, Block(uint8_t(b + 5))) << "block " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(DirectAndBuffered, FileBlockDeviceTest, ::testing::Bool());

TEST(FileBlockDeviceOpenTest, RejectsMissingSizeAndBadPath) {
  EXPECT_EQ(
      FileBlockDevice::Open({.path = absl::StrCat(FARSWAP_BINARY_DIR, "/nosize")}).status().code(),
      absl::StatusCode::kInvalidArgument);
  absl::Status s =
      FileBlockDevice::Open({.path = "/nonexistent-dir/backing", .size_bytes = 1 << 20}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("/nonexistent-dir/backing"), std::string::npos) << s;
}

TEST(FaultInjectingBlockDeviceTest, FailsAfterNOpsForCountOps) {
  MemoryBlockDevice mem(8);
  FaultInjectingBlockDevice dev(&mem);
  std::vector<uint8_t> b = Block(1);
  dev.FailWrites(2, 1, absl::ResourceExhaustedError("ENOSPC"));
  EXPECT_TRUE(dev.WriteBlock(0, b.data()).ok());
  EXPECT_TRUE(dev.WriteBlock(1, b.data()).ok());
  absl::Status s = dev.WriteBlock(2, b.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("ENOSPC"), std::string::npos) << s;
  EXPECT_TRUE(dev.WriteBlock(2, b.data()).ok());  // the fault was for one op

  dev.FailReads(0, FaultInjectingBlockDevice::kForever, absl::DataLossError("EIO"));
  std::vector<uint8_t> out(kBlockSize);
  EXPECT_EQ(dev.ReadBlock(0, out.data()).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(dev.ReadBlock(1, out.data()).code(), absl::StatusCode::kDataLoss);
  dev.ClearFaults();
  ASSERT_TRUE(dev.ReadBlock(1, out.data()).ok());
  EXPECT_EQ(out, b);
  EXPECT_EQ(dev.injected_faults(), 3u);
}

// A run is one operation for the fault injector: a planned fault fails the
// whole run, and the next run goes through.
TEST(FaultInjectingBlockDeviceTest, ARunOfBlocksIsOneOperation) {
  MemoryBlockDevice mem(16);
  FaultInjectingBlockDevice dev(&mem);
  std::vector<uint8_t> run(4 * kBlockSize, 0x5C), out(4 * kBlockSize);
  dev.FailWrites(1, 1, absl::DataLossError("EIO"));
  ASSERT_TRUE(dev.WriteBlocks(0, 4, run.data()).ok());
  absl::Status failed = dev.WriteBlocks(4, 4, run.data());
  EXPECT_EQ(failed.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(failed.message().find("blocks 4+4"), std::string::npos) << failed;
  ASSERT_TRUE(dev.WriteBlocks(8, 4, run.data()).ok());
  EXPECT_EQ(dev.writes(), 3u);
  dev.FailReads(0, 1, absl::DataLossError("EIO"));
  EXPECT_EQ(dev.ReadBlocks(0, 4, out.data()).code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE(dev.ReadBlocks(8, 4, out.data()).ok());
  EXPECT_EQ(out, run);
  // The failed run wrote nothing (the injector stops it before the device).
  ASSERT_TRUE(dev.ReadBlocks(4, 4, out.data()).ok());
  EXPECT_EQ(out, std::vector<uint8_t>(4 * kBlockSize, 0));
  EXPECT_EQ(dev.injected_faults(), 2u);
}

}  // namespace
}  // namespace farswap::server
