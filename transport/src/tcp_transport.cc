// tcp_transport.cc: the TCP backend — the default, and what tests use.
//
// Shape. TcpTransport owns io_threads IoLoops. Every socket belongs to one
// loop (connections are spread round-robin) and only that loop's thread
// reads, writes or closes it. Sockets are non-blocking with TCP_NODELAY
// (frames are latency-bound page requests; Nagle would hold back a LOAD
// behind the previous reply's ACK).
//
// Sending. Send (any thread) validates the headers, encodes them into the
// connection's output queue next to the caller's payload pieces, and posts a
// flush to the loop (one post per burst: flush_posted_). The loop gathers up
// to kMaxIovecs pieces across queued frames into one sendmsg (writev with
// MSG_NOSIGNAL), keeps partial progress per frame, and waits for EPOLLOUT
// when the kernel buffer is full. A frame's on_sent runs once its last byte
// is written. Replies sent from inside on_receive are flushed before the
// loop reads again, so a request/reply exchange costs no extra wakeup.
//
// Receiving. The loop reads into a per-connection buffer (at most
// kReadBudget bytes per readiness event, for fairness between connections),
// decodes each complete frame with DecodeHeader as soon as its 40 header
// bytes arrive — so an absurd length is rejected before anything is
// buffered for it — then ValidatePayload once it is whole, and hands the
// decoded frames to on_receive in one call. A malformed frame closes that
// connection only, with the reason logged and passed to on_close.
//
// Back-pressure (README "Back-pressure"). Connections made with Connect
// refuse Send with RESOURCE_EXHAUSTED while more than
// max_output_queue_bytes are queued: the caller (the RPC client) fails or
// retries that request. Accepted connections never refuse a reply: when
// their queue passes the limit they stop reading requests from that peer
// (EPOLLIN off) and resume when it drains to half. So a peer that sends but
// never reads costs the server at most one read budget beyond the limit,
// and cannot slow any other connection.
//
// Locking. Each TcpConnection has one mutex, mu_, guarding its output queue
// and closed state; IoLoop::mu_ guards the loop's task queue. No code holds
// two of these at once (Send releases mu_ before IoLoop::Post), so there is
// no lock order to keep. Callbacks run with no lock held.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "farswap/common/status_macros.h"
#include "farswap/common/sync_point.h"
#include "farswap/transport/transport.h"
#include "io_loop.h"
#include "mutex.h"
#include "spdlog/spdlog.h"

namespace farswap::transport {
namespace {

// kReadChunk: the smallest read; kReadBudget: the most bytes one readiness
// event reads before the loop serves other connections (one maximal BATCH).
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kReadBudget = kMaxFrameSize;
// kMaxIovecs: pieces per sendmsg, well under IOV_MAX (1024).
constexpr int kMaxIovecs = 256;

absl::Status ErrnoUnavailable(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

struct HostPort {
  std::string host;
  std::string port;
};

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address) {
  absl::string_view rest = StripScheme(address);
  HostPort hp;
  size_t colon;
  if (!rest.empty() && rest.front() == '[') {  // [v6]:port
    size_t close = rest.find(']');
    if (close == rest.npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("address '", address, "' is not [host]:port"));
    }
    hp.host = std::string(rest.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = rest.rfind(':');
    if (colon == rest.npos) {
      return absl::InvalidArgumentError(absl::StrCat("address '", address, "' is not host:port"));
    }
    hp.host = std::string(rest.substr(0, colon));
  }
  hp.port = std::string(rest.substr(colon + 1));
  if (hp.port.empty() || hp.port.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("address '", address, "' has no numeric port"));
  }
  return hp;
}

std::string FormatSockaddr(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
    return absl::StrCat("tcp://", host, ":", port);
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
  port = ntohs(in6->sin6_port);
  return absl::StrCat("tcp://[", host, "]:", port);
}

std::string PeerName(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "tcp://?";
  return FormatSockaddr(ss);
}

void ConfigureSocket(int fd, const TransportOptions& options) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (options.socket_buffer_bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options.socket_buffer_bytes, sizeof(int));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options.socket_buffer_bytes, sizeof(int));
  }
}

// LoopSet is the transport's loops, shared with listeners so accepted
// connections can be spread over them. Immutable after creation except the
// round-robin cursor.
struct LoopSet {
  std::vector<std::shared_ptr<IoLoop>> loops;
  std::atomic<size_t> next{0};
  const std::shared_ptr<IoLoop>& Pick() {
    return loops[next.fetch_add(1, std::memory_order_relaxed) % loops.size()];
  }
};

// TcpConnection is one TCP data-plane connection. Thread-safe (Connection's
// promise): Send, Close and the accessors may be called from any thread;
// everything that touches the socket runs on the owning loop's thread.
class TcpConnection final : public Connection,
                            public EpollTarget,
                            public std::enable_shared_from_this<TcpConnection> {
 public:
  TcpConnection(std::shared_ptr<IoLoop> loop, int fd, std::string peer, bool accepted,
                const TransportOptions& options)
      : loop_(std::move(loop)),
        fd_(fd),
        peer_(std::move(peer)),
        accepted_(accepted),
        max_queue_bytes_(options.max_output_queue_bytes) {}

  ~TcpConnection() override {
    if (fd_ >= 0) close(fd_);  // never registered (its loop stopped first)
  }

  // set_handler runs before Register, on whatever thread creates the
  // connection; the post to the loop orders it before any callback.
  void set_handler(ConnectionHandler handler) { handler_ = std::move(handler); }

  // Register starts watching the socket (loop thread).
  void Register() {
    absl::StatusOr<IoLoop::Registration> reg = loop_->Add(fd_, EPOLLIN, shared_from_this());
    if (!reg.ok()) {
      CloseNow(
          absl::UnavailableError(absl::StrCat("cannot watch socket: ", reg.status().message())));
      return;
    }
    registration_ = *reg;
    registered_ = true;
    FlushOutput();  // frames sent before registration
  }

  // PostRegister hands the connection to its loop; if the loop has stopped,
  // closes it here (it was never registered, so no other thread touches it).
  void PostRegister() {
    auto self = shared_from_this();
    if (!loop_->Post([self] { self->Register(); })) {
      CloseNow(absl::UnavailableError("transport is shutting down"));
    }
  }

  absl::Status Send(std::span<OutgoingMessage> messages) override {
    std::vector<size_t> sizes(messages.size());
    size_t total = 0;
    for (size_t i = 0; i < messages.size(); ++i) {
      size_t len = 0;
      for (const PayloadPiece& piece : messages[i].payload) len += piece.size();
      if (len > kMaxBatchPayload) {
        return absl::InvalidArgumentError(
            absl::StrCat("message ", i, ": payload of ", len, " bytes exceeds ", kMaxBatchPayload));
      }
      messages[i].header.payload_length = uint32_t(len);
      if (absl::Status s = ValidateHeader(messages[i].header); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("message ", i, ": ", s.message()));
      }
      sizes[i] = kFrameHeaderSize + len;
      total += sizes[i];
    }
    bool post;
    {
      MutexLock lock(&mu_);
      if (closed_) {
        return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
      }
      if (!accepted_ && queued_bytes_ > max_queue_bytes_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("output queue to ", peer_, " holds ", queued_bytes_, " bytes (limit ",
                         max_queue_bytes_, "): the peer is not reading"));
      }
      for (size_t i = 0; i < messages.size(); ++i) {
        PendingWrite& w = out_.emplace_back();
        w.header = EncodeHeader(messages[i].header);
        w.payload = std::move(messages[i].payload);
        w.on_sent = std::move(messages[i].on_sent);
        w.size = sizes[i];
      }
      queued_bytes_ += total;
      post = !flush_posted_;
      flush_posted_ = true;
    }
    if (post) {
      auto self = shared_from_this();
      // If the loop has stopped, its shutdown closes this connection and
      // fails the frames just queued.
      loop_->Post([self] {
        {
          MutexLock lock(&self->mu_);
          self->flush_posted_ = false;
        }
        self->FlushOutput();
        self->ApplyBackPressure();
      });
    }
    return absl::OkStatus();
  }

  void Close(absl::Status reason) override {
    {
      MutexLock lock(&mu_);
      if (closed_ || close_posted_) return;
      close_posted_ = true;
    }
    auto self = shared_from_this();
    // Always deferred, never inline: Close may be called from inside this
    // connection's own callbacks, which CloseNow destroys.
    loop_->Post([self, reason = std::move(reason)] { self->CloseNow(reason); });
  }

  bool is_open() const override {
    MutexLock lock(&mu_);
    return !closed_;
  }
  const std::string& peer_address() const override { return peer_; }

  ConnectionStats stats() const override {
    ConnectionStats s;
    s.frames_sent = frames_sent_.load(std::memory_order_relaxed);
    s.frames_received = frames_received_.load(std::memory_order_relaxed);
    s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
    s.bytes_received = bytes_received_.load(std::memory_order_relaxed);
    s.read_pauses = read_pauses_.load(std::memory_order_relaxed);
    MutexLock lock(&mu_);
    s.queued_bytes = queued_bytes_;
    return s;
  }

  void OnEvents(uint32_t events) override {
    if (events & (EPOLLERR | EPOLLHUP)) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (!(events & EPOLLIN) || err != 0) {  // else drain what is readable first
        CloseNow(absl::UnavailableError(absl::StrCat(
            "connection to ", peer_, " failed: ", err ? std::strerror(err) : "hang-up")));
        return;
      }
    }
    if (events & EPOLLOUT) {
      FlushOutput();
      if (fd_ < 0) return;
    }
    if (events & EPOLLIN) HandleReadable();
    if (fd_ >= 0) ApplyBackPressure();
  }

  void OnLoopShutdown() override { CloseNow(absl::UnavailableError("transport shut down")); }

 private:
  struct PendingWrite {
    std::array<uint8_t, kFrameHeaderSize> header;
    std::vector<PayloadPiece> payload;
    SendCallback on_sent;
    size_t size = 0;     // header + payload bytes
    size_t written = 0;  // bytes already handed to the kernel
  };

  // FlushOutput writes as much of the output queue as the socket takes
  // (loop thread).
  void FlushOutput() {
    if (fd_ < 0 || !registered_) return;
    std::vector<SendCallback> done;
    for (;;) {
      iovec iov[kMaxIovecs];
      int iovcnt = 0;
      size_t gathered = 0;
      {
        // Queue elements stay put while unlocked: Send only appends to the
        // deque (which keeps references valid) and only this thread pops.
        MutexLock lock(&mu_);
        for (auto it = out_.begin(); it != out_.end() && iovcnt < kMaxIovecs; ++it) {
          size_t skip = it->written;
          auto add = [&](const uint8_t* p, size_t n) {
            if (skip >= n) {
              skip -= n;
              return;
            }
            if (iovcnt == kMaxIovecs) return;
            iov[iovcnt++] = {const_cast<uint8_t*>(p + skip), n - skip};
            gathered += n - skip;
            skip = 0;
          };
          add(it->header.data(), it->header.size());
          for (const PayloadPiece& piece : it->payload) add(piece.data(), piece.size());
        }
      }
      if (iovcnt == 0) break;
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = size_t(iovcnt);
      ssize_t n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        RunCallbacks(done, absl::OkStatus());
        CloseNow(ErrnoUnavailable(absl::StrCat("write to ", peer_, " failed")));
        return;
      }
      bytes_sent_.fetch_add(uint64_t(n), std::memory_order_relaxed);
      {
        MutexLock lock(&mu_);
        size_t left = size_t(n);
        queued_bytes_ -= left;
        while (left > 0) {
          PendingWrite& w = out_.front();
          size_t take = std::min(left, w.size - w.written);
          w.written += take;
          left -= take;
          if (w.written == w.size) {
            if (w.on_sent) done.push_back(std::move(w.on_sent));
            out_.pop_front();
            frames_sent_.fetch_add(1, std::memory_order_relaxed);
          }
        }
      }
      if (size_t(n) < gathered) break;  // the kernel buffer is full
    }
    RunCallbacks(done, absl::OkStatus());
    bool pending;
    {
      MutexLock lock(&mu_);
      pending = !out_.empty();
    }
    if (pending != want_write_) {
      want_write_ = pending;
      UpdateInterest();
    }
  }

  static void RunCallbacks(std::vector<SendCallback>& callbacks, const absl::Status& status) {
    for (SendCallback& cb : callbacks) cb(status);
    callbacks.clear();
  }

  // ApplyBackPressure pauses or resumes reading on accepted connections
  // (loop thread); see the file comment.
  void ApplyBackPressure() {
    if (!accepted_ || fd_ < 0 || !registered_) return;
    uint64_t queued;
    {
      MutexLock lock(&mu_);
      queued = queued_bytes_;
    }
    if (!reading_paused_ && queued > max_queue_bytes_) {
      reading_paused_ = true;
      read_pauses_.fetch_add(1, std::memory_order_relaxed);
      UpdateInterest();
      spdlog::debug("farswap transport: pausing reads from {}: {} bytes queued", peer_, queued);
      FARSWAP_SYNC_POINT("TcpConnection::PauseReading");
    } else if (reading_paused_ && queued <= max_queue_bytes_ / 2) {
      reading_paused_ = false;
      UpdateInterest();
      FARSWAP_SYNC_POINT("TcpConnection::ResumeReading");
    }
  }

  void UpdateInterest() {
    uint32_t events =
        (reading_paused_ ? 0u : uint32_t{EPOLLIN}) | (want_write_ ? uint32_t{EPOLLOUT} : 0u);
    if (absl::Status s = loop_->Modify(registration_, fd_, events); !s.ok()) {
      CloseNow(absl::UnavailableError(s.message()));
    }
  }

  // HandleReadable reads, decodes and delivers frames. After each read's
  // frames are delivered, replies are flushed and back-pressure applied, so
  // a paused connection overshoots its limit by at most one read.
  void HandleReadable() {
    std::vector<IncomingMessage> messages;
    size_t budget = kReadBudget;
    while (budget > 0 && !reading_paused_ && fd_ >= 0) {
      // Make room: compact consumed bytes, then grow to fit the frame in
      // progress (never beyond one maximal frame plus a chunk).
      if (in_begin_ > 0) {
        std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
        in_end_ -= in_begin_;
        in_begin_ = 0;
      }
      size_t want = std::max(in_end_ + kReadChunk, frame_need_);
      if (in_.size() < want) in_.resize(want);
      ssize_t n = read(fd_, in_.data() + in_end_, in_.size() - in_end_);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        CloseNow(ErrnoUnavailable(absl::StrCat("read from ", peer_, " failed")));
        return;
      }
      if (n == 0) {
        CloseNow(absl::UnavailableError(absl::StrCat("peer ", peer_, " closed the connection")));
        return;
      }
      bytes_received_.fetch_add(uint64_t(n), std::memory_order_relaxed);
      in_end_ += size_t(n);
      budget -= std::min(budget, size_t(n));
      absl::Status decoded = DecodeBuffered(messages);
      Deliver(messages);  // the good frames before a bad one still count
      if (!decoded.ok()) {
        spdlog::warn("farswap transport: closing connection from {}: malformed frame: {}", peer_,
                     std::string(decoded.message()));
        CloseNow(absl::InvalidArgumentError(absl::StrCat("malformed frame: ", decoded.message())));
        return;
      }
      if (accepted_) {
        FlushOutput();  // replies sent by on_receive
        if (fd_ >= 0) ApplyBackPressure();
      }
    }
  }

  // DecodeBuffered moves every complete frame out of the input buffer.
  absl::Status DecodeBuffered(std::vector<IncomingMessage>& out) {
    for (;;) {
      std::span<const uint8_t> avail(in_.data() + in_begin_, in_end_ - in_begin_);
      if (avail.size() < kFrameHeaderSize) return absl::OkStatus();
      FARSWAP_ASSIGN_OR_RETURN(FrameHeader h, DecodeHeader(avail));
      const size_t size = kFrameHeaderSize + h.payload_length;
      if (avail.size() < size) {
        frame_need_ = size;
        return absl::OkStatus();
      }
      std::span<const uint8_t> payload = avail.subspan(kFrameHeaderSize, h.payload_length);
      FARSWAP_RETURN_IF_ERROR(ValidatePayload(h, payload));
      out.push_back({h, std::vector<uint8_t>(payload.begin(), payload.end())});
      in_begin_ += size;
      frame_need_ = 0;
      frames_received_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void Deliver(std::vector<IncomingMessage>& messages) {
    if (messages.empty() || !handler_.on_receive) return;
    handler_.on_receive(*this, std::span<IncomingMessage>(messages));
    messages.clear();
  }

  // CloseNow closes the socket, fails queued frames and tells the handler
  // (loop thread, or any thread for a never-registered connection).
  void CloseNow(const absl::Status& reason) {
    std::deque<PendingWrite> failed;
    {
      MutexLock lock(&mu_);
      if (fd_ < 0) return;
      closed_ = true;
      failed.swap(out_);
      queued_bytes_ = 0;
    }
    if (registered_) loop_->Remove(registration_, fd_);
    registered_ = false;
    close(fd_);
    fd_ = -1;
    const absl::Status unavailable = absl::UnavailableError(absl::StrCat(
        "connection to ", peer_, " closed before the frame was sent: ", reason.message()));
    for (PendingWrite& w : failed) {
      if (w.on_sent) w.on_sent(unavailable);
    }
    ConnectionHandler handler = std::move(handler_);
    handler_ = {};
    if (handler.on_close) handler.on_close(reason);
  }

  const std::shared_ptr<IoLoop> loop_;
  // fd_: the socket; -1 once closed. Written only by the loop thread (or by
  // the creating thread before registration); read under mu_ in CloseNow's
  // check only for idempotence, so it is not itself guarded.
  int fd_;
  const std::string peer_;
  const bool accepted_;
  const size_t max_queue_bytes_;

  mutable Mutex mu_;
  std::deque<PendingWrite> out_ ABSL_GUARDED_BY(mu_);
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool close_posted_ ABSL_GUARDED_BY(mu_) = false;
  bool flush_posted_ ABSL_GUARDED_BY(mu_) = false;

  // Loop thread only.
  ConnectionHandler handler_;
  IoLoop::Registration registration_ = 0;
  bool registered_ = false;
  bool reading_paused_ = false;
  bool want_write_ = false;
  std::vector<uint8_t> in_;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  size_t frame_need_ = 0;  // size of the frame being buffered, once known

  std::atomic<uint64_t> frames_sent_{0}, frames_received_{0}, bytes_sent_{0}, bytes_received_{0},
      read_pauses_{0};
};

// ListenSocket is a listening socket registered with loop 0; it accepts on
// that loop and hands each connection to a loop of the set. Loop thread
// only, apart from construction.
class ListenSocket final : public EpollTarget, public std::enable_shared_from_this<ListenSocket> {
 public:
  ListenSocket(std::shared_ptr<LoopSet> loops, int fd, AcceptHandler on_accept,
               TransportOptions options)
      : loops_(std::move(loops)),
        fd_(fd),
        on_accept_(std::move(on_accept)),
        options_(std::move(options)) {}
  ~ListenSocket() override {
    if (fd_ >= 0) close(fd_);
  }

  IoLoop& loop() { return *loops_->loops[0]; }

  absl::Status Register() {
    FARSWAP_ASSIGN_OR_RETURN(registration_, loop().Add(fd_, EPOLLIN, shared_from_this()));
    registered_ = true;
    return absl::OkStatus();
  }

  void OnEvents(uint32_t events) override {
    for (;;) {
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      int fd = accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          // EMFILE and friends: log and let the next readiness event retry.
          spdlog::warn("farswap transport: accept on {} failed: {}", address_,
                       std::strerror(errno));
        }
        return;
      }
      ConfigureSocket(fd, options_);
      auto conn = std::make_shared<TcpConnection>(loops_->Pick(), fd, FormatSockaddr(ss),
                                                  /*accepted=*/true, options_);
      conn->set_handler(on_accept_(conn));
      conn->PostRegister();
    }
  }

  void OnLoopShutdown() override { CloseNow(); }

  void CloseNow() {
    if (fd_ < 0) return;
    if (registered_) loop().Remove(registration_, fd_);
    close(fd_);
    fd_ = -1;
    on_accept_ = nullptr;
  }

  std::string address_;  // set once before registration

 private:
  const std::shared_ptr<LoopSet> loops_;
  int fd_;
  AcceptHandler on_accept_;
  const TransportOptions options_;
  IoLoop::Registration registration_ = 0;
  bool registered_ = false;
};

// TcpListener is the Listener handle; thread-safe.
class TcpListener final : public Listener {
 public:
  explicit TcpListener(std::shared_ptr<ListenSocket> socket)
      : socket_(std::move(socket)), address_(socket_->address_) {}
  ~TcpListener() override { Close(); }
  std::string address() const override { return address_; }
  void Close() override {
    auto socket = socket_;
    socket->loop().RunSync([socket] { socket->CloseNow(); });  // false: already shut down
  }

 private:
  const std::shared_ptr<ListenSocket> socket_;
  const std::string address_;
};

// TcpTransport: thread-safe; see transport.h.
class TcpTransport final : public Transport {
 public:
  TcpTransport(std::shared_ptr<LoopSet> loops, TransportOptions options)
      : loops_(std::move(loops)), options_(std::move(options)) {}
  ~TcpTransport() override { Shutdown(); }

  absl::StatusOr<std::shared_ptr<Connection>> Connect(const std::string& address,
                                                      ConnectionHandler handler) override {
    if (shut_down_.load()) return absl::UnavailableError("transport is shut down");
    FARSWAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(address));
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot resolve '", address, "': ", gai_strerror(rc)));
    }
    absl::Status last = absl::UnavailableError(absl::StrCat("no address for '", address, "'"));
    int fd = -1;
    for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
      absl::StatusOr<int> s = ConnectOne(ai, address);
      if (s.ok()) {
        fd = *s;
      } else {
        last = s.status();
      }
    }
    freeaddrinfo(res);
    if (fd < 0) return last;
    auto conn = std::make_shared<TcpConnection>(loops_->Pick(), fd, PeerName(fd),
                                                /*accepted=*/false, options_);
    conn->set_handler(std::move(handler));
    conn->PostRegister();
    return conn;
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const std::string& address,
                                                   AcceptHandler on_accept) override {
    if (shut_down_.load()) return absl::UnavailableError("transport is shut down");
    FARSWAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(address));
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    const char* host = hp.host.empty() ? nullptr : hp.host.c_str();
    if (int rc = getaddrinfo(host, hp.port.c_str(), &hints, &res); rc != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot resolve listen address '", address, "': ", gai_strerror(rc)));
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    absl::Status status;
    if (fd < 0) {
      status = ErrnoUnavailable("socket");
    } else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
               bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
      status = ErrnoUnavailable(absl::StrCat("cannot listen on '", address, "'"));
    }
    freeaddrinfo(res);
    if (!status.ok()) {
      if (fd >= 0) close(fd);
      return status;
    }
    if (options_.socket_buffer_bytes > 0) {  // inherited by accepted sockets
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options_.socket_buffer_bytes, sizeof(int));
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    auto socket = std::make_shared<ListenSocket>(loops_, fd, std::move(on_accept), options_);
    socket->address_ = FormatSockaddr(ss);
    absl::Status registered = absl::UnavailableError("transport is shut down");
    socket->loop().RunSync([&] { registered = socket->Register(); });
    FARSWAP_RETURN_IF_ERROR(registered);
    spdlog::info("farswap transport: listening on {}", socket->address_);
    return std::make_unique<TcpListener>(std::move(socket));
  }

  void Shutdown() override {
    if (shut_down_.exchange(true)) return;
    for (auto& loop : loops_->loops) loop->Stop();
  }

  absl::string_view scheme() const override { return "tcp"; }

 private:
  // ConnectOne makes a non-blocking connect bounded by connect_timeout.
  absl::StatusOr<int> ConnectOne(const addrinfo* ai, const std::string& address) {
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoUnavailable("socket");
    ConfigureSocket(fd, options_);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        absl::Status s = ErrnoUnavailable(absl::StrCat("cannot connect to ", address));
        close(fd);
        return s;
      }
      pollfd pfd{fd, POLLOUT, 0};
      const absl::Duration timeout = options_.connect_timeout;
      const int ms =
          timeout == absl::InfiniteDuration()
              ? -1
              : int(std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 0, INT32_MAX));
      int rc;
      do {
        rc = poll(&pfd, 1, ms);
      } while (rc < 0 && errno == EINTR);
      if (rc == 0) {
        close(fd);
        return absl::DeadlineExceededError(
            absl::StrCat("connect to ", address, " timed out after ",
                         absl::FormatDuration(options_.connect_timeout)));
      }
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (rc < 0 || err != 0) {
        absl::Status s = absl::UnavailableError(
            absl::StrCat("cannot connect to ", address, ": ", std::strerror(rc < 0 ? errno : err)));
        close(fd);
        return s;
      }
    }
    return fd;
  }

  const std::shared_ptr<LoopSet> loops_;
  const TransportOptions options_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Transport>> CreateTcpTransport(const TransportOptions& options) {
  if (options.io_threads < 1 || options.io_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("io_threads must be 1..256, is ", options.io_threads));
  }
  if (options.max_output_queue_bytes == 0) {
    return absl::InvalidArgumentError("max_output_queue_bytes must be positive");
  }
  auto loops = std::make_shared<LoopSet>();
  for (int i = 0; i < options.io_threads; ++i) {
    FARSWAP_ASSIGN_OR_RETURN(std::shared_ptr<IoLoop> loop, IoLoop::Create(i));
    loops->loops.push_back(std::move(loop));
  }
  return std::make_unique<TcpTransport>(std::move(loops), options);
}

}  // namespace farswap::transport
