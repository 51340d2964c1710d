// The data-plane address a real farswap-server hands to clients in Attach:
// never an unspecified one (0.0.0.0 would make every client dial itself).
// Listening on every address needs --advertise-addr; without it the server
// refuses to start (exit 2, naming the flag), and with it Attach returns the
// advertised host with the bound port, which a real client then uses.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "farswap/client/client.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "server_process.h"

namespace farswap {
namespace {

using testing::FarswapBinary;
using testing::ServerProcess;

struct Exit {
  int status = -1;  // exit status, -1 when killed by a signal
  std::string output;
};

// RunServer runs farswap-server with `args` to completion (each of these
// exits at flag parsing) and returns its exit status and stderr+stdout.
Exit RunServer(const std::string& args) {
  Exit e;
  const std::string cmd = absl::StrCat("timeout 20 ", FarswapBinary("server/farswap-server"),
                                       " --allow-anonymous ", args, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return e;
  char buf[512];
  while (fgets(buf, sizeof buf, p) != nullptr) e.output += buf;
  const int w = pclose(p);
  if (WIFEXITED(w)) e.status = WEXITSTATUS(w);
  return e;
}

TEST(AdvertiseAddrTest, UnspecifiedDataAddrWithoutAdvertiseAddrRefusesToStart) {
  for (const char* addr : {"0.0.0.0:0", "[::]:0", ":0"}) {
    Exit e = RunServer(absl::StrCat("--data-addr ", addr, " --grpc-addr 127.0.0.1:0"));
    EXPECT_EQ(e.status, 2) << addr << ": " << e.output;
    EXPECT_NE(e.output.find("--advertise-addr"), std::string::npos) << e.output;
  }
}

TEST(AdvertiseAddrTest, BadAdvertiseAddrIsRefused) {
  for (const char* adv :
       {"0.0.0.0:7000", "[::]:7000", "10.0.0.5", "10.0.0.5:http", ":7000", "10.0.0.5:70000"}) {
    Exit e = RunServer(
        absl::StrCat("--data-addr 0.0.0.0:0 --advertise-addr ", adv, " --grpc-addr 127.0.0.1:0"));
    EXPECT_EQ(e.status, 2) << adv << ": " << e.output;
    EXPECT_NE(e.output.find("--advertise-addr"), std::string::npos) << e.output;
  }
}

absl::StatusOr<std::string> AttachDataAddr(const std::string& grpc_addr) {
  auto stub =
      v1::MemoryNode::NewStub(grpc::CreateChannel(grpc_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::AttachRequest req;
  req.set_tenant_id("default");
  req.set_client_name("advertise_addr_test");
  v1::AttachResponse resp;
  grpc::Status s = stub->Attach(&ctx, req, &resp);
  if (!s.ok()) return absl::Status(absl::StatusCode(s.error_code()), s.error_message());
  return resp.data_addr();
}

std::string Port(const std::string& addr) { return addr.substr(addr.rfind(':') + 1); }

TEST(AdvertiseAddrTest, AttachHandsOutTheAdvertisedHostAndAClientUsesIt) {
  // Listens on every address; clients are told 127.0.0.2 (all of 127/8 is
  // local on Linux), with the bound port because --advertise-addr says 0.
  auto node = ServerProcess::Start(
      {.backing_size = "", .extra_args = {"--advertise-addr", "127.0.0.2:0"}, .host = "0.0.0.0"});
  ASSERT_TRUE(node.ok()) << node.status();
  const std::string grpc_addr = "127.0.0.1:" + Port((*node)->grpc_addr());
  absl::StatusOr<std::string> data_addr = AttachDataAddr(grpc_addr);
  ASSERT_TRUE(data_addr.ok()) << data_addr.status();
  EXPECT_EQ(*data_addr, "127.0.0.2:" + Port((*node)->data_addr()));
  EXPECT_EQ((*node)->data_addr(), *data_addr) << "--ready-file's data_addr is the advertised one";

  ClientOptions o;
  o.nodes = {grpc_addr};
  o.replicas = 1;
  auto client = Client::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<uint8_t> page(4096), back(4096);
  for (size_t i = 0; i < page.size(); ++i) page[i] = uint8_t(i * 7 + 3);
  ASSERT_TRUE((*client)->Store(42, page.data()).ok());
  ASSERT_TRUE((*client)->Load(42, back.data()).ok());
  EXPECT_EQ(page, back);
}

TEST(AdvertiseAddrTest, AFixedAdvertisedPortIsHandedOutAsGiven) {
  // A node behind a port mapping: it listens on one port, clients dial another.
  auto node = ServerProcess::Start(
      {.backing_size = "", .extra_args = {"--advertise-addr", "node-7.example:17000"}});
  ASSERT_TRUE(node.ok()) << node.status();
  absl::StatusOr<std::string> data_addr = AttachDataAddr((*node)->grpc_addr());
  ASSERT_TRUE(data_addr.ok()) << data_addr.status();
  EXPECT_EQ(*data_addr, "node-7.example:17000");
}

}  // namespace
}  // namespace farswap
