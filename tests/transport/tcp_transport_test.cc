// Transport backends + RpcChannel behaviour over loopback: pipelining with
// out-of-order completion, batches, malformed peers, closes and timeouts.
// Each TransportTest runs against every backend that runs here: TCP, and
// UCX (over whatever UCX picks on loopback; UCX_TLS narrows it). The tests
// that speak raw TCP to the server are TCP's alone. Runs under
// ThreadSanitizer in CI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <time.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "farswap/common/sync_point.h"
#include "farswap/transport/rpc_channel.h"
#include "farswap/transport/transport.h"
#include "test_util.h"

namespace farswap::transport {
namespace {

using ::testing::HasSubstr;
using namespace ::farswap::transport::testing;  // NOLINT

constexpr absl::Duration kLongTimeout = absl::Seconds(60);

// EchoPing replies to every PING with its payload.
void EchoPing(Connection& c, std::span<IncomingMessage> in) {
  std::vector<OutgoingMessage> out;
  for (IncomingMessage& m : in) {
    out.push_back(OwnedMessage(ReplyHeader(m.header), std::move(m.payload)));
  }
  ASSERT_TRUE(c.Send(out).ok());
}

// TransportTest's parameter is the backend's scheme.
class TransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  const std::string& scheme() const { return GetParam(); }
  std::unique_ptr<Transport> MakeTransport(const TransportOptions& options = {}) {
    return CreateTransport(scheme(), options).value();
  }
  std::unique_ptr<TestServer> MakeServer(TestServer::Handler handler,
                                         const TransportOptions& options = {}) {
    return std::make_unique<TestServer>(std::move(handler), options, scheme());
  }
};

absl::StatusOr<IncomingMessage> Await(std::future<absl::StatusOr<IncomingMessage>>& f) {
  if (f.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    return absl::InternalError("test: call did not complete within 60 s (hang)");
  }
  return f.get();
}

TEST_P(TransportTest, ListenerReportsBoundPortAndPingRoundTrips) {
  auto server_owner = MakeServer(EchoPing);
  EXPECT_THAT(server_owner->address(), HasSubstr(scheme() + "://127.0.0.1:"));
  EXPECT_GT(server_owner->port(), 0);
  auto client = CreateTransport(server_owner->address(), {}).value();
  EXPECT_EQ(client->scheme(), scheme());
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  std::vector<uint8_t> body = Pattern(4096, 7);
  auto f = channel->Call({.opcode = Opcode::kPing}, body, kLongTimeout);
  absl::StatusOr<IncomingMessage> r = Await(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->header.is_reply());
  EXPECT_EQ(r->payload, body);
}

// ProcessCpu: this process's CPU time (every thread).
absl::Duration ProcessCpu() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

// busy_poll: the loops keep polling after traffic (both ends here), every
// reply still arrives intact, and once traffic stops for longer than
// busy_poll the loops go to sleep: over a quiet 300 ms the process uses
// well under the CPU of one spinning loop (which would be ~300 ms).
TEST_P(TransportTest, BusyPollingLoopsAnswerThenSleepWhenQuiet) {
  TransportOptions options;
  options.busy_poll = absl::Milliseconds(2);
  auto server_owner = MakeServer(EchoPing, options);
  auto client = MakeTransport(options);
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  for (int i = 0; i < 200; ++i) {
    std::vector<uint8_t> body = Pattern(100 + i * 17, i);
    auto f = channel->Call({.opcode = Opcode::kPing}, body, kLongTimeout);
    absl::StatusOr<IncomingMessage> r = Await(f);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->payload, body) << i;
  }
  absl::SleepFor(absl::Milliseconds(50));  // past busy_poll: the loops may sleep
  const absl::Duration before = ProcessCpu();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_LT(ProcessCpu() - before, absl::Milliseconds(100)) << "a loop kept spinning";
}

TEST_P(TransportTest, ManyInFlightCompleteOutOfOrderByRequestId) {
  constexpr int kCalls = 64;
  // The handler holds requests until all have arrived, then answers them
  // newest first, in one Send.
  std::vector<IncomingMessage> held;  // I/O thread only (one connection)
  auto server_owner = MakeServer([&](Connection& c, std::span<IncomingMessage> in) {
    for (IncomingMessage& m : in) held.push_back(std::move(m));
    if (held.size() < kCalls) return;
    std::vector<OutgoingMessage> out;
    for (auto it = held.rbegin(); it != held.rend(); ++it) {
      out.push_back(OwnedMessage(ReplyHeader(it->header), it->payload));
    }
    ASSERT_TRUE(c.Send(out).ok());
  });
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();

  std::mutex mu;
  std::vector<int> order;  // call index in completion order
  std::vector<std::future<absl::StatusOr<IncomingMessage>>> futures;
  for (int i = 0; i < kCalls; ++i) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<IncomingMessage>>>();
    futures.push_back(promise->get_future());
    channel->Call(OwnedMessage({.opcode = Opcode::kPing}, Pattern(100 + i, i)), kLongTimeout,
                  [&, i, promise](absl::StatusOr<IncomingMessage> r) {
                    {
                      std::lock_guard<std::mutex> lock(mu);
                      order.push_back(i);
                    }
                    promise->set_value(std::move(r));
                  });
  }
  for (int i = 0; i < kCalls; ++i) {
    absl::StatusOr<IncomingMessage> r = Await(futures[i]);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->payload, Pattern(100 + i, i)) << "call " << i << " got another call's reply";
  }
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(order.size(), size_t{kCalls});
  for (int i = 0; i < kCalls; ++i) EXPECT_EQ(order[i], kCalls - 1 - i);
  EXPECT_EQ(channel->stats().in_flight, 0u);
  EXPECT_EQ(channel->stats().replies, uint64_t{kCalls});
}

// A toy page store: enough to carry real pages through BATCH both ways.
// on_receive runs on the server's single I/O thread, so no lock.
class ToyPageStore {
 public:
  void Handle(Connection& c, std::span<IncomingMessage> in) {
    std::vector<OutgoingMessage> out;
    for (IncomingMessage& m : in) {
      ASSERT_EQ(m.header.opcode, Opcode::kBatch);
      FrameView view{m.header, m.payload};
      auto subs = DecodeBatch(view);
      ASSERT_TRUE(subs.ok()) << subs.status();
      auto reply = std::make_shared<Reply>();
      for (const FrameView& sub : *subs) {
        FrameHeader h = ReplyHeader(sub.header);
        h.page = sub.header.page;
        std::vector<std::span<const uint8_t>> pieces;
        if (sub.header.opcode == Opcode::kStore) {
          pages_[sub.header.page] = {sub.header,
                                     std::vector<uint8_t>(sub.payload.begin(), sub.payload.end())};
        } else if (auto it = pages_.find(sub.header.page); it == pages_.end()) {
          h.status = absl::StatusCode::kNotFound;
          h.page = 0;
        } else {
          h.codec = it->second.header.codec;
          h.checksum = it->second.header.checksum;
          h.flags |= it->second.header.flags & kFlagSameFilled;
          pieces.push_back(it->second.bytes);  // zero-copy from the store
        }
        ASSERT_TRUE(reply->batch.Add(h, pieces).ok());
      }
      OutgoingMessage o;
      o.header = reply->batch.Header(m.header.request_id);
      o.payload.assign(reply->batch.pieces().begin(), reply->batch.pieces().end());
      o.on_sent = [reply](absl::Status) {};
      out.push_back(std::move(o));
    }
    ASSERT_TRUE(c.Send(out).ok());
  }

 private:
  struct Reply {
    BatchEncoder batch;
  };
  struct Stored {
    FrameHeader header;
    std::vector<uint8_t> bytes;
  };
  std::map<uint64_t, Stored> pages_;  // never erased while tests run: views stay valid
};

TEST_P(TransportTest, FullBatchOfPagesStoresAndLoadsBack) {
  ToyPageStore store;
  auto server_owner =
      MakeServer([&](Connection& c, std::span<IncomingMessage> in) { store.Handle(c, in); });
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();

  std::vector<std::vector<uint8_t>> pages;
  auto fill = EncodeU64Payload(0x0101010101010101);
  BatchEncoder stores;
  for (uint64_t i = 0; i < kMaxBatchEntries; ++i) {
    pages.push_back(Pattern(i % 3 == 0 ? kMaxPagePayload : 100 + i * 13, i));
  }
  for (uint64_t i = 0; i < kMaxBatchEntries; ++i) {
    if (i == 7) {
      std::vector<std::span<const uint8_t>> p{fill};
      ASSERT_TRUE(
          stores
              .Add({.opcode = Opcode::kStore, .flags = kFlagSameFilled, .page = i, .checksum = 77},
                   p)
              .ok());
      continue;
    }
    std::vector<std::span<const uint8_t>> p{pages[i]};
    ASSERT_TRUE(stores
                    .Add({.opcode = Opcode::kStore,
                          .page = i,
                          .codec = i % 2 ? Codec::kLz4 : Codec::kZstd,
                          .checksum = 1000 + i},
                         p)
                    .ok());
  }
  std::promise<absl::StatusOr<IncomingMessage>> stored;
  auto stored_future = stored.get_future();
  OutgoingMessage m{.header = stores.Header(0),
                    .payload = {stores.pieces().begin(), stores.pieces().end()}};
  channel->Call(std::move(m), kLongTimeout,
                [&](absl::StatusOr<IncomingMessage> r) { stored.set_value(std::move(r)); });
  auto store_reply = Await(stored_future);
  ASSERT_TRUE(store_reply.ok()) << store_reply.status();
  EXPECT_EQ(store_reply->header.page, kMaxBatchEntries);

  BatchEncoder loads;
  for (uint64_t i = 0; i < kMaxBatchEntries - 1; ++i) {
    ASSERT_TRUE(loads.Add({.opcode = Opcode::kLoad, .page = i}).ok());
  }
  ASSERT_TRUE(loads.Add({.opcode = Opcode::kLoad, .page = 5000}).ok());  // never stored
  std::vector<uint8_t> load_payload;
  for (auto p : loads.pieces()) load_payload.insert(load_payload.end(), p.begin(), p.end());
  auto loaded_future = channel->Call(loads.Header(0), load_payload, kLongTimeout);
  auto loaded = Await(loaded_future);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto subs = DecodeBatch({loaded->header, loaded->payload});
  ASSERT_TRUE(subs.ok()) << subs.status();
  ASSERT_EQ(subs->size(), kMaxBatchEntries);
  for (uint64_t i = 0; i < kMaxBatchEntries - 1; ++i) {
    const FrameView& s = (*subs)[i];
    ASSERT_EQ(s.header.status, absl::StatusCode::kOk) << i;
    EXPECT_EQ(s.header.page, i);
    std::vector<uint8_t> got(s.payload.begin(), s.payload.end());
    if (i == 7) {
      EXPECT_TRUE(s.header.same_filled());
      EXPECT_EQ(got, std::vector<uint8_t>(fill.begin(), fill.end()));
      EXPECT_EQ(s.header.checksum, 77u);
      continue;
    }
    EXPECT_EQ(got, pages[i]) << "page " << i;
    EXPECT_EQ(s.header.checksum, 1000 + i) << "checksum must be carried end to end";
    EXPECT_EQ(s.header.codec, i % 2 ? Codec::kLz4 : Codec::kZstd);
  }
  EXPECT_EQ((*subs)[kMaxBatchEntries - 1].header.status, absl::StatusCode::kNotFound);
}

TEST(TcpTransportTest, GarbageClosesOnlyThatConnection) {
  TestServer server(EchoPing);
  auto client = CreateTcpTransport({}).value();
  auto channel = RpcChannel::Connect(*client, server.address()).value();
  auto before = channel->Call({.opcode = Opcode::kPing}, {1, 2, 3}, kLongTimeout);
  ASSERT_TRUE(Await(before).ok());

  // Peer 1: an HTTP request. Peer 2: a well-formed header announcing a
  // 1 MiB STORE, rejected before any payload is buffered.
  int http = RawConnect(server.port());
  std::string get = "GET /metrics HTTP/1.1\r\nHost: farswap\r\nAccept: */*\r\n\r\n";
  ASSERT_TRUE(WriteAll(http, get.data(), get.size()));
  int oversized = RawConnect(server.port());
  FrameHeader h{.opcode = Opcode::kStore, .page = 1};
  h.payload_length = 1 << 20;
  auto wire = EncodeHeader(h);
  ASSERT_TRUE(WriteAll(oversized, wire.data(), wire.size()));

  // Both are closed: a blocking read sees EOF (or a reset).
  uint8_t byte;
  EXPECT_LE(read(http, &byte, 1), 0);
  EXPECT_LE(read(oversized, &byte, 1), 0);
  std::vector<absl::Status> reasons = server.WaitForCloses(2);
  ASSERT_EQ(reasons.size(), 2u);
  std::string all = reasons[0].ToString() + " | " + reasons[1].ToString();
  EXPECT_THAT(all, HasSubstr("bad magic"));
  EXPECT_THAT(all, HasSubstr("payload length 1048576 outside 1..4096"));
  for (const absl::Status& s : reasons) EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  close(http);
  close(oversized);

  // The well-behaved connection is untouched.
  auto after = channel->Call({.opcode = Opcode::kPing}, {4, 5, 6}, kLongTimeout);
  auto r = Await(after);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->payload, (std::vector<uint8_t>{4, 5, 6}));
}

// A request answered from on_receive costs the answering side one read
// and no hand-off to its loop: the reply is queued while on_receive runs
// and written once it returns, with no eventfd wake-up of the same loop
// (flushes_posted), and a read that did not fill the buffer ends the turn
// instead of a second read that would say EAGAIN (read_calls). Both
// counted on the server's connection at the last of a run of one-at-a-time
// exchanges, so the earlier ones are all in.
TEST(TcpTransportTest, AnAnsweredRequestCostsOneReadAndNoLoopWakeUp) {
  std::mutex mu;
  ConnectionStats last;  // guarded by mu
  TestServer server([&](Connection& c, std::span<IncomingMessage> in) {
    EchoPing(c, in);
    std::lock_guard<std::mutex> lock(mu);
    last = c.stats();
  });
  auto client = CreateTcpTransport({}).value();
  auto channel = RpcChannel::Connect(*client, server.address()).value();
  constexpr int kExchanges = 200;
  for (int i = 0; i < kExchanges; ++i) {
    std::vector<uint8_t> body = Pattern(64 + i * 13, i);
    auto f = channel->Call({.opcode = Opcode::kPing}, body, kLongTimeout);
    absl::StatusOr<IncomingMessage> r = Await(f);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->payload, body) << i;
  }
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(last.frames_received, uint64_t{kExchanges});
  EXPECT_EQ(last.flushes_posted, 0u);
  // One read per exchange; a few spare for a frame split across segments.
  EXPECT_GE(last.read_calls, uint64_t{kExchanges});
  EXPECT_LE(last.read_calls, uint64_t{kExchanges} + kExchanges / 10);
}

// A sender that wrote its request inline may be preempted before it lets
// go of the connection's mutex (its send woke the peer on its own CPU). The
// loop that reads the reply must not then sleep on that mutex for a flush
// with nothing to write: here the sender is held, mutex and all, at the
// sync point right after its inline sendmsg (where a preemption lands); the
// loop reads its reply, and a reply on a second connection of the same loop
// still arrives while it is held.
TEST(TcpTransportTest, ALoopReadsRepliesWhileASenderHoldsItsConnection) {
  TestServer server(EchoPing);
  auto client = CreateTcpTransport({.io_threads = 1}).value();  // one loop for both
  std::promise<std::vector<uint8_t>> held_reply;
  ConnectionHandler handler;
  handler.on_receive = [&](Connection&, std::span<IncomingMessage> in) {
    for (IncomingMessage& m : in) held_reply.set_value(std::move(m.payload));
  };
  std::shared_ptr<Connection> held = client->Connect(server.address(), handler).value();
  auto other_channel = RpcChannel::Connect(*client, server.address()).value();

  std::promise<void> reached, release;
  std::shared_future<void> released = release.get_future().share();
  SyncPoints::SetOnce("TcpConnection::WriteQueuedLocked:sent", [&] {
    reached.set_value();
    released.wait();
  });
  std::thread sender([&] {
    std::vector<OutgoingMessage> ping;
    ping.push_back(OwnedMessage({.opcode = Opcode::kPing, .request_id = 1}, {1, 2, 3}));
    EXPECT_TRUE(held->Send(ping).ok());
  });
  reached.get_future().wait();  // the request is out; the sender holds the mutex
  std::future<std::vector<uint8_t>> reply = held_reply.get_future();
  ASSERT_EQ(reply.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ(reply.get(), (std::vector<uint8_t>{1, 2, 3}));
  // The loop has delivered that reply; it must be free to read the next.
  auto other = other_channel->Call({.opcode = Opcode::kPing}, {4, 5, 6}, kLongTimeout);
  const bool arrived = other.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  release.set_value();
  sender.join();
  SyncPoints::ClearAll();
  EXPECT_TRUE(arrived) << "the loop slept on the held connection's mutex";
  auto r = Await(other);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->payload, (std::vector<uint8_t>{4, 5, 6}));
  held->Close(absl::CancelledError("test over"));
}

TEST_P(TransportTest, ServerCloseFailsEveryOutstandingCallWithUnavailable) {
  constexpr int kCalls = 20;
  std::promise<void> all_arrived;
  int arrived = 0;  // server I/O thread only
  auto server = MakeServer([&](Connection&, std::span<IncomingMessage> in) {
    arrived += int(in.size());  // never replies
    if (arrived == kCalls) all_arrived.set_value();
  });
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server->address()).value();
  std::vector<std::future<absl::StatusOr<IncomingMessage>>> futures;
  for (int i = 0; i < kCalls; ++i) {
    futures.push_back(
        channel->Call({.opcode = Opcode::kLoad, .page = uint64_t(i)}, {}, kLongTimeout));
  }
  ASSERT_EQ(all_arrived.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ(channel->stats().in_flight, uint64_t{kCalls});
  server.reset();  // shuts the server transport down, closing the connection
  for (auto& f : futures) {
    auto r = Await(f);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("closed"));
  }
  // The failure is sticky: a new call fails at once, without hanging.
  auto later = channel->Call({.opcode = Opcode::kPing}, {}, kLongTimeout);
  EXPECT_EQ(Await(later).status().code(), absl::StatusCode::kUnavailable);
}

TEST_P(TransportTest, SilentServerGivesDeadlineExceededAndLateReplyIsDropped) {
  // The server answers PINGs at once but holds LOADs until the test says so.
  std::mutex mu;
  std::shared_ptr<Connection> held_conn;
  std::vector<FrameHeader> held;
  std::promise<void> load_arrived;
  auto server_owner = MakeServer([&](Connection& c, std::span<IncomingMessage> in) {
    for (IncomingMessage& m : in) {
      if (m.header.opcode == Opcode::kLoad) {
        std::lock_guard<std::mutex> lock(mu);
        held.push_back(m.header);
        load_arrived.set_value();
      } else {
        OutgoingMessage reply = OwnedMessage(ReplyHeader(m.header), {});
        ASSERT_TRUE(c.Send({&reply, 1}).ok());
      }
    }
  });
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  const absl::Time start = absl::Now();
  auto f = channel->Call({.opcode = Opcode::kLoad, .page = 9}, {}, absl::Milliseconds(100));
  auto r = Await(f);
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_GE(took, absl::Milliseconds(100));
  EXPECT_LT(took, absl::Seconds(30));
  EXPECT_EQ(channel->stats().timeouts, 1u);

  // Now the server replies late; then a PING on the same connection, whose
  // reply arrives after the late one (TCP keeps order).
  ASSERT_EQ(load_arrived.get_future().wait_for(std::chrono::seconds(60)),
            std::future_status::ready);
  FrameHeader late;
  {
    std::lock_guard<std::mutex> lock(mu);
    late = ReplyHeader(held[0]);
  }
  late.status = absl::StatusCode::kNotFound;
  OutgoingMessage late_reply = OwnedMessage(late, {});
  ASSERT_TRUE(server_owner->connections().at(0)->Send({&late_reply, 1}).ok());
  auto ping = channel->Call({.opcode = Opcode::kPing}, {}, kLongTimeout);
  ASSERT_TRUE(Await(ping).ok());
  EXPECT_EQ(channel->stats().late_replies, 1u);
  EXPECT_EQ(channel->stats().in_flight, 0u);
}

TEST_P(TransportTest, AShortDeadlineBehindLongOnesFiresOnTime) {
  // The server never answers LOADs. Calls with a long timeout go first, then
  // one with a short timeout: it must expire on its own deadline, not wait
  // behind the others', and the long ones stay in flight.
  auto server_owner = MakeServer([](Connection&, std::span<IncomingMessage>) {});
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  std::vector<std::future<absl::StatusOr<IncomingMessage>>> long_calls;
  for (uint64_t p = 0; p < 3; ++p) {
    long_calls.push_back(channel->Call({.opcode = Opcode::kLoad, .page = p}, {}, kLongTimeout));
  }
  const absl::Time start = absl::Now();
  auto short_call =
      channel->Call({.opcode = Opcode::kLoad, .page = 99}, {}, absl::Milliseconds(100));
  auto r = Await(short_call);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_EQ(channel->stats().in_flight, 3u);
  EXPECT_EQ(channel->stats().timeouts, 1u);
  for (auto& f : long_calls) {
    EXPECT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  }
  channel->Close();
  for (auto& f : long_calls) EXPECT_EQ(Await(f).status().code(), absl::StatusCode::kCancelled);
}

TEST_P(TransportTest, AnsweredCallsDoNotPileUpInTheDeadlineHeap) {
  // A call answered by its reply leaves its deadline entry behind (no
  // search on the reply path); the heap is rebuilt once stale entries
  // outnumber the calls in flight, so thousands of answered calls with a
  // long timeout leave a bounded heap behind, and none of them times out.
  auto server_owner = MakeServer(EchoPing);
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  constexpr int kInFlight = 16, kCalls = 313 * kInFlight;
  uint64_t most_entries = 0;
  for (int i = 0; i < kCalls; i += kInFlight) {
    std::vector<std::future<absl::StatusOr<IncomingMessage>>> calls;
    for (int k = 0; k < kInFlight; ++k) {
      calls.push_back(channel->Call({.opcode = Opcode::kPing}, {}, kLongTimeout));
    }
    most_entries = std::max(most_entries, channel->stats().deadline_entries);
    for (auto& f : calls) ASSERT_TRUE(Await(f).ok());
  }
  const RpcChannelStats s = channel->stats();
  EXPECT_EQ(s.replies, uint64_t(kCalls));
  EXPECT_EQ(s.timeouts, 0u);
  EXPECT_EQ(s.in_flight, 0u);
  // At most twice the calls in flight plus the slack (256) plus the call
  // being added; far below the 5008 calls made.
  EXPECT_LE(most_entries, 2u * kInFlight + 257u);
  EXPECT_LE(s.deadline_entries, 2u * kInFlight + 257u);
}

TEST_P(TransportTest, ErrorReplyBecomesTheCallStatus) {
  auto server_owner = MakeServer([](Connection& c, std::span<IncomingMessage> in) {
    for (IncomingMessage& m : in) {
      FrameHeader h = ReplyHeader(m.header);
      h.status = absl::StatusCode::kNotFound;
      std::string msg = "page 12 is not stored";
      OutgoingMessage reply = OwnedMessage(h, std::vector<uint8_t>(msg.begin(), msg.end()));
      ASSERT_TRUE(c.Send({&reply, 1}).ok());
    }
  });
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  auto f = channel->Call({.opcode = Opcode::kLoad, .page = 12}, {}, kLongTimeout);
  auto r = Await(f);
  EXPECT_EQ(r.status(), absl::NotFoundError("page 12 is not stored"));
}

// ThreadCount: this process's threads, from /proc/self/task.
size_t ThreadCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// A closed channel keeps no thread: a client that re-attaches to a flapping
// node keeps its closed channels, and each used to keep its timer thread.
TEST_P(TransportTest, ClosedChannelsKeepNoThread) {
  auto server_owner = MakeServer(EchoPing);
  auto client = MakeTransport({});
  const size_t before = ThreadCount();
  std::vector<std::unique_ptr<RpcChannel>> kept;
  for (int i = 0; i < 20; ++i) {
    kept.push_back(RpcChannel::Connect(*client, server_owner->address()).value());
    auto ping = kept.back()->Call({.opcode = Opcode::kPing}, {}, kLongTimeout);
    ASSERT_TRUE(Await(ping).ok());
  }
  EXPECT_GE(ThreadCount(), before + 20);  // one timer thread per open channel
  for (auto& c : kept) c->Close();
  // pthread_join returns once the kernel has woken the joiner, which it does
  // before it reaps the thread: a joined thread can stay listed in
  // /proc/self/task for a moment. Wait for the count, bounded.
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (ThreadCount() != before && absl::Now() < give_up) std::this_thread::yield();
  EXPECT_EQ(ThreadCount(), before);
  auto after = kept[0]->Call({.opcode = Opcode::kPing}, {}, kLongTimeout);
  EXPECT_EQ(Await(after).status().code(), absl::StatusCode::kCancelled);
}

TEST_P(TransportTest, ChannelCloseCancelsOutstandingCalls) {
  auto server_owner = MakeServer([](Connection&, std::span<IncomingMessage>) {});
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  auto f = channel->Call({.opcode = Opcode::kLoad, .page = 1}, {}, kLongTimeout);
  channel->Close();
  EXPECT_EQ(Await(f).status().code(), absl::StatusCode::kCancelled);
  auto g = channel->Call({.opcode = Opcode::kLoad, .page = 1}, {}, kLongTimeout);
  EXPECT_EQ(Await(g).status().code(), absl::StatusCode::kCancelled);
}

TEST_P(TransportTest, SendRejectsInvalidHeadersBeforeTheWire) {
  auto server_owner = MakeServer(EchoPing);
  auto client = MakeTransport({});
  auto conn = client->Connect(server_owner->address(), {}).value();
  std::vector<uint8_t> big(5000);
  OutgoingMessage m{.header = {.opcode = Opcode::kStore, .page = 1}, .payload = {big}};
  absl::Status s = conn->Send({&m, 1});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("payload length 5000 outside 1..4096"));
}

TEST_P(TransportTest, ConnectFailuresAreClear) {
  auto client = MakeTransport({});
  EXPECT_EQ(client->Connect("no-port-here", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A port nobody listens on: take one from a listener, then close it.
  std::string address;
  {
    auto gone_owner = MakeServer(EchoPing);
    address = gone_owner->address();
  }
  EXPECT_EQ(client->Connect(address, {}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CreateTransport("carrier-pigeon://x:1", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateTransport(scheme(), {.io_threads = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  client->Shutdown();
  EXPECT_EQ(client->Connect(address, {}).status().code(), absl::StatusCode::kUnavailable);
}

TEST_P(TransportTest, CallManySendsOneBurstAndMatchesEachReply) {
  // The server answers each request with an empty OK, but labels the
  // INVALIDATE_RANGE reply as a PING: the channel must refuse to hand a
  // mismatched reply to the caller.
  auto server_owner = MakeServer([](Connection& c, std::span<IncomingMessage> in) {
    std::vector<OutgoingMessage> out;
    for (IncomingMessage& m : in) {
      FrameHeader h = ReplyHeader(m.header);
      if (m.header.opcode == Opcode::kInvalidateRange) {
        h.opcode = Opcode::kPing;  // wrong opcode on purpose: must be caught
      }
      out.push_back(OwnedMessage(h, {}));
    }
    ASSERT_TRUE(c.Send(out).ok());
  });
  auto client = MakeTransport({});
  auto channel = RpcChannel::Connect(*client, server_owner->address()).value();
  auto count = EncodeU64Payload(10);
  std::vector<OutgoingMessage> requests(3);
  requests[0].header = {.opcode = Opcode::kInvalidate, .page = 1};
  requests[1].header = {.opcode = Opcode::kInvalidateRange, .page = 5};
  requests[1].payload = {count};
  requests[2].header = {.opcode = Opcode::kPing};
  std::vector<std::promise<absl::StatusOr<IncomingMessage>>> promises(3);
  std::vector<ReplyCallback> done;
  for (auto& p : promises) {
    done.push_back([&p](absl::StatusOr<IncomingMessage> r) { p.set_value(std::move(r)); });
  }
  std::vector<uint64_t> ids = channel->CallMany(requests, kLongTimeout, std::move(done));
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_NE(ids[1], ids[2]);
  auto f0 = promises[0].get_future();
  auto f1 = promises[1].get_future();
  auto f2 = promises[2].get_future();
  auto r0 = Await(f0);
  ASSERT_TRUE(r0.ok()) << r0.status();
  EXPECT_EQ(r0->header.request_id, ids[0]);
  auto r1 = Await(f1);
  EXPECT_EQ(r1.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(r1.status().message()), HasSubstr("INVALIDATE_RANGE"));
  auto r2 = Await(f2);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->header.request_id, ids[2]);
}

TEST_P(TransportTest, ClosedListenerAcceptsNoMore) {
  auto server = MakeTransport({});
  std::atomic<int> accepted{0};
  auto listener = server
                      ->Listen(scheme() + "://127.0.0.1:0",
                               [&](std::shared_ptr<Connection>) {
                                 accepted++;
                                 return ConnectionHandler{};
                               })
                      .value();
  const std::string address = listener->address();
  listener->Close();
  auto client = MakeTransport({});
  auto conn = client->Connect(address, {});
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kUnavailable) << conn.status();
  EXPECT_EQ(accepted.load(), 0);
}

TEST_P(TransportTest, ManyClientsOnSeveralIoThreads) {
  auto server_owner = MakeServer(EchoPing, {.io_threads = 2});
  auto client = MakeTransport({.io_threads = 2});
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 300;
  constexpr int kWindow = 16;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto channel = RpcChannel::Connect(*client, server_owner->address());
      if (!channel.ok()) {
        bad++;
        return;
      }
      std::vector<std::pair<int, std::future<absl::StatusOr<IncomingMessage>>>> window;
      auto check = [&](std::pair<int, std::future<absl::StatusOr<IncomingMessage>>>& w) {
        auto r = Await(w.second);
        if (!r.ok() || r->payload != Pattern(64 + w.first % 512, t * 100000 + w.first)) bad++;
      };
      for (int i = 0; i < kCallsPerThread; ++i) {
        window.emplace_back(
            i, (*channel)->Call({.opcode = Opcode::kPing}, Pattern(64 + i % 512, t * 100000 + i),
                                kLongTimeout));
        if (window.size() == kWindow) {
          for (auto& w : window) check(w);
          window.clear();
        }
      }
      for (auto& w : window) check(w);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, TransportTest, ::testing::Values("tcp", "ucx"),
                         [](const ::testing::TestParamInfo<std::string>& backend) {
                           return backend.param;
                         });

}  // namespace
}  // namespace farswap::transport
