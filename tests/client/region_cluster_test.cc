// A far-memory region over real memory nodes (farswap::Client, R=2): a node
// SIGKILLed in the middle of the workload changes nothing the program sees.
#include <gtest/gtest.h>

#include <cstring>

#include "farswap/client/client.h"
#include "farswap/client/client_page_backend.h"
#include "farswap/client/region.h"
#include "server_process.h"

namespace farswap {
namespace {

constexpr uint64_t kPage = 4096;

uint64_t Word(uint64_t page, uint64_t i, uint64_t round) {
  return (page * 0x9E3779B97F4A7C15ull) ^ (i * 0xff51afd7ed558ccdull) ^ (round << 56);
}

void WritePage(uint8_t* base, uint64_t page, uint64_t round) {
  auto* w = reinterpret_cast<uint64_t*>(base + page * kPage);
  // Half the page is a pattern, half zeros: compressible like real data.
  for (uint64_t i = 0; i < kPage / 16; ++i) w[i] = Word(page, i, round);
}

bool PageIs(const uint8_t* base, uint64_t page, uint64_t round) {
  const auto* w = reinterpret_cast<const uint64_t*>(base + page * kPage);
  for (uint64_t i = 0; i < kPage / 8; ++i) {
    if (w[i] != (i < kPage / 16 ? Word(page, i, round) : 0)) return false;
  }
  return true;
}

TEST(RegionClusterTest, KilledNodeMidWorkloadChangesNothingVisible) {
  std::vector<std::unique_ptr<testing::ServerProcess>> nodes;
  ClientOptions o;
  for (int i = 0; i < 3; ++i) {
    auto node = testing::ServerProcess::Start({.pool_limit = "4M", .backing_size = "64M"});
    ASSERT_TRUE(node.ok()) << node.status();
    o.nodes.push_back((*node)->grpc_addr());
    nodes.push_back(std::move(*node));
  }
  o.replicas = 2;
  o.pages_per_slab = 64;        // many slabs, spread over all three nodes
  o.poll_while_waiting = true;  // as the region's programs run it
  auto client = Client::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  ClientPageBackend backend(client->get());
  constexpr uint64_t kPages = 4096;  // 16 MiB region, 2 MiB local
  auto region = Region::Create(&backend, kPages * kPage, {.local_budget = 2 << 20});
  ASSERT_TRUE(region.ok()) << region.status();
  uint8_t* base = (*region)->data();

  for (uint64_t p = 0; p < kPages; ++p) WritePage(base, p, 1);
  // Second round: rewrite every page, killing a node halfway.
  for (uint64_t p = 0; p < kPages; ++p) {
    if (p == kPages / 2) nodes[1]->Kill();
    ASSERT_TRUE(PageIs(base, p, 1)) << "page " << p << " before its rewrite";
    WritePage(base, p, 2);
  }
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_TRUE(PageIs(base, p, 2)) << "page " << p;
  RegionStats s = (*region)->stats();
  EXPECT_EQ(s.sigbus_delivered, 0u);
  EXPECT_EQ(s.store_errors, 0u);
  EXPECT_GT(s.pages_loaded, kPages);  // the region really paged through the nodes
  EXPECT_LE(s.max_resident_pages, s.budget_pages + 32);
  ClientStats cs = (*client)->stats();
  EXPECT_EQ(cs.lost_pages, 0u);
  EXPECT_TRUE((*client)->WaitUntilReplicated(absl::Seconds(30)).ok());
}

}  // namespace
}  // namespace farswap
