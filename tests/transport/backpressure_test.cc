// Back-pressure (transport/README.md "Back-pressure"): a server stops
// reading from a peer that does not read its replies, loses nothing, and
// resumes when the peer reads; a client's Send reports RESOURCE_EXHAUSTED
// when its peer stops reading. Synchronised with sync points and blocking
// socket calls, never sleeps. Runs under ThreadSanitizer in CI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <thread>

#include "farswap/common/sync_point.h"
#include "farswap/transport/rpc_channel.h"
#include "test_util.h"

namespace farswap::transport {
namespace {

using ::testing::HasSubstr;
using namespace ::farswap::transport::testing;  // NOLINT

constexpr size_t kQueueLimit = 64 * 1024;
constexpr int kSocketBuffer = 32 * 1024;

class BackPressureTest : public ::testing::Test {
 protected:
  void TearDown() override { SyncPoints::ClearAll(); }
};

void EchoPing(Connection& c, std::span<IncomingMessage> in) {
  std::vector<OutgoingMessage> out;
  for (IncomingMessage& m : in) {
    out.push_back(OwnedMessage(ReplyHeader(m.header), std::move(m.payload)));
  }
  ASSERT_TRUE(c.Send(out).ok());
}

TEST_F(BackPressureTest, ServerStopsReadingFromPeerThatDoesNotReadAndLosesNothing) {
  std::promise<void> paused, resumed;
  SyncPoints::SetOnce("TcpConnection::PauseReading", [&] { paused.set_value(); });
  SyncPoints::SetOnce("TcpConnection::ResumeReading", [&] { resumed.set_value(); });
  TestServer server(EchoPing,
                    {.max_output_queue_bytes = kQueueLimit, .socket_buffer_bytes = kSocketBuffer});

  // A raw peer writes many 4 KiB PINGs and, for now, reads nothing.
  constexpr int kRequests = 1000;
  int fd = RawConnect(server.port(), /*rcvbuf=*/16 * 1024);
  // JoinOnExit unblocks and joins the writer even when an assertion fails.
  struct JoinOnExit {
    int fd;
    std::thread thread;
    ~JoinOnExit() {
      shutdown(fd, SHUT_RDWR);
      if (thread.joinable()) thread.join();
      close(fd);
    }
  } writer{fd, {}};
  writer.thread = std::thread([&] {
    std::vector<uint8_t> body(kMaxPingPayload);
    for (int i = 1; i <= kRequests; ++i) {
      FrameHeader h{.opcode = Opcode::kPing, .request_id = uint64_t(i)};
      h.payload_length = uint32_t(body.size());
      auto wire = EncodeHeader(h);
      body = Pattern(kMaxPingPayload, i);
      if (!WriteAll(fd, wire.data(), wire.size()) || !WriteAll(fd, body.data(), body.size())) {
        ADD_FAILURE() << "write of request " << i << " failed";
        return;
      }
    }
  });

  ASSERT_EQ(paused.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  // The server holds no more than the limit plus one read's worth of replies.
  std::vector<std::shared_ptr<Connection>> conns = server.connections();
  ASSERT_EQ(conns.size(), 1u);
  ConnectionStats stats = conns[0]->stats();
  EXPECT_GE(stats.read_pauses, 1u);
  EXPECT_LT(stats.queued_bytes, kQueueLimit + 2 * kMaxFrameSize);

  // Other peers are unaffected while that one is paused.
  auto client = CreateTcpTransport({}).value();
  auto channel = RpcChannel::Connect(*client, server.address()).value();
  auto ping = channel->Call({.opcode = Opcode::kPing}, {42}, absl::Seconds(60));
  ASSERT_EQ(ping.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  auto pong = ping.get();
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->payload, std::vector<uint8_t>{42});

  // Now the peer reads: every reply arrives, in order, intact.
  std::vector<uint8_t> frame(kFrameHeaderSize + kMaxPingPayload);
  for (int i = 1; i <= kRequests; ++i) {
    ASSERT_TRUE(ReadAll(fd, frame.data(), frame.size())) << "reply " << i;
    auto f = DecodeFrame(frame);
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_EQ(f->header.request_id, uint64_t(i));
    ASSERT_TRUE(f->header.is_reply());
    ASSERT_TRUE(
        std::equal(f->payload.begin(), f->payload.end(), Pattern(kMaxPingPayload, i).begin()));
  }
  writer.thread.join();
  EXPECT_EQ(resumed.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
}

TEST_F(BackPressureTest, ClientSendReportsResourceExhaustedWhenPeerStopsReading) {
  // A listener that accepts (via the backlog) and never reads.
  RawListener listener(16 * 1024);
  const std::string address = listener.address();

  auto client = CreateTcpTransport(
                    {.max_output_queue_bytes = kQueueLimit, .socket_buffer_bytes = kSocketBuffer})
                    .value();
  std::promise<absl::Status> closed;
  ConnectionHandler handler;
  handler.on_close = [&](const absl::Status& s) { closed.set_value(s); };
  auto conn = client->Connect(address, handler).value();

  static const std::vector<uint8_t> body(kMaxPingPayload, 0xAB);
  std::mutex mu;
  int sent_ok = 0, sent_failed = 0;
  int accepted = 0;
  absl::Status refused;
  // Bounded: kernel buffers are finite, so the queue must pass the limit
  // long before this many 4 KiB frames.
  for (int i = 0; i < 100000 && refused.ok(); ++i) {
    OutgoingMessage m{.header = {.opcode = Opcode::kPing, .request_id = uint64_t(i)},
                      .payload = {body},
                      .on_sent = [&](absl::Status s) {
                        std::lock_guard<std::mutex> lock(mu);
                        (s.ok() ? sent_ok : sent_failed)++;
                      }};
    refused = conn->Send({&m, 1});
    if (refused.ok()) accepted++;
  }
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("not reading"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("(limit 65536)"));

  // Closing fails what is still queued; every accepted frame is accounted.
  conn->Close(absl::CancelledError("test done"));
  ASSERT_EQ(closed.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  std::lock_guard<std::mutex> lock(mu);
  // (Whether any were still queued depends on how far the loop got; each
  // accepted frame's callback ran exactly once either way.)
  EXPECT_EQ(sent_ok + sent_failed, accepted);
}

}  // namespace
}  // namespace farswap::transport
