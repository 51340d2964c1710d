// BlockDevice implementations and the BlockAllocator.
#include "farswap/server/block_device.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "farswap/server/block_allocator.h"

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

TEST(BlockAllocatorTest, HandsOutEveryBlockOnceThenReportsFull) {
  BlockAllocator blocks(70);  // not a multiple of 64: the tail bits must stay unused
  std::set<uint64_t> seen;
  for (int i = 0; i < 70; ++i) {
    absl::StatusOr<uint64_t> b = blocks.Allocate();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_LT(*b, 70u);
    EXPECT_TRUE(seen.insert(*b).second) << "block " << *b << " handed out twice";
  }
  EXPECT_EQ(blocks.used(), 70u);
  absl::Status full = blocks.Allocate().status();
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  blocks.Free(33);
  absl::StatusOr<uint64_t> again = blocks.Allocate();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 33u);
  blocks.Free(0);
  blocks.Free(69);
  EXPECT_EQ(blocks.used(), 68u);
}

}  // namespace
}  // namespace farswap::server
