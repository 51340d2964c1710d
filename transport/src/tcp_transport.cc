// tcp_transport.cc: the TCP backend — the default, and what tests use.
//
// Shape. TcpTransport owns io_threads IoLoops. Every socket belongs to one
// loop (connections are spread round-robin) and only that loop's thread
// reads, writes or closes it. Sockets are non-blocking with TCP_NODELAY
// (frames are latency-bound page requests; Nagle would hold back a LOAD
// behind the previous reply's ACK).
//
// The per-connection machinery (output queue, reads, back-pressure) is in
// tcp_connection.cc; this file holds addresses, the listener and the
// transport that owns the loops.
//
// Locking: see tcp_connection.cc; ListenSocket state is loop-thread only and
// TcpTransport has only atomics, so this file takes no lock of its own.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "farswap/common/status_macros.h"
#include "farswap/transport/transport.h"
#include "io_loop.h"
#include "socket_address.h"
#include "spdlog/spdlog.h"
#include "tcp_connection.h"
#include "tls_context.h"

namespace farswap::transport {
namespace {

std::string PeerName(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "tcp://?";
  return FormatSockaddr(ss, "tcp");
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

// ListenSocket is a listening socket registered with loop 0; it accepts on
// that loop and hands each connection to a loop of the set. Loop thread
// only, apart from construction.
class ListenSocket final : public EpollTarget, public std::enable_shared_from_this<ListenSocket> {
 public:
  // With `tls`, on_accept goes to the gate and is called once each
  // connection's handshake completes.
  ListenSocket(std::shared_ptr<LoopSet> loops, int fd, AcceptHandler on_accept,
               TransportOptions options, std::unique_ptr<ServerTlsContext> tls)
      : loops_(std::move(loops)),
        fd_(fd),
        options_(std::move(options)),
        tls_(std::move(tls)),
        gate_(std::make_shared<TlsAcceptGate>()) {
    if (tls_ != nullptr) {
      MutexLock lock(&gate_->mu);
      gate_->on_accept = std::move(on_accept);
    } else {
      on_accept_ = std::move(on_accept);
    }
  }
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
      auto conn = std::make_shared<TcpConnection>(loops_->Pick(), fd, FormatSockaddr(ss, "tcp"),
                                                  /*accepted=*/true, options_);
      if (tls_ != nullptr) {
        SslCtxPtr ctx = tls_->Current();
        absl::StatusOr<SslPtr> ssl = NewServerSsl(ctx.get(), fd);
        if (!ssl.ok()) {
          spdlog::warn("farswap transport: cannot start TLS for {}: {}", FormatSockaddr(ss, "tcp"),
                       ssl.status().ToString());
          continue;  // conn closes the fd when it goes
        }
        conn->StartServerHandshake(*std::move(ssl), gate_);
      } else {
        conn->set_handler(on_accept_(conn));
      }
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
    MutexLock lock(&gate_->mu);  // waits for an on_accept in progress
    gate_->on_accept = nullptr;
  }

  ListenerStats stats() const {
    return {.tls_handshakes = gate_->handshakes.load(std::memory_order_relaxed),
            .tls_handshake_failures = gate_->failures.load(std::memory_order_relaxed),
            .ktls_connections = gate_->ktls.load(std::memory_order_relaxed)};
  }

  std::string address_;  // set once before registration

 private:
  const std::shared_ptr<LoopSet> loops_;
  int fd_;
  AcceptHandler on_accept_;  // plaintext
  const TransportOptions options_;
  const std::unique_ptr<ServerTlsContext> tls_;  // null: plaintext
  const std::shared_ptr<TlsAcceptGate> gate_;
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
  ListenerStats stats() const override { return socket_->stats(); }

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
    return ConnectImpl(address, std::move(handler), nullptr);
  }

  absl::StatusOr<std::shared_ptr<Connection>> ConnectTls(const std::string& address,
                                                         ConnectionHandler handler,
                                                         const TlsClientOptions& tls) override {
    return ConnectImpl(address, std::move(handler), &tls);
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const std::string& address,
                                                   AcceptHandler on_accept) override {
    return ListenImpl(address, std::move(on_accept), nullptr);
  }

  absl::StatusOr<std::unique_ptr<Listener>> ListenTls(const std::string& address,
                                                      AcceptHandler on_accept,
                                                      const TlsServerOptions& tls) override {
    return ListenImpl(address, std::move(on_accept), &tls);
  }

  void Shutdown() override {
    if (shut_down_.exchange(true)) return;
    for (auto& loop : loops_->loops) loop->Stop();
  }

  bool HelpPoll() override {
    bool handled = false;
    for (auto& loop : loops_->loops) handled |= loop->HelpPoll();
    return handled;
  }

  void BeginHelping() override {
    for (auto& loop : loops_->loops) loop->BeginHelping();
  }

  void EndHelping() override {
    for (auto& loop : loops_->loops) loop->EndHelping();
  }

  absl::string_view scheme() const override { return "tcp"; }

 private:
  absl::StatusOr<std::shared_ptr<Connection>> ConnectImpl(const std::string& address,
                                                          ConnectionHandler handler,
                                                          const TlsClientOptions* tls) {
    if (shut_down_.load()) return absl::UnavailableError("transport is shut down");
    const absl::Time deadline = absl::Now() + options_.connect_timeout;
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
    SslPtr ssl;
    if (tls != nullptr) {
      const std::string& name = tls->server_name.empty() ? hp.host : tls->server_name;
      absl::StatusOr<SslPtr> s = ClientHandshake(*tls, name, fd, PeerName(fd), deadline);
      if (!s.ok()) {
        close(fd);
        return s.status();
      }
      ssl = *std::move(s);
    }
    auto conn = std::make_shared<TcpConnection>(loops_->Pick(), fd, PeerName(fd),
                                                /*accepted=*/false, options_);
    if (ssl != nullptr) conn->SetEstablishedTls(std::move(ssl));
    conn->set_handler(std::move(handler));
    conn->PostRegister();
    return conn;
  }

  absl::StatusOr<std::unique_ptr<Listener>> ListenImpl(const std::string& address,
                                                       AcceptHandler on_accept,
                                                       const TlsServerOptions* tls) {
    if (shut_down_.load()) return absl::UnavailableError("transport is shut down");
    FARSWAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(address));
    std::unique_ptr<ServerTlsContext> tls_context;
    if (tls != nullptr) {
      FARSWAP_ASSIGN_OR_RETURN(tls_context, ServerTlsContext::Create(*tls));
    }
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
    const bool with_tls = tls_context != nullptr;
    auto socket = std::make_shared<ListenSocket>(loops_, fd, std::move(on_accept), options_,
                                                 std::move(tls_context));
    socket->address_ = FormatSockaddr(ss, "tcp");
    absl::Status registered = absl::UnavailableError("transport is shut down");
    socket->loop().RunSync([&] { registered = socket->Register(); });
    FARSWAP_RETURN_IF_ERROR(registered);
    spdlog::info("farswap transport: listening on {}{}", socket->address_,
                 with_tls ? " (TLS)" : "");
    return std::make_unique<TcpListener>(std::move(socket));
  }

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
    FARSWAP_ASSIGN_OR_RETURN(std::shared_ptr<IoLoop> loop,
                             IoLoop::Create(i, options.busy_poll, options.quiet_helping));
    loops->loops.push_back(std::move(loop));
  }
  return std::make_unique<TcpTransport>(std::move(loops), options);
}

}  // namespace farswap::transport
