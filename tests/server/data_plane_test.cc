// The data plane in-process (no gRPC): a page store, a tenant registry and
// the TCP transport, with several client connections storing, replacing,
// loading and invalidating concurrently while writeback runs. Runs under
// ThreadSanitizer in CI.
#include "farswap/server/data_plane.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "farswap/server/block_device.h"
#include "farswap/transport/rpc_channel.h"

namespace farswap::server {
namespace {

using transport::FrameHeader;
using transport::IncomingMessage;
using transport::kFrameHeaderSize;
using transport::Opcode;
using transport::RpcChannel;

constexpr absl::Duration kTimeout = absl::Seconds(60);

std::vector<uint8_t> Payload(uint64_t page, uint64_t version) {
  std::vector<uint8_t> v(200 + (page * 37 + version * 101) % 3000);
  uint64_t x = page * 0x9E3779B97F4A7C15ull + version + 1;
  for (size_t i = 0; i < v.size(); ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v[i] = uint8_t(x);
  }
  return v;
}

class DataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = PageStore::Create(
        {.limits = {.pool_limit_bytes = 512 * 1024, .high_watermark = 0.8, .low_watermark = 0.6},
         .backing = &disk_});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto t = transport::CreateTransport("tcp", {.io_threads = 2});
    ASSERT_TRUE(t.ok());
    transport_ = std::move(*t);
    server_ = std::make_unique<DataPlaneServer>(store_.get(), &tenants_, transport_.get(),
                                                DataPlaneOptions{.workers = 2});
    ASSERT_TRUE(server_->Listen("127.0.0.1:0").ok());
  }
  void TearDown() override {
    server_->Shutdown();
    transport_->Shutdown();
  }
  std::unique_ptr<RpcChannel> Connected(const std::string& token) {
    auto ch = RpcChannel::Connect(*transport_, server_->address());
    EXPECT_TRUE(ch.ok()) << ch.status();
    auto hello = (*ch)
                     ->Call({.opcode = Opcode::kHello},
                            std::vector<uint8_t>(token.begin(), token.end()), kTimeout)
                     .get();
    EXPECT_TRUE(hello.ok()) << hello.status();
    return std::move(*ch);
  }

  MemoryBlockDevice disk_{4096};  // 16 MiB
  TenantRegistry tenants_ = *TenantRegistry::Parse("default::0\nother::0", "test");
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<DataPlaneServer> server_;
};

TEST_F(DataPlaneTest, ConcurrentClientsAlwaysLoadTheirNewestVersion) {
  auto session = tenants_.Attach("default", "");
  ASSERT_TRUE(session.ok());
  constexpr int kClients = 3;
  constexpr uint64_t kPagesPerClient = 300;
  std::atomic<uint64_t> checked{0}, wrong{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto ch = Connected(session->token);
      std::mt19937_64 rng(c + 7);
      // Each client owns pages c, c+kClients, ...: its model is exact.
      std::vector<int64_t> version(kPagesPerClient, -1);
      for (int op = 0; op < 1500; ++op) {
        uint64_t k = rng() % kPagesPerClient;
        uint64_t page = k * kClients + c;
        uint64_t r = rng() % 10;
        if (r < 5) {
          int64_t v = version[k] + 1;
          auto data = Payload(page, v);
          FrameHeader h{.opcode = Opcode::kStore,
                        .page = page,
                        .codec = transport::Codec::kLz4,
                        .checksum = uint64_t(v) + 1};
          auto res = ch->Call(h, data, kTimeout).get();
          ASSERT_TRUE(res.ok()) << res.status();
          version[k] = v;
        } else if (r < 6) {
          ASSERT_TRUE(
              ch->Call({.opcode = Opcode::kInvalidate, .page = page}, {}, kTimeout).get().ok());
          version[k] = -1;
        } else {
          auto res = ch->Call({.opcode = Opcode::kLoad, .page = page}, {}, kTimeout).get();
          if (version[k] < 0) {
            EXPECT_EQ(res.status().code(), absl::StatusCode::kNotFound);
            continue;
          }
          ASSERT_TRUE(res.ok()) << res.status();
          bool same = res->payload == Payload(page, version[k]) &&
                      res->header.checksum == uint64_t(version[k]) + 1;
          (same ? checked : wrong)++;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(checked.load(), 500u);
  PageStoreStats s = store_->GetStats();
  EXPECT_GT(s.written_back_pages, 0u) << "the pool limit should have forced writeback";
  EXPECT_EQ(server_->stats().hello_refused, 0u);
}

TEST_F(DataPlaneTest, BatchRepliesCarryEveryEntryInOrder) {
  auto session = tenants_.Attach("default", "");
  auto ch = Connected(session->token);
  transport::BatchEncoder stores;
  std::vector<std::vector<uint8_t>> data;
  for (uint64_t p = 0; p < 64; ++p) data.push_back(Payload(p, 0));
  for (uint64_t p = 0; p < 64; ++p) {
    std::span<const uint8_t> piece(data[p]);
    ASSERT_TRUE(stores
                    .Add({.opcode = Opcode::kStore,
                          .page = p,
                          .codec = transport::Codec::kLz4,
                          .checksum = p + 100},
                         {&piece, 1})
                    .ok());
  }
  std::vector<uint8_t> payload;
  for (auto piece : stores.pieces()) payload.insert(payload.end(), piece.begin(), piece.end());
  auto r = ch->Call(stores.Header(0), payload, kTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  auto entries = transport::DecodeBatch({r->header, r->payload});
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 64u);
  for (const auto& e : *entries) EXPECT_EQ(e.header.status, absl::StatusCode::kOk);

  transport::BatchEncoder loads;
  for (uint64_t p = 0; p < 65; ++p)
    ASSERT_TRUE(loads.Add({.opcode = Opcode::kLoad, .page = p}).ok());
  std::vector<uint8_t> lp;
  for (auto piece : loads.pieces()) lp.insert(lp.end(), piece.begin(), piece.end());
  r = ch->Call(loads.Header(0), lp, kTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  entries = transport::DecodeBatch({r->header, r->payload});
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 65u);
  for (uint64_t p = 0; p < 64; ++p) {
    const auto& e = (*entries)[p];
    ASSERT_EQ(e.header.status, absl::StatusCode::kOk) << p;
    EXPECT_EQ(e.header.page, p);
    EXPECT_EQ(e.header.checksum, p + 100);
    EXPECT_EQ(std::vector<uint8_t>(e.payload.begin(), e.payload.end()), data[p]);
  }
  EXPECT_EQ((*entries)[64].header.status, absl::StatusCode::kNotFound);  // never stored
}

// The figures /metrics exports (DataPlaneStats): requests by opcode and
// reply status, store and load latency histograms, frame bytes in and out.
TEST_F(DataPlaneTest, StatsCountOpsByStatusLatencyAndBytes) {
  auto session = tenants_.Attach("default", "");
  ASSERT_TRUE(session.ok());
  const DataPlaneStats before = server_->stats();
  EXPECT_EQ(before.store_latency.count(), 0u);
  auto ch = Connected(session->token);
  uint64_t sent = kFrameHeaderSize + session->token.size();  // the HELLO
  uint64_t replied = kFrameHeaderSize;                       // its OK reply
  std::vector<std::vector<uint8_t>> data;
  for (uint64_t p = 0; p < 10; ++p) {
    data.push_back(Payload(p, 0));
    auto r = ch->Call({.opcode = Opcode::kStore, .page = p, .codec = transport::Codec::kLz4},
                      data.back(), kTimeout)
                 .get();
    ASSERT_TRUE(r.ok()) << r.status();
    sent += kFrameHeaderSize + data.back().size();
    replied += kFrameHeaderSize + r->payload.size();
  }
  transport::BatchEncoder batch;  // 3 stores in one frame: counted one by one
  for (uint64_t p = 10; p < 13; ++p) {
    data.push_back(Payload(p, 0));
    std::span<const uint8_t> piece(data.back());
    ASSERT_TRUE(batch
                    .Add({.opcode = Opcode::kStore, .page = p, .codec = transport::Codec::kLz4},
                         {&piece, 1})
                    .ok());
  }
  std::vector<uint8_t> batch_payload;
  for (auto piece : batch.pieces()) {
    batch_payload.insert(batch_payload.end(), piece.begin(), piece.end());
  }
  auto b = ch->Call(batch.Header(0), batch_payload, kTimeout).get();
  ASSERT_TRUE(b.ok()) << b.status();
  sent += kFrameHeaderSize + batch_payload.size();
  replied += kFrameHeaderSize + b->payload.size();
  for (uint64_t p = 0; p < 10; ++p) {
    auto r = ch->Call({.opcode = Opcode::kLoad, .page = p}, {}, kTimeout).get();
    ASSERT_TRUE(r.ok()) << r.status();
    sent += kFrameHeaderSize;
    replied += kFrameHeaderSize + r->payload.size();
  }
  auto miss = ch->Call({.opcode = Opcode::kLoad, .page = 999}, {}, kTimeout).get();
  EXPECT_EQ(miss.status().code(), absl::StatusCode::kNotFound);
  sent += kFrameHeaderSize;
  ASSERT_TRUE(ch->Call({.opcode = Opcode::kInvalidate, .page = 0}, {}, kTimeout).get().ok());
  sent += kFrameHeaderSize;
  replied += kFrameHeaderSize;
  // The connection's frames are answered in order, each reply counted once
  // sent: when the PING's reply arrives, every earlier reply is counted.
  ASSERT_TRUE(ch->Call({.opcode = Opcode::kPing}, {}, kTimeout).get().ok());
  sent += kFrameHeaderSize;

  const DataPlaneStats s = server_->stats();
  auto ops = [&s](Opcode op, absl::StatusCode code) { return s.ops[size_t(op)][size_t(code)]; };
  EXPECT_EQ(ops(Opcode::kHello, absl::StatusCode::kOk), 1u);
  EXPECT_EQ(ops(Opcode::kStore, absl::StatusCode::kOk), 13u);
  EXPECT_EQ(ops(Opcode::kLoad, absl::StatusCode::kOk), 10u);
  EXPECT_EQ(ops(Opcode::kLoad, absl::StatusCode::kNotFound), 1u);
  EXPECT_EQ(ops(Opcode::kInvalidate, absl::StatusCode::kOk), 1u);
  EXPECT_EQ(ops(Opcode::kPing, absl::StatusCode::kOk), 1u);
  EXPECT_EQ(ops(Opcode::kBatch, absl::StatusCode::kOk), 0u) << "a BATCH counts its entries";
  EXPECT_EQ(s.store_latency.count(), 13u);
  EXPECT_EQ(s.load_latency.count(), 11u);
  EXPECT_GT(s.store_latency.sum_ns, 0u);
  EXPECT_GT(s.load_latency.sum_ns, 0u);
  EXPECT_EQ(s.bytes_received, sent);
  // At least every reply before the PING's; at most those plus the miss's
  // error reply and the PING's.
  EXPECT_GE(s.bytes_sent, replied);
  EXPECT_LE(s.bytes_sent, replied + 2 * kFrameHeaderSize + transport::kMaxErrorMessageSize);
  EXPECT_EQ(s.connections_open, 1u);
}

// A second HELLO used to switch the connection to the new session's tenant,
// re-tenanting frames already read. Now it is refused and changes nothing.
TEST_F(DataPlaneTest, SecondHelloIsRefusedAndKeepsTheFirstSession) {
  auto mine = tenants_.Attach("default", "");
  auto theirs = tenants_.Attach("other", "");
  ASSERT_TRUE(mine.ok() && theirs.ok());
  auto ch = Connected(mine->token);
  const std::vector<uint8_t> page = Payload(1, 1);
  ASSERT_TRUE(ch->Call({.opcode = Opcode::kStore, .page = 1, .codec = transport::Codec::kLz4}, page,
                       kTimeout)
                  .get()
                  .ok());
  auto hello = ch->Call({.opcode = Opcode::kHello},
                        std::vector<uint8_t>(theirs->token.begin(), theirs->token.end()), kTimeout)
                   .get();
  EXPECT_EQ(hello.status().code(), absl::StatusCode::kFailedPrecondition) << hello.status();
  // Same connection, same tenant: page 1 is still ours.
  auto load = ch->Call({.opcode = Opcode::kLoad, .page = 1}, {}, kTimeout).get();
  ASSERT_TRUE(load.ok()) << "the connection changed tenant: " << load.status();
  EXPECT_EQ(load->payload, page);
  EXPECT_EQ(server_->stats().hello_refused, 1u);
}

// A connection counts against its session: the session does not expire
// while the connection is open.
TEST_F(DataPlaneTest, OpenConnectionKeepsItsSessionFromExpiring) {
  tenants_.set_session_idle_timeout(absl::Seconds(60));
  auto session = tenants_.Attach("default", "");
  ASSERT_TRUE(session.ok());
  auto ch = Connected(session->token);
  EXPECT_EQ(tenants_.ExpireIdleSessions(absl::Now() + absl::Hours(1)), 0u);
  EXPECT_TRUE(ch->Call({.opcode = Opcode::kPing}, {}, kTimeout).get().ok());
  auto idle = tenants_.Attach("default", "");  // attached, never connected
  ASSERT_TRUE(idle.ok());
  EXPECT_EQ(tenants_.ExpireIdleSessions(absl::Now() + absl::Hours(1)), 1u);
  EXPECT_TRUE(tenants_.LookupSession(session->token).ok());
  EXPECT_FALSE(tenants_.LookupSession(idle->token).ok());
}

}  // namespace
}  // namespace farswap::server
