// Control-plane roles (README.md, "Roles") against real farswap-server
// processes: who may call SetLimits, Drain, Compact and GetStats, what the
// refusals are, that they are counted, and that a node without a tenants
// file will not start unless --allow-anonymous.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "run_program.h"
#include "server_process.h"

namespace farswap {
namespace {

using testing::FarswapBinary;
using testing::RunProgram;
using testing::ServerProcess;

constexpr char kAdminToken[] = "0123456789abcdef-admin-token";
// Quotas, so each tenant has a TenantStats row before it stores anything.
constexpr char kTenants[] = "alice:alice-secret:1M\nbob:bob-secret:1M\n";

std::unique_ptr<v1::MemoryNode::Stub> Stub(const std::string& addr) {
  return v1::MemoryNode::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
}

// Context: a call context with a deadline and, unless empty, the metadata
// `authorization: <authorization>`.
std::unique_ptr<grpc::ClientContext> Context(const std::string& authorization) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) ctx->AddMetadata("authorization", authorization);
  return ctx;
}

std::string Bearer(const std::string& token) { return absl::StrCat("Bearer ", token); }

// OperatorCalls makes each operator RPC with `authorization` and returns
// their status codes: SetLimits, Drain, Compact, node-wide GetStats.
std::vector<grpc::StatusCode> OperatorCalls(v1::MemoryNode::Stub& stub,
                                            const std::string& authorization) {
  std::vector<grpc::StatusCode> codes;
  v1::SetLimitsRequest limits;
  limits.set_pool_limit_bytes(64 * 1024);  // what an attacker would set
  v1::SetLimitsResponse limits_resp;
  codes.push_back(stub.SetLimits(Context(authorization).get(), limits, &limits_resp).error_code());
  v1::DrainRequest drain;
  drain.set_drain(true);
  v1::DrainResponse drain_resp;
  codes.push_back(stub.Drain(Context(authorization).get(), drain, &drain_resp).error_code());
  v1::CompactResponse compact_resp;
  codes.push_back(
      stub.Compact(Context(authorization).get(), v1::CompactRequest(), &compact_resp).error_code());
  v1::GetStatsResponse stats_resp;
  codes.push_back(
      stub.GetStats(Context(authorization).get(), v1::GetStatsRequest(), &stats_resp).error_code());
  return codes;
}

std::vector<grpc::StatusCode> All(grpc::StatusCode c) { return {c, c, c, c}; }

std::string Attach(v1::MemoryNode::Stub& stub, const std::string& tenant,
                   const std::string& secret) {
  v1::AttachRequest req;
  req.set_tenant_id(tenant);
  req.set_secret(secret);
  req.set_client_name("control_plane_auth_test");
  v1::AttachResponse resp;
  grpc::Status s = stub.Attach(Context("").get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.session_token();
}

// NodeStats as the operator sees them.
v1::NodeStats OperatorStats(v1::MemoryNode::Stub& stub) {
  v1::GetStatsResponse resp;
  grpc::Status s = stub.GetStats(Context(Bearer(kAdminToken)).get(), v1::GetStatsRequest(), &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.node();
}

class ControlPlaneAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto node = ServerProcess::Start({.pool_limit = "8M",
                                      .backing_size = "",
                                      .tenants = kTenants,
                                      .admin_token = kAdminToken,
                                      .allow_anonymous = false});
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
    stub_ = Stub(node_->grpc_addr());
  }

  std::unique_ptr<ServerProcess> node_;
  std::unique_ptr<v1::MemoryNode::Stub> stub_;
};

TEST_F(ControlPlaneAuthTest, NoOrBadCredentialIsUnauthenticatedAndChangesNothing) {
  EXPECT_EQ(OperatorCalls(*stub_, ""), All(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_EQ(OperatorCalls(*stub_, Bearer("0123456789abcdef-admin-tokeX")),
            All(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_EQ(OperatorCalls(*stub_, kAdminToken),  // no "Bearer "
            All(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_EQ(OperatorCalls(*stub_, Bearer("")), All(grpc::StatusCode::UNAUTHENTICATED));
  const v1::NodeStats n = OperatorStats(*stub_);
  EXPECT_FALSE(n.draining());
  EXPECT_EQ(n.pool().mem_limit(), uint64_t{8} << 20);
  EXPECT_EQ(n.auth_refusals().unauthenticated(), 16u);
  EXPECT_EQ(n.auth_refusals().permission_denied(), 0u);
  EXPECT_NE(node_->Log().find("Drain refused (unauthenticated) for peer ipv4:127.0.0.1:"),
            std::string::npos)
      << node_->Log();
}

TEST_F(ControlPlaneAuthTest, TenantSessionReadsOnlyItsOwnStats) {
  const std::string alice = Attach(*stub_, "alice", "alice-secret");
  ASSERT_EQ(alice.size(), 32u);
  EXPECT_EQ(OperatorCalls(*stub_, Bearer(alice)), All(grpc::StatusCode::PERMISSION_DENIED));

  v1::GetStatsRequest own;
  own.set_tenant_id("alice");
  v1::GetStatsResponse resp;
  grpc::Status s = stub_->GetStats(Context(Bearer(alice)).get(), own, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.tenants_size(), 1);
  EXPECT_EQ(resp.tenants(0).tenant_id(), "alice");
  EXPECT_FALSE(resp.has_node()) << "a tenant sees no node-wide figures";

  v1::GetStatsRequest other;
  other.set_tenant_id("bob");
  s = stub_->GetStats(Context(Bearer(alice)).get(), other, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  v1::GetStatsRequest unknown;
  unknown.set_tenant_id("carol");
  s = stub_->GetStats(Context(Bearer(alice)).get(), unknown, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();

  // The secret is not a stats credential: only the session token is.
  s = stub_->GetStats(Context(Bearer("alice-secret")).get(), own, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  // A closed session's token is no credential any more.
  v1::DetachRequest detach;
  detach.set_session_token(alice);
  v1::DetachResponse detach_resp;
  ASSERT_TRUE(stub_->Detach(Context("").get(), detach, &detach_resp).ok());
  s = stub_->GetStats(Context(Bearer(alice)).get(), own, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();

  const v1::NodeStats n = OperatorStats(*stub_);
  EXPECT_EQ(n.auth_refusals().permission_denied(), 4u + 2u);
  EXPECT_EQ(n.auth_refusals().unauthenticated(), 2u);
  EXPECT_FALSE(n.draining());
}

TEST_F(ControlPlaneAuthTest, AdminTokenWorksDirectlyAndThroughFarswapctl) {
  EXPECT_EQ(OperatorCalls(*stub_, Bearer(kAdminToken)), All(grpc::StatusCode::OK));
  EXPECT_EQ(OperatorStats(*stub_).pool().mem_limit(), 64u * 1024);
  // The operator may read any tenant's stats.
  v1::GetStatsRequest bob;
  bob.set_tenant_id("bob");
  v1::GetStatsResponse resp;
  ASSERT_TRUE(stub_->GetStats(Context(Bearer(kAdminToken)).get(), bob, &resp).ok());
  EXPECT_EQ(resp.tenants_size(), 1);
  EXPECT_TRUE(resp.has_node());

  const std::string ctl = FarswapBinary("server/ctl/farswapctl");
  const std::string token_file = node_->dir() + "/admin-token";
  auto ok = RunProgram(
      {ctl, "--node", node_->grpc_addr(), "--admin-token-file", token_file, "drain", "--resume"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->exit_status, 0) << ok->err;
  EXPECT_NE(ok->out.find("accepting stores"), std::string::npos) << ok->out;
  EXPECT_FALSE(OperatorStats(*stub_).draining());
  ok = RunProgram({ctl, "--node", node_->grpc_addr(), "--admin-token-file", token_file, "set-limit",
                   "--pool-limit", "16M"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->exit_status, 0) << ok->err;
  EXPECT_EQ(OperatorStats(*stub_).pool().mem_limit(), uint64_t{16} << 20);

  auto refused = RunProgram({ctl, "--node", node_->grpc_addr(), "compact"});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_status, 1);
  EXPECT_NE(refused->err.find("UNAUTHENTICATED"), std::string::npos) << refused->err;

  const std::string wrong_file = node_->dir() + "/wrong-token";
  std::ofstream(wrong_file) << "not-the-admin-token-at-all\n";
  refused = RunProgram(
      {ctl, "--node", node_->grpc_addr(), "--admin-token-file", wrong_file, "stats", "--json"});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_status, 1);
  EXPECT_NE(refused->err.find("UNAUTHENTICATED"), std::string::npos) << refused->err;

  auto missing = RunProgram({ctl, "--node", node_->grpc_addr(), "--admin-token-file",
                             node_->dir() + "/no-such-file", "stats"});
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->exit_status, 2);
  EXPECT_NE(missing->err.find("--admin-token-file"), std::string::npos) << missing->err;

  EXPECT_EQ(OperatorStats(*stub_).auth_refusals().unauthenticated(), 2u);
}

TEST(ControlPlaneAuthStartTest, NoTenantsFileNeedsAllowAnonymous) {
  const std::string server = FarswapBinary("server/farswap-server");
  auto r = RunProgram({server, "--grpc-addr", "127.0.0.1:0", "--data-addr", "127.0.0.1:0"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_status, 2);
  EXPECT_NE(r->err.find("no --tenants-file"), std::string::npos) << r->err;
  EXPECT_NE(r->err.find("--allow-anonymous"), std::string::npos) << r->err;
}

TEST(ControlPlaneAuthStartTest, UnusableAdminTokenFileStopsTheNode) {
  auto node = ServerProcess::Start({.tenants = kTenants,
                                    .admin_token = "short",
                                    .allow_anonymous = false,
                                    .ready_timeout = absl::Seconds(20)});
  ASSERT_FALSE(node.ok());
  EXPECT_NE(node.status().message().find("want at least 16"), std::string::npos) << node.status();
}

TEST(ControlPlaneAuthStartTest, WithoutAdminTokenOperatorWorkNeedsAllowAnonymous) {
  auto closed =
      ServerProcess::Start({.backing_size = "", .tenants = kTenants, .allow_anonymous = false});
  ASSERT_TRUE(closed.ok()) << closed.status();
  auto stub = Stub((*closed)->grpc_addr());
  EXPECT_EQ(OperatorCalls(*stub, ""), All(grpc::StatusCode::UNAUTHENTICATED));

  auto open = ServerProcess::Start({.backing_size = "", .allow_anonymous = true});
  ASSERT_TRUE(open.ok()) << open.status();
  stub = Stub((*open)->grpc_addr());
  EXPECT_EQ(OperatorCalls(*stub, ""), All(grpc::StatusCode::OK));
  // A credential, when sent, must still be a real one.
  EXPECT_EQ(OperatorCalls(*stub, Bearer("made-up-token-0123456789")),
            All(grpc::StatusCode::UNAUTHENTICATED));
}

}  // namespace
}  // namespace farswap
