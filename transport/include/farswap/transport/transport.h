// transport.h: the data-plane transport contract, in the spirit of eRPC's
// src/transport.h: small enough to read in a minute, batch-oriented, with
// explicit buffer ownership and opaque peer addresses.
//
//   auto transport = CreateTransport("tcp://127.0.0.1:0", {.io_threads = 2}).value();
//   auto listener = transport->Listen("127.0.0.1:0", [](std::shared_ptr<Connection> c) {
//     return ConnectionHandler{.on_receive = [](Connection& c, std::span<IncomingMessage> in) {
//       ... c.Send(replies) ...
//     }};
//   }).value();
//   auto conn = transport->Connect(listener->address(), {...}).value();
//   OutgoingMessage m{.header = {...}, .payload = {page_bytes}, .on_sent = release_page};
//   conn->Send({&m, 1});
//
// Ownership. An OutgoingMessage's payload pieces belong to the caller, who
// keeps them alive and unchanged until that message's `on_sent` runs (the
// bytes are gathered straight from them: writev for TCP, a scatter-gather
// SEND for RDMA). Received frames arrive as IncomingMessage values that own
// their bytes. Nothing here knows what the frames mean.
//
// Addresses are opaque strings: "tcp://host:port", "rdma://host:port", or
// "host:port" (TCP). CreateTransport picks the backend by scheme.
//
// Callbacks run on the transport's I/O threads and must not block: they may
// call Send and Close (both are non-blocking) but must not wait for a reply.
//
// Sending costs no thread hand-off when the connection is idle: Send writes
// the frames on the calling thread when nothing else is queued, and only
// what the kernel does not take waits for the I/O thread.
//
// Thread safety: Transport, Listener and Connection are safe for concurrent
// use from any thread. Frames passed to one Send go out in order and
// contiguously; frames from concurrent Sends on one connection go out in the
// order the calls took the connection's lock.
#ifndef FARSWAP_TRANSPORT_TRANSPORT_H_
#define FARSWAP_TRANSPORT_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "farswap/transport/frame.h"

namespace farswap::transport {

// PayloadPiece is one scatter-gather entry: caller-owned bytes.
using PayloadPiece = std::span<const uint8_t>;

// SendCallback runs once per OutgoingMessage: OK when the transport no
// longer needs the payload (the bytes were handed to the kernel or NIC),
// UNAVAILABLE when the connection closed first. Either way, the payload may
// then be reused or freed. It runs on an I/O thread, or on the thread that
// called Send when Send wrote the frame itself (then after Send has released
// its locks, before Send returns).
using SendCallback = std::function<void(absl::Status)>;

// OutgoingMessage is one frame to send: a header (Send fills in
// payload_length) and the payload as a list of caller-owned pieces.
struct OutgoingMessage {
  FrameHeader header;
  std::vector<PayloadPiece> payload;
  SendCallback on_sent;  // may be empty
};

// IncomingMessage is one received, fully validated frame; it owns its bytes.
struct IncomingMessage {
  FrameHeader header;
  std::vector<uint8_t> payload;
};

// ConnectionStats are cumulative counters for one connection.
struct ConnectionStats {
  uint64_t frames_sent = 0;
  uint64_t frames_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t queued_bytes = 0;   // accepted by Send, not yet written
  uint64_t read_pauses = 0;    // times reading stopped for back-pressure
  uint64_t inline_writes = 0;  // writes made on the sender's thread, not the loop's
  // read_calls, flushes_posted: TCP only (0 for UCX). System calls that
  // read the socket (each read or TLS record read, the one that says EAGAIN
  // included), and flushes of queued frames handed to the loop's thread by
  // a wake-up. A request answered from on_receive costs one read and no
  // posted flush.
  uint64_t read_calls = 0;
  uint64_t flushes_posted = 0;
  // messages_sent: UCX only (0 for TCP): active messages carrying frames
  // handed to UCX (counted when handed over; frames_sent counts frames
  // once sent), so frames per message shows how much was coalesced.
  uint64_t messages_sent = 0;
  // tls: the connection is encrypted (ConnectTls / ListenTls). ktls_send,
  // ktls_recv: the kernel encrypts / decrypts its records (kernel TLS);
  // false with tls: OpenSSL does, in user space.
  bool tls = false;
  bool ktls_send = false;
  bool ktls_recv = false;
  // carrier: what carries the frames underneath. "tcp" for the TCP
  // backend; for UCX, the transport and device of the endpoint's
  // active-message lane as UCX chose it, e.g. "tcp/lo.0" or
  // "rc_mlx5/mlx5_0:1" ("" until the connection is set up).
  std::string carrier;
};

// TlsServerOptions: the TLS a listener speaks (Transport::ListenTls).
struct TlsServerOptions {
  // cert_file: PEM certificate chain, the server's own first; key_file: its
  // PEM private key (unencrypted). Both required.
  std::string cert_file;
  std::string key_file;
  // client_ca_file: PEM CA bundle; when set, every client must present a
  // certificate it signed, else the handshake fails. "": none asked for.
  std::string client_ca_file;
};

// TlsClientOptions: how Transport::ConnectTls verifies the server and
// presents itself.
struct TlsClientOptions {
  // ca_file: PEM bundle of the CAs the server's certificate must chain to.
  // Required: there is no fallback to the system's trust store.
  std::string ca_file;
  // cert_file, key_file: this client's PEM certificate chain and key, for
  // servers that require client certificates; both or neither.
  std::string cert_file;
  std::string key_file;
  // server_name: the name (DNS name or IP address) the server's certificate
  // must carry; "" uses the host of the address dialled.
  std::string server_name;
};

// ListenerStats are cumulative counters for one listener.
struct ListenerStats {
  uint64_t tls_handshakes = 0;          // TLS handshakes completed (connections accepted)
  uint64_t tls_handshake_failures = 0;  // TLS handshakes refused; those connections were closed
  uint64_t ktls_connections = 0;        // accepted TLS connections the kernel encrypts
};

// Connection is one end of a data-plane connection: Connect returns the
// client side, AcceptHandler receives the server side (the same type; only
// the back-pressure policy differs). Thread-safe; shared_ptr-owned, the
// transport keeps it alive while open.
class Connection {
 public:
  virtual ~Connection() = default;

  // Send queues `messages` in order, moving each one's callback out. All or
  // nothing: on an error status none was queued and no on_sent will run.
  //  - INVALID_ARGUMENT: a header fails ValidateHeader (for the payload
  //    length given) — the sender's bug, reported before it hits the wire.
  //  - UNAVAILABLE: the connection is closed.
  //  - RESOURCE_EXHAUSTED (connections made with Connect only): the output
  //    queue already holds more than TransportOptions::max_output_queue_bytes
  //    because the peer is not reading. Accepted (server-side) connections
  //    never refuse a reply; they stop reading new requests instead (see
  //    README "Back-pressure").
  virtual absl::Status Send(std::span<OutgoingMessage> messages) = 0;

  // Close closes the connection asynchronously: queued messages' on_sent
  // run with UNAVAILABLE, then the handler's on_close runs with `reason`
  // (once, whatever closed the connection). Idempotent.
  virtual void Close(absl::Status reason) = 0;

  // is_open: false once Close has been called (even before it completes).
  virtual bool is_open() const = 0;
  // peer_address: the remote end, "tcp://ip:port".
  virtual const std::string& peer_address() const = 0;
  virtual ConnectionStats stats() const = 0;

  // PauseReading asks the transport to stop (true) or resume (false) reading
  // frames from the peer, for the owner's own back-pressure (the memory
  // node pauses a connection whose requests pile up behind its workers).
  // Level-triggered and non-blocking: the latest call wins, and it takes
  // effect on the I/O thread soon after (a read in progress delivers its
  // frames first). It combines with the transport's own pause for a full
  // output queue: the connection reads only when neither asks for a pause.
  // Callers that can race (an I/O thread pausing, a worker resuming) must
  // order their calls themselves, e.g. by making them under one lock.
  virtual void PauseReading(bool paused) = 0;
};

// ConnectionHandler receives a connection's events on its I/O thread.
// on_receive gets every frame decoded from one read, in arrival order; the
// callee may move the messages out. After on_close no callback runs again.
struct ConnectionHandler {
  std::function<void(Connection& connection, std::span<IncomingMessage> messages)> on_receive;
  std::function<void(const absl::Status& reason)> on_close;
};

// AcceptHandler is called once per accepted connection, before any frame is
// read from it, and returns the handler for that connection.
using AcceptHandler = std::function<ConnectionHandler(std::shared_ptr<Connection>)>;

// Listener accepts connections until closed or destroyed. Thread-safe.
class Listener {
 public:
  virtual ~Listener() = default;
  // address: the bound address with the real port ("tcp://127.0.0.1:41234"
  // after listening on "127.0.0.1:0").
  virtual std::string address() const = 0;
  // Close stops accepting; after it returns, on_accept is not called again.
  // Connections already accepted stay open. Idempotent.
  virtual void Close() = 0;
  // stats: the TLS counters (all 0 for a plaintext listener).
  virtual ListenerStats stats() const { return {}; }
};

struct TransportOptions {
  // io_threads: event-loop threads; connections are spread round-robin.
  int io_threads = 1;
  // max_output_queue_bytes: the back-pressure threshold per connection
  // (header + payload bytes accepted by Send and not yet written).
  size_t max_output_queue_bytes = size_t{8} << 20;
  // connect_timeout: bound on Connect's TCP handshake.
  absl::Duration connect_timeout = absl::Seconds(5);
  // socket_buffer_bytes: SO_SNDBUF/SO_RCVBUF for every socket; 0 leaves the
  // kernel's autotuning alone. Tests set it small to reach back-pressure.
  int socket_buffer_bytes = 0;
  // busy_poll: after handling events, an I/O thread keeps polling (without
  // blocking, yielding the CPU between polls) this long before it sleeps,
  // so the next reply of a request/reply exchange finds it awake: no
  // kernel wake-up on the latency path, at the cost of a core while
  // traffic flows. 0 (the default) sleeps at once.
  absl::Duration busy_poll = absl::ZeroDuration();
  // quiet_helping: a thread between BeginHelping and EndHelping keeps the
  // I/O threads from being woken for the replies it reads (TCP only; see
  // Transport::BeginHelping). Costs one more epoll_wait each time an I/O
  // thread wakes for socket events, so set it only where threads help
  // (farswap::Client with ClientOptions::poll_while_waiting does).
  bool quiet_helping = false;
  // ucx_transports: the UCX transports the ucx backend may use, in UCX_TLS
  // syntax ("tcp"; "sm,tcp" for shared memory between processes of one
  // machine, "rc,sm,self" on InfiniBand/RoCE). Empty (the default): UCX_TLS
  // from the environment, else every transport UCX finds. Other backends
  // ignore it.
  std::string ucx_transports;
};

// Transport creates connections and listeners of one backend. Destroying it
// (or Shutdown) closes every connection and listener and stops its threads.
// Thread-safe.
class Transport {
 public:
  virtual ~Transport() = default;

  // Connect opens a connection to `address`, blocking the calling thread
  // for name resolution and the handshake. INVALID_ARGUMENT for an
  // unparsable address, UNAVAILABLE when the peer cannot be reached,
  // DEADLINE_EXCEEDED after connect_timeout.
  virtual absl::StatusOr<std::shared_ptr<Connection>> Connect(const std::string& address,
                                                              ConnectionHandler handler) = 0;

  // Listen binds `address` ("host:0" picks a port; Listener::address says
  // which) and calls on_accept for each new connection.
  virtual absl::StatusOr<std::unique_ptr<Listener>> Listen(const std::string& address,
                                                           AcceptHandler on_accept) = 0;

  // ConnectTls is Connect followed by a TLS handshake (bounded by the same
  // connect_timeout) that verifies the server against `tls`. Besides
  // Connect's errors: INVALID_ARGUMENT / NOT_FOUND for TLS files that do
  // not go together or cannot be read, UNAVAILABLE "TLS handshake with ...
  // failed: <reason>" (e.g. "certificate verify failed: ...") when the
  // server is not who `tls` expects or speaks no TLS. The default
  // implementation (backends without TLS) returns UNIMPLEMENTED.
  virtual absl::StatusOr<std::shared_ptr<Connection>> ConnectTls(const std::string& address,
                                                                 ConnectionHandler handler,
                                                                 const TlsClientOptions& tls);

  // ListenTls is Listen for TLS connections: each accepted connection
  // first completes a TLS handshake on its I/O thread, and only then is
  // on_accept called for it. A connection whose handshake fails (a
  // plaintext peer, a missing or untrusted client certificate) is closed
  // without a byte of it reaching on_accept's handler; it is counted in
  // Listener::stats() and logged. The files are checked now (an error
  // names the bad file) and re-read for new connections when their
  // modification time, size or inode changes (a failed re-read keeps the
  // previous certificate and is logged). UNIMPLEMENTED by default.
  virtual absl::StatusOr<std::unique_ptr<Listener>> ListenTls(const std::string& address,
                                                              AcceptHandler on_accept,
                                                              const TlsServerOptions& tls);

  // Shutdown closes everything and joins the I/O threads. Idempotent; later
  // Connect/Listen calls fail with UNAVAILABLE. A call racing it on another
  // thread fails with UNAVAILABLE or returns a connection already closed:
  // none leaves a connection or listener open behind it. Must not be called
  // from an I/O thread (a callback).
  virtual void Shutdown() = 0;

  // HelpPoll is for a thread that waits for a reply and would otherwise
  // spin: it handles, on the calling thread, the I/O ready now on each I/O
  // loop that no other thread is running (the reply is then read without
  // waking an I/O thread, a kernel wake-up that costs tens of microseconds
  // on a small machine). Returns true if it handled anything; false at
  // once where the backend has no such path (the default), or from inside
  // a callback. Callbacks of any connection may run on the calling thread:
  // it must hold no lock a callback takes.
  virtual bool HelpPoll() { return false; }
  // BeginHelping / EndHelping bracket a spell of HelpPoll calls on one
  // thread, always paired. With TransportOptions::quiet_helping, while a
  // helper is there the I/O threads are not woken for the replies it will
  // read (only for their queued work), and EndHelping by the last helper
  // hands what nobody read back to them: a thread must call EndHelping
  // before it stops calling HelpPoll (before it sleeps). No-ops otherwise,
  // and from inside a callback.
  virtual void BeginHelping() {}
  virtual void EndHelping() {}

  // scheme: "tcp", "ucx" or "rdma".
  virtual absl::string_view scheme() const = 0;
};

// AddressScheme returns the scheme of `address` ("tcp" when it has none),
// and StripScheme the rest.
absl::string_view AddressScheme(absl::string_view address);
absl::string_view StripScheme(absl::string_view address);

// CreateTransport chooses the backend by the scheme of `address_or_scheme`
// ("tcp", "rdma", "tcp://h:p", "h:p"). INVALID_ARGUMENT for an unknown
// scheme; UNAVAILABLE when the backend cannot run here (RDMA without a
// device).
absl::StatusOr<std::unique_ptr<Transport>> CreateTransport(absl::string_view address_or_scheme,
                                                           const TransportOptions& options);

// RdmaProbe: what rdma-core finds on this host (ibv_get_device_list).
// devices: the RDMA device names (e.g. "mlx5_0", "rxe0"), empty when there
// is none; then `missing` says why ("ibv_get_device_list returned NULL
// (ENOSYS)", "ibv_get_device_list found 0 devices"). Whether frames use a
// device is the carrier's to say (ConnectionStats::carrier, e.g.
// "rc_mlx5/mlx5_0:1"): a device can be present and unused.
struct RdmaProbe {
  std::vector<std::string> devices;
  std::string missing;
};
// ProbeRdmaDevices asks rdma-core now (it loads its provider libraries: a
// few milliseconds; callers keep the answer). Thread-safe.
RdmaProbe ProbeRdmaDevices();

absl::StatusOr<std::unique_ptr<Transport>> CreateTcpTransport(const TransportOptions& options);
absl::StatusOr<std::unique_ptr<Transport>> CreateRdmaTransport(const TransportOptions& options);
// CreateUcxTransport: UCP active messages over whatever UCX picks (RDMA
// verbs where there is a device; TCP or shared memory where there is none;
// UCX_TLS and UCX_NET_DEVICES choose). transport/README.md, "UCX".
absl::StatusOr<std::unique_ptr<Transport>> CreateUcxTransport(const TransportOptions& options);

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_TRANSPORT_H_
