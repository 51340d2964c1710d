// ChooseDataAddress: which of a node's data-plane addresses a client dials,
// for each data_transport preference, with and without RDMA on either host,
// and for nodes that list no data_addrs (older nodes).
#include "data_address_choice.h"

#include <gtest/gtest.h>

namespace farswap::client_internal {
namespace {

Attachment Both(std::vector<std::string> node_rdma) {
  return Attachment{.data_addr = "10.0.0.5:7000",
                    .data_addrs = {"10.0.0.5:7000", "ucx://10.0.0.5:7001"},
                    .rdma_devices = std::move(node_rdma)};
}

TEST(ChooseDataAddressTest, AutoTakesUcxOnlyWhenBothHostsHaveRdma) {
  EXPECT_EQ(ChooseDataAddress(Both({"mlx5_0"}), "auto", true), "ucx://10.0.0.5:7001");
  EXPECT_EQ(ChooseDataAddress(Both({"mlx5_0"}), "auto", false), "10.0.0.5:7000");
  EXPECT_EQ(ChooseDataAddress(Both({}), "auto", true), "10.0.0.5:7000");
  EXPECT_EQ(ChooseDataAddress(Both({}), "auto", false), "10.0.0.5:7000");
}

TEST(ChooseDataAddressTest, ExplicitBackendWhenServedElseThePrimary) {
  EXPECT_EQ(ChooseDataAddress(Both({}), "ucx", false), "ucx://10.0.0.5:7001");
  EXPECT_EQ(ChooseDataAddress(Both({"mlx5_0"}), "tcp", true), "10.0.0.5:7000");
  Attachment tcp_only{
      .data_addr = "10.0.0.5:7000", .data_addrs = {"10.0.0.5:7000"}, .rdma_devices = {"mlx5_0"}};
  EXPECT_EQ(ChooseDataAddress(tcp_only, "ucx", true), "10.0.0.5:7000");
  EXPECT_EQ(ChooseDataAddress(tcp_only, "auto", true), "10.0.0.5:7000");
  Attachment ucx_only{.data_addr = "ucx://10.0.0.5:7001", .data_addrs = {"ucx://10.0.0.5:7001"}};
  EXPECT_EQ(ChooseDataAddress(ucx_only, "tcp", false), "ucx://10.0.0.5:7001");
}

TEST(ChooseDataAddressTest, OlderNodesWithoutDataAddrsGetTheirDataAddr) {
  Attachment old{.data_addr = "10.0.0.5:7000", .rdma_devices = {}};
  for (const char* p : {"auto", "tcp", "ucx"})
    EXPECT_EQ(ChooseDataAddress(old, p, true), old.data_addr);
}

TEST(ChooseDataAddressTest, UnknownPreferenceIsRefusedByName) {
  for (const char* p : {"auto", "tcp", "ucx"}) EXPECT_TRUE(CheckDataTransportPreference(p).ok());
  absl::Status s = CheckDataTransportPreference("rdma");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("\"rdma\""), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace farswap::client_internal
