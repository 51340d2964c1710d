// What the UCX backend adds to the transport contract (transport/README.md,
// "UCX"): credit-based flow control — a paused connection bounds what its
// receiver holds, its sender's Send refuses past max_output_queue_bytes,
// and nothing is lost or reordered on resume; a server held back by its
// own reply queue takes up its requests again once the replies drain — and
// rendezvous frames
// delivered in arrival order among eager ones; Shutdown racing Connect and
// Listen (forced with sync points) refuses them instead of leaving an
// endpoint or listener on a destroyed worker. The common contract is
// tested for both backends in tcp_transport_test.cc. No sleeps: every wait
// is on a condition with kWaitBound. Runs under ThreadSanitizer in CI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "farswap/common/sync_point.h"
#include "farswap/transport/transport.h"
#include "server_process.h"
#include "test_util.h"

namespace farswap::transport {
namespace {

using namespace ::farswap::transport::testing;  // NOLINT

// Recorder keeps what a handler was given, in order.
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<FrameHeader> headers;  // guarded by mu
  std::vector<std::vector<uint8_t>> payloads;
  uint64_t payload_bytes = 0;

  void Add(std::span<IncomingMessage> in) {
    std::lock_guard<std::mutex> lock(mu);
    for (IncomingMessage& m : in) {
      headers.push_back(m.header);
      payload_bytes += m.payload.size();
      payloads.push_back(std::move(m.payload));
    }
    cv.notify_all();
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return headers.size();
  }
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, absl::ToChronoSeconds(kWaitBound),
                       [&] { return headers.size() >= n; });
  }
};

TEST(UcxTransportTest, PausedConnectionBoundsTheReceiverAndResumesInOrder) {
  constexpr size_t kQueueLimit = 512 * 1024;
  constexpr size_t kFrameBytes = kFrameHeaderSize + kMaxPingPayload;
  Recorder got;
  std::atomic<bool> pause_now{true};
  TestServer server(
      [&](Connection& c, std::span<IncomingMessage> in) {
        // The first delivery pauses the connection: nothing more may reach
        // this handler until the test resumes it. Paused before the frames
        // are recorded, so a test that saw them also sees the pause (over
        // shared memory the whole send loop fits in one time slice of a
        // server thread preempted between the two).
        if (pause_now.exchange(false)) c.PauseReading(true);
        got.Add(in);
      },
      {}, "ucx");
  auto client = CreateTransport("ucx", {.max_output_queue_bytes = kQueueLimit}).value();
  auto conn = client->Connect(server.address(), {}).value();

  std::vector<uint8_t> body = Pattern(kMaxPingPayload, 3);
  auto send = [&](uint64_t id) {
    OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = id}, body);
    return conn->Send({&m, 1});
  };
  ASSERT_TRUE(send(1).ok());
  ASSERT_TRUE(got.WaitFor(1));
  const size_t delivered_at_pause = got.count();

  // Keep sending: the receiver hands back no credit while paused, so the
  // frames pile up in the client's queue until Send refuses.
  uint64_t accepted = 1;
  absl::Status refused;
  for (uint64_t id = 2; id < 100000; ++id) {
    absl::Status s = send(id);
    if (!s.ok()) {
      refused = s;
      break;
    }
    accepted = id;
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  // What the client had to hold: one window in flight plus its own queue.
  EXPECT_LE(accepted * kFrameBytes, (uint64_t{4} << 20) + kQueueLimit + 2 * kFrameBytes);
  EXPECT_GT(accepted * kFrameBytes, kQueueLimit);

  // The server side holds at most one window of frames it did not deliver.
  std::shared_ptr<Connection> server_side = server.connections().at(0);
  // Both ends name what UCX carries the frames on (its AM lane), e.g.
  // "tcp/lo.0" here; known once the handshake crossed.
  EXPECT_THAT(conn->stats().carrier, ::testing::MatchesRegex("[a-z_0-9]+/.+"))
      << conn->stats().carrier;
  EXPECT_EQ(server_side->stats().carrier, conn->stats().carrier);
  EXPECT_EQ(got.count(), delivered_at_pause);
  EXPECT_LE(server_side->stats().bytes_received, (uint64_t{4} << 20) + 2 * kFrameBytes);
  EXPECT_EQ(server_side->stats().read_pauses, 1u);

  // Resume: every accepted frame arrives, once, in the order sent.
  server_side->PauseReading(false);
  ASSERT_TRUE(got.WaitFor(accepted));
  std::lock_guard<std::mutex> lock(got.mu);
  ASSERT_EQ(got.headers.size(), accepted);
  for (uint64_t i = 0; i < accepted; ++i) {
    ASSERT_EQ(got.headers[i].request_id, i + 1) << "frame " << i;
    ASSERT_EQ(got.payloads[i], body) << "frame " << i;
  }
}

TEST(UcxTransportTest, ServerHeldByItsReplyQueueResumesWhenTheClientReadsAgain) {
  // The client stops reading (PauseReading on its connection): it hands the
  // server no credit, so the server's replies back up past its output bound
  // and it stops delivering requests. When the client reads again, the
  // replies drain and the server must take up the requests it held, with
  // no new frame arriving to prompt it: every request gets its reply.
  constexpr size_t kServerQueue = 64 * 1024;
  constexpr size_t kRequests = 1500;  // ~6 MiB: past one window plus the server's bound
  std::mutex mu;
  std::condition_variable cv;
  bool server_held = false;  // guarded by mu
  TestServer server(
      [&](Connection& c, std::span<IncomingMessage> in) {
        std::vector<OutgoingMessage> out;
        for (IncomingMessage& m : in) {
          out.push_back(OwnedMessage(ReplyHeader(m.header), std::move(m.payload)));
        }
        ASSERT_TRUE(c.Send(out).ok());
        if (c.stats().queued_bytes > kServerQueue) {
          std::lock_guard<std::mutex> lock(mu);
          server_held = true;
          cv.notify_all();
        }
      },
      {.max_output_queue_bytes = kServerQueue}, "ucx");
  Recorder replies;
  auto client = CreateTransport("ucx", {.max_output_queue_bytes = size_t{64} << 20}).value();
  ConnectionHandler handler;
  handler.on_receive = [&](Connection&, std::span<IncomingMessage> in) { replies.Add(in); };
  auto conn = client->Connect(server.address(), std::move(handler)).value();
  conn->PauseReading(true);
  std::vector<uint8_t> body = Pattern(kMaxPingPayload, 9);
  for (uint64_t id = 1; id <= kRequests; ++id) {
    OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = id}, body);
    ASSERT_TRUE(conn->Send({&m, 1}).ok()) << id;
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, absl::ToChronoSeconds(kWaitBound), [&] { return server_held; }));
  }
  EXPECT_EQ(replies.count(), 0u);  // paused: nothing delivered yet
  conn->PauseReading(false);
  ASSERT_TRUE(replies.WaitFor(kRequests)) << replies.count() << " of " << kRequests;
  std::lock_guard<std::mutex> lock(replies.mu);
  for (uint64_t i = 0; i < kRequests; ++i) {
    ASSERT_EQ(replies.headers[i].request_id, i + 1);
    ASSERT_EQ(replies.payloads[i], body);
  }
}

TEST(UcxTransportTest, RendezvousFramesKeepTheirPlaceAmongEagerOnes) {
  // Force rendezvous for anything over 8 KiB (UCX reads its variables when
  // the transport's context is made): each 1 MiB BATCH is then fetched by
  // the receiver while the small PINGs behind it arrive at once.
  setenv("UCX_RNDV_THRESH", "8192", 1);
  Recorder got;
  TestServer server([&](Connection&, std::span<IncomingMessage> in) { got.Add(in); }, {}, "ucx");
  auto client = CreateTransport("ucx", {}).value();
  unsetenv("UCX_RNDV_THRESH");
  auto conn = client->Connect(server.address(), {}).value();

  constexpr int kRounds = 6;
  std::vector<std::vector<uint8_t>> pages;
  for (size_t i = 0; i < kMaxBatchEntries; ++i) pages.push_back(Pattern(kMaxPagePayload, i));
  BatchEncoder batch;
  for (size_t i = 0; i < kMaxBatchEntries; ++i) {
    std::span<const uint8_t> piece(pages[i]);
    ASSERT_TRUE(batch
                    .Add({.opcode = Opcode::kStore, .page = i, .codec = Codec::kNone},
                         std::span<const std::span<const uint8_t>>(&piece, 1))
                    .ok());
  }
  std::vector<OutgoingMessage> out;
  for (int r = 0; r < kRounds; ++r) {
    OutgoingMessage big;
    big.header = batch.Header(uint64_t(2 * r + 1));
    big.payload.assign(batch.pieces().begin(), batch.pieces().end());
    out.push_back(std::move(big));
    out.push_back(
        OwnedMessage({.opcode = Opcode::kPing, .request_id = uint64_t(2 * r + 2)}, {uint8_t(r)}));
  }
  Recorder sent;  // an empty PING header per successful on_sent
  for (OutgoingMessage& m : out) {
    m.on_sent = [&sent, owned = std::move(m.on_sent)](absl::Status s) {
      if (owned) owned(s);  // releases the payload OwnedMessage keeps
      IncomingMessage done;
      if (s.ok()) sent.Add({&done, 1});
    };
  }
  ASSERT_TRUE(conn->Send(out).ok());
  ASSERT_TRUE(got.WaitFor(2 * kRounds));
  EXPECT_TRUE(sent.WaitFor(2 * kRounds));  // every on_sent ran, with OK
  std::lock_guard<std::mutex> lock(got.mu);
  ASSERT_EQ(got.headers.size(), size_t{2 * kRounds});
  for (int i = 0; i < 2 * kRounds; ++i) {
    EXPECT_EQ(got.headers[i].request_id, uint64_t(i + 1));
    if (i % 2 == 0) {
      ASSERT_EQ(got.headers[i].opcode, Opcode::kBatch);
      absl::StatusOr<std::vector<FrameView>> subs = DecodeBatch({got.headers[i], got.payloads[i]});
      ASSERT_TRUE(subs.ok()) << subs.status();
      ASSERT_EQ(subs->size(), kMaxBatchEntries);
      for (size_t k = 0; k < kMaxBatchEntries; k += 51) {
        EXPECT_TRUE(std::ranges::equal((*subs)[k].payload, pages[k]))
            << "round " << i << " page " << k;
      }
    } else {
      EXPECT_EQ(got.payloads[i], std::vector<uint8_t>{uint8_t(i / 2)});
    }
  }
}

TEST(UcxTransportTest, PeerTransportShutdownClosesWithUnavailableAndFailsQueuedSends) {
  Recorder got;
  auto server = std::make_unique<TestServer>(
      [&](Connection&, std::span<IncomingMessage> in) { got.Add(in); }, TransportOptions{}, "ucx");
  std::mutex mu;
  std::condition_variable cv;
  std::optional<absl::Status> closed;  // guarded by mu
  auto client = CreateTransport("ucx", {}).value();
  ConnectionHandler handler;
  handler.on_close = [&](const absl::Status& reason) {
    std::lock_guard<std::mutex> lock(mu);
    closed = reason;
    cv.notify_all();
  };
  auto conn = client->Connect(server->address(), std::move(handler)).value();
  OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = 1}, {1});
  ASSERT_TRUE(conn->Send({&m, 1}).ok());
  ASSERT_TRUE(got.WaitFor(1));
  server.reset();  // the peer goes away
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(
        cv.wait_for(lock, absl::ToChronoSeconds(kWaitBound), [&] { return closed.has_value(); }));
    EXPECT_EQ(closed->code(), absl::StatusCode::kUnavailable) << *closed;
  }
  EXPECT_FALSE(conn->is_open());
  OutgoingMessage late = OwnedMessage({.opcode = Opcode::kPing, .request_id = 2}, {2});
  EXPECT_EQ(conn->Send({&late, 1}).code(), absl::StatusCode::kUnavailable);
}

// TransportOptions::ucx_transports narrows UCX's choice, and the carrier
// both ends report says what was picked: "tcp" is loopback TCP; "sm,tcp"
// between two transports of one process is a shared-memory transport
// (UCX 1.13 leaves those out of error-handling endpoints unless the
// backend sets MM_ERROR_HANDLING, so without it this is tcp/lo too), and a
// frame crosses it intact.
TEST(UcxTransportTest, UcxTransportsOptionPicksTheCarrier) {
  for (const auto& [tls, expected] : {std::pair<std::string, std::string>{"tcp", "tcp/.+"},
                                      {"sm,tcp", "(sysv|posix|xpmem)/.+"}}) {
    SCOPED_TRACE(tls);
    Recorder got;
    TransportOptions options;
    options.ucx_transports = tls;
    auto server = std::make_unique<TestServer>(
        [&](Connection&, std::span<IncomingMessage> in) { got.Add(in); }, options, "ucx");
    auto client = CreateTransport("ucx", options).value();
    auto conn = client->Connect(server->address(), {}).value();
    std::vector<uint8_t> body = Pattern(3000, 5);
    OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = 1}, body);
    ASSERT_TRUE(conn->Send({&m, 1}).ok());
    ASSERT_TRUE(got.WaitFor(1));
    {
      std::lock_guard<std::mutex> lock(got.mu);
      EXPECT_EQ(got.payloads[0], body);
    }
    EXPECT_THAT(conn->stats().carrier, ::testing::MatchesRegex(expected));
  }
}

TEST(UcxTransportTest, UnknownUcxTransportIsRefusedByName) {
  TransportOptions options;
  options.ucx_transports = "carrier-pigeon";
  absl::StatusOr<std::unique_ptr<Transport>> t = CreateTransport("ucx", options);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("carrier-pigeon"));
}

// A node on this machine that runs as another user: UCX picks shared memory
// for it (same IPC and PID namespaces), whose segments only their owner can
// map, so the endpoint fails. Connect's error must say so and name the way
// out, and the way out must work: the same client without shared memory
// connects. A real farswap-server, as uid 65532.
TEST(UcxTransportTest, ANodeOfAnotherUserOnThisMachineIsNamedInTheConnectError) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: runs the node as another user";
  if (access(farswap::testing::FarswapBinary("server/farswap-server").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "no farswap-server in this build (the TSan build has no gRPC)";
  }
  auto node = farswap::testing::ServerProcess::Start({.backing_size = "",
                                                      .transport = "ucx",
                                                      .run_as_uid = 65532,
                                                      .extra_env = {"UCX_TLS=sm,tcp"}});
  ASSERT_TRUE(node.ok()) << node.status();
  TransportOptions options;
  options.io_threads = 1;
  options.connect_timeout = absl::Seconds(10);
  options.ucx_transports = "sm,tcp";
  auto client = CreateTransport("ucx", options).value();
  absl::StatusOr<std::shared_ptr<Connection>> conn = client->Connect((*node)->data_addr(), {});
  ASSERT_FALSE(conn.ok()) << "connected over " << (*conn)->stats().carrier;
  EXPECT_THAT(std::string(conn.status().message()),
              ::testing::HasSubstr("if it runs as another user"));
  EXPECT_THAT(std::string(conn.status().message()), ::testing::HasSubstr("UCX_TLS=^sm"));

  options.ucx_transports = "^sm";
  auto without_shm = CreateTransport("ucx", options).value();
  absl::StatusOr<std::shared_ptr<Connection>> tcp = without_shm->Connect((*node)->data_addr(), {});
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_THAT((*tcp)->stats().carrier, ::testing::StartsWith("tcp/"));
  (*tcp)->Close(absl::CancelledError("test done"));
}

// Frames sent to a node that stopped answering (SIGSTOP: it never reads
// them, nor answers a rendezvous) and then died (SIGKILL) are in UCX's
// hands, or queued behind them, when the connection fails and the client's
// transport shuts down. Every frame's on_sent must have run by the time
// Shutdown returns, and nothing may be left holding the connection: in
// CI's AddressSanitizer run of client_cluster_test over shared memory
// (a node killed with a batch in flight), sends UCX never completed leaked
// their ops and the connection with them. That did not happen again here
// (UCX completed every send when the endpoint was force-closed), so this
// checks the contract, and UcxLoop::DestroyWorker finishes whatever UCX
// still holds; the ASan build would report a leak at exit.
TEST(UcxTransportTest, SendsStillInUcxAtShutdownAreFailedNotLeaked) {
  if (access(farswap::testing::FarswapBinary("server/farswap-server").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "no farswap-server in this build (the TSan build has no gRPC)";
  }
  auto node = farswap::testing::ServerProcess::Start(
      {.backing_size = "", .transport = "ucx", .extra_env = {"UCX_TLS=sm,tcp"}});
  ASSERT_TRUE(node.ok()) << node.status();
  TransportOptions options;
  options.io_threads = 1;
  options.ucx_transports = "sm,tcp";
  auto client = CreateTransport("ucx", options).value();
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;  // guarded by mu
  ConnectionHandler handler;
  handler.on_close = [&](const absl::Status&) {
    std::lock_guard<std::mutex> lock(mu);
    closed = true;
    cv.notify_all();
  };
  auto conn = client->Connect((*node)->data_addr(), std::move(handler)).value();
  (*node)->Pause();
  // Rounds of 80 page-sized STOREs in one Send: each round one gathered
  // message of ~330 KB (a rendezvous the stopped node never answers).
  constexpr int kRounds = 4, kFrames = 80;
  std::atomic<int> sent_ok{0}, sent_failed{0};
  for (int r = 0; r < kRounds; ++r) {
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < kFrames; ++i) {
      batch.push_back(OwnedMessage(
          {.opcode = Opcode::kStore, .request_id = uint64_t(r * kFrames + i + 1), .page = 1},
          std::vector<uint8_t>(4096, uint8_t(i))));
      SendCallback keep = std::move(batch.back().on_sent);
      batch.back().on_sent = [keep = std::move(keep), &sent_ok, &sent_failed](absl::Status s) {
        (s.ok() ? sent_ok : sent_failed)++;
        keep(s);
      };
    }
    absl::Status sent = conn->Send(batch);
    ASSERT_TRUE(sent.ok()) << "round " << r << ": " << sent;
  }
  (*node)->Kill();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, absl::ToChronoSeconds(kWaitBound), [&] { return closed; }))
        << "the connection to the killed node did not fail";
  }
  client->Shutdown();
  EXPECT_EQ(sent_ok + sent_failed, kRounds * kFrames) << "a frame's on_sent never ran";
  EXPECT_FALSE(conn->is_open());
}

// Shutdown runs between Connect's shut-down check and the endpoint's
// creation: the endpoint would be made on a worker Shutdown destroyed (a
// crash, or a connection nobody closes). Connect must refuse instead.
TEST(UcxTransportTest, ShutdownRacingConnectRefusesIt) {
  Recorder got;
  TestServer server([&](Connection&, std::span<IncomingMessage> in) { got.Add(in); }, {}, "ucx");
  auto client = CreateTransport("ucx", {}).value();
  SyncPoints::SetOnce("UcxTransport::Connect:before-endpoint", [&] { client->Shutdown(); });
  absl::StatusOr<std::shared_ptr<Connection>> conn = client->Connect(server.address(), {});
  SyncPoints::ClearAll();
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kUnavailable) << conn.status();
  EXPECT_THAT(std::string(conn.status().message()), ::testing::HasSubstr("shut down"));

  // The server is untouched: a client of another transport still gets through.
  auto other = CreateTransport("ucx", {}).value();
  auto ok = other->Connect(server.address(), {}).value();
  std::vector<uint8_t> body = Pattern(1000, 7);
  OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = 9}, body);
  ASSERT_TRUE(ok->Send({&m, 1}).ok());
  ASSERT_TRUE(got.WaitFor(1));
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.headers[0].request_id, 9u);
  EXPECT_EQ(got.payloads[0], body);
}

// The same for Listen: a listener created after Shutdown collected the
// transport's listeners would outlive its worker.
TEST(UcxTransportTest, ShutdownRacingListenRefusesIt) {
  auto transport = CreateTransport("ucx", {}).value();
  SyncPoints::SetOnce("UcxTransport::Listen:before-listener", [&] { transport->Shutdown(); });
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport->Listen(
      "127.0.0.1:0", [](std::shared_ptr<Connection>) { return ConnectionHandler{}; });
  SyncPoints::ClearAll();
  ASSERT_FALSE(listener.ok());
  EXPECT_EQ(listener.status().code(), absl::StatusCode::kUnavailable) << listener.status();
}

// EchoOverUcx: a UCX server whose handler answers each request with its
// own Send, as the data plane does (noting the loop thread it runs on and
// the connection), and a client connected to it that records the replies.
struct EchoOverUcx {
  std::atomic<Connection*> server_conn{nullptr};
  std::atomic<std::thread::id> server_loop{};
  Recorder got;
  TestServer server{[this](Connection& c, std::span<IncomingMessage> in) {
                      server_loop = std::this_thread::get_id();
                      server_conn = &c;
                      for (IncomingMessage& m : in) {
                        OutgoingMessage reply =
                            OwnedMessage(ReplyHeader(m.header), std::move(m.payload));
                        ASSERT_TRUE(c.Send({&reply, 1}).ok());
                      }
                    },
                    {},
                    "ucx"};
  std::unique_ptr<Transport> client = CreateTransport("ucx", {}).value();
  std::shared_ptr<Connection> conn =
      client
          ->Connect(
              server.address(),
              {.on_receive = [this](Connection&, std::span<IncomingMessage> in) { got.Add(in); }})
          .value();
};

// Replies sent one by one from a handler inside one delivery round are
// parked and go out coalesced at the end of the round, in order and intact.
TEST(UcxTransportTest, RepliesSentInOneRoundGoOutAsOneMessage) {
  constexpr size_t kRequests = 64;
  EchoOverUcx echo;
  // One Send: one message, so the server gets all of them in one round.
  std::vector<OutgoingMessage> requests;
  for (uint64_t i = 0; i < kRequests; ++i) {
    requests.push_back(
        OwnedMessage({.opcode = Opcode::kPing, .request_id = i + 1}, Pattern(100 + i, i)));
  }
  ASSERT_TRUE(echo.conn->Send(requests).ok());
  ASSERT_TRUE(echo.got.WaitFor(kRequests));
  {
    std::lock_guard<std::mutex> lock(echo.got.mu);
    for (uint64_t i = 0; i < kRequests; ++i) {
      ASSERT_EQ(echo.got.headers[i].request_id, i + 1) << i;
      ASSERT_TRUE(echo.got.headers[i].is_reply()) << i;
      ASSERT_EQ(echo.got.payloads[i], Pattern(100 + i, i)) << i;
    }
  }
  EXPECT_EQ(echo.conn->stats().messages_sent, 1u);
  // (messages are counted when handed to UCX, so before the replies arrived)
  EXPECT_EQ(echo.server.connections().at(0)->stats().messages_sent, 1u)
      << "the replies of one round, one message";
}

// A Send from another thread to a connection whose frames are parked (the
// loop is at the end of a round, forced with a sync point) goes out after
// them: parking never reorders a connection's frames.
TEST(UcxTransportTest, SendFromAnotherThreadQueuesBehindParkedFrames) {
  EchoOverUcx echo;
  // When the server's loop has run the handler (its two replies parked) and
  // not yet flushed, another thread sends a third frame on that connection.
  std::atomic<bool> sent_aside{false};
  SyncPoints::Set("UcxLoop::BeforeFlushingParked", [&] {
    // Only the server's loop, after its handler ran (other loops of the
    // process pass here too).
    Connection* c = echo.server_conn.load();
    if (c == nullptr || std::this_thread::get_id() != echo.server_loop.load() ||
        sent_aside.exchange(true)) {
      return;
    }
    std::thread other([c] {
      OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = 99}, Pattern(50, 9));
      EXPECT_TRUE(c->Send({&m, 1}).ok());
    });
    other.join();
  });
  std::vector<OutgoingMessage> requests;
  requests.push_back(OwnedMessage({.opcode = Opcode::kPing, .request_id = 1}, Pattern(10, 1)));
  requests.push_back(OwnedMessage({.opcode = Opcode::kPing, .request_id = 2}, Pattern(20, 2)));
  ASSERT_TRUE(echo.conn->Send(requests).ok());
  ASSERT_TRUE(echo.got.WaitFor(3));
  SyncPoints::ClearAll();
  ASSERT_TRUE(sent_aside.load());
  {
    std::lock_guard<std::mutex> lock(echo.got.mu);
    ASSERT_EQ(echo.got.headers.size(), 3u);
    EXPECT_EQ(echo.got.headers[0].request_id, 1u);
    EXPECT_EQ(echo.got.headers[1].request_id, 2u);
    EXPECT_EQ(echo.got.headers[2].request_id, 99u);
    EXPECT_EQ(echo.got.payloads[2], Pattern(50, 9));
  }
  EXPECT_EQ(echo.server.connections().at(0)->stats().messages_sent, 1u)
      << "all three flushed together";
}

}  // namespace
}  // namespace farswap::transport
