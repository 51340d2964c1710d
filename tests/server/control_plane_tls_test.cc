// TLS on the control plane (README.md, "TLS on the control plane") against
// real farswap-server processes: a client with the node's CA attaches and
// moves pages, one with another CA or none is refused at the handshake,
// mutual TLS refuses clients without a certificate from its CA, rotated
// certificate files are served to new connections, and a node with a
// broken certificate pair will not start.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_context.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/client/client.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
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

// TlsTest: a temporary folder holding two unrelated CAs and a node
// certificate from the first.
class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/farswap-tls-test-XXXXXX";
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
    std::ofstream(dir_ + "/admin-token") << kAdminToken << "\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // StartNode starts a node serving node_ over TLS, with `more` flags.
  std::unique_ptr<ServerProcess> StartNode(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"--tls-cert", node_.cert_file, "--tls-key", node_.key_file};
    args.insert(args.end(), more.begin(), more.end());
    auto node = ServerProcess::Start({.backing_size = "",
                                      .admin_token = kAdminToken,
                                      .extra_args = args,
                                      .ready_timeout = absl::Seconds(30)});
    EXPECT_TRUE(node.ok()) << node.status();
    return node.ok() ? std::move(*node) : nullptr;
  }

  // Channel: a TLS channel trusting `ca_file`, presenting `client` if set,
  // on a connection of its own (not shared with earlier channels).
  static std::shared_ptr<grpc::Channel> Channel(const std::string& addr, const std::string& ca_file,
                                                const CertificateFiles& client = {}) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(ca_file);
    if (!client.cert_file.empty()) {
      ssl.pem_cert_chain = ReadFile(client.cert_file);
      ssl.pem_private_key = ReadFile(client.key_file);
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(addr, grpc::SslCredentials(ssl), args);
  }

  // GetStats makes a node-wide GetStats with the admin token; `peer_cn`
  // receives the common name of the certificate the node presented.
  static grpc::Status GetStats(const std::shared_ptr<grpc::Channel>& channel,
                               std::string* peer_cn = nullptr) {
    auto stub = v1::MemoryNode::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kAdminToken));
    v1::GetStatsResponse resp;
    grpc::Status s = stub->GetStats(&ctx, v1::GetStatsRequest(), &resp);
    if (s.ok() && peer_cn != nullptr) {
      std::vector<grpc::string_ref> cn = ctx.auth_context()->FindPropertyValues("x509_common_name");
      *peer_cn = cn.empty() ? "" : std::string(cn[0].data(), cn[0].size());
    }
    return s;
  }

  // ExpectHandshakeRefused: `s` is the status of a call whose TLS handshake
  // failed: UNAVAILABLE, and a message that says it was TLS.
  static void ExpectHandshakeRefused(const grpc::Status& s) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    EXPECT_TRUE(std::regex_search(s.error_message(),
                                  std::regex("handshake|ssl|tls|certificate", std::regex::icase)))
        << s.error_message();
  }

  std::string dir_;
  std::unique_ptr<TestCa> ca_, other_ca_;
  CertificateFiles node_;
};

TEST_F(TlsTest, ClientsWithTheNodesCaAttachAndMovePages) {
  auto node = StartNode();
  ASSERT_NE(node, nullptr);
  EXPECT_NE(node->Log().find("TLS with"), std::string::npos) << node->Log();
  EXPECT_EQ(node->Log().find("control plane is plaintext"), std::string::npos) << node->Log();
  // Without --data-tls the data plane is plaintext, and the node says so.
  EXPECT_NE(node->Log().find("page contents travel in the clear"), std::string::npos)
      << node->Log();

  std::string peer_cn;
  grpc::Status s = GetStats(Channel(node->grpc_addr(), ca_->cert_file()), &peer_cn);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(peer_cn, "node-one");

  auto r = RunProgram({FarswapBinary("server/ctl/farswapctl"), "--node", node->grpc_addr(),
                       "--tls-ca", ca_->cert_file(), "--admin-token-file", dir_ + "/admin-token",
                       "stats", "--json"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_status, 0) << r->err;
  EXPECT_NE(r->out.find("\"node_id\""), std::string::npos) << r->out;

  ClientOptions options;
  options.nodes = {node->grpc_addr()};
  options.tls_ca_file = ca_->cert_file();
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<char> page(4096), back(4096);
  for (size_t i = 0; i < page.size(); ++i) page[i] = char(i * 7 + 3);
  ASSERT_TRUE((*client)->Store(42, page.data()).ok());
  ASSERT_TRUE((*client)->Load(42, back.data()).ok());
  EXPECT_EQ(page, back);
}

TEST_F(TlsTest, AnotherCaOrPlaintextIsRefusedAtTheHandshake) {
  auto node = StartNode();
  ASSERT_NE(node, nullptr);
  ExpectHandshakeRefused(GetStats(Channel(node->grpc_addr(), other_ca_->cert_file())));

  // A plaintext client gets no answer from a TLS port either.
  auto plain = v1::MemoryNode::NewStub(
      grpc::CreateChannel(node->grpc_addr(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetStatsResponse resp;
  EXPECT_EQ(plain->GetStats(&ctx, v1::GetStatsRequest(), &resp).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  auto r = RunProgram({FarswapBinary("server/ctl/farswapctl"), "--node", node->grpc_addr(),
                       "--tls-ca", other_ca_->cert_file(), "--timeout", "10", "health"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_status, 1);
  EXPECT_NE(r->err.find("UNAVAILABLE"), std::string::npos) << r->err;

  ClientOptions options;
  options.nodes = {node->grpc_addr()};
  options.tls_ca_file = other_ca_->cert_file();
  options.attach_timeout = absl::Seconds(10);
  auto client = Client::Connect(options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << client.status();

  // Files that do not go together are the caller's mistake, not the node's.
  options.tls_ca_file = ca_->cert_file();
  options.tls_cert_file = node_.cert_file;  // no key
  EXPECT_EQ(Client::Connect(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.tls_cert_file = "";
  options.tls_ca_file = dir_ + "/missing.crt";
  EXPECT_EQ(Client::Connect(options).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutACertificateFromItsCa) {
  auto node = StartNode({"--tls-client-ca", ca_->cert_file()});
  ASSERT_NE(node, nullptr);
  auto client_cert = ca_->Issue("client-one");
  ASSERT_TRUE(client_cert.ok()) << client_cert.status();
  auto stranger_cert = other_ca_->Issue("stranger");
  ASSERT_TRUE(stranger_cert.ok()) << stranger_cert.status();

  // The server's refusal comes after the client's side of the handshake
  // (TLS 1.3), so only the code is certain: the call never reaches the node.
  EXPECT_EQ(GetStats(Channel(node->grpc_addr(), ca_->cert_file())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(GetStats(Channel(node->grpc_addr(), ca_->cert_file(), *stranger_cert)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  grpc::Status s = GetStats(Channel(node->grpc_addr(), ca_->cert_file(), *client_cert));
  EXPECT_TRUE(s.ok()) << s.error_message();

  auto ctl = [&](std::vector<std::string> tls) {
    std::vector<std::string> argv = {FarswapBinary("server/ctl/farswapctl"),
                                     "--node",
                                     node->grpc_addr(),
                                     "--tls-ca",
                                     ca_->cert_file(),
                                     "--timeout",
                                     "10"};
    argv.insert(argv.end(), tls.begin(), tls.end());
    argv.push_back("health");
    auto r = RunProgram(argv);
    return r.ok() ? r->exit_status : -2;
  };
  EXPECT_EQ(ctl({}), 1);
  EXPECT_EQ(ctl({"--tls-cert", client_cert->cert_file, "--tls-key", client_cert->key_file}), 0);
  EXPECT_EQ(ctl({"--tls-cert", client_cert->cert_file}), 2);  // no key: usage

  ClientOptions options;
  options.nodes = {node->grpc_addr()};
  options.tls_ca_file = ca_->cert_file();
  options.tls_cert_file = client_cert->cert_file;
  options.tls_key_file = client_cert->key_file;
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<char> page(4096, 'm'), back(4096);
  ASSERT_TRUE((*client)->Store(7, page.data()).ok());
  ASSERT_TRUE((*client)->Load(7, back.data()).ok());
  EXPECT_EQ(page, back);
}

TEST_F(TlsTest, RotatedCertificateFilesAreServedToNewConnections) {
  // The node reads live/node.{crt,key}; live is a symbolic link to a
  // generation folder, swapped in one rename as a Kubernetes Secret volume
  // does, so the key and the certificate change together.
  namespace fs = std::filesystem;
  fs::create_directory(dir_ + "/gen1");
  fs::copy_file(node_.cert_file, dir_ + "/gen1/node.crt");
  fs::copy_file(node_.key_file, dir_ + "/gen1/node.key");
  fs::create_directory_symlink("gen1", dir_ + "/live");
  node_ = {.cert_file = dir_ + "/live/node.crt", .key_file = dir_ + "/live/node.key"};
  auto node = StartNode({"--tls-reload-interval", "1"});
  ASSERT_NE(node, nullptr);
  std::string peer_cn;
  grpc::Status s = GetStats(Channel(node->grpc_addr(), ca_->cert_file()), &peer_cn);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(peer_cn, "node-one");

  // A new key and certificate from the same CA.
  auto next = ca_->Issue("node-two");
  ASSERT_TRUE(next.ok()) << next.status();
  fs::create_directory(dir_ + "/gen2");
  fs::rename(next->cert_file, dir_ + "/gen2/node.crt");
  fs::rename(next->key_file, dir_ + "/gen2/node.key");
  fs::create_directory_symlink("gen2", dir_ + "/live.new");
  fs::rename(dir_ + "/live.new", dir_ + "/live");

  // The node re-reads the files every second: poll with fresh connections
  // until one is served the new certificate (a read that raced the swap
  // may fail a handshake until the next read, so failures are allowed
  // here), then every new connection must get it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (peer_cn != "node-two" && std::chrono::steady_clock::now() < deadline) {
    // Paces the poll only: the re-read runs on gRPC's own timer, which has
    // no hook to wait on; the outcome is asserted on the CN served.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!GetStats(Channel(node->grpc_addr(), ca_->cert_file()), &peer_cn).ok()) peer_cn = "";
  }
  ASSERT_EQ(peer_cn, "node-two") << "the node still serves the old certificate after 30 s";
  for (int i = 0; i < 3; ++i) {
    s = GetStats(Channel(node->grpc_addr(), ca_->cert_file()), &peer_cn);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(peer_cn, "node-two");
  }
  EXPECT_TRUE(node->running());
}

TEST_F(TlsTest, NodeWithABrokenCertificatePairDoesNotStart) {
  auto other = ca_->Issue("node-other");
  ASSERT_TRUE(other.ok()) << other.status();
  auto server = [&](std::vector<std::string> tls) {
    std::vector<std::string> argv = {FarswapBinary("server/farswap-server"), "--allow-anonymous"};
    argv.insert(argv.end(), tls.begin(), tls.end());
    return RunProgram(argv).value();
  };
  auto r = server({"--tls-cert", node_.cert_file, "--tls-key", other->key_file});
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.err.find("does not belong to the certificate"), std::string::npos) << r.err;
  r = server({"--tls-cert", node_.key_file, "--tls-key", node_.key_file});
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.err.find("no PEM certificate"), std::string::npos) << r.err;
  r = server({"--tls-cert", dir_ + "/missing.crt", "--tls-key", node_.key_file});
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;
  r = server({"--tls-cert", node_.cert_file});
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_NE(r.err.find("--tls-cert and --tls-key go together"), std::string::npos) << r.err;
  r = server({"--tls-client-ca", ca_->cert_file()});
  EXPECT_EQ(r.exit_status, 2);
}

}  // namespace
}  // namespace farswap
