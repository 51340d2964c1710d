// The whole farswap::Client data path against in-process memory nodes (a
// page store, the data plane and the TCP transport on loopback, no gRPC):
// the control-plane step is a fake NodeAttacher that opens sessions in the
// nodes' tenant registries directly. gRPC-free, so ThreadSanitizer runs it.
//
// It pins the batched path: pages bound for one node leave as BATCH frames
// (more than one frame when a batch passes kMaxBatchEntries), a failure of
// one entry fails that page only, and many threads mixing batches, single
// calls and invalidations of their own pages always read back what they
// last wrote.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "farswap/client/client.h"
#include "farswap/common/mutex.h"
#include "farswap/common/page_file.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/data_plane.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "farswap/transport/transport.h"
#include "gated_block_device.h"
#include "sync_point_counter.h"
#include "test_transport.h"

namespace farswap {
namespace {

// InProcessNode is one memory node without its gRPC service.
struct InProcessNode {
  server::TenantRegistry tenants = server::TenantRegistry::Default();
  std::unique_ptr<server::PageStore> store;
  std::unique_ptr<transport::Transport> transport;
  std::unique_ptr<server::DataPlaneServer> data_plane;

  static std::unique_ptr<InProcessNode> Start(server::PageStoreOptions store_options = {},
                                              int workers = 1, int io_threads = 1) {
    auto n = std::make_unique<InProcessNode>();
    auto store = server::PageStore::Create(store_options);
    EXPECT_TRUE(store.ok()) << store.status();
    n->store = std::move(*store);
    auto t = transport::CreateTransport(testing::TestTransport(), {.io_threads = io_threads});
    EXPECT_TRUE(t.ok()) << t.status();
    n->transport = std::move(*t);
    n->data_plane =
        std::make_unique<server::DataPlaneServer>(n->store.get(), &n->tenants, n->transport.get(),
                                                  server::DataPlaneOptions{.workers = workers});
    EXPECT_TRUE(n->data_plane->Listen("127.0.0.1:0").ok());
    return n;
  }
  ~InProcessNode() {
    data_plane->Shutdown();
    transport->Shutdown();
  }
};

// FakeAttacher maps a node's name ("node-0") to its in-process node and
// opens the session in that node's registry, as the gRPC Attach would.
class FakeAttacher final : public NodeAttacher {
 public:
  explicit FakeAttacher(std::map<std::string, InProcessNode*> nodes) : nodes_(std::move(nodes)) {}
  absl::StatusOr<Attachment> Attach(const std::string& address, const std::string& tenant_id,
                                    const std::string& secret, const std::string&,
                                    absl::Duration) override {
    auto it = nodes_.find(address);
    if (it == nodes_.end()) return absl::UnavailableError(address + " is not a node");
    absl::StatusOr<server::Session> s = it->second->tenants.Attach(tenant_id, secret);
    if (!s.ok()) return s.status();
    return Attachment{.session_token = s->token,
                      .data_addr = it->second->data_plane->address(),
                      .node_id = address};
  }

 private:
  const std::map<std::string, InProcessNode*> nodes_;
};

// Page fills page `no` at `version` with a pattern that compresses a little.
void Page(uint64_t no, uint64_t version, uint8_t* out) {
  uint64_t x = no * 0x9E3779B97F4A7C15ull + version * 0x100000001b3ull + 1;
  for (size_t i = 0; i < kPageSize; i += 8) {
    if (i % 64 == 0) x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const uint64_t word = (i % 128 < 64) ? x : no;
    std::memcpy(out + i, &word, 8);
  }
}

class ClientDataPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::map<std::string, InProcessNode*> by_name;
    for (int i = 0; i < 3; ++i) {
      nodes_.push_back(InProcessNode::Start({}, /*workers=*/1, node_io_threads_));
      by_name["node-" + std::to_string(i)] = nodes_.back().get();
    }
    ClientOptions o;
    for (const auto& [name, node] : by_name) o.nodes.push_back(name);
    o.replicas = 2;
    o.pages_per_slab = 16;             // many slabs, so every node gets pages
    o.op_timeout = absl::Seconds(30);  // TSan is slow; nothing here may time out
    o.health_interval = absl::Milliseconds(200);
    auto c = Client::Connect(o, std::make_unique<FakeAttacher>(by_name));
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }
  void TearDown() override {
    client_.reset();
    nodes_.clear();
  }
  // StoreNewVersionsAndDropSome stores the next version of pages [base,
  // base + version.size()) (counting `version` up; `buf` holds them), then
  // drops one node's copy of every third page behind the client's back, as
  // a node that lost them would (the node is picked by page and round; it
  // may hold no copy of that page). Returns how many calls failed.
  int StoreNewVersionsAndDropSome(uint64_t base, int round, std::vector<uint64_t>& version,
                                  std::vector<uint8_t>& buf) {
    int failed = 0;
    std::vector<PageWrite> batch;
    for (uint64_t i = 0; i < version.size(); ++i) {
      Page(base + i, ++version[i], buf.data() + i * kPageSize);
      batch.push_back({base + i, buf.data() + i * kPageSize});
    }
    for (const absl::Status& s : client_->StoreBatch(batch)) failed += !s.ok();
    for (uint64_t i = round % 3; i < version.size(); i += 3) {
      failed += !nodes_[(base + i + round) % nodes_.size()]->store->Invalidate(0, base + i).ok();
    }
    return failed;
  }
  // ExpectOnlyLastVersions checks that no node holds a version of page
  // `base + i` other than versions[i], and (when `copies` > 0) that that
  // many nodes hold it.
  void ExpectOnlyLastVersions(uint64_t base, const std::vector<uint64_t>& versions, int copies) {
    for (uint64_t i = 0; i < versions.size(); ++i) {
      const uint64_t page = base + i;
      uint8_t want[kPageSize];
      Page(page, versions[i], want);
      int held_by = 0;
      for (const auto& node : nodes_) {
        absl::StatusOr<server::LoadedPage> held = node->store->Load(0, page);
        if (!held.ok()) continue;  // no copy there
        ++held_by;
        EXPECT_EQ(held->checksum, XXH3_64bits(want, kPageSize))
            << "page " << page << ": a node holds a version other than the last stored";
      }
      if (copies > 0) {
        EXPECT_EQ(held_by, copies) << "page " << page;
      }
    }
  }
  uint64_t NodeStores() const {
    uint64_t n = 0;
    for (const auto& node : nodes_) n += node->store->GetStats().stores;
    return n;
  }

  // node_io_threads_: each node's transport loops; set before SetUp.
  int node_io_threads_ = 1;
  std::vector<std::unique_ptr<InProcessNode>> nodes_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientDataPathTest, BatchesPackPagesIntoFewFramesAndReadBack) {
  // 700 pages at R=2 over 3 nodes: each node gets ~467 pages, more than one
  // BATCH frame's worth (kMaxBatchEntries = 256).
  constexpr uint64_t kPages = 700;
  std::vector<uint8_t> data(kPages * kPageSize);
  std::vector<PageWrite> writes;
  for (uint64_t p = 0; p < kPages; ++p) {
    Page(p, 1, data.data() + p * kPageSize);
    writes.push_back({p, data.data() + p * kPageSize});
  }
  std::vector<size_t> wire(kPages, 0);
  std::vector<absl::Status> stored = client_->StoreBatch(writes, SnapshotMode::kCopy, wire.data());
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(stored[p].ok()) << stored[p];
    ASSERT_GT(wire[p], 0u);
    ASSERT_LE(wire[p], kPageSize);
  }
  EXPECT_EQ(NodeStores(), 2 * kPages);  // every page on two replicas
  ClientStats st = client_->stats();
  uint64_t frames = 0;
  for (const NodeStats& n : st.nodes) {
    frames += n.requests;
    // the carrier this variant is for (test_transport.h)
    EXPECT_THAT(n.carrier, ::testing::MatchesRegex(testing::TestCarrierPattern())) << n.address;
  }
  // One BATCH per node per 256 pages (plus none per page): far fewer frames
  // than pages.
  EXPECT_LE(frames, 3u * 3u) << "pages were not batched";

  std::vector<uint8_t> out(kPages * kPageSize);
  std::vector<PageRead> reads;
  for (uint64_t p = 0; p < kPages; ++p) reads.push_back({p, out.data() + p * kPageSize});
  std::vector<absl::Status> loaded = client_->LoadBatch(reads);
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_TRUE(loaded[p].ok()) << loaded[p];
  EXPECT_EQ(std::memcmp(out.data(), data.data(), data.size()), 0);
}

TEST_F(ClientDataPathTest, AFailedEntryFailsOnlyThatPage) {
  constexpr uint64_t kPages = 64;
  std::vector<uint8_t> data(kPages * kPageSize);
  std::vector<PageWrite> writes;
  for (uint64_t p = 0; p < kPages; ++p) {
    Page(p, 1, data.data() + p * kPageSize);
    writes.push_back({p, data.data() + p * kPageSize});
  }
  for (const absl::Status& s : client_->StoreBatch(writes)) ASSERT_TRUE(s.ok()) << s;
  // Invalidate every eighth page behind the client's back on the node
  // side: the client still thinks it is present, so its LOAD goes out in
  // the same BATCH as its neighbours' and comes back NOT_FOUND from every
  // replica.
  for (uint64_t p = 0; p < kPages; p += 8) {
    for (auto& n : nodes_) ASSERT_TRUE(n->store->Invalidate(0, p).ok());
  }
  std::vector<uint8_t> out(kPages * kPageSize);
  std::vector<PageRead> reads;
  for (uint64_t p = 0; p < kPages; ++p) reads.push_back({p, out.data() + p * kPageSize});
  std::vector<absl::Status> loaded = client_->LoadBatch(reads);
  for (uint64_t p = 0; p < kPages; ++p) {
    if (p % 8 == 0) {
      EXPECT_EQ(loaded[p].code(), absl::StatusCode::kDataLoss) << p << ": " << loaded[p];
      continue;
    }
    ASSERT_TRUE(loaded[p].ok()) << p << ": " << loaded[p];
    ASSERT_EQ(std::memcmp(out.data() + p * kPageSize, data.data() + p * kPageSize, kPageSize), 0)
        << p;
  }
}

// The checksum is end to end: a replica that serves an older version of a
// page — intact, matching the checksum stored beside it — is refused as
// stale, because the client checks what it last stored, not what the node
// says. Both replicas are made stale behind the client's back (the old
// bytes put back under a higher version, as a node restored from an old
// snapshot or a bug in its version check would).
TEST_F(ClientDataPathTest, AnOlderIntactCopyIsRefusedAsStale) {
  constexpr uint64_t kPage = 5;
  std::vector<uint8_t> v1(kPageSize), v2(kPageSize), out(kPageSize);
  Page(kPage, 1, v1.data());
  Page(kPage, 2, v2.data());
  ASSERT_TRUE(client_->Store(kPage, v1.data()).ok());
  std::vector<std::pair<InProcessNode*, server::LoadedPage>> old;
  for (auto& n : nodes_) {
    absl::StatusOr<server::LoadedPage> p = n->store->Load(0, kPage);
    if (p.ok()) old.push_back({n.get(), *std::move(p)});
  }
  ASSERT_EQ(old.size(), 2u);
  ASSERT_TRUE(client_->Store(kPage, v2.data()).ok());
  ASSERT_TRUE(client_->Load(kPage, out.data()).ok());
  ASSERT_EQ(std::memcmp(out.data(), v2.data(), kPageSize), 0);
  // The old contents under v2's own version: what a node that missed v2
  // would serve. (A version the client has not reached yet would be a
  // store issued after the load, which the load may return.)
  absl::StatusOr<server::LoadedPage> current = old.front().first->store->Load(0, kPage);
  ASSERT_TRUE(current.ok()) << current.status();
  for (auto& [node, page] : old) {
    ASSERT_TRUE(node->store
                    ->Store(0, kPage,
                            {.payload = page.payload,
                             .codec = page.codec,
                             .checksum = page.checksum,
                             .same_filled = page.same_filled,
                             .fill = page.fill,
                             .version = current->version})
                    .ok());
  }
  std::fill(out.begin(), out.end(), 0xEE);
  absl::Status s = client_->Load(kPage, out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("stale copy"), std::string::npos) << s;
  EXPECT_EQ(out[0], 0xEE) << "a stale copy reached the caller's buffer";
  EXPECT_EQ(client_->stats().stale_copies, 2u);
}

TEST_F(ClientDataPathTest, ManyThreadsMixingBatchesAndSingleCallsReadTheirLastWrites) {
  constexpr int kThreads = 4;
  constexpr uint64_t kPagesPerThread = 96;
  constexpr int kRounds = 12;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      const uint64_t base = uint64_t(t) * 10000;
      std::vector<uint64_t> version(kPagesPerThread, 0);  // 0: not stored
      std::vector<uint8_t> buf(kPagesPerThread * kPageSize), out(kPagesPerThread * kPageSize);
      for (int round = 0; round < kRounds; ++round) {
        // Write a random subset: half by batch, half one by one.
        std::vector<PageWrite> batch;
        for (uint64_t i = 0; i < kPagesPerThread; ++i) {
          if (rng() % 3 == 0) continue;
          ++version[i];
          Page(base + i, version[i], buf.data() + i * kPageSize);
          if (rng() % 2 == 0) {
            batch.push_back({base + i, buf.data() + i * kPageSize});
          } else if (!client_->Store(base + i, buf.data() + i * kPageSize).ok()) {
            failures++;
          }
        }
        for (const absl::Status& s : client_->StoreBatch(batch)) failures += !s.ok();
        // Drop a few.
        for (uint64_t i = 0; i < kPagesPerThread; i += 17 + round) {
          if (!client_->Invalidate(base + i).ok()) failures++;
          version[i] = 0;
        }
        // Read everything back in one batch.
        std::vector<PageRead> reads;
        for (uint64_t i = 0; i < kPagesPerThread; ++i) {
          reads.push_back({base + i, out.data() + i * kPageSize});
        }
        std::vector<absl::Status> got = client_->LoadBatch(reads);
        for (uint64_t i = 0; i < kPagesPerThread; ++i) {
          if (version[i] == 0) {
            failures += got[i].code() != absl::StatusCode::kNotFound;
            continue;
          }
          uint8_t want[kPageSize];
          Page(base + i, version[i], want);
          failures += !got[i].ok() || std::memcmp(out.data() + i * kPageSize, want, kPageSize) != 0;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(client_->stats().checksum_failures, 0u);
}

// Read repair under concurrency (runs under TSan). Threads store new
// versions of their own pages, drop one node's copy of some of them behind
// the client's back (a node that lost a page), and read everything back:
// each load that meets a missing copy is served by the other replica and
// stores the verified copy back, from whichever thread reads the reply,
// while the other threads do the same. Every repair is acknowledged (each
// page's operations are sequential, so no repair races a store), and no
// node ever holds a version older than the page's last store.
TEST_F(ClientDataPathTest, ThreadsRepairingMissingCopiesNeverPutBackAnOlderVersion) {
  constexpr int kThreads = 3;
  constexpr uint64_t kPagesPerThread = 48;
  constexpr int kRounds = 6;
  testing::SyncPointCounter answered("Client::RepairCopies:answered");
  std::atomic<int> failures{0};
  std::vector<std::vector<uint64_t>> versions(kThreads, std::vector<uint64_t>(kPagesPerThread));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t base = uint64_t(t) * 10000;
      std::vector<uint64_t>& version = versions[t];
      std::vector<uint8_t> buf(kPagesPerThread * kPageSize), out(kPagesPerThread * kPageSize);
      for (int round = 0; round < kRounds; ++round) {
        failures += StoreNewVersionsAndDropSome(base, round, version, buf);
        std::vector<PageRead> reads;
        for (uint64_t i = 0; i < kPagesPerThread; ++i) {
          reads.push_back({base + i, out.data() + i * kPageSize});
        }
        std::vector<absl::Status> got = client_->LoadBatch(reads);
        for (uint64_t i = 0; i < kPagesPerThread; ++i) {
          failures += !got[i].ok() || std::memcmp(out.data() + i * kPageSize,
                                                  buf.data() + i * kPageSize, kPageSize) != 0;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  const ClientStats s = client_->stats();
  EXPECT_GT(s.failovers, 0u) << "no load met a missing copy";
  EXPECT_EQ(s.copy_repairs_skipped, 0u);
  ASSERT_TRUE(answered.WaitFor(s.failovers, absl::Seconds(60)));
  EXPECT_EQ(answered.hits(), s.failovers);  // one repair per missing copy met
  const ClientStats after = client_->stats();
  EXPECT_EQ(after.copies_repaired, s.failovers);
  EXPECT_EQ(after.copy_repairs_failed, 0u);
  // A copy no load met may still be missing: no count of copies.
  for (int t = 0; t < kThreads; ++t) ExpectOnlyLastVersions(uint64_t(t) * 10000, versions[t], 0);
}

// Scrubbing under concurrency (runs under TSan). Threads store new
// versions of their own pages over and over and drop one node's copy of
// every third page behind the client's back, while another thread scrubs
// the whole range again and again: its repairs race the stores (checked
// and stood down, or refused by the node as older) and the drops. Once the
// writers are done one more scrub must leave every replica of every page
// holding exactly the last version stored: nothing older put back, nothing
// missing left.
TEST_F(ClientDataPathTest, ScrubsRacingStoresNeverPutBackAnOlderVersion) {
  constexpr int kThreads = 2;
  constexpr uint64_t kPagesPerThread = 64;
  constexpr int kRounds = 8;
  std::atomic<int> failures{0};
  std::atomic<bool> writing{true};
  std::vector<std::vector<uint64_t>> versions(kThreads, std::vector<uint64_t>(kPagesPerThread));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t base = uint64_t(t) * 10000;
      std::vector<uint64_t>& version = versions[t];
      std::vector<uint8_t> buf(kPagesPerThread * kPageSize);
      for (int round = 0; round < kRounds; ++round) {
        failures += StoreNewVersionsAndDropSome(base, round, version, buf);
      }
    });
  }
  int scrubs = 0;
  std::thread scrubber([&] {
    while (writing.load()) {
      absl::StatusOr<ScrubResult> r = client_->Scrub(0, 10000 + kPagesPerThread);
      failures += !r.ok();
      failures += r.ok() && r->unreadable_pages != 0;
      ++scrubs;
    }
  });
  for (auto& th : threads) th.join();
  writing = false;
  scrubber.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(scrubs, 0);
  // Quiet now: one more scrub repairs whatever the racing ones left.
  absl::StatusOr<ScrubResult> last = client_->Scrub(0, 10000 + kPagesPerThread);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->pages, kThreads * kPagesPerThread);
  EXPECT_EQ(last->copies_repaired, last->bad_copies);
  EXPECT_EQ(last->repairs_skipped + last->repairs_failed + last->unreadable_pages, 0u);
  const ClientStats s = client_->stats();
  EXPECT_GT(s.scrub_bad_copies, 0u) << "no scrub met a missing copy";
  EXPECT_EQ(s.loads, 0u);
  for (int t = 0; t < kThreads; ++t) ExpectOnlyLastVersions(uint64_t(t) * 10000, versions[t], 2);
}

// A load is not queued behind a store the node cannot finish yet. A node
// runs each connection's requests in order, and a store into a full pool
// waits there for writeback — held here by a disk whose writes wait for
// the test. Loads travel on their own connection
// (ClientOptions::load_connection, the default), so a load of a page in
// the pool is answered meanwhile. On one shared connection the node would
// answer it only after the store, and the bounded wait below fails.
// HoldAppliedWrites holds every store and invalidate the in-process nodes
// apply ("DataPlane::Write:applied": the page store has it, its reply is
// not sent) until Release: the nodes serve the new state while the client
// has not heard of it. It holds the node I/O thread that read the write,
// so loads must come on another connection on another thread
// (ClientLoadRaceTest's nodes have two I/O threads, and the client's
// second connection to each node carries its loads).
class HoldAppliedWrites {
 public:
  HoldAppliedWrites() : state_(std::make_shared<State>()) {
    SyncPoints::Set("DataPlane::Write:applied", [st = state_] {
      MutexLock l(&st->mu);
      ++st->applied;
      st->cv.SignalAll();
      while (st->holding) st->cv.Wait(&st->mu);
    });
  }
  ~HoldAppliedWrites() {
    Release();
    SyncPoints::Clear("DataPlane::Write:applied");
  }
  HoldAppliedWrites(const HoldAppliedWrites&) = delete;
  HoldAppliedWrites& operator=(const HoldAppliedWrites&) = delete;

  // WaitForApplied: true once `n` writes are applied and held.
  bool WaitForApplied(uint64_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    MutexLock l(&state_->mu);
    while (state_->applied < n) {
      if (state_->cv.WaitWithDeadline(&state_->mu, deadline)) return state_->applied >= n;
    }
    return true;
  }
  void Release() {
    MutexLock l(&state_->mu);
    state_->holding = false;
    state_->cv.SignalAll();
  }

 private:
  struct State {
    Mutex mu;
    CondVar cv;
    uint64_t applied ABSL_GUARDED_BY(mu) = 0;
    bool holding ABSL_GUARDED_BY(mu) = true;
  };
  std::shared_ptr<State> state_;
};

// HeldLoad is a Load of one page on its own thread, held after it was
// planned (the replicas and the checksum it expects chosen) and before it
// is sent, until Send.
class HeldLoad {
 public:
  HeldLoad(Client* client, uint64_t page, uint8_t* out) {
    std::promise<void> planned;
    SyncPoints::SetOnce("Client::LoadManyAsync:planned", [&planned, go = go_.get_future().share()] {
      planned.set_value();
      go.wait();
    });
    result_ = std::async(std::launch::async, [=] { return client->Load(page, out); });
    planned.get_future().wait();
  }
  ~HeldLoad() {
    if (!sent_) go_.set_value();
  }
  void Send() {
    sent_ = true;
    go_.set_value();
  }
  // Result: the load's status, or DEADLINE_EXCEEDED if it has not returned
  // within 30 s.
  absl::Status Result() {
    if (result_.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      return absl::DeadlineExceededError("the load did not return");
    }
    return result_.get();
  }

 private:
  std::promise<void> go_;
  bool sent_ = false;
  std::future<absl::Status> result_;
};

// A load racing stores or an invalidate of its own page (a client library
// user may do that; the region never does) returns one of the page's
// versions, or NOT_FOUND after the invalidate: its copies being replaced
// under it are not a loss. Each test holds the nodes' writes applied and
// unacknowledged, the window in which a load finds copies of a version
// the client's table does not know yet.
class ClientLoadRaceTest : public ClientDataPathTest {
 protected:
  ClientLoadRaceTest() { node_io_threads_ = 2; }
  void TearDown() override {
    SyncPoints::ClearAll();
    ClientDataPathTest::TearDown();
  }
  static constexpr uint64_t kPage = 5;
  std::vector<uint8_t> Version(int v) {
    std::vector<uint8_t> p(kPageSize);
    Page(kPage, uint64_t(v), p.data());
    return p;
  }
  // StoreAsync stores `page`; the future gets its status.
  std::future<absl::Status> StoreAsync(const std::vector<uint8_t>& page) {
    auto done = std::make_shared<std::promise<absl::Status>>();
    std::future<absl::Status> f = done->get_future();
    client_->StoreAsync(kPage, page.data(), [done](absl::Status s) { done->set_value(s); });
    return f;
  }
};

TEST_F(ClientLoadRaceTest, ALoadRacingTwoLaterStoresReturnsTheNewerCopyItFinds) {
  const std::vector<uint8_t> v1 = Version(1), v2 = Version(2), v3 = Version(3);
  std::vector<uint8_t> out(kPageSize);
  ASSERT_TRUE(client_->Store(kPage, v1.data()).ok());
  HeldLoad load(client_.get(), kPage, out.data());  // expects v1
  HoldAppliedWrites held;
  std::future<absl::Status> stored2 = StoreAsync(v2);
  ASSERT_TRUE(held.WaitForApplied(2));                 // both replicas serve v2, unacknowledged
  std::future<absl::Status> stored3 = StoreAsync(v3);  // the last one sent: v3
  load.Send();
  // v2 is neither what the load expected nor the last store sent, but its
  // version is newer than the load: a store sent after the load began.
  absl::Status s = load.Result();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(std::memcmp(out.data(), v2.data(), kPageSize), 0);
  EXPECT_EQ(client_->stats().stale_copies, 0u);
  held.Release();
  ASSERT_TRUE(stored2.get().ok());
  ASSERT_TRUE(stored3.get().ok());
  ASSERT_TRUE(client_->Load(kPage, out.data()).ok());
  EXPECT_EQ(std::memcmp(out.data(), v3.data(), kPageSize), 0);
}

TEST_F(ClientLoadRaceTest, ALoadPlannedBehindTwoStoresInFlightWaitsForThem) {
  const std::vector<uint8_t> v1 = Version(1), v2 = Version(2), v3 = Version(3);
  std::vector<uint8_t> out(kPageSize);
  ASSERT_TRUE(client_->Store(kPage, v1.data()).ok());
  HoldAppliedWrites held;
  std::future<absl::Status> stored2 = StoreAsync(v2);
  ASSERT_TRUE(held.WaitForApplied(2));
  std::future<absl::Status> stored3 = StoreAsync(v3);
  // Planned now, it expects v1 (the last acknowledged) or v3 (the last
  // sent) and finds v2 at both replicas: older than its plan, so refused as
  // stale, but the page's writes are in flight: it waits for them.
  testing::SyncPointCounter parked("Client::FailLoad:parked-behind-write");
  HeldLoad load(client_.get(), kPage, out.data());
  load.Send();
  ASSERT_TRUE(parked.WaitFor(1, absl::Seconds(30)));
  held.Release();
  absl::Status s = load.Result();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(std::memcmp(out.data(), v2.data(), kPageSize) == 0 ||
              std::memcmp(out.data(), v3.data(), kPageSize) == 0)
      << "the load returned neither of the versions it raced";
  ASSERT_TRUE(stored2.get().ok());
  ASSERT_TRUE(stored3.get().ok());
  EXPECT_EQ(client_->stats().copies_repaired, 0u) << "nothing was bad to repair";
}

TEST_F(ClientLoadRaceTest, ALoadRacingAnInvalidateOfItsPageIsNotFound) {
  const std::vector<uint8_t> v1 = Version(1);
  std::vector<uint8_t> out(kPageSize, 0xEE);
  ASSERT_TRUE(client_->Store(kPage, v1.data()).ok());
  HeldLoad load(client_.get(), kPage, out.data());  // expects v1
  HoldAppliedWrites held;
  auto invalidated = std::make_shared<std::promise<absl::Status>>();
  client_->InvalidateAsync(kPage, [invalidated](absl::Status s) { invalidated->set_value(s); });
  ASSERT_TRUE(held.WaitForApplied(2));  // both replicas dropped it, unacknowledged
  testing::SyncPointCounter parked("Client::FailLoad:parked-behind-write");
  load.Send();
  // Both copies are missing: no loss, since the client is dropping them.
  ASSERT_TRUE(parked.WaitFor(1, absl::Seconds(30)));
  held.Release();
  absl::Status s = load.Result();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(out[0], 0xEE);
  ASSERT_TRUE(invalidated->get_future().get().ok());
  EXPECT_EQ(client_->stats().copies_repaired, 0u);
}

TEST(ClientLoadConnectionTest, ALoadIsAnsweredWhileAStoreWaitsForWritebackRoom) {
  struct ClearSyncPoints {
    ~ClearSyncPoints() { SyncPoints::ClearAll(); }
  } clear_sync_points;
  testing::GatedBlockDevice disk(4096);
  // Declared after the disk: the node's workers are gone before it is.
  std::unique_ptr<InProcessNode> node = InProcessNode::Start(
      {.limits = {.pool_limit_bytes = 64 * 1024, .high_watermark = 0.8, .low_watermark = 0.6},
       .backing = &disk},
      /*workers=*/2);
  struct OpenGateAtExit {
    testing::GatedBlockDevice* disk;
    ~OpenGateAtExit() { disk->OpenGate(); }  // whatever happened, let the workers finish
  } open_gate{&disk};
  ClientOptions o;
  o.nodes = {"node-0"};
  o.replicas = 1;
  o.op_timeout = absl::Seconds(60);  // nothing here may time out
  auto c = Client::Connect(o, std::make_unique<FakeAttacher>(
                                  std::map<std::string, InProcessNode*>{{"node-0", node.get()}}));
  ASSERT_TRUE(c.ok()) << c.status();
  std::unique_ptr<Client> client = std::move(*c);

  std::vector<uint8_t> first(kPageSize), out(kPageSize);
  Page(1, 1, first.data());
  ASSERT_TRUE(client->Store(1, first.data()).ok());

  // Incompressible pages fill the 64 KiB pool in a few stores; the first
  // that must wait for writeback room goes to a node worker, and stays
  // there while the gate is shut.
  std::promise<void> handed_off;
  SyncPoints::SetOnce("DataPlane::HandedOff", [&] { handed_off.set_value(); });
  constexpr uint64_t kFillers = 40;
  std::vector<std::vector<uint8_t>> fillers(kFillers, std::vector<uint8_t>(kPageSize));
  std::mt19937_64 rng(7);
  for (auto& f : fillers) {
    for (uint8_t& b : f) b = uint8_t(rng());
  }
  std::vector<absl::Status> filled(kFillers);
  std::thread storer([&] {
    for (uint64_t i = 0; i < kFillers; ++i) filled[i] = client->Store(100 + i, fillers[i].data());
  });
  handed_off.get_future().wait();

  auto load = std::async(std::launch::async, [&] { return client->Load(1, out.data()); });
  const bool answered = load.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  EXPECT_TRUE(answered) << "the load waited behind the store held for writeback room";
  disk.OpenGate();
  ASSERT_TRUE(load.get().ok());
  EXPECT_EQ(std::memcmp(out.data(), first.data(), kPageSize), 0);
  storer.join();
  for (uint64_t i = 0; i < kFillers; ++i) {
    ASSERT_TRUE(filled[i].ok()) << i << ": " << filled[i];
    ASSERT_TRUE(client->Load(100 + i, out.data()).ok()) << i;
    ASSERT_EQ(std::memcmp(out.data(), fillers[i].data(), kPageSize), 0) << i;
  }
  EXPECT_EQ(client->stats().nodes.at(0).state, "up");
}

}  // namespace
}  // namespace farswap
