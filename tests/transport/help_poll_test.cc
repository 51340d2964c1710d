// Transport::HelpPoll (transport.h): a thread waiting for a reply reads it
// itself, on its own thread, without the I/O thread; helpers and the I/O
// thread never handle one frame twice or lose one; a helper racing Shutdown
// does nothing once the loop has stopped; between BeginHelping and
// EndHelping the I/O thread is not woken for replies, and what arrived
// unread is handed back to it at EndHelping. Synchronised with a sync point
// and blocking sockets, never sleeps. Runs under ThreadSanitizer in CI.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"
#include "test_util.h"

namespace farswap::transport {
namespace {

using namespace ::farswap::transport::testing;  // NOLINT

class HelpPollTest : public ::testing::Test {
 protected:
  void TearDown() override { SyncPoints::ClearAll(); }
};

// EchoExchange sends a ping carrying `body` on `conn` (written inline) and
// has the raw socket `peer` echo it in one write (a second small write
// would wait out the client's delayed ACK). When it returns the reply is in
// the client's socket: loopback delivers within the peer's write.
void EchoExchange(Connection& conn, int peer, uint64_t id, const std::vector<uint8_t>& body) {
  OutgoingMessage request = OwnedMessage({.opcode = Opcode::kPing, .request_id = id}, body);
  ASSERT_TRUE(conn.Send({&request, 1}).ok());
  std::array<uint8_t, kFrameHeaderSize> header;
  ASSERT_TRUE(ReadAll(peer, header.data(), header.size()));
  absl::StatusOr<FrameHeader> h = DecodeHeader(header);
  ASSERT_TRUE(h.ok()) << h.status();
  std::vector<uint8_t> got(h->payload_length);
  ASSERT_TRUE(ReadAll(peer, got.data(), got.size()));
  ASSERT_EQ(got, body);
  FrameHeader reply = ReplyHeader(*h);
  reply.payload_length = uint32_t(got.size());
  auto reply_header = EncodeHeader(reply);
  std::vector<uint8_t> frame(reply_header.begin(), reply_header.end());
  frame.insert(frame.end(), got.begin(), got.end());
  ASSERT_TRUE(WriteAll(peer, frame.data(), frame.size()));
}

// While the client's I/O thread is held (it has seen the reply ready and
// waits at the sync point before it may run the loop's work), a thread
// calling HelpPoll reads the reply and runs its callback on itself. Without
// HelpPoll's path the reply would wait for the held thread.
TEST_F(HelpPollTest, HelperReadsTheReplyWhileTheIoThreadIsHeld) {
  RawListener listener;  // no I/O loop of its own: the client's is the only one
  auto client = CreateTransport("tcp", {.io_threads = 1}).value();
  std::atomic<bool> received{false};
  std::thread::id received_on;
  std::vector<uint8_t> reply_payload;
  ConnectionHandler handler;
  handler.on_receive = [&](Connection&, std::span<IncomingMessage> in) {
    for (IncomingMessage& m : in) {
      reply_payload = m.payload;
      received_on = std::this_thread::get_id();
      received.store(true);
    }
  };
  auto conn = client->Connect(absl::StrCat("127.0.0.1:", listener.port), handler).value();
  const int peer = accept(listener.fd, nullptr, nullptr);
  ASSERT_GE(peer, 0);

  // A first exchange, read by the I/O thread: the connection is registered
  // with the loop (Connect posts that) before the thread is held.
  EchoExchange(*conn, peer, 1, Pattern(100, 1));
  const auto first_give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!received.load() && std::chrono::steady_clock::now() < first_give_up) {
    std::this_thread::yield();
  }
  ASSERT_TRUE(received.load());
  received.store(false);

  // Hold the I/O thread at its next event, until the test has looked.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> held;
  SyncPoints::SetOnce("IoLoop::Run:before-work", [&] {
    held.set_value();
    released.wait_for(std::chrono::seconds(60));
  });
  const std::vector<uint8_t> body = Pattern(4096, 11);
  EchoExchange(*conn, peer, 7, body);

  // The I/O thread sees the reply and stops at the sync point; the helper
  // then handles it here.
  ASSERT_EQ(held.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!received.load() && std::chrono::steady_clock::now() < give_up) client->HelpPoll();
  const bool received_while_held = received.load();
  release.set_value();
  ASSERT_TRUE(received_while_held) << "the reply waited for the I/O thread";
  EXPECT_EQ(received_on, std::this_thread::get_id());
  EXPECT_EQ(reply_payload, body);
  // The I/O thread, released, finds the event handled: nothing twice.
  EXPECT_FALSE(client->HelpPoll());
  conn->Close(absl::CancelledError("done"));
  client->Shutdown();
  close(peer);
}

// A helper's spell (BeginHelping .. EndHelping): replies are read by the
// helper and the I/O thread is never woken for them (it would reach the
// sync point "IoLoop::Run:before-work" on every wake-up); a reply that
// arrives during the spell and that nobody reads is delivered by the I/O
// thread once the spell ends.
TEST_F(HelpPollTest, HelperSpellLeavesTheIoThreadAsleep) {
  RawListener listener;
  auto client = CreateTransport("tcp", {.io_threads = 1, .quiet_helping = true}).value();
  std::atomic<int> received{0};
  std::mutex mu;
  std::vector<uint8_t> last_payload;  // guarded by mu
  std::thread::id last_reader;        // guarded by mu
  ConnectionHandler handler;
  handler.on_receive = [&](Connection&, std::span<IncomingMessage> in) {
    for (IncomingMessage& m : in) {
      {
        std::lock_guard<std::mutex> l(mu);
        last_payload = m.payload;
        last_reader = std::this_thread::get_id();
      }
      received.fetch_add(1);
    }
  };
  const std::thread::id self = std::this_thread::get_id();
  auto conn = client->Connect(absl::StrCat("127.0.0.1:", listener.port), handler).value();
  const int peer = accept(listener.fd, nullptr, nullptr);
  ASSERT_GE(peer, 0);
  auto wait_for = [&](int count, bool help) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (received.load() < count && std::chrono::steady_clock::now() < give_up) {
      if (!help || !client->HelpPoll()) std::this_thread::yield();
    }
    return received.load() == count;
  };
  // A first exchange, read by the I/O thread (the connection is registered
  // with the loop by a posted task, which wakes it anyway).
  EchoExchange(*conn, peer, 1, Pattern(100, 1));
  ASSERT_TRUE(wait_for(1, /*help=*/false));

  std::atomic<int> io_thread_wakeups{0};
  SyncPoints::Set("IoLoop::Run:before-work", [&] { io_thread_wakeups.fetch_add(1); });
  client->BeginHelping();
  constexpr int kExchanges = 50;
  for (int i = 0; i < kExchanges; ++i) {
    const std::vector<uint8_t> body = Pattern(64 + 50 * i, i);
    EchoExchange(*conn, peer, 10 + i, body);
    ASSERT_TRUE(wait_for(2 + i, /*help=*/true)) << "exchange " << i;
    std::lock_guard<std::mutex> l(mu);
    ASSERT_EQ(last_payload, body) << "exchange " << i;
    ASSERT_EQ(last_reader, self) << "exchange " << i << ": read by the I/O thread";
  }
  EXPECT_EQ(io_thread_wakeups.load(), 0) << "the I/O thread was woken during the spell";

  // A reply that arrives during the spell and is not read goes to the I/O
  // thread when the spell ends, and only then.
  const std::vector<uint8_t> body = Pattern(4096, 99);
  EchoExchange(*conn, peer, 99, body);
  EXPECT_EQ(received.load(), 1 + kExchanges);
  EXPECT_EQ(io_thread_wakeups.load(), 0);
  client->EndHelping();
  ASSERT_TRUE(wait_for(2 + kExchanges, /*help=*/false)) << "the unread reply was never delivered";
  EXPECT_GE(io_thread_wakeups.load(), 1);
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(last_payload, body);
    EXPECT_NE(last_reader, self);
  }
  SyncPoints::ClearAll();
  conn->Close(absl::CancelledError("done"));
  client->Shutdown();
  close(peer);
}

// Many waiters help while the I/O threads also run: every reply is
// delivered exactly once and intact, on whichever thread got to it. With
// quiet helping each wait is a spell (BeginHelping .. EndHelping), so the
// spells of the threads overlap and end in every order.
void HelpersAndIoThreadsDeliverEveryReplyOnce(bool quiet) {
  auto server = std::make_unique<TestServer>([](Connection& c, std::span<IncomingMessage> in) {
    std::vector<OutgoingMessage> out;
    for (IncomingMessage& m : in) {
      out.push_back(OwnedMessage(ReplyHeader(m.header), std::move(m.payload)));
    }
    ASSERT_TRUE(c.Send(out).ok());
  });
  auto client = CreateTransport("tcp", {.io_threads = 2, .quiet_helping = quiet}).value();
  constexpr int kThreads = 4;
  constexpr int kCalls = 300;
  struct Waiter {
    std::shared_ptr<Connection> conn;
    std::mutex mu;
    std::map<uint64_t, std::vector<uint8_t>> replies;  // guarded by mu
    std::atomic<int> count{0};
    std::atomic<int> on_helper{0};
    std::thread::id owner;
  };
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int t = 0; t < kThreads; ++t) {
    auto w = std::make_unique<Waiter>();
    Waiter* raw = w.get();
    ConnectionHandler handler;
    handler.on_receive = [raw](Connection&, std::span<IncomingMessage> in) {
      for (IncomingMessage& m : in) {
        if (std::this_thread::get_id() == raw->owner) raw->on_helper.fetch_add(1);
        std::lock_guard<std::mutex> l(raw->mu);
        EXPECT_TRUE(raw->replies.emplace(m.header.request_id, std::move(m.payload)).second)
            << "reply " << m.header.request_id << " delivered twice";
        raw->count.fetch_add(1);
      }
    };
    w->conn = client->Connect(server->address(), handler).value();
    waiters.push_back(std::move(w));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Waiter& w = *waiters[t];
      w.owner = std::this_thread::get_id();  // before any request leaves
      for (int i = 0; i < kCalls; ++i) {
        OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = uint64_t(i)},
                                         Pattern(64 + i, t * 1000 + i));
        ASSERT_TRUE(w.conn->Send({&m, 1}).ok());
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        // Every other wait of a quiet helper stops helping early, as a
        // waiter whose spin ran out does, and sleeps (yields) instead: the
        // I/O threads must then read its reply.
        const bool whole_wait = !quiet || i % 2 == 0;
        if (quiet) client->BeginHelping();
        while (w.count.load() <= i && std::chrono::steady_clock::now() < give_up) {
          if (!client->HelpPoll()) std::this_thread::yield();
          if (!whole_wait) break;
        }
        if (quiet) client->EndHelping();
        while (w.count.load() <= i && std::chrono::steady_clock::now() < give_up) {
          std::this_thread::yield();
        }
        ASSERT_EQ(w.count.load(), i + 1);
      }
    });
  }
  for (auto& t : threads) t.join();
  int on_helpers = 0;
  for (int t = 0; t < kThreads; ++t) {
    Waiter& w = *waiters[t];
    std::lock_guard<std::mutex> l(w.mu);
    ASSERT_EQ(w.replies.size(), size_t(kCalls));
    for (int i = 0; i < kCalls; ++i) {
      ASSERT_EQ(w.replies[uint64_t(i)], Pattern(64 + i, t * 1000 + i)) << t << "/" << i;
    }
    on_helpers += w.on_helper.load();
  }
  // Not asserted (the split is the scheduler's), but shown: which threads read.
  std::printf("replies read by the waiting threads: %d of %d\n", on_helpers, kThreads * kCalls);
  client->Shutdown();
}

TEST_F(HelpPollTest, HelpersAndIoThreadsDeliverEveryReplyOnce) {
  HelpersAndIoThreadsDeliverEveryReplyOnce(/*quiet=*/false);
}

TEST_F(HelpPollTest, QuietHelpersAndIoThreadsDeliverEveryReplyOnce) {
  HelpersAndIoThreadsDeliverEveryReplyOnce(/*quiet=*/true);
}

// HelpPoll racing Shutdown: no crash, no callback after Shutdown returned,
// and nothing to help with once the loops have stopped.
TEST_F(HelpPollTest, HelperRacingShutdownStopsHelping) {
  auto server = std::make_unique<TestServer>([](Connection& c, std::span<IncomingMessage> in) {
    std::vector<OutgoingMessage> out;
    for (IncomingMessage& m : in) {
      out.push_back(OwnedMessage(ReplyHeader(m.header), std::move(m.payload)));
    }
    (void)c.Send(out);
  });
  auto client = CreateTransport("tcp", {.io_threads = 2}).value();
  std::atomic<bool> shut_down{false};
  std::atomic<int> after_shutdown{0};
  ConnectionHandler handler;
  handler.on_receive = [&](Connection&, std::span<IncomingMessage>) {
    if (shut_down.load()) after_shutdown.fetch_add(1);
  };
  auto conn = client->Connect(server->address(), handler).value();
  std::atomic<bool> stop{false};
  std::thread helper([&] {
    uint64_t id = 0;
    while (!stop.load()) {
      OutgoingMessage m = OwnedMessage({.opcode = Opcode::kPing, .request_id = id++}, {1, 2, 3});
      (void)conn->Send({&m, 1});
      client->HelpPoll();
    }
  });
  // Let the helper run a while: wait until it has had replies.
  std::promise<void> some;
  SyncPoints::SetOnce("IoLoop::Run:before-work", [&] { some.set_value(); });
  ASSERT_EQ(some.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  SyncPoints::ClearAll();
  client->Shutdown();
  shut_down.store(true);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(client->HelpPoll());
  stop.store(true);
  helper.join();
  EXPECT_EQ(after_shutdown.load(), 0);
}

}  // namespace
}  // namespace farswap::transport
