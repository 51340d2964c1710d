// data_plane_differential_test: random sequences of STORE, LOAD,
// INVALIDATE, INVALIDATE_RANGE, PING and BATCH from two tenants, each on
// its own connection to a real in-process node (TCP data plane, a pool
// small enough that pages are written back), checked reply by reply
// against a model of the node (data_plane_model.h). The same driver is
// fuzzed by data_plane_fuzzer.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "data_plane_model.h"

namespace farswap::server::testing {
namespace {

// kSeeds x kOpsPerSeed operations; a seed's bytes are enough for
// kOpsPerSeed operations (a BATCH of 20 stores reads well under 1 KiB).
constexpr int kSeeds = 150;
constexpr size_t kOpsPerSeed = 300;
constexpr size_t kBytesPerSeed = 64 * 1024;

std::vector<uint8_t> RandomBytes(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> bytes(kBytesPerSeed);
  for (uint8_t& b : bytes) b = uint8_t(rng());
  return bytes;
}

TEST(DataPlaneDifferentialTest, TwoTenantsRandomOperationsMatchTheModel) {
  absl::StatusOr<std::unique_ptr<DataPlaneHarness>> h = DataPlaneHarness::Start();
  ASSERT_TRUE(h.ok()) << h.status();
  for (int seed = 0; seed < kSeeds; ++seed) {
    absl::Status s = (*h)->Run(RandomBytes(seed), kOpsPerSeed);
    ASSERT_TRUE(s.ok()) << "seed " << seed << ": " << s.message();
  }
  // The runs reached the paths they are meant to: stale stores, the beta
  // tenant's quota, writeback, and requests handed to the workers.
  const PageStoreStats stats = (*h)->store().GetStats();
  EXPECT_GT(stats.stale_stores, 0u);
  EXPECT_GT(stats.rejects[int(RejectReason::kQuota)], 0u);
  EXPECT_GT(stats.written_back_pages, 0u);
  EXPECT_GT(stats.backing_reads, 0u);
  EXPECT_GT((*h)->server().stats().requests_to_workers, 0u);
  EXPECT_EQ(stats.rejects[int(RejectReason::kPoolFull)], 0u);
}

TEST(DataPlaneDifferentialTest, OpsAreReadDeterministicallyFromTheInput) {
  const std::vector<uint8_t> bytes = RandomBytes(7);
  OpReader a(bytes), b(bytes);
  std::vector<Op> x = GenerateOps(a, 500), y = GenerateOps(b, 500);
  ASSERT_EQ(x.size(), 500u);
  ASSERT_EQ(y.size(), 500u);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i].Describe(), y[i].Describe()) << i;
  OpReader empty({});
  EXPECT_TRUE(GenerateOps(empty, 10).empty());
}

// The harness is not blind: a node that corrupts every loaded page (the
// checksum left as stored) is caught, with the op that saw it.
TEST(DataPlaneDifferentialTest, CorruptedLoadIsReportedAsDivergence) {
  absl::StatusOr<std::unique_ptr<DataPlaneHarness>> h =
      DataPlaneHarness::Start(/*corrupt_loads=*/true);
  ASSERT_TRUE(h.ok()) << h.status();
  absl::Status s = (*h)->Run(RandomBytes(1), kOpsPerSeed);
  ASSERT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("LOAD"), absl::string_view::npos) << s.message();
  EXPECT_NE(s.message().find("expected"), absl::string_view::npos) << s.message();
  // The next run starts from an empty node all the same.
  EXPECT_EQ((*h)->store().GetStats().stored_pages, 0u);
}

}  // namespace
}  // namespace farswap::server::testing
