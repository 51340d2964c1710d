// Tenants-file and admin-token rotation (README.md, "Rotating tenants",
// "Rotating the admin token") against a real farswap-server: the file is
// rewritten and the node told (SIGHUP) or left to notice (its once-a-second
// look at the file); unchanged tenants keep their sessions, rotated and
// removed ones are refused on the data plane and the control plane, a
// rotated admin token is refused from then on, and a malformed file changes
// nothing.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/transport/rpc_channel.h"
#include "farswap/transport/transport.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "server_process.h"

namespace farswap {
namespace {

using testing::ServerProcess;
using transport::FrameHeader;
using transport::IncomingMessage;
using transport::Opcode;
using transport::RpcChannel;

constexpr char kAdminToken[] = "0123456789abcdef-admin-token";
constexpr absl::Duration kTimeout = absl::Seconds(20);

std::unique_ptr<grpc::ClientContext> Context(const std::string& bearer) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!bearer.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", bearer));
  return ctx;
}

absl::Status FromGrpc(const grpc::Status& s) {
  return s.ok() ? absl::OkStatus()
                : absl::Status(absl::StatusCode(s.error_code()), s.error_message());
}

class TenantRotationTest : public ::testing::Test {
 protected:
  void Start(const std::string& tenants) {
    auto t = transport::CreateTransport("tcp", {.io_threads = 1});
    ASSERT_TRUE(t.ok()) << t.status();
    transport_ = std::move(*t);
    auto node = ServerProcess::Start({.pool_limit = "8M",
                                      .backing_size = "",
                                      .tenants = tenants,
                                      .admin_token = kAdminToken,
                                      .allow_anonymous = false});
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
    stub_ = v1::MemoryNode::NewStub(
        grpc::CreateChannel(node_->grpc_addr(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (transport_) transport_->Shutdown();
  }

  // Rewrite replaces the tenants file as an editor or a config tool would:
  // a new file renamed over the old one.
  void Rewrite(const std::string& tenants) {
    const std::string path = node_->dir() + "/tenants";
    std::ofstream(path + ".new") << tenants;
    ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
  }

  v1::NodeStats OperatorStats() {
    v1::GetStatsResponse resp;
    grpc::Status s = stub_->GetStats(Context(kAdminToken).get(), v1::GetStatsRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.node();
  }

  // WaitForReloads waits until the node has applied `ok` reloads and
  // rejected `failed` (polling its stats: the node is another process; the
  // deadline only bounds a node that never reloads).
  void WaitForReloads(uint64_t ok, uint64_t failed) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    v1::NodeStats n = OperatorStats();
    while ((n.tenant_reloads() < ok || n.tenant_reload_failures() < failed) &&
           absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      n = OperatorStats();
    }
    ASSERT_GE(n.tenant_reloads(), ok) << node_->Log();
    ASSERT_GE(n.tenant_reload_failures(), failed) << node_->Log();
  }

  absl::StatusOr<std::string> Attach(const std::string& tenant, const std::string& secret) {
    v1::AttachRequest req;
    req.set_tenant_id(tenant);
    req.set_secret(secret);
    req.set_client_name("tenant_rotation_test");
    v1::AttachResponse resp;
    grpc::Status s = stub_->Attach(Context("").get(), req, &resp);
    if (!s.ok()) return FromGrpc(s);
    return resp.session_token();
  }

  // Connect opens a data-plane connection and says HELLO with `token`.
  std::unique_ptr<RpcChannel> Connect(const std::string& token) {
    auto ch = RpcChannel::Connect(*transport_, node_->data_addr());
    EXPECT_TRUE(ch.ok()) << ch.status();
    if (!ch.ok()) return nullptr;
    FrameHeader h{.opcode = Opcode::kHello};
    absl::Status s =
        (*ch)->Call(h, std::vector<uint8_t>(token.begin(), token.end()), kTimeout).get().status();
    EXPECT_TRUE(s.ok()) << s;
    return std::move(*ch);
  }

  static absl::Status Store(RpcChannel& ch, uint64_t page, uint8_t fill) {
    FrameHeader h{
        .opcode = Opcode::kStore, .page = page, .codec = transport::Codec::kLz4, .checksum = fill};
    return ch.Call(h, std::vector<uint8_t>(200, fill), kTimeout).get().status();
  }
  static absl::StatusOr<IncomingMessage> Load(RpcChannel& ch, uint64_t page) {
    return ch.Call({.opcode = Opcode::kLoad, .page = page}, {}, kTimeout).get();
  }
  // TenantGetStats: GetStats of `tenant` with a session token.
  absl::Status TenantGetStats(const std::string& token, const std::string& tenant) {
    v1::GetStatsRequest req;
    req.set_tenant_id(tenant);
    v1::GetStatsResponse resp;
    return FromGrpc(stub_->GetStats(Context(token).get(), req, &resp));
  }

  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<ServerProcess> node_;
  std::unique_ptr<v1::MemoryNode::Stub> stub_;
};

TEST_F(TenantRotationTest, SighupRotatesOneSecretAndKeepsTheOtherSessions) {
  Start("a:sa:0\nb:sb:0\n");
  absl::StatusOr<std::string> a = Attach("a", "sa");
  absl::StatusOr<std::string> b = Attach("b", "sb");
  ASSERT_TRUE(a.ok() && b.ok());
  auto ach = Connect(*a);
  auto bch = Connect(*b);
  ASSERT_TRUE(ach && bch);
  ASSERT_TRUE(Store(*ach, 1, 0xA1).ok());
  ASSERT_TRUE(Store(*bch, 1, 0xB1).ok());

  Rewrite("a:sa:0\nb:sb-rotated:0\nc:sc:0\n");
  ASSERT_EQ(kill(node_->pid(), SIGHUP), 0);
  WaitForReloads(1, 0);
  EXPECT_TRUE(node_->WaitForLog("1 added (c), 0 removed, 1 secret changed (b)")) << node_->Log();

  // a: untouched, on the same connection and session.
  ASSERT_TRUE(Store(*ach, 2, 0xA2).ok());
  auto a1 = Load(*ach, 1);
  ASSERT_TRUE(a1.ok()) << a1.status();
  EXPECT_EQ(a1->payload, std::vector<uint8_t>(200, 0xA1));
  EXPECT_TRUE(TenantGetStats(*a, "a").ok());
  // b's old session: refused, unread, on its open connection and in GetStats.
  absl::Status refused = Store(*bch, 2, 0xB2);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated) << refused;
  EXPECT_NE(std::string(refused.message()).find("session has ended"), std::string::npos);
  EXPECT_EQ(TenantGetStats(*b, "b").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Attach("b", "sb").status().code(), absl::StatusCode::kUnauthenticated);
  // b with the new secret: same tenant, same pages; the refused STORE was not run.
  absl::StatusOr<std::string> b2 = Attach("b", "sb-rotated");
  ASSERT_TRUE(b2.ok()) << b2.status();
  auto b2ch = Connect(*b2);
  ASSERT_TRUE(b2ch);
  auto b1 = Load(*b2ch, 1);
  ASSERT_TRUE(b1.ok()) << b1.status();
  EXPECT_EQ(b1->payload, std::vector<uint8_t>(200, 0xB1));
  EXPECT_EQ(Load(*b2ch, 2).status().code(), absl::StatusCode::kNotFound);
  // c: new.
  absl::StatusOr<std::string> c = Attach("c", "sc");
  ASSERT_TRUE(c.ok()) << c.status();
  auto cch = Connect(*c);
  ASSERT_TRUE(cch);
  EXPECT_EQ(Load(*cch, 1).status().code(), absl::StatusCode::kNotFound) << "c sees no one's pages";
  ASSERT_TRUE(Store(*cch, 1, 0xC1).ok());
}

TEST_F(TenantRotationTest, RemovingATenantEndsItsSessionsAndKeepsItsPages) {
  Start("a:sa:0\nb:sb:0\n");
  absl::StatusOr<std::string> b = Attach("b", "sb");
  ASSERT_TRUE(b.ok());
  auto bch = Connect(*b);
  ASSERT_TRUE(bch);
  ASSERT_TRUE(Store(*bch, 7, 0xB7).ok());

  Rewrite("a:sa:0\n");
  ASSERT_EQ(kill(node_->pid(), SIGHUP), 0);
  WaitForReloads(1, 0);
  EXPECT_EQ(Load(*bch, 7).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Attach("b", "sb").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(TenantGetStats(*b, "b").code(), absl::StatusCode::kUnauthenticated);
  // The operator still sees b's page, marked removed.
  v1::GetStatsResponse resp;
  ASSERT_TRUE(stub_->GetStats(Context(kAdminToken).get(), v1::GetStatsRequest(), &resp).ok());
  bool found = false;
  for (const v1::TenantStats& t : resp.tenants()) {
    if (t.tenant_id() != "b") continue;
    found = true;
    EXPECT_TRUE(t.removed());
    EXPECT_EQ(t.stored_pages(), 1u);
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(resp.node().sessions(), 0u);

  // Listed again (here noticed without a signal): b gets its page back.
  Rewrite("a:sa:0\nb:sb-again:0\n");
  WaitForReloads(2, 0);
  absl::StatusOr<std::string> again = Attach("b", "sb-again");
  ASSERT_TRUE(again.ok()) << again.status();
  auto ch = Connect(*again);
  ASSERT_TRUE(ch);
  auto page = Load(*ch, 7);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->payload, std::vector<uint8_t>(200, 0xB7));
}

TEST_F(TenantRotationTest, MalformedRewriteKeepsTheOldTenants) {
  Start("a:sa:0\nb:sb:0\n");
  absl::StatusOr<std::string> a = Attach("a", "sa");
  ASSERT_TRUE(a.ok());
  auto ach = Connect(*a);
  ASSERT_TRUE(ach);
  ASSERT_TRUE(Store(*ach, 1, 0xA1).ok());

  Rewrite("a:sa:0\nb-has-no-secret-or-quota\nc:sc:0\n");
  ASSERT_EQ(kill(node_->pid(), SIGHUP), 0);
  WaitForReloads(0, 1);
  EXPECT_EQ(OperatorStats().tenant_reloads(), 0u);
  EXPECT_TRUE(node_->WaitForLog("RELOAD REJECTED")) << node_->Log();
  EXPECT_TRUE(node_->WaitForLog("tenants:2: need three ':'-separated fields")) << node_->Log();
  ASSERT_TRUE(Store(*ach, 2, 0xA2).ok());
  EXPECT_TRUE(Attach("b", "sb").ok());
  EXPECT_EQ(Attach("c", "sc").status().code(), absl::StatusCode::kNotFound);
}

// A Kubernetes Secret volume: the file is a symlink through "..data", which
// the kubelet swaps atomically to a new directory. The node notices by
// itself.
TEST_F(TenantRotationTest, SymlinkSwapOfASecretVolumeIsNoticed) {
  Start("a:sa:0\n");
  namespace fs = std::filesystem;
  const fs::path dir = node_->dir();
  // Turn the file into the kubelet's layout: tenants -> ..data/tenants,
  // ..data -> ..v1.
  fs::create_directory(dir / "..v1");
  fs::copy_file(dir / "tenants", dir / "..v1" / "tenants");
  fs::create_directory_symlink("..v1", dir / "..data");
  fs::create_symlink("..data/tenants", dir / "tenants.link");
  fs::rename(dir / "tenants.link", dir / "tenants");
  WaitForReloads(1, 0);  // a new inode: one reload that changes nothing
  absl::StatusOr<std::string> a = Attach("a", "sa");
  ASSERT_TRUE(a.ok());

  fs::create_directory(dir / "..v2");
  std::ofstream(dir / "..v2" / "tenants") << "a:sa-v2:0\n";
  fs::create_directory_symlink("..v2", dir / "..data_tmp");
  fs::rename(dir / "..data_tmp", dir / "..data");
  WaitForReloads(2, 0);
  EXPECT_EQ(TenantGetStats(*a, "a").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(Attach("a", "sa-v2").ok());
}

// --- the admin token -------------------------------------------------------

class AdminTokenRotationTest : public TenantRotationTest {
 protected:
  static constexpr char kRotatedToken[] = "fedcba9876543210-rotated-token";

  // RewriteAdminToken replaces the admin token file by a rename, as
  // Rewrite does the tenants file.
  void RewriteAdminToken(const std::string& contents) {
    const std::string path = node_->dir() + "/admin-token";
    std::ofstream(path + ".new") << contents;
    ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
  }

  // StatsWith: node-wide GetStats (operator work) with `token`.
  absl::StatusOr<v1::NodeStats> StatsWith(const std::string& token) {
    v1::GetStatsResponse resp;
    grpc::Status s = stub_->GetStats(Context(token).get(), v1::GetStatsRequest(), &resp);
    if (!s.ok()) return FromGrpc(s);
    return resp.node();
  }

  // WaitUntilAccepted polls node-wide GetStats with `token` until the node
  // takes it as the operator's (the node is another process; the deadline
  // only bounds a node that never reloads).
  absl::StatusOr<v1::NodeStats> WaitUntilAccepted(const std::string& token) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    absl::StatusOr<v1::NodeStats> n = StatsWith(token);
    while (!n.ok() && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      n = StatsWith(token);
    }
    return n;
  }
};

TEST_F(AdminTokenRotationTest, SighupPutsTheNewTokenInForceAndRefusesTheOld) {
  Start("a:sa:0\n");
  absl::StatusOr<std::string> a = Attach("a", "sa");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(StatsWith(kAdminToken).ok());

  RewriteAdminToken(std::string(kRotatedToken) + "\n");
  ASSERT_EQ(kill(node_->pid(), SIGHUP), 0);
  absl::StatusOr<v1::NodeStats> n = WaitUntilAccepted(kRotatedToken);
  ASSERT_TRUE(n.ok()) << n.status() << node_->Log();
  EXPECT_GE(n->admin_token_reloads(), 1u);
  EXPECT_EQ(n->admin_token_reload_failures(), 0u);
  EXPECT_TRUE(node_->WaitForLog("a new token is in force")) << node_->Log();
  EXPECT_EQ(node_->Log().find(kRotatedToken), std::string::npos) << "the token is never logged";

  // The old token is refused for operator work from now on, and counted
  // (the polls above were refused too, until the reload: count from here).
  const uint64_t refused_before = n->auth_refusals().unauthenticated();
  EXPECT_EQ(StatsWith(kAdminToken).status().code(), absl::StatusCode::kUnauthenticated);
  v1::CompactResponse compacted;
  EXPECT_EQ(
      stub_->Compact(Context(kAdminToken).get(), v1::CompactRequest(), &compacted).error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
  absl::StatusOr<v1::NodeStats> after = StatsWith(kRotatedToken);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->auth_refusals().unauthenticated(), refused_before + 2);
  // Sessions are the tenants file's business: a's stays open.
  EXPECT_TRUE(TenantGetStats(*a, "a").ok());
}

TEST_F(AdminTokenRotationTest, AChangedFileIsNoticedWithoutASignal) {
  Start("a:sa:0\n");
  RewriteAdminToken(std::string(kRotatedToken) + "\n");
  absl::StatusOr<v1::NodeStats> n = WaitUntilAccepted(kRotatedToken);
  ASSERT_TRUE(n.ok()) << n.status() << node_->Log();
  EXPECT_EQ(n->admin_token_reloads(), 1u);
  EXPECT_TRUE(node_->WaitForLog("(file changed): a new token is in force")) << node_->Log();
  EXPECT_EQ(StatsWith(kAdminToken).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AdminTokenRotationTest, ABadFileKeepsTheTokenInForce) {
  Start("a:sa:0\n");
  RewriteAdminToken("too-short\n");
  ASSERT_EQ(kill(node_->pid(), SIGHUP), 0);
  // Read with the old token: it still works, and the failure is counted.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<v1::NodeStats> n = StatsWith(kAdminToken);
  while (n.ok() && n->admin_token_reload_failures() == 0 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    n = StatsWith(kAdminToken);
  }
  ASSERT_TRUE(n.ok()) << n.status() << node_->Log();
  EXPECT_GE(n->admin_token_reload_failures(), 1u) << node_->Log();
  EXPECT_EQ(n->admin_token_reloads(), 0u);
  EXPECT_TRUE(node_->WaitForLog("RELOAD REJECTED, the node keeps the admin token it had"))
      << node_->Log();
  EXPECT_TRUE(node_->WaitForLog("want at least 16")) << node_->Log();
  EXPECT_EQ(StatsWith("too-short").status().code(), absl::StatusCode::kUnauthenticated);

  // Fixed: the next reload puts the good token in force.
  RewriteAdminToken(std::string(kRotatedToken) + "\n");
  ASSERT_EQ(kill(node_->pid(), SIGHUP), 0);
  absl::StatusOr<v1::NodeStats> fixed = WaitUntilAccepted(kRotatedToken);
  ASSERT_TRUE(fixed.ok()) << fixed.status() << node_->Log();
  EXPECT_EQ(StatsWith(kAdminToken).status().code(), absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace farswap
