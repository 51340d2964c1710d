// TLS on the data plane (README.md, "TLS on the data plane") against real
// farswap-server --data-tls processes: a client with the node's CA stores
// and loads pages through it; a client whose data-plane CA is wrong fails
// at the handshake with a certificate error and no page is acknowledged; a
// plaintext peer sending a valid frame is closed unserved and counted; with
// --tls-client-ca a client without a certificate is refused on the data
// plane too; require_data_tls refuses a plaintext node; --data-tls without
// a certificate is a usage error.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "farswap/client/client.h"
#include "farswap/client/node_attacher.h"
#include "farswap/transport/frame.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "run_program.h"
#include "server_process.h"
#include "test_ca.h"

namespace farswap {
namespace {

using testing::CertificateFiles;
using testing::FarswapBinary;
using testing::RunProgram;
using testing::ServerProcess;
using testing::TestCa;

constexpr char kAdminToken[] = "0123456789abcdef-admin-token";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<char> PageFor(uint64_t page_no) {
  std::vector<char> page(4096);
  uint64_t x = page_no * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < page.size(); ++i) {
    if (i % 64 == 0) x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    page[i] = char(i < 2048 ? (x >> (i % 8)) : page_no);  // half noise, half compressible
  }
  return page;
}

class DataPlaneTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/farswap-data-tls-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto ca = TestCa::Create(dir_, "farswap test CA");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    auto other = TestCa::Create(dir_, "some other CA");
    ASSERT_TRUE(other.ok()) << other.status();
    other_ca_ = std::move(*other);
    auto node = ca_->Issue("node-one");
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = *node;
    auto client = ca_->Issue("client-one");
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *client;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // StartNode starts a --data-tls node serving node_, with `more` flags.
  std::unique_ptr<ServerProcess> StartNode(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"--tls-cert", node_.cert_file, "--tls-key", node_.key_file,
                                     "--data-tls"};
    args.insert(args.end(), more.begin(), more.end());
    auto node =
        ServerProcess::Start({.backing_size = "", .admin_token = kAdminToken, .extra_args = args});
    EXPECT_TRUE(node.ok()) << node.status();
    return node.ok() ? std::move(*node) : nullptr;
  }

  // NodeStats reads the node's GetStats over TLS with the admin token (and
  // client_ when the node wants a client certificate).
  v1::NodeStats NodeStats(const ServerProcess& node, bool with_client_cert = false) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(ca_->cert_file());
    if (with_client_cert) {
      ssl.pem_cert_chain = ReadFile(client_.cert_file);
      ssl.pem_private_key = ReadFile(client_.key_file);
    }
    auto stub =
        v1::MemoryNode::NewStub(grpc::CreateChannel(node.grpc_addr(), grpc::SslCredentials(ssl)));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kAdminToken));
    v1::GetStatsResponse resp;
    grpc::Status s = stub->GetStats(&ctx, v1::GetStatsRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.node();
  }

  // StatsAfterFailures reads the node's stats once it has counted `n`
  // handshake failures (the node sees a client's alert a moment after the
  // client has given up), or after 30 s.
  v1::NodeStats StatsAfterFailures(const ServerProcess& node, uint64_t n,
                                   bool with_client_cert = false) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    v1::NodeStats stats = NodeStats(node, with_client_cert);
    while (stats.tls_handshake_failures() < n && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      stats = NodeStats(node, with_client_cert);
    }
    return stats;
  }

  ClientOptions Options(const ServerProcess& node) const {
    ClientOptions options;
    options.nodes = {node.grpc_addr()};
    options.tls_ca_file = ca_->cert_file();
    options.replicas = 1;
    options.attach_timeout = absl::Seconds(10);
    return options;
  }

  // ControlPlaneAttacher attaches with the right CA (and client_), whatever
  // the options say about the data plane: only the data plane is tested.
  std::unique_ptr<NodeAttacher> ControlPlaneAttacher(bool with_client_cert = false) const {
    ControlPlaneTls tls{.ca_file = ca_->cert_file()};
    if (with_client_cert) {
      tls.cert_file = client_.cert_file;
      tls.key_file = client_.key_file;
    }
    return NewGrpcNodeAttacher(tls);
  }

  std::string dir_;
  std::unique_ptr<TestCa> ca_, other_ca_;
  CertificateFiles node_, client_;
};

TEST_F(DataPlaneTlsTest, ClientWithTheNodesCaStoresAndLoadsPagesOverTls) {
  auto node = StartNode();
  ASSERT_NE(node, nullptr);
  auto client = Client::Connect(Options(*node));
  ASSERT_TRUE(client.ok()) << client.status();
  constexpr uint64_t kPages = 300;  // past one 256-entry BATCH
  std::vector<uint64_t> numbers;
  std::vector<std::vector<char>> pages;
  for (uint64_t p = 0; p < kPages; ++p) {
    pages.push_back(PageFor(p));
    ASSERT_TRUE((*client)->Store(p, pages.back().data()).ok()) << p;
  }
  for (uint64_t p = 0; p < kPages; ++p) {
    std::vector<char> back(4096);
    ASSERT_TRUE((*client)->Load(p, back.data()).ok()) << p;
    ASSERT_EQ(back, pages[p]) << "page " << p;
  }
  v1::NodeStats stats = NodeStats(*node);
  EXPECT_TRUE(stats.data_tls());
  EXPECT_EQ(stats.tls_handshake_failures(), 0u);
  EXPECT_GE(stats.connections_accepted(), 1u);
  EXPECT_GE(stats.stores(), kPages);
  EXPECT_GE(stats.loads(), kPages);
  const std::string log = node->Log();
  EXPECT_NE(log.find("(TLS)"), std::string::npos) << log;
  EXPECT_NE(log.find("TLS connection from"), std::string::npos) << log;
  EXPECT_EQ(log.find("in the clear"), std::string::npos) << log;
}

TEST_F(DataPlaneTlsTest, WrongDataPlaneCaFailsTheHandshakeAndNothingIsAcknowledged) {
  auto node = StartNode();
  ASSERT_NE(node, nullptr);
  ClientOptions options = Options(*node);
  options.tls_ca_file = other_ca_->cert_file();  // for the data plane
  auto client = Client::Connect(options, ControlPlaneAttacher());
  ASSERT_FALSE(client.ok()) << "a client attached over a data plane it cannot verify";
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << client.status();
  EXPECT_NE(client.status().message().find("TLS handshake"), std::string::npos) << client.status();
  EXPECT_NE(client.status().message().find("certificate verify failed"), std::string::npos)
      << client.status();
  v1::NodeStats stats = StatsAfterFailures(*node, 1);
  EXPECT_EQ(stats.stores(), 0u);
  EXPECT_EQ(stats.stored_pages(), 0u);
  EXPECT_EQ(stats.connections_accepted(), 0u);
  EXPECT_GE(stats.tls_handshake_failures(), 1u);
}

TEST_F(DataPlaneTlsTest, PlaintextPeerSendingAValidFrameIsClosedUnserved) {
  auto node = StartNode();
  ASSERT_NE(node, nullptr);
  const std::string& addr = node->data_addr();
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(addr.substr(addr.rfind(':') + 1), &port)) << addr;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  // A valid PING frame, then a HELLO with a made-up token.
  std::vector<uint8_t> bytes;
  auto ping = transport::EncodeHeader({.opcode = transport::Opcode::kPing, .request_id = 1});
  bytes.insert(bytes.end(), ping.begin(), ping.end());
  const std::string token = "not-a-session";
  auto hello = transport::EncodeHeader({.opcode = transport::Opcode::kHello,
                                        .request_id = 2,
                                        .payload_length = uint32_t(token.size())});
  bytes.insert(bytes.end(), hello.begin(), hello.end());
  bytes.insert(bytes.end(), token.begin(), token.end());
  ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), ssize_t(bytes.size()));
  // The node closes it; whatever comes back first (a TLS alert) is no frame.
  std::vector<uint8_t> got;
  uint8_t buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) got.insert(got.end(), buf, buf + n);
  close(fd);
  EXPECT_LT(got.size(), transport::kFrameHeaderSize) << "a frame came back in plaintext";
  EXPECT_TRUE(got.empty() || got[0] == 0x15) << "not a TLS alert: byte " << int(got[0]);
  v1::NodeStats stats = NodeStats(*node);
  EXPECT_EQ(stats.tls_handshake_failures(), 1u);
  EXPECT_EQ(stats.connections_accepted(), 0u);  // the data plane never saw it
  EXPECT_EQ(stats.bytes_received(), 0u);
  EXPECT_NE(node->Log().find("TLS handshake from"), std::string::npos) << node->Log();
}

TEST_F(DataPlaneTlsTest, ClientCertificatesAreRequiredOnTheDataPlaneToo) {
  auto node = StartNode({"--tls-client-ca", ca_->cert_file()});
  ASSERT_NE(node, nullptr);
  // The control plane gets the certificate; the data plane does not.
  auto refused = Client::Connect(Options(*node), ControlPlaneAttacher(/*with_client_cert=*/true));
  ASSERT_FALSE(refused.ok()) << "served a data-plane client without a certificate";
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_NE(refused.status().message().find("requires a client certificate"), std::string::npos)
      << refused.status();
  v1::NodeStats stats = StatsAfterFailures(*node, 1, /*with_client_cert=*/true);
  EXPECT_GE(stats.tls_handshake_failures(), 1u);
  EXPECT_EQ(stats.connections_accepted(), 0u);
  EXPECT_EQ(stats.stores(), 0u);

  ClientOptions options = Options(*node);
  options.tls_cert_file = client_.cert_file;
  options.tls_key_file = client_.key_file;
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<char> page = PageFor(9), back(4096);
  ASSERT_TRUE((*client)->Store(9, page.data()).ok());
  ASSERT_TRUE((*client)->Load(9, back.data()).ok());
  EXPECT_EQ(back, page);
}

TEST_F(DataPlaneTlsTest, RequireDataTlsRefusesAPlaintextNode) {
  // A node with control-plane TLS only: its Attach says the data plane is
  // plaintext, and it says so in its log.
  auto node = ServerProcess::Start(
      {.backing_size = "",
       .admin_token = kAdminToken,
       .extra_args = {"--tls-cert", node_.cert_file, "--tls-key", node_.key_file}});
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_NE((*node)->Log().find("page contents travel in the clear"), std::string::npos)
      << (*node)->Log();
  ClientOptions options = Options(**node);
  options.require_data_tls = true;
  auto client = Client::Connect(options);
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.status().message().find("plaintext"), std::string::npos) << client.status();
  options.require_data_tls = false;
  EXPECT_TRUE(Client::Connect(options).ok());
}

TEST_F(DataPlaneTlsTest, DataTlsWithoutACertificateIsAUsageError) {
  auto r = RunProgram({FarswapBinary("server/farswap-server"), "--allow-anonymous", "--data-tls"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_status, 2);
  EXPECT_NE(r->err.find("--data-tls needs --tls-cert"), std::string::npos) << r->err;
}

}  // namespace
}  // namespace farswap
