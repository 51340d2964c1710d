// TLS on the TCP backend (Transport::ConnectTls / ListenTls) over loopback:
// pages echoed from many threads (with tiny socket buffers, so partial
// sends and EPOLLOUT are exercised), a wrong CA or server name failing the
// handshake with a certificate error, a plaintext peer closed unread,
// client certificates required, and rotated certificate files served to
// new connections. Certificates come from a throwaway CA made with the
// openssl command line (tests/util/test_ca.h). Runs under ThreadSanitizer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "farswap/transport/rpc_channel.h"
#include "farswap/transport/transport.h"
#include "test_ca.h"
#include "test_util.h"

namespace farswap::transport {
namespace {

using ::farswap::testing::CertificateFiles;
using ::farswap::testing::TestCa;
using ::testing::HasSubstr;
using namespace ::farswap::transport::testing;  // NOLINT

constexpr absl::Duration kLongTimeout = absl::Seconds(60);

// WaitFor polls `done` (a counter another thread moves) until it holds or
// kWaitBound passes; returns whether it held.
bool WaitFor(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + kWaitBound;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// TlsServer echoes PINGs over a TLS listener and records what it accepted.
class TlsServer {
 public:
  TlsServer(const TlsServerOptions& tls, TransportOptions options = {}) {
    transport_ = CreateTcpTransport(options).value();
    auto l = transport_->ListenTls(
        "127.0.0.1:0",
        [this](std::shared_ptr<Connection> c) {
          std::lock_guard<std::mutex> lock(mu_);
          connections_.push_back(c);
          ConnectionHandler h;
          h.on_receive = [this](Connection& conn, std::span<IncomingMessage> in) {
            frames_ += in.size();
            std::vector<OutgoingMessage> out;
            for (IncomingMessage& m : in) {
              out.push_back(OwnedMessage(ReplyHeader(m.header), std::move(m.payload)));
            }
            EXPECT_TRUE(conn.Send(out).ok());
          };
          return h;
        },
        tls);
    status_ = l.status();
    if (l.ok()) listener_ = std::move(*l);
  }
  ~TlsServer() { transport_->Shutdown(); }

  const absl::Status& status() const { return status_; }
  std::string address() const { return listener_->address(); }
  int port() const {
    std::string a = address();
    return std::stoi(a.substr(a.rfind(':') + 1));
  }
  ListenerStats stats() const { return listener_->stats(); }
  uint64_t frames() const { return frames_.load(); }
  std::vector<std::shared_ptr<Connection>> connections() {
    std::lock_guard<std::mutex> lock(mu_);
    return connections_;
  }

 private:
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<Listener> listener_;
  absl::Status status_;
  std::atomic<uint64_t> frames_{0};
  std::mutex mu_;
  std::vector<std::shared_ptr<Connection>> connections_;  // guarded by mu_
};

class TlsTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/farswap-tls-transport-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto ca = TestCa::Create(dir_, "transport CA");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    auto other = TestCa::Create(dir_, "other CA");
    ASSERT_TRUE(other.ok()) << other.status();
    other_ca_ = std::move(*other);
    auto node = ca_->Issue("node");
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = *node;
    auto client = ca_->Issue("client");
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *client;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  TlsServerOptions ServerTls() const {
    return {.cert_file = node_.cert_file, .key_file = node_.key_file};
  }
  TlsClientOptions ClientTls() const { return {.ca_file = ca_->cert_file()}; }

  // Ping makes one PING over a fresh TLS channel; its status.
  static absl::Status Ping(Transport& client, const std::string& address,
                           const TlsClientOptions& tls) {
    auto channel = RpcChannel::Connect(client, address, &tls);
    if (!channel.ok()) return channel.status();
    std::vector<uint8_t> body = Pattern(4096, 1);
    absl::StatusOr<IncomingMessage> r =
        (*channel)->Call({.opcode = Opcode::kPing}, body, absl::Seconds(20)).get();
    if (!r.ok()) return r.status();
    if (r->payload != body) return absl::DataLossError("echo differs");
    return absl::OkStatus();
  }

  std::string dir_;
  std::unique_ptr<TestCa> ca_, other_ca_;
  CertificateFiles node_, client_;
};

TEST_F(TlsTransportTest, PagesRoundTripFromManyThreadsThroughTinySocketBuffers) {
  // 4 KiB socket buffers: nearly every send is partial, so the user-space
  // record buffer waits for EPOLLOUT again and again, on both ends.
  const TransportOptions options{.io_threads = 2, .socket_buffer_bytes = 4096};
  TlsServer server(ServerTls(), options);
  ASSERT_TRUE(server.status().ok()) << server.status();
  auto client = CreateTcpTransport(options).value();
  constexpr int kThreads = 4, kRounds = 20, kWindow = 32;
  std::vector<std::thread> threads;
  std::atomic<int> verified{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      TlsClientOptions tls = ClientTls();
      auto channel = RpcChannel::Connect(*client, server.address(), &tls);
      ASSERT_TRUE(channel.ok()) << channel.status();
      for (int round = 0; round < kRounds; ++round) {
        // A window of calls in flight: many frames per write and per read.
        std::vector<std::future<absl::StatusOr<IncomingMessage>>> calls;
        for (int i = 0; i < kWindow; ++i) {
          const uint64_t seed = uint64_t(t) << 32 | uint64_t(round * kWindow + i);
          calls.push_back((*channel)->Call({.opcode = Opcode::kPing},
                                           Pattern(1 + seed % 4096, seed), kLongTimeout));
        }
        for (int i = 0; i < kWindow; ++i) {
          const uint64_t seed = uint64_t(t) << 32 | uint64_t(round * kWindow + i);
          absl::StatusOr<IncomingMessage> r = calls[i].get();
          ASSERT_TRUE(r.ok()) << r.status();
          ASSERT_EQ(r->payload, Pattern(1 + seed % 4096, seed)) << "call " << seed;
          verified++;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(verified.load(), kThreads * kRounds * kWindow);
  EXPECT_EQ(server.frames(), uint64_t(kThreads * kRounds * kWindow));
  EXPECT_EQ(server.stats().tls_handshakes, uint64_t{kThreads});
  EXPECT_EQ(server.stats().tls_handshake_failures, 0u);
  for (const auto& c : server.connections()) {
    EXPECT_TRUE(c->stats().tls);
    EXPECT_GT(c->stats().bytes_received, 0u);
  }
}

TEST_F(TlsTransportTest, WrongCaFailsTheHandshakeWithACertificateError) {
  TlsServer server(ServerTls());
  ASSERT_TRUE(server.status().ok()) << server.status();
  auto client = CreateTcpTransport({}).value();
  absl::Status s = Ping(*client, server.address(), {.ca_file = other_ca_->cert_file()});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("TLS handshake"));
  EXPECT_THAT(s.message(), HasSubstr("certificate verify failed"));
  EXPECT_TRUE(WaitFor([&] { return server.stats().tls_handshake_failures == 1; }));
  EXPECT_TRUE(server.connections().empty()) << "the owner saw a connection that failed TLS";
  EXPECT_EQ(server.frames(), 0u);
  // The right CA still works, and the right name is checked.
  EXPECT_TRUE(Ping(*client, server.address(), ClientTls()).ok());
  TlsClientOptions wrong_name = ClientTls();
  wrong_name.server_name = "not-the-node.example";
  s = Ping(*client, server.address(), wrong_name);
  EXPECT_THAT(s.message(), HasSubstr("certificate verify failed")) << s;
}

TEST_F(TlsTransportTest, PlaintextPeerIsClosedWithNothingRead) {
  TlsServer server(ServerTls());
  ASSERT_TRUE(server.status().ok()) << server.status();
  int fd = RawConnect(server.port());
  std::array<uint8_t, kFrameHeaderSize> hello =
      EncodeHeader({.opcode = Opcode::kPing, .payload_length = 0});
  ASSERT_TRUE(WriteAll(fd, hello.data(), hello.size()));
  // The server answers the non-TLS bytes by closing (perhaps after an
  // alert): the stream ends without a frame coming back.
  uint8_t buf[4096];
  ssize_t n;
  size_t total = 0;
  while ((n = read(fd, buf, sizeof buf)) > 0) total += size_t(n);
  EXPECT_LT(total, kFrameHeaderSize) << "a reply frame came back in plaintext";
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return server.stats().tls_handshake_failures == 1; }));
  EXPECT_TRUE(server.connections().empty());
  EXPECT_EQ(server.frames(), 0u);
  // A plaintext Connect fails its first call the same way.
  auto client = CreateTcpTransport({}).value();
  auto channel = RpcChannel::Connect(*client, server.address()).value();
  absl::StatusOr<IncomingMessage> r =
      channel->Call({.opcode = Opcode::kPing}, {}, absl::Seconds(20)).get();
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(WaitFor([&] { return server.stats().tls_handshake_failures == 2; }));
  EXPECT_EQ(server.frames(), 0u);
}

TEST_F(TlsTransportTest, ClientCertificateRequiredRefusesClientsWithout) {
  TlsServerOptions tls = ServerTls();
  tls.client_ca_file = ca_->cert_file();
  TlsServer server(tls);
  ASSERT_TRUE(server.status().ok()) << server.status();
  auto client = CreateTcpTransport({}).value();
  // Without a certificate: the client sees the request for one and says so
  // (TLS 1.3 would let it finish its side first); the server counts it.
  absl::Status s = Ping(*client, server.address(), ClientTls());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("requires a client certificate"));
  EXPECT_TRUE(WaitFor([&] { return server.stats().tls_handshake_failures == 1; }));
  EXPECT_EQ(server.frames(), 0u);
  // A certificate from another CA: refused too.
  auto stranger = other_ca_->Issue("stranger");
  ASSERT_TRUE(stranger.ok());
  TlsClientOptions with_stranger = ClientTls();
  with_stranger.cert_file = stranger->cert_file;
  with_stranger.key_file = stranger->key_file;
  EXPECT_FALSE(Ping(*client, server.address(), with_stranger).ok());
  EXPECT_TRUE(WaitFor([&] { return server.stats().tls_handshake_failures == 2; }));
  EXPECT_EQ(server.frames(), 0u);
  // With one from the client CA: served.
  TlsClientOptions with_cert = ClientTls();
  with_cert.cert_file = client_.cert_file;
  with_cert.key_file = client_.key_file;
  EXPECT_TRUE(Ping(*client, server.address(), with_cert).ok());
  EXPECT_EQ(server.stats().tls_handshakes, 1u);
}

TEST_F(TlsTransportTest, ChangedCertificateFilesServeNewConnections) {
  // The server's files are copies it will see replaced, as a Secret
  // volume's are.
  const std::string cert = dir_ + "/served.crt", key = dir_ + "/served.key";
  std::filesystem::copy_file(node_.cert_file, cert);
  std::filesystem::copy_file(node_.key_file, key);
  TlsServer server({.cert_file = cert, .key_file = key});
  ASSERT_TRUE(server.status().ok()) << server.status();
  auto client = CreateTcpTransport({}).value();
  TlsClientOptions first_tls = ClientTls();
  auto open_channel = RpcChannel::Connect(*client, server.address(), &first_tls);
  ASSERT_TRUE(open_channel.ok()) << open_channel.status();

  // Rotate to a certificate from the other CA (renamed into place).
  auto next = other_ca_->Issue("node-next");
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_EQ(std::rename(next->key_file.c_str(), key.c_str()), 0);
  ASSERT_EQ(std::rename(next->cert_file.c_str(), cert.c_str()), 0);

  EXPECT_TRUE(Ping(*client, server.address(), {.ca_file = other_ca_->cert_file()}).ok());
  absl::Status old = Ping(*client, server.address(), ClientTls());
  EXPECT_THAT(old.message(), HasSubstr("certificate verify failed")) << old;
  // The connection made before keeps its session.
  auto r = (*open_channel)->Call({.opcode = Opcode::kPing}, Pattern(100, 3), kLongTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->payload, Pattern(100, 3));

  // A broken replacement (a key that is not the certificate's) is refused
  // and the last good certificate stays in use.
  auto broken = other_ca_->Issue("broken");
  ASSERT_TRUE(broken.ok());
  ASSERT_EQ(std::rename(broken->key_file.c_str(), key.c_str()), 0);
  EXPECT_TRUE(Ping(*client, server.address(), {.ca_file = other_ca_->cert_file()}).ok());
}

TEST_F(TlsTransportTest, BadFilesAreClearErrors) {
  auto transport = CreateTcpTransport({}).value();
  auto l = transport->ListenTls("127.0.0.1:0",
                                [](std::shared_ptr<Connection>) { return ConnectionHandler{}; },
                                {.cert_file = dir_ + "/missing.crt", .key_file = node_.key_file});
  EXPECT_EQ(l.status().code(), absl::StatusCode::kNotFound) << l.status();
  EXPECT_THAT(l.status().message(), HasSubstr("missing.crt"));
  l = transport->ListenTls("127.0.0.1:0",
                           [](std::shared_ptr<Connection>) { return ConnectionHandler{}; },
                           {.cert_file = node_.cert_file, .key_file = client_.key_file});
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument) << l.status();
  EXPECT_THAT(l.status().message(), HasSubstr("not a PEM key usable with the certificate"));
  TlsServer server(ServerTls());
  auto c = transport->ConnectTls(server.address(), {}, {});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr("CA file"));
}

}  // namespace
}  // namespace farswap::transport
