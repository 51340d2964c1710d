// test_util.h: helpers shared by the transport tests — a configurable
// in-test server, owned-payload messages and raw sockets for misbehaving
// peers. Nothing here sleeps: waits are on conditions with generous bounds.
// std::mutex rather than absl::Mutex: Debian's Abseil is not TSan-
// instrumented, so TSan cannot see absl::Mutex synchronisation.
#ifndef FARSWAP_TESTS_TRANSPORT_TEST_UTIL_H_
#define FARSWAP_TESTS_TRANSPORT_TEST_UTIL_H_

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "farswap/transport/transport.h"

namespace farswap::transport::testing {

// kWaitBound: how long any wait in these tests may take before it counts as
// a hang. Never reached when the code works.
inline constexpr absl::Duration kWaitBound = absl::Seconds(60);

// OwnedMessage builds a message whose payload lives until on_sent runs.
inline OutgoingMessage OwnedMessage(FrameHeader h, std::vector<uint8_t> payload) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(payload));
  OutgoingMessage m;
  m.header = h;
  if (!owned->empty()) m.payload.push_back(*owned);
  m.on_sent = [owned](absl::Status) {};
  return m;
}

inline FrameHeader ReplyHeader(const FrameHeader& request) {
  FrameHeader h;
  h.opcode = request.opcode;
  h.flags = kFlagReply;
  h.request_id = request.request_id;
  return h;
}

inline std::vector<uint8_t> Pattern(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& b : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = uint8_t(x);
  }
  return v;
}

// TestServer is a transport + listener whose frames go to `on_receive`
// (set before Start). It records accepted connections and close reasons.
// Thread-safe.
class TestServer {
 public:
  using Handler = std::function<void(Connection&, std::span<IncomingMessage>)>;

  // scheme: the backend ("tcp", "ucx"), on loopback.
  explicit TestServer(Handler on_receive, TransportOptions options = {},
                      const std::string& scheme = "tcp")
      : on_receive_(std::move(on_receive)) {
    transport_ = CreateTransport(scheme, options).value();
    listener_ = transport_
                    ->Listen(scheme + "://127.0.0.1:0",
                             [this](std::shared_ptr<Connection> c) {
                               {
                                 std::lock_guard<std::mutex> lock(mu_);
                                 connections_.push_back(c);
                               }
                               ConnectionHandler h;
                               h.on_receive = on_receive_;
                               h.on_close = [this](const absl::Status& reason) {
                                 std::lock_guard<std::mutex> lock(mu_);
                                 close_reasons_.push_back(reason);
                                 closed_cv_.notify_all();
                               };
                               return h;
                             })
                    .value();
  }
  ~TestServer() { transport_->Shutdown(); }

  std::string address() const { return listener_->address(); }
  int port() const {
    std::string a = address();
    int p = 0;
    EXPECT_TRUE(absl::SimpleAtoi(a.substr(a.rfind(':') + 1), &p));
    return p;
  }
  Transport& transport() { return *transport_; }

  // WaitForCloses waits until `n` server-side connections have closed and
  // returns their reasons.
  std::vector<absl::Status> WaitForCloses(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    closed_cv_.wait_for(lock, absl::ToChronoSeconds(kWaitBound),
                        [&] { return close_reasons_.size() >= n; });
    return close_reasons_;
  }

  std::vector<std::shared_ptr<Connection>> connections() {
    std::lock_guard<std::mutex> lock(mu_);
    return connections_;
  }

 private:
  const Handler on_receive_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<Listener> listener_;
  std::mutex mu_;
  std::condition_variable closed_cv_;
  std::vector<std::shared_ptr<Connection>> connections_;  // guarded by mu_
  std::vector<absl::Status> close_reasons_;               // guarded by mu_
};

// RawListener is a blocking loopback listener a test drives by hand
// (accept, then ReadAll / WriteAll below), for peers that misbehave on
// purpose or when no second I/O loop may run. rcvbuf > 0 shrinks the
// receive buffer of the connections it accepts.
struct RawListener {
  explicit RawListener(int rcvbuf = 0) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd, 4), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~RawListener() { close(fd); }
  RawListener(const RawListener&) = delete;
  RawListener& operator=(const RawListener&) = delete;
  std::string address() const { return "tcp://127.0.0.1:" + std::to_string(port); }

  int fd = -1;
  int port = 0;
};

// RawConnect opens a blocking socket to 127.0.0.1:port (for peers that
// misbehave on purpose). rcvbuf > 0 shrinks its receive buffer first.
inline int RawConnect(int port, int rcvbuf = 0) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  return fd;
}

inline bool WriteAll(int fd, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    b += w;
    n -= size_t(w);
  }
  return true;
}

inline bool ReadAll(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    ssize_t r = read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= size_t(r);
  }
  return true;
}

}  // namespace farswap::transport::testing

#endif  // FARSWAP_TESTS_TRANSPORT_TEST_UTIL_H_
