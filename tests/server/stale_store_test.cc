// Page versions: a STORE delayed past a newer acknowledged one neither
// overwrites it nor, when it fails, erases it. First on the page store
// alone, then through a real data plane (TCP transport, two connections),
// with the interleavings forced by sync points.
#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "farswap/server/data_plane.h"
#include "farswap/transport/rpc_channel.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using testing::Payload;
using testing::ScopedSyncPoints;
using transport::FrameHeader;
using transport::IncomingMessage;
using transport::Opcode;
using transport::RpcChannel;

constexpr absl::Duration kTimeout = absl::Seconds(60);

StoreRequest Versioned(const std::vector<uint8_t>& bytes, uint64_t version) {
  return {.payload = bytes, .codec = 1, .checksum = version, .version = version};
}

TEST(PageVersionTest, OlderStoreIsRefusedAndChangesNothing) {
  auto store = PageStore::Create({});
  ASSERT_TRUE(store.ok()) << store.status();
  const std::vector<uint8_t> v5 = Payload(5, 900), v3 = Payload(3, 300);
  ASSERT_TRUE((*store)->Store(1, 7, Versioned(v5, 5)).ok());
  absl::Status s = (*store)->Store(1, 7, Versioned(v3, 3));
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_NE(s.message().find("stale version"), absl::string_view::npos) << s;
  absl::StatusOr<LoadedPage> p = (*store)->Load(1, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->payload, v5);
  EXPECT_EQ(p->version, 5u);
  PageStoreStats st = (*store)->GetStats();
  EXPECT_EQ(st.stale_stores, 1u);
  EXPECT_EQ(st.stored_pages, 1u);
  EXPECT_EQ(st.pool.objects, 1u);  // the refused store's copy was freed
  // An equal version (a retry) and a higher one replace it.
  ASSERT_TRUE((*store)->Store(1, 7, Versioned(v3, 5)).ok());
  ASSERT_TRUE((*store)->Store(1, 7, {.same_filled = true, .fill = 9, .version = 6}).ok());
  p = (*store)->Load(1, 7);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->same_filled);
  EXPECT_EQ(p->version, 6u);
}

// A conditional invalidate (a version) drops a copy at or below it and
// keeps a newer one; version 0 drops whatever is there.
TEST(PageVersionTest, AConditionalInvalidateDropsOnlyACopyAtMostItsVersion) {
  auto store = PageStore::Create({});
  ASSERT_TRUE(store.ok()) << store.status();
  const std::vector<uint8_t> v5 = Payload(5, 900);
  ASSERT_TRUE((*store)->Store(1, 7, Versioned(v5, 5)).ok());
  ASSERT_TRUE((*store)->Invalidate(1, 7, /*up_to_version=*/4).ok());  // older: kept
  absl::StatusOr<LoadedPage> p = (*store)->Load(1, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->version, 5u);
  EXPECT_EQ((*store)->GetStats().invalidates, 0u);
  ASSERT_TRUE((*store)->Invalidate(1, 7, /*up_to_version=*/5).ok());  // the same: dropped
  EXPECT_EQ((*store)->Load(1, 7).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*store)->Invalidate(1, 7, /*up_to_version=*/5).ok());  // nothing there: OK
  ASSERT_TRUE((*store)->Store(1, 7, Versioned(v5, 9)).ok());
  ASSERT_TRUE((*store)->Invalidate(1, 7, /*up_to_version=*/12).ok());  // newer than it: dropped
  EXPECT_EQ((*store)->Load(1, 7).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*store)->Store(1, 7, Versioned(v5, 30)).ok());
  ASSERT_TRUE((*store)->Invalidate(1, 7).ok());  // unconditional
  EXPECT_EQ((*store)->Load(1, 7).status().code(), absl::StatusCode::kNotFound);
  PageStoreStats st = (*store)->GetStats();
  EXPECT_EQ(st.invalidates, 3u);
  EXPECT_EQ(st.stored_pages, 0u);
  EXPECT_EQ(st.pool.objects, 0u);
}

TEST(PageVersionTest, FailedOlderStoreDoesNotEraseNewerPage) {
  auto store = PageStore::Create({});
  ASSERT_TRUE(store.ok()) << store.status();
  const std::vector<uint8_t> v9 = Payload(9, 500);
  ASSERT_TRUE((*store)->Store(1, 7, Versioned(v9, 9)).ok());
  (*store)->SetDraining(true);  // every store now fails, and fails its key
  EXPECT_EQ((*store)->Store(1, 7, Versioned(Payload(4, 10), 4)).code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<LoadedPage> p = (*store)->Load(1, 7);
  ASSERT_TRUE(p.ok()) << "the failed store of version 4 erased version 9: " << p.status();
  EXPECT_EQ(p->payload, v9);
  // A failed store of the same or a newer version still erases what it
  // would have replaced: the client got no ack and puts the page elsewhere.
  EXPECT_EQ((*store)->Store(1, 7, Versioned(Payload(10, 10), 10)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*store)->Load(1, 7).status().code(), absl::StatusCode::kNotFound);
}

// A real data plane: page store, tenant registry and TCP transport in this
// process, a client transport of its own, and two connections (the old
// store's and the new one's), each on its own server I/O thread.
class StaleStoreNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = PageStore::Create({});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto server_transport = transport::CreateTransport("tcp", {.io_threads = 2});
    ASSERT_TRUE(server_transport.ok());
    server_transport_ = std::move(*server_transport);
    auto client_transport = transport::CreateTransport("tcp", {.io_threads = 1});
    ASSERT_TRUE(client_transport.ok());
    client_transport_ = std::move(*client_transport);
    server_ = std::make_unique<DataPlaneServer>(store_.get(), &tenants_, server_transport_.get(),
                                                DataPlaneOptions{.workers = 1});
    ASSERT_TRUE(server_->Listen("127.0.0.1:0").ok());
    auto session = tenants_.Attach("default", "");
    ASSERT_TRUE(session.ok());
    // Connections are spread round-robin over the server's two I/O threads:
    // the old store's connection and the new one's never share a thread, so
    // the old store can be held on its thread while the new one is served.
    old_ = Connected(session->token);
    new_ = Connected(session->token);
  }
  void TearDown() override {
    old_.reset();
    new_.reset();
    server_->Shutdown();
    server_transport_->Shutdown();
    client_transport_->Shutdown();
  }
  std::unique_ptr<RpcChannel> Connected(const std::string& token) {
    auto ch = RpcChannel::Connect(*client_transport_, server_->address());
    EXPECT_TRUE(ch.ok()) << ch.status();
    auto hello = (*ch)
                     ->Call({.opcode = Opcode::kHello},
                            std::vector<uint8_t>(token.begin(), token.end()), kTimeout)
                     .get();
    EXPECT_TRUE(hello.ok()) << hello.status();
    return std::move(*ch);
  }
  static FrameHeader StoreHeader(uint64_t page, uint64_t version) {
    return {.opcode = Opcode::kStore,
            .page = page,
            .codec = transport::Codec::kLz4,
            .checksum = version,
            .version = version};
  }
  // StoreNewWhileOldIsHeld, run inside the old store's sync point (on the
  // old connection's I/O thread): the new version is stored and
  // acknowledged through the other connection.
  void StoreNewWhileOldIsHeld(uint64_t page, uint64_t version) {
    absl::StatusOr<IncomingMessage> r =
        new_->Call(StoreHeader(page, version), Payload(version, 1500), kTimeout).get();
    EXPECT_TRUE(r.ok()) << "newer store not acknowledged: " << r.status();
    new_acked_ = r.ok();
  }
  void ExpectNewestLoads(uint64_t page, uint64_t version) {
    absl::StatusOr<IncomingMessage> r =
        new_->Call({.opcode = Opcode::kLoad, .page = page}, {}, kTimeout).get();
    ASSERT_TRUE(r.ok()) << "the newer, acknowledged version is gone: " << r.status();
    EXPECT_EQ(r->header.version, version);
    EXPECT_EQ(r->header.checksum, version);
    EXPECT_EQ(r->payload, Payload(version, 1500));
  }

  TenantRegistry tenants_ = TenantRegistry::Default();
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<transport::Transport> server_transport_, client_transport_;
  std::unique_ptr<DataPlaneServer> server_;
  std::unique_ptr<RpcChannel> old_, new_;
  bool new_acked_ = false;
};

TEST_F(StaleStoreNodeTest, DelayedOldStoreDoesNotOverwriteNewerAcknowledgedStore) {
  ScopedSyncPoints cleanup;
  // The old store (version 100) has its copy in the pool and is about to
  // publish when the new one (version 200) is stored and acknowledged.
  SyncPoints::SetOnce("PageStore::Store:before-publish", [&] { StoreNewWhileOldIsHeld(5, 200); });
  absl::StatusOr<IncomingMessage> old =
      old_->Call(StoreHeader(5, 100), Payload(100, 1500), kTimeout).get();
  ASSERT_TRUE(new_acked_);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), absl::StatusCode::kAborted) << old.status();
  EXPECT_NE(old.status().message().find("stale version"), absl::string_view::npos);
  ExpectNewestLoads(5, 200);
  EXPECT_EQ(store_->GetStats().stale_stores, 1u);
}

TEST_F(StaleStoreNodeTest, DelayedOldStoreThatFailsDoesNotEraseNewerAcknowledgedStore) {
  ScopedSyncPoints cleanup;
  // The old store is refused (the node is draining) and is about to clean
  // up its key when the drain ends and the new store is acknowledged.
  store_->SetDraining(true);
  SyncPoints::SetOnce("PageStore::FailStore:before-lock", [&] {
    store_->SetDraining(false);
    StoreNewWhileOldIsHeld(6, 300);
  });
  absl::StatusOr<IncomingMessage> old =
      old_->Call(StoreHeader(6, 250), Payload(250, 1500), kTimeout).get();
  ASSERT_TRUE(new_acked_);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition) << old.status();
  ExpectNewestLoads(6, 300);
}

// Through a real data plane: a conditional INVALIDATE older than the stored
// version keeps the page; one at its version drops it.
TEST_F(StaleStoreNodeTest, AConditionalInvalidateNeverErasesANewerStore) {
  ASSERT_TRUE(new_->Call(StoreHeader(9, 40), Payload(40, 1500), kTimeout).get().ok());
  absl::StatusOr<IncomingMessage> r =
      old_->Call({.opcode = Opcode::kInvalidate, .page = 9, .version = 39}, {}, kTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectNewestLoads(9, 40);
  r = old_->Call({.opcode = Opcode::kInvalidate, .page = 9, .version = 40}, {}, kTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  r = new_->Call({.opcode = Opcode::kLoad, .page = 9}, {}, kTimeout).get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST_F(StaleStoreNodeTest, BatchEntriesCarryVersions) {
  transport::BatchEncoder b;
  const std::vector<uint8_t> newer = Payload(20, 1500), older = Payload(10, 1500);
  std::vector<std::span<const uint8_t>> newer_piece{newer}, older_piece{older};
  ASSERT_TRUE(b.Add(StoreHeader(8, 20), newer_piece).ok());
  ASSERT_TRUE(b.Add(StoreHeader(8, 10), older_piece).ok());  // arrives second, is older
  ASSERT_TRUE(b.Add({.opcode = Opcode::kLoad, .page = 8}).ok());
  std::vector<uint8_t> payload;
  for (auto piece : b.pieces()) payload.insert(payload.end(), piece.begin(), piece.end());
  absl::StatusOr<IncomingMessage> r = new_->Call(b.Header(0), payload, kTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  auto entries = transport::DecodeBatch({r->header, r->payload});
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].header.status, absl::StatusCode::kOk);
  EXPECT_EQ((*entries)[1].header.status, absl::StatusCode::kAborted);
  EXPECT_EQ((*entries)[2].header.status, absl::StatusCode::kOk);
  EXPECT_EQ((*entries)[2].header.version, 20u);
  EXPECT_TRUE(std::equal((*entries)[2].payload.begin(), (*entries)[2].payload.end(), newer.begin(),
                         newer.end()));
}

}  // namespace
}  // namespace farswap::server
