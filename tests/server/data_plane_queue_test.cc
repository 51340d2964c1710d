// The data plane's run-to-completion path and its per-connection queue, in
// process over the real TCP transport: requests that would block (stores
// into a full pool while writeback is stuck) go to the workers, everything
// behind them on the same connection waits its turn, replies keep their
// order, a connection whose queue passes its bound stops being read, and
// other connections carry on. Writeback is held by a block device whose
// writes wait for the test to open a gate; the test learns that frames are
// queued from the "DataPlane::Queued" sync point, never by sleeping. Runs
// under ThreadSanitizer in CI.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/block_device.h"
#include "farswap/server/data_plane.h"
#include "farswap/transport/rpc_channel.h"
#include "gated_block_device.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using ::farswap::testing::GatedBlockDevice;
using testing::Payload;
using testing::ScopedSyncPoints;
using transport::FrameHeader;
using transport::FrameView;
using transport::IncomingMessage;
using transport::Opcode;
using transport::OutgoingMessage;
using transport::RpcChannel;

constexpr absl::Duration kTimeout = absl::Seconds(60);

// Replies collects a connection's replies in arrival order (they arrive on
// the client's I/O thread) and lets the test wait for a number of them.
class Replies {
 public:
  transport::ReplyCallback Slot(size_t index) {
    return [this, index](absl::StatusOr<IncomingMessage> r) {
      MutexLock l(&mu_);
      order_.push_back(index);
      results_.emplace_back(index, std::move(r));
      cv_.SignalAll();
    };
  }
  void WaitFor(size_t n) {
    MutexLock l(&mu_);
    while (order_.size() < n) cv_.Wait(&mu_);
  }
  size_t count() {
    MutexLock l(&mu_);
    return order_.size();
  }
  std::vector<size_t> order() {
    MutexLock l(&mu_);
    return order_;
  }
  // result returns the reply to request `index` (which must have arrived).
  absl::StatusOr<IncomingMessage> result(size_t index) {
    MutexLock l(&mu_);
    for (auto& [i, r] : results_) {
      if (i == index) return r;
    }
    return absl::NotFoundError("no reply");
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<size_t> order_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<size_t, absl::StatusOr<IncomingMessage>>> results_ ABSL_GUARDED_BY(mu_);
};

// QueuedFrames counts frames the data plane queued for its workers (the
// "DataPlane::Queued" sync point) and lets the test wait for a condition.
// It lives as long as the fixture: a hit may come from a server thread
// until the transport is shut down.
class QueuedFrames {
 public:
  QueuedFrames() {
    SyncPoints::Set("DataPlane::Queued", [this] {
      MutexLock l(&mu_);
      ++count_;
      cv_.SignalAll();
    });
    SyncPoints::Set("DataPlane::Drained", [this] {
      MutexLock l(&mu_);
      ++drained_;
      cv_.SignalAll();
    });
  }
  // WaitForDrained waits until a connection's queue has drained n times
  // (its requests run on the I/O thread again).
  void WaitForDrained(uint64_t n) {
    MutexLock l(&mu_);
    while (drained_ < n) cv_.Wait(&mu_);
  }
  void WaitForCount(uint64_t n) {
    MutexLock l(&mu_);
    while (count_ < n) cv_.Wait(&mu_);
  }
  // WaitUntil waits until `pred` holds after some queued frame.
  void WaitUntil(const std::function<bool()>& pred) {
    MutexLock l(&mu_);
    while (!pred()) cv_.Wait(&mu_);
  }

 private:
  Mutex mu_;
  CondVar cv_;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t drained_ ABSL_GUARDED_BY(mu_) = 0;
};

class DataPlaneQueueTest : public ::testing::Test {
 protected:
  void Start(DataPlaneOptions options) {
    queued_ = std::make_unique<QueuedFrames>();
    // The read cache is off: these tests follow loads of written-back pages
    // to the workers (a cache hit would be answered on the I/O thread).
    auto store = PageStore::Create(
        {.limits = {.pool_limit_bytes = 64 * 1024, .high_watermark = 0.8, .low_watermark = 0.6},
         .backing = &disk_,
         .disk_read_cache_bytes = 0});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto t = transport::CreateTransport("tcp", {.io_threads = 2});
    ASSERT_TRUE(t.ok());
    transport_ = std::move(*t);
    server_ = std::make_unique<DataPlaneServer>(store_.get(), &tenants_, transport_.get(), options);
    ASSERT_TRUE(server_->Listen("127.0.0.1:0").ok());
    auto session = tenants_.Attach("default", "");
    ASSERT_TRUE(session.ok());
    session_ = *session;
  }
  void TearDown() override {
    disk_.OpenGate();  // whatever the test did, let the workers finish
    if (server_) server_->Shutdown();
    if (transport_) transport_->Shutdown();
  }
  std::unique_ptr<RpcChannel> Connected() {
    auto ch = RpcChannel::Connect(*transport_, server_->address());
    EXPECT_TRUE(ch.ok()) << ch.status();
    const std::string& token = session_.token;
    auto hello = (*ch)
                     ->Call({.opcode = Opcode::kHello},
                            std::vector<uint8_t>(token.begin(), token.end()), kTimeout)
                     .get();
    EXPECT_TRUE(hello.ok()) << hello.status();
    return std::move(*ch);
  }
  // FillPool stores pages kFirstFiller.. straight into the store until a
  // store would have to wait for writeback (which the closed gate blocks);
  // returns how many it stored.
  uint64_t FillPool() {
    uint64_t n = 0;
    for (;; ++n) {
      EXPECT_LT(n, 1000u) << "the pool never filled";
      if (n >= 1000) return n;
      const uint64_t page = kFirstFiller + n;
      std::vector<uint8_t> data = Payload(page, 3000);
      std::optional<absl::Status> s =
          store_->TryStore(session_.tenant_index, page, {.payload = data, .checksum = page});
      if (!s.has_value()) return n;
      EXPECT_TRUE(s->ok()) << *s;
    }
  }

  // WrittenBack is the split WriteBackSome leaves: pages on disk and pages
  // still in the pool.
  struct WrittenBack {
    std::vector<uint64_t> on_disk, in_pool;
  };
  // WriteBackSome stores pages 0..80 (Payload(p, 3000), checksum p) with the
  // gate open, lets writeback move some of them to disk and returns where
  // each one is. A pass may leave nothing in the pool (how much it writes
  // depends on when it ran), so page 80 is stored after waiting for the
  // passes to end: the pool is then at or below its low watermark, and one
  // page does not take it past the high watermark, which is what starts a
  // pass — page 80 stays in the pool.
  WrittenBack WriteBackSome() {
    const uint32_t tenant = session_.tenant_index;
    for (uint64_t p = 0; p <= 80; ++p) {
      if (p == 80) store_->QuiesceWriteback();
      std::vector<uint8_t> data = Payload(p, 3000);
      EXPECT_TRUE(store_->Store(tenant, p, {.payload = data, .checksum = p}).ok()) << p;
    }
    WrittenBack where;  // TryLoad has no effect: it only tells
    for (uint64_t p = 0; p <= 80; ++p) {
      (store_->TryLoad(tenant, p).has_value() ? where.in_pool : where.on_disk).push_back(p);
    }
    return where;
  }

  static constexpr uint64_t kFirstFiller = 1000;

  ScopedSyncPoints sync_points_;  // destroyed last: clears the sync points
  std::unique_ptr<QueuedFrames> queued_;
  GatedBlockDevice disk_{4096};
  TenantRegistry tenants_ = TenantRegistry::Default();
  Session session_;
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<DataPlaneServer> server_;
};

OutgoingMessage StoreMessage(uint64_t page, const std::vector<uint8_t>& data, uint64_t checksum) {
  OutgoingMessage m;
  m.header = {.opcode = Opcode::kStore,
              .page = page,
              .codec = transport::Codec::kLz4,
              .checksum = checksum};
  m.payload.push_back(data);
  return m;
}

OutgoingMessage Message(Opcode opcode, uint64_t page) {
  OutgoingMessage m;
  m.header = {.opcode = opcode, .page = page};
  return m;
}

void ExpectLoaded(const absl::StatusOr<IncomingMessage>& r, const std::vector<uint8_t>& data,
                  uint64_t checksum, const std::string& what) {
  ASSERT_TRUE(r.ok()) << what << ": " << r.status();
  EXPECT_EQ(r->header.status, absl::StatusCode::kOk) << what;
  EXPECT_EQ(r->header.checksum, checksum) << what;
  EXPECT_TRUE(r->payload == data) << what << ": payload differs";
}

// One connection: a STORE that must wait for writeback goes to a worker;
// the LOADs, STOREs and PING sent behind it (some of which could have run
// on the I/O thread) wait for it, take effect in order, and are answered
// in order — each LOAD sees the version stored just before it.
TEST_F(DataPlaneQueueTest, RequestsBehindABlockedStoreKeepTheirOrder) {
  Start({.workers = 2});
  auto ch = Connected();
  const uint64_t fillers = FillPool();
  ASSERT_GT(fillers, 2u);
  const std::vector<uint8_t> a1 = Payload(1, 2000), a2 = Payload(2, 2500), b1 = Payload(3, 1500);
  const std::vector<uint8_t> filler = Payload(kFirstFiller, 3000);
  std::vector<OutgoingMessage> requests;
  requests.push_back(StoreMessage(1, a1, 11));               // 0: would block: the pool is full
  requests.push_back(Message(Opcode::kLoad, 1));             // 1: sees a1
  requests.push_back(StoreMessage(1, a2, 12));               // 2
  requests.push_back(Message(Opcode::kLoad, 1));             // 3: sees a2
  requests.push_back(StoreMessage(2, b1, 21));               // 4: another page
  requests.push_back(Message(Opcode::kLoad, 2));             // 5: sees b1
  requests.push_back(Message(Opcode::kLoad, kFirstFiller));  // 6: in the pool, yet waits
  requests.push_back(Message(Opcode::kPing, 0));             // 7
  Replies replies;
  std::vector<transport::ReplyCallback> done;
  for (size_t i = 0; i < requests.size(); ++i) done.push_back(replies.Slot(i));
  ch->CallMany(requests, kTimeout, std::move(done));

  queued_->WaitForCount(requests.size());  // the store, and all seven behind it
  EXPECT_EQ(replies.count(), 0u) << "nothing may overtake the blocked store";
  DataPlaneStats st = server_->stats();
  EXPECT_EQ(st.requests_to_workers, requests.size());
  EXPECT_EQ(st.read_pauses, 0u);  // far below the default bound

  disk_.OpenGate();
  replies.WaitFor(requests.size());
  std::vector<size_t> expected_order(requests.size());
  for (size_t i = 0; i < expected_order.size(); ++i) expected_order[i] = i;
  EXPECT_EQ(replies.order(), expected_order);
  for (size_t i : {0, 2, 4}) {
    auto r = replies.result(i);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->header.status, absl::StatusCode::kOk) << i;
  }
  ExpectLoaded(replies.result(1), a1, 11, "load after the first store");
  ExpectLoaded(replies.result(3), a2, 12, "load after the second store");
  ExpectLoaded(replies.result(5), b1, 21, "load of the other page");
  ExpectLoaded(replies.result(6), filler, kFirstFiller, "load of a pooled page");
  EXPECT_TRUE(replies.result(7).ok());
  EXPECT_EQ(server_->stats().queued_requests, 0u);

  // Once the queue has drained, the next request runs on the I/O thread.
  queued_->WaitForDrained(1);
  const uint64_t to_workers = server_->stats().requests_to_workers;
  auto ping = ch->Call({.opcode = Opcode::kPing}, {}, kTimeout).get();
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(server_->stats().requests_to_workers, to_workers);
  auto load = ch->Call({.opcode = Opcode::kLoad, .page = 1}, {}, kTimeout).get();
  ExpectLoaded(load, a2, 12, "load after the queue drained");

  // Pages written back meanwhile are read on a worker, and read back right.
  store_->QuiesceWriteback();
  ASSERT_GT(store_->GetStats().pages_on_disk, 0u);
  for (uint64_t p = kFirstFiller; p < kFirstFiller + fillers; ++p) {
    auto r = ch->Call({.opcode = Opcode::kLoad, .page = p}, {}, kTimeout).get();
    ExpectLoaded(r, Payload(p, 3000), p, "filler " + std::to_string(p));
  }
  EXPECT_GT(server_->stats().requests_to_workers, to_workers) << "no load read the disk";
  EXPECT_GT(store_->GetStats().backing_reads, 0u);
}

// A BATCH whose third entry would block: the entries before it run on the
// I/O thread at once, the rest on a worker, and the reply carries every
// entry in order.
TEST_F(DataPlaneQueueTest, BatchThatBlocksPartWayKeepsEntryOrder) {
  Start({.workers = 2});
  auto ch = Connected();
  ASSERT_GT(FillPool(), 0u);
  const std::vector<uint8_t> big = Payload(6, 3500);
  const auto fill = transport::EncodeU64Payload(0x0101010101010101ull);
  const std::vector<uint8_t> fill_bytes(fill.begin(), fill.end());
  transport::BatchEncoder batch;
  std::span<const uint8_t> fill_piece(fill_bytes), big_piece(big);
  ASSERT_TRUE(batch
                  .Add({.opcode = Opcode::kStore,  // 0: same-filled, needs no pool memory
                        .flags = transport::kFlagSameFilled,
                        .page = 5,
                        .checksum = 55},
                       {&fill_piece, 1})
                  .ok());
  ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = kFirstFiller}).ok());  // 1
  ASSERT_TRUE(batch
                  .Add({.opcode = Opcode::kStore,  // 2: would block
                        .page = 6,
                        .codec = transport::Codec::kLz4,
                        .checksum = 66},
                       {&big_piece, 1})
                  .ok());
  ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = 6}).ok());  // 3
  ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = 5}).ok());  // 4
  ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = 7}).ok());  // 5: never stored
  std::vector<uint8_t> payload;
  for (auto piece : batch.pieces()) payload.insert(payload.end(), piece.begin(), piece.end());
  auto reply = ch->Call(batch.Header(0), payload, kTimeout);

  queued_->WaitForCount(1);
  // Entries 0 and 1 ran on the I/O thread already; entry 2 waits.
  auto five = store_->Load(session_.tenant_index, 5);
  ASSERT_TRUE(five.ok()) << five.status();
  EXPECT_TRUE(five->same_filled);
  EXPECT_EQ(store_->Load(session_.tenant_index, 6).status().code(), absl::StatusCode::kNotFound);

  disk_.OpenGate();
  auto r = reply.get();
  ASSERT_TRUE(r.ok()) << r.status();
  auto entries = transport::DecodeBatch({r->header, r->payload});
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 6u);
  const uint64_t pages[] = {5, kFirstFiller, 6, 6, 5};  // error replies carry no page
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ((*entries)[i].header.page, pages[i]) << i;
  EXPECT_EQ((*entries)[0].header.status, absl::StatusCode::kOk);
  EXPECT_EQ((*entries)[1].header.checksum, kFirstFiller);
  EXPECT_TRUE(std::vector<uint8_t>((*entries)[1].payload.begin(), (*entries)[1].payload.end()) ==
              Payload(kFirstFiller, 3000));
  EXPECT_EQ((*entries)[2].header.status, absl::StatusCode::kOk);
  EXPECT_EQ((*entries)[3].header.checksum, 66u);
  EXPECT_TRUE(std::vector<uint8_t>((*entries)[3].payload.begin(), (*entries)[3].payload.end()) ==
              big);
  EXPECT_TRUE((*entries)[4].header.same_filled());
  EXPECT_EQ((*entries)[4].header.checksum, 55u);
  EXPECT_EQ((*entries)[5].header.status, absl::StatusCode::kNotFound);
}

// The in-flight bound: frames pile up behind a store stuck on writeback;
// once 8 wait, the node stops reading that connection, so its backlog stays
// within the bound plus what one read had already brought in, while a
// second connection is served meanwhile. When writeback moves again every
// frame is answered, in order, intact.
TEST_F(DataPlaneQueueTest, PilingConnectionIsPausedAndOthersCarryOn) {
  constexpr uint64_t kBound = 8;
  Start({.workers = 2, .max_queued_requests_per_connection = kBound});
  auto slow = Connected();
  ASSERT_GT(FillPool(), 1u);

  // 1500 PINGs of 4 KiB (6 MiB: under the client's own output-queue bound)
  // behind one STORE that must wait for writeback.
  constexpr size_t kPings = 1500;
  const std::vector<uint8_t> stored = Payload(1, 2000);
  std::vector<std::vector<uint8_t>> ping_payloads;
  for (size_t i = 0; i < kPings; ++i) ping_payloads.push_back(Payload(100 + i, 4096));
  std::vector<OutgoingMessage> requests;
  requests.push_back(StoreMessage(1, stored, 1));
  for (size_t i = 0; i < kPings; ++i) {
    OutgoingMessage m = Message(Opcode::kPing, 0);
    m.payload.push_back(ping_payloads[i]);
    requests.push_back(std::move(m));
  }
  Replies replies;
  std::vector<transport::ReplyCallback> done;
  for (size_t i = 0; i < requests.size(); ++i) done.push_back(replies.Slot(i));
  slow->CallMany(requests, kTimeout, std::move(done));

  queued_->WaitUntil([&] { return server_->stats().read_pauses > 0; });

  // Another connection is read and answered while the first is paused.
  auto other = Connected();
  auto load = other->Call({.opcode = Opcode::kLoad, .page = kFirstFiller}, {}, kTimeout).get();
  ExpectLoaded(load, Payload(kFirstFiller, 3000), kFirstFiller, "other connection's load");
  auto ping = other->Call({.opcode = Opcode::kPing}, {1, 2, 3}, kTimeout).get();
  ASSERT_TRUE(ping.ok()) << ping.status();
  auto inval =
      other->Call({.opcode = Opcode::kInvalidate, .page = kFirstFiller + 1}, {}, kTimeout).get();
  ASSERT_TRUE(inval.ok()) << inval.status();
  EXPECT_EQ(inval->header.status, absl::StatusCode::kOk);
  EXPECT_EQ(replies.count(), 0u) << "the first connection's frames all wait for its store";

  // Bounded: the queue passed 8 by at most one read's frames (a read is at
  // most kMaxFrameSize bytes; each PING frame is 4136).
  const DataPlaneStats st = server_->stats();
  constexpr uint64_t kOneRead = transport::kMaxFrameSize / (transport::kFrameHeaderSize + 4096) + 1;
  EXPECT_GE(st.queued_requests_peak, kBound);
  EXPECT_LE(st.queued_requests_peak, kBound + kOneRead);
  EXPECT_LT(st.queued_requests, kPings / 2);
  EXPECT_EQ(st.read_pauses, 1u);

  disk_.OpenGate();
  replies.WaitFor(requests.size());
  std::vector<size_t> order = replies.order();
  ASSERT_EQ(order.size(), requests.size());
  for (size_t i = 0; i < order.size(); ++i) ASSERT_EQ(order[i], i) << "reply out of order";
  auto store_reply = replies.result(0);
  ASSERT_TRUE(store_reply.ok()) << store_reply.status();
  EXPECT_EQ(store_reply->header.status, absl::StatusCode::kOk);
  for (size_t i = 0; i < kPings; ++i) {
    auto r = replies.result(i + 1);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    ASSERT_TRUE(r->payload == ping_payloads[i]) << "ping " << i;
  }
  EXPECT_EQ(server_->stats().queued_requests, 0u);
  EXPECT_GE(server_->stats().read_pauses, 1u);
  // Once the worker empties the queue, the rest run on the I/O thread.
  EXPECT_GE(server_->stats().requests_to_workers, kBound);
  EXPECT_LE(server_->stats().requests_to_workers, requests.size());
}

// LOADs of written-back pages queued behind a blocked store: each run of
// consecutive LOADs is read by several workers at once, yet every reply
// leaves in order, and a STORE between two runs takes effect between them.
TEST_F(DataPlaneQueueTest, QueuedLoadsOfWrittenBackPagesAreAnsweredInOrder) {
  disk_.OpenGate();
  Start({.workers = 3});
  auto ch = Connected();
  std::vector<uint64_t> on_disk = WriteBackSome().on_disk;
  ASSERT_GE(on_disk.size(), 6u) << "writeback should have moved pages to disk";
  on_disk.resize(6);
  disk_.CloseGate();
  ASSERT_GT(FillPool(), 0u);

  const std::vector<uint8_t> blocked = Payload(500, 2000), newer = Payload(501, 1000);
  std::vector<OutgoingMessage> requests;
  requests.push_back(StoreMessage(500, blocked, 500));  // 0: blocks
  for (size_t k = 0; k < 5; ++k) requests.push_back(Message(Opcode::kLoad, on_disk[k]));  // 1-5
  requests.push_back(StoreMessage(on_disk[0], newer, 7));                                 // 6
  requests.push_back(Message(Opcode::kLoad, on_disk[0]));  // 7: sees 6
  requests.push_back(Message(Opcode::kLoad, on_disk[5]));  // 8
  requests.push_back(Message(Opcode::kLoad, on_disk[1]));  // 9
  Replies replies;
  std::vector<transport::ReplyCallback> done;
  for (size_t i = 0; i < requests.size(); ++i) done.push_back(replies.Slot(i));
  ch->CallMany(requests, kTimeout, std::move(done));
  queued_->WaitForCount(requests.size());
  disk_.OpenGate();
  replies.WaitFor(requests.size());

  std::vector<size_t> expected_order(requests.size());
  for (size_t i = 0; i < expected_order.size(); ++i) expected_order[i] = i;
  EXPECT_EQ(replies.order(), expected_order);
  for (size_t i : {0, 6}) {
    auto r = replies.result(i);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->header.status, absl::StatusCode::kOk) << i;
  }
  for (size_t k = 0; k < 5; ++k) {
    const uint64_t p = on_disk[k];
    ExpectLoaded(replies.result(1 + k), Payload(p, 3000), p, "disk page " + std::to_string(p));
  }
  ExpectLoaded(replies.result(7), newer, 7, "load after the store between the runs");
  ExpectLoaded(replies.result(8), Payload(on_disk[5], 3000), on_disk[5], "second run");
  ExpectLoaded(replies.result(9), Payload(on_disk[1], 3000), on_disk[1], "second run, again");
  EXPECT_EQ(server_->stats().load_runs, 2u);  // 1-5 and 7-9
  EXPECT_EQ(server_->stats().queued_requests, 0u);
}

// A BATCH in which some entries fail: each fails alone, with its own code,
// and the others take effect (run on the I/O thread: nothing blocks here).
TEST_F(DataPlaneQueueTest, BatchEntryFailuresStayInTheirEntry) {
  disk_.OpenGate();
  Start({.workers = 2});
  auto ch = Connected();
  store_->SetTenantQuota(session_.tenant_index, 2);
  const std::vector<uint8_t> v1 = Payload(1, 900), v2 = Payload(2, 1200), v3 = Payload(3, 700);
  std::span<const uint8_t> p1(v1), p2(v2), p3(v3);
  transport::BatchEncoder batch;
  auto store = [](uint64_t page, uint64_t checksum) {
    return FrameHeader{.opcode = Opcode::kStore,
                       .page = page,
                       .codec = transport::Codec::kLz4,
                       .checksum = checksum};
  };
  ASSERT_TRUE(batch.Add(store(1, 1), {&p1, 1}).ok());                 // 0: ok
  ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = 9}).ok());  // 1: NOT_FOUND
  ASSERT_TRUE(batch.Add(store(2, 2), {&p2, 1}).ok());                 // 2: ok (quota: 2 pages)
  ASSERT_TRUE(batch.Add(store(3, 3), {&p3, 1}).ok());                 // 3: over quota
  ASSERT_TRUE(batch.Add(store(1, 4), {&p3, 1}).ok());                 // 4: a replace: ok
  ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = 1}).ok());  // 5: sees entry 4
  ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = 2}).ok());  // 6
  std::vector<uint8_t> payload;
  for (auto piece : batch.pieces()) payload.insert(payload.end(), piece.begin(), piece.end());
  auto r = ch->Call(batch.Header(0), payload, kTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  auto entries = transport::DecodeBatch({r->header, r->payload});
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 7u);
  const absl::StatusCode codes[] = {absl::StatusCode::kOk, absl::StatusCode::kNotFound,
                                    absl::StatusCode::kOk, absl::StatusCode::kResourceExhausted,
                                    absl::StatusCode::kOk, absl::StatusCode::kOk,
                                    absl::StatusCode::kOk};
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ((*entries)[i].header.status, codes[i]) << i;
  EXPECT_EQ((*entries)[5].header.checksum, 4u);
  EXPECT_TRUE(std::vector<uint8_t>((*entries)[5].payload.begin(), (*entries)[5].payload.end()) ==
              v3);
  EXPECT_EQ((*entries)[6].header.checksum, 2u);
  EXPECT_TRUE(std::vector<uint8_t>((*entries)[6].payload.begin(), (*entries)[6].payload.end()) ==
              v2);
  EXPECT_EQ(server_->stats().requests_to_workers, 0u);
  EXPECT_EQ(server_->stats().requests, 7u);  // the entries (HELLO is not counted)
}

// A BATCH of LOADs of written-back pages (the region's prefetch batches):
// on the worker, each run of consecutive LOAD entries goes to one
// PageStore::LoadBatch, so their disk reads are in flight together instead
// of one after the other; a STORE entry between two runs takes effect
// between them, and the reply lists every entry in order with its own page.
TEST_F(DataPlaneQueueTest, BatchLoadsOfWrittenBackPagesAreReadTogetherRunByRun) {
  disk_.OpenGate();
  Start({.workers = 2});
  auto ch = Connected();
  auto [on_disk, in_pool] = WriteBackSome();
  ASSERT_GE(on_disk.size(), 6u) << "writeback should have moved pages to disk";
  ASSERT_GE(in_pool.size(), 1u);

  const std::vector<uint8_t> newer = Payload(900, 1000);
  std::span<const uint8_t> newer_piece(newer);
  transport::BatchEncoder batch;
  std::vector<uint64_t> loads;  // the page each entry loads (0 for the store)
  auto add_load = [&](uint64_t page) {
    ASSERT_TRUE(batch.Add({.opcode = Opcode::kLoad, .page = page}).ok());
    loads.push_back(page);
  };
  add_load(on_disk[0]);  // 0-4: run 1, a pool page inside it
  add_load(on_disk[1]);
  add_load(in_pool[0]);
  add_load(on_disk[2]);
  add_load(on_disk[3]);
  ASSERT_TRUE(batch
                  .Add({.opcode = Opcode::kStore,
                        .page = on_disk[0],
                        .codec = transport::Codec::kLz4,
                        .checksum = 77},
                       {&newer_piece, 1})
                  .ok());  // 5: replaces on_disk[0]
  loads.push_back(0);
  add_load(on_disk[0]);  // 6-8: run 2; 6 sees entry 5
  add_load(on_disk[4]);
  add_load(on_disk[5]);
  std::vector<uint8_t> payload;
  for (auto piece : batch.pieces()) payload.insert(payload.end(), piece.begin(), piece.end());
  const uint64_t runs_before = server_->stats().load_runs;
  auto r = ch->Call(batch.Header(0), payload, kTimeout).get();
  ASSERT_TRUE(r.ok()) << r.status();
  auto entries = transport::DecodeBatch({r->header, r->payload});
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), loads.size());
  for (size_t i = 0; i < loads.size(); ++i) {
    const FrameView& e = (*entries)[i];
    ASSERT_EQ(e.header.status, absl::StatusCode::kOk) << i;
    if (i == 5) continue;  // the store
    const bool replaced = i == 6;
    EXPECT_EQ(e.header.checksum, replaced ? 77u : loads[i]) << i;
    EXPECT_TRUE(std::vector<uint8_t>(e.payload.begin(), e.payload.end()) ==
                (replaced ? newer : Payload(loads[i], 3000)))
        << "entry " << i << " (page " << loads[i] << ")";
  }
  // The frame went to a worker at entry 0 (its page is on disk); there the
  // two runs of LOADs were read with one LoadBatch each.
  EXPECT_EQ(server_->stats().load_runs - runs_before, 2u);
  EXPECT_EQ(server_->stats().requests_to_workers, 1u);
}

}  // namespace
}  // namespace farswap::server
