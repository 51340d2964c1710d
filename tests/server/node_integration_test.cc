// The real farswap-server process, driven through the data plane and the
// gRPC control plane: pages stored past the pool limit are written back to
// the backing file and all load back intact; sessions, tenants and bad input
// behave as documented.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "farswap/client/page_codec.h"
#include "farswap/common/cpu_idle.h"
#include "farswap/common/page_file.h"
#include "farswap/transport/rpc_channel.h"
#include "farswap/transport/transport.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server_process.h"

namespace farswap {
namespace {

using testing::ServerProcess;
using transport::FrameHeader;
using transport::IncomingMessage;
using transport::Opcode;
using transport::RpcChannel;

constexpr absl::Duration kTimeout = absl::Seconds(20);

struct Attached {
  std::string token;
  std::string data_addr;
};

absl::StatusOr<Attached> Attach(const std::string& grpc_addr, const std::string& tenant,
                                const std::string& secret) {
  auto stub =
      v1::MemoryNode::NewStub(grpc::CreateChannel(grpc_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::AttachRequest req;
  req.set_tenant_id(tenant);
  req.set_secret(secret);
  req.set_client_name("node_integration_test");
  v1::AttachResponse resp;
  grpc::Status s = stub->Attach(&ctx, req, &resp);
  if (!s.ok()) return absl::Status(absl::StatusCode(s.error_code()), s.error_message());
  // This node takes a conditional INVALIDATE; clients send one only then.
  EXPECT_TRUE(resp.conditional_invalidate());
  EXPECT_TRUE(resp.scrub_loads());
  return Attached{resp.session_token(), resp.data_addr()};
}

absl::StatusOr<v1::GetStatsResponse> Stats(const std::string& grpc_addr) {
  auto stub =
      v1::MemoryNode::NewStub(grpc::CreateChannel(grpc_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::GetStatsResponse resp;
  grpc::Status s = stub->GetStats(&ctx, v1::GetStatsRequest(), &resp);
  if (!s.ok()) return absl::Status(absl::StatusCode(s.error_code()), s.error_message());
  return resp;
}

absl::StatusOr<IncomingMessage> Call(RpcChannel& ch, FrameHeader h, std::vector<uint8_t> payload) {
  return ch.Call(h, std::move(payload), kTimeout).get();
}

absl::Status Hello(RpcChannel& ch, const std::string& token) {
  FrameHeader h{.opcode = Opcode::kHello};
  return Call(ch, h, std::vector<uint8_t>(token.begin(), token.end())).status();
}

class NodeIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = transport::CreateTransport("tcp", {.io_threads = 1});
    ASSERT_TRUE(t.ok()) << t.status();
    transport_ = std::move(*t);
  }
  void TearDown() override { transport_->Shutdown(); }
  std::unique_ptr<transport::Transport> transport_;
};

TEST_F(NodeIntegrationTest, PagesPastThePoolLimitAreWrittenBackAndAllLoadBack) {
  auto node = ServerProcess::Start(
      {.pool_limit = "1M", .backing_size = "64M", .high_watermark = "0.8", .low_watermark = "0.6"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto session = Attach((*node)->grpc_addr(), "default", "");
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ(session->data_addr, (*node)->data_addr());
  auto ch = RpcChannel::Connect(*transport_, session->data_addr);
  ASSERT_TRUE(ch.ok()) << ch.status();
  ASSERT_TRUE(Hello(**ch, session->token).ok());

  auto pages = ReadPageFile(FARSWAP_CORPUS_DIR "/node.pages.zst");
  ASSERT_TRUE(pages.ok()) << pages.status();
  constexpr size_t kPages = 1500;  // ~3 MiB compressed: three times the pool limit
  PageCodec codec({.codec = Codec::kLz4, .raw_threshold = 3633});
  std::vector<uint8_t> buf(kPageSize);
  size_t same = 0;
  for (size_t i = 0; i < kPages; ++i) {
    const uint8_t* page = pages->page(i);
    EncodedPage e = codec.Encode(page, buf.data());
    FrameHeader h{.opcode = Opcode::kStore, .page = i, .checksum = XXH3_64bits(page, kPageSize)};
    std::vector<uint8_t> payload;
    if (e.kind == EncodedPage::Kind::kSameFilled) {
      h.flags = transport::kFlagSameFilled;
      auto fill = transport::EncodeU64Payload(e.fill);
      payload.assign(fill.begin(), fill.end());
      same++;
    } else {
      h.codec = transport::Codec(e.codec);
      payload.assign(buf.begin(), buf.begin() + e.length);
    }
    absl::StatusOr<IncomingMessage> r = Call(**ch, h, payload);
    ASSERT_TRUE(r.ok()) << "page " << i << ": " << r.status();
  }
  std::vector<uint8_t> out(kPageSize);
  for (size_t i = 0; i < kPages; ++i) {
    absl::StatusOr<IncomingMessage> r = Call(**ch, {.opcode = Opcode::kLoad, .page = i}, {});
    ASSERT_TRUE(r.ok()) << "page " << i << ": " << r.status();
    if (r->header.same_filled()) {
      PageCodec::DecodeSameFilled(*transport::DecodeU64Payload(r->payload), out.data());
    } else {
      ASSERT_TRUE(
          codec.Decode(Codec(r->header.codec), r->payload.data(), r->payload.size(), out.data())
              .ok());
    }
    ASSERT_EQ(XXH3_64bits(out.data(), kPageSize), r->header.checksum) << i;
    ASSERT_EQ(std::memcmp(out.data(), pages->page(i), kPageSize), 0) << i;
  }
  auto stats = Stats((*node)->grpc_addr());
  ASSERT_TRUE(stats.ok()) << stats.status();
  const v1::NodeStats& n = stats->node();
  EXPECT_EQ(n.stored_pages(), kPages);
  EXPECT_EQ(n.same_pages(), same);
  EXPECT_GT(n.written_back_pages(), 0u);
  EXPECT_GT(n.backing().writes(), 0u);
  EXPECT_GT(n.backing().reads(), 0u);  // the loads of written-back pages
  EXPECT_LE(n.pool().mem_used_max(), 1u << 20);
  EXPECT_EQ(n.loads(), kPages);
  EXPECT_EQ(n.sessions(), 1u);
  EXPECT_EQ(n.rejects().pool_full() + n.rejects().backing_full(), 0u);

  // INVALIDATE_RANGE drops them, and the backing blocks come back.
  FrameHeader inv{.opcode = Opcode::kInvalidateRange, .page = 0};
  auto count = transport::EncodeU64Payload(kPages);
  ASSERT_TRUE(Call(**ch, inv, std::vector<uint8_t>(count.begin(), count.end())).ok());
  EXPECT_EQ(Call(**ch, {.opcode = Opcode::kLoad, .page = 7}, {}).status().code(),
            absl::StatusCode::kNotFound);
  stats = Stats((*node)->grpc_addr());
  EXPECT_EQ(stats->node().stored_pages(), 0u);
  EXPECT_EQ(stats->node().backing().used_bytes(), 0u);
  EXPECT_EQ((*node)->Terminate().value_or(-1), 0);  // clean SIGTERM shutdown
}

// GetStats names the data plane's backend and address, counts the open
// connections by the carrier the client's own end reports (UCX over
// whatever this machine gives it, e.g. shared memory), and reports the
// host's RDMA devices as rdma-core finds them (the same host here).
TEST_F(NodeIntegrationTest, StatsNameTheDataTransportItsCarriersAndTheRdmaDevices) {
  const transport::RdmaProbe here = transport::ProbeRdmaDevices();
  for (const std::string backend : {"tcp", "ucx"}) {
    SCOPED_TRACE(backend);
    auto node = ServerProcess::Start({.transport = backend});
    ASSERT_TRUE(node.ok()) << node.status();
    auto session = Attach((*node)->grpc_addr(), "default", "");
    ASSERT_TRUE(session.ok()) << session.status();
    ASSERT_EQ(transport::AddressScheme(session->data_addr), backend);
    auto client = transport::CreateTransport(backend, {.io_threads = 1});
    ASSERT_TRUE(client.ok()) << client.status();
    auto ch = RpcChannel::Connect(**client, session->data_addr);
    ASSERT_TRUE(ch.ok()) << ch.status();
    ASSERT_TRUE(Hello(**ch, session->token).ok());  // the handshake has crossed
    const std::string carrier = (*ch)->stats().carrier;
    ASSERT_FALSE(carrier.empty());

    auto stats = Stats((*node)->grpc_addr());
    ASSERT_TRUE(stats.ok()) << stats.status();
    const v1::DataTransportStats& t = stats->node().data_transport();
    EXPECT_EQ(t.backend(), backend);
    EXPECT_EQ(t.data_addr(), session->data_addr);
    ASSERT_EQ(t.connections_by_carrier().size(), 1u);
    EXPECT_EQ(t.connections_by_carrier().begin()->first, carrier);
    EXPECT_EQ(t.connections_by_carrier().begin()->second, 1u);
    EXPECT_EQ(std::vector<std::string>(t.rdma_devices().begin(), t.rdma_devices().end()),
              here.devices);
    EXPECT_EQ(t.rdma_missing(), here.missing);
    EXPECT_NE(t.rdma_devices().empty(), t.rdma_missing().empty());

    (*ch).reset();
    (*client)->Shutdown();
    EXPECT_EQ((*node)->Terminate().value_or(-1), 0);
  }
}

// GetStats says what the host's idle CPUs do, as this process reads it
// (the same host): the cpuidle driver and governor, the haltpoll window
// where that module is loaded, and whether vCPUs halt at once.
TEST_F(NodeIntegrationTest, StatsSayWhatTheHostsIdleCpusDo) {
  const CpuIdleState here = ReadCpuIdleState();
  auto node = ServerProcess::Start({});
  ASSERT_TRUE(node.ok()) << node.status();
  auto stats = Stats((*node)->grpc_addr());
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_TRUE(stats->node().has_cpuidle());
  const v1::CpuIdleStats& c = stats->node().cpuidle();
  EXPECT_EQ(c.driver(), here.driver);
  EXPECT_EQ(c.governor(), here.governor);
  EXPECT_EQ(c.has_guest_halt_poll_ns(), here.guest_halt_poll_ns.has_value());
  if (here.guest_halt_poll_ns.has_value()) {
    EXPECT_EQ(c.guest_halt_poll_ns(), *here.guest_halt_poll_ns);
  }
  EXPECT_EQ(c.halt_polling_off(), here.halt_polling_off());
  EXPECT_EQ((*node)->Terminate().value_or(-1), 0);
}

TEST_F(NodeIntegrationTest, SessionsAreEnforcedAndTenantsIsolated) {
  auto node =
      ServerProcess::Start({.pool_limit = "4M", .tenants = "alice:a-secret:0\nbob:b-secret:0\n"});
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ(Attach((*node)->grpc_addr(), "alice", "wrong").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Attach((*node)->grpc_addr(), "carol", "x").status().code(),
            absl::StatusCode::kNotFound);
  auto alice = Attach((*node)->grpc_addr(), "alice", "a-secret");
  auto bob = Attach((*node)->grpc_addr(), "bob", "b-secret");
  ASSERT_TRUE(alice.ok() && bob.ok());

  auto a = RpcChannel::Connect(*transport_, alice->data_addr);
  auto b = RpcChannel::Connect(*transport_, bob->data_addr);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(Hello(**a, alice->token).ok());
  ASSERT_TRUE(Hello(**b, bob->token).ok());
  std::vector<uint8_t> page(100, 0xAB);
  FrameHeader store{
      .opcode = Opcode::kStore, .page = 42, .codec = transport::Codec::kLz4, .checksum = 1234};
  ASSERT_TRUE(Call(**a, store, page).ok());
  // Bob names the same page number: his own (empty) page 42, not Alice's.
  EXPECT_EQ(Call(**b, {.opcode = Opcode::kLoad, .page = 42}, {}).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(Call(**b, {.opcode = Opcode::kInvalidate, .page = 42}, {}).ok());
  auto mine = Call(**a, {.opcode = Opcode::kLoad, .page = 42}, {});
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->payload, page);
  EXPECT_EQ(mine->header.checksum, 1234u);

  // STORE without HELLO: refused with the reason, connection closed.
  auto anon = RpcChannel::Connect(*transport_, (*node)->data_addr());
  ASSERT_TRUE(anon.ok());
  absl::Status s = Call(**anon, store, page).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_NE(std::string(s.message()).find("HELLO"), std::string::npos) << s;
  // The connection is closing: a request that races the close is refused
  // again or finds the connection gone, never served.
  absl::StatusCode next = Call(**anon, {.opcode = Opcode::kPing}, {}).status().code();
  EXPECT_TRUE(next == absl::StatusCode::kUnavailable || next == absl::StatusCode::kUnauthenticated)
      << absl::StatusCodeToString(next);
  // A wrong token: refused, closed.
  auto wrong = RpcChannel::Connect(*transport_, (*node)->data_addr());
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(Hello(**wrong, "not-a-token").code(), absl::StatusCode::kUnauthenticated);
  // A detached session's token no longer works.
  auto stub = v1::MemoryNode::NewStub(
      grpc::CreateChannel((*node)->grpc_addr(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::DetachRequest det;
  det.set_session_token(bob->token);
  v1::DetachResponse det_resp;
  ASSERT_TRUE(stub->Detach(&ctx, det, &det_resp).ok());
  auto late = RpcChannel::Connect(*transport_, bob->data_addr);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(Hello(**late, bob->token).code(), absl::StatusCode::kUnauthenticated);

  // Garbage on a raw socket closes that connection only.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  std::vector<std::string> hp = absl::StrSplit((*node)->data_addr(), ':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(std::stoi(hp[1])));
  inet_pton(AF_INET, hp[0].c_str(), &addr.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  // Longer than one frame header, so the node has a whole header to reject.
  const char junk[] = "GET / HTTP/1.1\r\nHost: farswap.example\r\nAccept: */*\r\n\r\n";
  ASSERT_GT(write(fd, junk, sizeof junk), 0);
  char c;
  EXPECT_EQ(read(fd, &c, 1), 0);  // EOF: the node closed it
  close(fd);
  // Alice's connection is unharmed.
  auto again = Call(**a, {.opcode = Opcode::kLoad, .page = 42}, {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->payload, page);
}

// ServiceHealth asks the node's gRPC health service about
// farswap.v1.MemoryNode, as a Kubernetes readiness probe does.
grpc::health::v1::HealthCheckResponse::ServingStatus ServiceHealth(const std::string& grpc_addr) {
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(grpc_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("farswap.v1.MemoryNode");
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = health->Check(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();  // NOT_FOUND: the service's status was never set
  return resp.status();
}

TEST_F(NodeIntegrationTest, DrainRefusesStoresAndServesLoads) {
  auto node = ServerProcess::Start({.pool_limit = "4M"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto session = Attach((*node)->grpc_addr(), "default", "");
  ASSERT_TRUE(session.ok());
  auto ch = RpcChannel::Connect(*transport_, session->data_addr);
  ASSERT_TRUE(ch.ok());
  ASSERT_TRUE(Hello(**ch, session->token).ok());
  std::vector<uint8_t> page(300, 7);
  FrameHeader store{.opcode = Opcode::kStore, .page = 1, .codec = transport::Codec::kLz4};
  ASSERT_TRUE(Call(**ch, store, page).ok());
  EXPECT_EQ(ServiceHealth((*node)->grpc_addr()), grpc::health::v1::HealthCheckResponse::SERVING);
  auto stub = v1::MemoryNode::NewStub(
      grpc::CreateChannel((*node)->grpc_addr(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::DrainRequest req;
  req.set_drain(true);
  v1::DrainResponse resp;
  ASSERT_TRUE(stub->Drain(&ctx, req, &resp).ok());
  EXPECT_TRUE(resp.draining());
  store.page = 2;
  EXPECT_EQ(Call(**ch, store, page).status().code(), absl::StatusCode::kFailedPrecondition);
  auto loaded = Call(**ch, {.opcode = Opcode::kLoad, .page = 1}, {});
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->payload, page);
  EXPECT_EQ(Attach((*node)->grpc_addr(), "default", "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto stats = Stats((*node)->grpc_addr());
  EXPECT_EQ(stats->node().rejects().draining(), 1u);
  // Readiness follows the drain (the node checks once a second).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (ServiceHealth((*node)->grpc_addr()) !=
             grpc::health::v1::HealthCheckResponse::NOT_SERVING &&
         absl::Now() < deadline) {
    // Polls the condition (the node, another process, re-checks once a
    // second); the deadline only bounds a node that never turns.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ServiceHealth((*node)->grpc_addr()),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

absl::Status SetLimits(v1::MemoryNode::Stub& stub, const v1::SetLimitsRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::SetLimitsResponse resp;
  grpc::Status s = stub.SetLimits(&ctx, req, &resp);
  return s.ok() ? absl::OkStatus()
                : absl::Status(absl::StatusCode(s.error_code()), s.error_message());
}

// A quota of 1..4095 bytes used to become 0 pages, which means unlimited.
TEST_F(NodeIntegrationTest, SubPageQuotaRoundsUpToOnePage) {
  auto node = ServerProcess::Start({.pool_limit = "4M", .tenants = "t:s:1000\n"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto session = Attach((*node)->grpc_addr(), "t", "s");
  ASSERT_TRUE(session.ok()) << session.status();
  auto ch = RpcChannel::Connect(*transport_, session->data_addr);
  ASSERT_TRUE(ch.ok());
  ASSERT_TRUE(Hello(**ch, session->token).ok());
  std::vector<uint8_t> page(300, 7);
  FrameHeader store{.opcode = Opcode::kStore, .page = 1, .codec = transport::Codec::kLz4};
  ASSERT_TRUE(Call(**ch, store, page).ok());  // the one page 1000 bytes allow
  store.page = 2;
  EXPECT_EQ(Call(**ch, store, page).status().code(), absl::StatusCode::kResourceExhausted);
  // The same through SetLimits.
  auto stub = v1::MemoryNode::NewStub(
      grpc::CreateChannel((*node)->grpc_addr(), grpc::InsecureChannelCredentials()));
  v1::SetLimitsRequest req;
  req.set_tenant_id("t");
  req.set_tenant_quota_bytes(1);
  ASSERT_TRUE(SetLimits(*stub, req).ok());
  EXPECT_EQ(Call(**ch, store, page).status().code(), absl::StatusCode::kResourceExhausted);
  auto stats = Stats((*node)->grpc_addr());
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->tenants_size(), 1);
  EXPECT_EQ(stats->tenants(0).quota_bytes(), 4096u);
}

// Two callers changing different limits at once: each SetLimits used to
// read the limits, apply them and write them back in three steps, so one
// caller's change could be undone by the other's stale copy.
TEST_F(NodeIntegrationTest, ConcurrentSetLimitsLoseNoUpdate) {
  auto node = ServerProcess::Start({.pool_limit = "4M"});
  ASSERT_TRUE(node.ok()) << node.status();
  constexpr int kRounds = 300;
  std::atomic<int> lost{0};
  std::atomic<uint64_t> last_limit{0};
  std::thread pool_setter([&] {
    auto stub = v1::MemoryNode::NewStub(
        grpc::CreateChannel((*node)->grpc_addr(), grpc::InsecureChannelCredentials()));
    for (int i = 0; i < kRounds; ++i) {
      const uint64_t limit = (uint64_t{4} << 20) + uint64_t(i + 1) * 4096;
      v1::SetLimitsRequest req;
      req.set_pool_limit_bytes(limit);
      ASSERT_TRUE(SetLimits(*stub, req).ok());
      last_limit = limit;
      // Nobody else sets the pool limit: it must still be ours.
      auto stats = Stats((*node)->grpc_addr());
      ASSERT_TRUE(stats.ok());
      lost += stats->node().pool().mem_limit() != limit;
    }
  });
  std::thread watermark_setter([&] {
    auto stub = v1::MemoryNode::NewStub(
        grpc::CreateChannel((*node)->grpc_addr(), grpc::InsecureChannelCredentials()));
    for (int i = 0; i < kRounds; ++i) {
      v1::SetLimitsRequest req;
      req.set_low_watermark(i % 2 == 0 ? 0.5 : 0.6);
      ASSERT_TRUE(SetLimits(*stub, req).ok());
    }
  });
  pool_setter.join();
  watermark_setter.join();
  EXPECT_EQ(lost.load(), 0) << "pool-limit updates undone by a concurrent SetLimits";
  auto stats = Stats((*node)->grpc_addr());
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->node().pool().mem_limit(), last_limit.load());
}

// The cold tier on a real node: lz4 pages left alone are recompressed in
// the background (--cold-after 1), and LOAD replies then carry codec ZSTD,
// which the client's decoder turns back into the very page (checksum and
// bytes).
TEST_F(NodeIntegrationTest, ColdPagesComeBackAsZstdAndDecodeToTheSamePage) {
  auto node = ServerProcess::Start({.extra_args = {"--cold-after", "1"}});
  ASSERT_TRUE(node.ok()) << node.status();
  auto session = Attach((*node)->grpc_addr(), "default", "");
  ASSERT_TRUE(session.ok()) << session.status();
  auto ch = RpcChannel::Connect(*transport_, session->data_addr);
  ASSERT_TRUE(ch.ok()) << ch.status();
  ASSERT_TRUE(Hello(**ch, session->token).ok());
  auto pages = ReadPageFile(FARSWAP_CORPUS_DIR "/python.pages.zst");
  ASSERT_TRUE(pages.ok()) << pages.status();
  constexpr size_t kPages = 200;
  PageCodec codec({.codec = Codec::kLz4});
  std::vector<uint8_t> buf(kPageSize);
  size_t lz4_pages = 0;
  for (size_t i = 0; i < kPages; ++i) {
    EncodedPage e = codec.Encode(pages->page(i), buf.data());
    if (e.kind != EncodedPage::Kind::kCompressed) continue;  // only lz4 pages here
    FrameHeader h{.opcode = Opcode::kStore,
                  .page = i,
                  .codec = transport::Codec::kLz4,
                  .checksum = XXH3_64bits(pages->page(i), kPageSize)};
    ASSERT_TRUE(Call(**ch, h, std::vector<uint8_t>(buf.begin(), buf.begin() + e.length)).ok());
    ++lz4_pages;
  }
  ASSERT_GT(lz4_pages, 100u);
  // Polls the node's counters (another process, a pass a second); the
  // deadline only bounds a node that never recompresses.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  uint64_t recompressed = 0;
  while (absl::Now() < deadline) {
    auto stats = Stats((*node)->grpc_addr());
    ASSERT_TRUE(stats.ok()) << stats.status();
    const v1::ColdTierStats& c = stats->node().cold();
    recompressed = c.recompressed_pages();
    if (recompressed + c.kept_pages() == lz4_pages) break;
    // Polls the node (another process, one cold pass a second); the
    // deadline only bounds a node whose cold tier never runs.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GT(recompressed, lz4_pages / 2) << "the cold tier recompressed too few pages";
  std::vector<uint8_t> out(kPageSize);
  size_t zstd_replies = 0;
  for (size_t i = 0; i < kPages; ++i) {
    absl::StatusOr<IncomingMessage> r = Call(**ch, {.opcode = Opcode::kLoad, .page = i}, {});
    if (!r.ok() && r.status().code() == absl::StatusCode::kNotFound) continue;  // not stored
    ASSERT_TRUE(r.ok()) << "page " << i << ": " << r.status();
    zstd_replies += r->header.codec == transport::Codec::kZstd ? 1 : 0;
    ASSERT_TRUE(
        codec.Decode(Codec(r->header.codec), r->payload.data(), r->payload.size(), out.data())
            .ok());
    ASSERT_EQ(XXH3_64bits(out.data(), kPageSize), r->header.checksum) << i;
    ASSERT_EQ(std::memcmp(out.data(), pages->page(i), kPageSize), 0) << i;
  }
  EXPECT_EQ(zstd_replies, recompressed);
  auto stats = Stats((*node)->grpc_addr());
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->node().cold().loads(), recompressed);
  EXPECT_GT(stats->node().cold().bytes_saved(), 0u);
}

}  // namespace
}  // namespace farswap
