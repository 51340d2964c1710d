// data_plane.h: the memory node's data plane — frames from the transport
// turned into page-store operations, and replies back.
//
//   DataPlaneServer dp(&store, &tenants, transport.get(), {.workers = 2});
//   FARSWAP_RETURN_IF_ERROR(dp.Listen("127.0.0.1:0"));
//   std::string where = dp.address();   // "tcp://127.0.0.1:41234"
//
// Sessions. A connection's first frame must be HELLO with a session token
// from the control plane's Attach; the reply is OK, or UNAUTHENTICATED
// followed by closing the connection. Any other frame before a successful
// HELLO gets an UNAUTHENTICATED reply and the connection is closed. After
// HELLO, every page the connection names belongs to the session's tenant:
// page numbers are tenant-scoped, so no frame can reach another tenant's
// pages. A connection has one session for life: a second HELLO on it gets
// FAILED_PRECONDITION and changes nothing (the connection stays open under
// its first session), so no frame is ever run under a tenant other than
// the one it was read under. An open connection keeps its session from
// expiring (TenantRegistry, "Session expiry"). A connection whose session
// ends while it is open (Detach, or a tenants-file reload that removes its
// tenant or changes its secret: TenantRegistry, "Rotation") gets
// UNAUTHENTICATED for its next frame, which is not run, and is closed.
//
// Requests. STORE, LOAD, INVALIDATE, INVALIDATE_RANGE and PING, alone or in
// a BATCH (whose reply is a BATCH of the sub-replies, in entry order; an
// entry that fails fails alone). Replies echo the request id and carry the
// page store's status code with its message (RESOURCE_EXHAUSTED with the
// reason, NOT_FOUND, DATA_LOSS, ...).
//
// Where requests run (docs/design.md, "The memory node": run to completion). A request that
// cannot block runs to completion on the transport I/O thread that read it,
// and that thread sends its reply: no thread hand-off. Only a STORE that
// must wait for writeback to make room, and a LOAD of a page that was
// written back (a backing-store read), go to a small worker pool. Once one
// request of a connection has gone to the workers, every later request of
// that connection (and the rest of its BATCH) queues behind it, and the
// connection's queue is run by one worker at a time; when it drains, the
// I/O thread runs that connection's requests itself again. A run of
// consecutive LOADs at the head of the queue is read at once: the worker
// submits every disk read of the run together (PageStore::LoadBatch; a
// device serves several reads at once, and loads commute) and sends every
// reply, in order.
//
// Ordering guarantee. Requests on one connection take effect in the order
// they were sent, and their replies are sent in that order (a BATCH's
// entries too). Across connections there is no order.
//
// Back-pressure. Requests waiting for a worker count against a bound per
// connection (DataPlaneOptions::max_queued_requests_per_connection and
// max_queued_bytes_per_connection); past it the node stops reading that
// connection (Connection::PauseReading) until its queue drains to half, so
// one client cannot grow the node's memory and the other connections are
// not affected. The transport also stops reading a connection whose replies
// are not being read. Back-pressure is never a failure.
//
// Malformed frames never get here: the transport validates every header and
// closes the connection with the reason.
//
// Thread safety: DataPlaneServer is safe for concurrent use; Shutdown must
// not run on a transport I/O thread. Its connection handlers point at it:
// shut the transport down (or at least call Shutdown here, then the
// transport's Shutdown) before destroying it.
#ifndef FARSWAP_SERVER_DATA_PLANE_H_
#define FARSWAP_SERVER_DATA_PLANE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "farswap/common/latency_histogram.h"
#include "farswap/common/mutex.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "farswap/transport/transport.h"

namespace farswap::server {

struct DataPlaneOptions {
  int workers = 2;  // threads running the requests that may block
  // max_queued_requests_per_connection, max_queued_bytes_per_connection: a
  // connection whose requests waiting for a worker reach either bound stops
  // being read until both are back at half. Frames (a BATCH is one) and
  // their bytes as received. 1024 frames is 64 clients' worth of a typical
  // 16-deep window; 8 MiB matches the transport's default output-queue
  // bound (TransportOptions::max_output_queue_bytes) and holds eight
  // maximal BATCHes. Overshoot: at most one read's frames (kMaxFrameSize).
  uint64_t max_queued_requests_per_connection = 1024;
  uint64_t max_queued_bytes_per_connection = uint64_t{8} << 20;
  // test_corrupt_loads: TEST ONLY. Flip one bit of every OK LOAD reply's
  // payload (the checksum is left alone), so clients' end-to-end
  // verification and replica failover can be tested against a real node.
  bool test_corrupt_loads = false;
  // tls: when set, the data plane speaks only TLS (farswap-server
  // --data-tls): a connection whose handshake fails is closed before a
  // frame of it is read, and counted (DataPlaneStats::tls_handshake_failures).
  std::optional<transport::TlsServerOptions> tls;
};

// kOpcodeSlots, kStatusCodeSlots: the dimensions of DataPlaneStats::ops,
// indexed by transport::Opcode value (0 unused) and absl::StatusCode value
// (0 OK .. 16 UNAUTHENTICATED; a code outside that range counts as UNKNOWN).
inline constexpr size_t kOpcodeSlots = size_t{transport::kMaxOpcode} + 1;
inline constexpr size_t kStatusCodeSlots = 17;

struct DataPlaneStats {
  // tls: the listener speaks TLS. tls_handshake_failures: connections
  // closed because their handshake failed (a plaintext or untrusted
  // client); ktls_connections: accepted connections the kernel encrypts.
  bool tls = false;
  uint64_t tls_handshake_failures = 0;
  uint64_t ktls_connections = 0;
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t hello_refused = 0;  // wrong or missing token, or a second HELLO
  uint64_t requests = 0;       // frames handled (a BATCH counts its entries)
  // requests_to_workers: frames that went to the workers (each at most once;
  // a would-block request and every one queued behind it).
  uint64_t requests_to_workers = 0;
  uint64_t queued_requests = 0;       // frames waiting for a worker now, all connections
  uint64_t queued_requests_peak = 0;  // the most one connection has had waiting
  uint64_t read_pauses = 0;           // times a connection stopped being read for it
  // load_runs: runs of consecutive queued LOADs, or of consecutive LOAD
  // entries of a BATCH, whose disk reads were submitted together on a worker
  // (RunLoads, RunBatchLoads).
  uint64_t load_runs = 0;
  // bytes_received, bytes_sent: data-plane frame bytes (headers and
  // payloads) read from and replied to clients, all connections.
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  // ops[opcode][status code]: requests answered, by opcode and the status
  // of the reply (a BATCH counts each entry under its own opcode; HELLO
  // counts too). A request that closed its connection unanswered is not
  // counted.
  std::array<std::array<uint64_t, kStatusCodeSlots>, kOpcodeSlots> ops{};
  // store_latency, load_latency: the node's service time of a STORE or LOAD
  // (the page-store call that completed it, on the I/O thread or a
  // worker; time spent queued for a worker is not included).
  LatencyBuckets store_latency;
  LatencyBuckets load_latency;
  // backend: the backends' schemes, Listen's first ("tcp", "ucx",
  // "tcp,ucx"). connections_by_carrier:
  // the connections open now by what carries their frames
  // (transport::ConnectionStats::carrier: "tcp", or UCX's transport/device
  // such as "tcp/lo.0", "sysv/memory.0", "rc_mlx5/mlx5_0:1"); a UCX
  // connection whose handshake has not crossed yet counts under "".
  std::string backend;
  std::map<std::string, uint64_t> connections_by_carrier;
};

class DataPlaneServer {
 public:
  // store, tenants and transport are not owned and must outlive this.
  DataPlaneServer(PageStore* store, TenantRegistry* tenants, transport::Transport* transport,
                  const DataPlaneOptions& options);
  ~DataPlaneServer();
  DataPlaneServer(const DataPlaneServer&) = delete;
  DataPlaneServer& operator=(const DataPlaneServer&) = delete;

  // Listen binds the data-plane address ("host:0" picks a port).
  absl::Status Listen(const std::string& address);
  // ListenAlso binds a further address on another backend (e.g. UCX beside
  // TCP: farswap-server --ucx-data-addr); its connections share the store,
  // sessions, workers and bounds. Plaintext only: FAILED_PRECONDITION with
  // DataPlaneOptions::tls. `transport` is not owned and must outlive this.
  // Call before clients connect, after Listen.
  absl::Status ListenAlso(transport::Transport* transport, const std::string& address);
  // address is the bound address, with its scheme ("tcp://127.0.0.1:41234");
  // addresses: every bound address, Listen's first.
  std::string address() const;
  std::vector<std::string> addresses() const;
  // Shutdown stops accepting, finishes the work queued for the workers and
  // joins them. A request that arrives afterwards closes its connection
  // (UNAVAILABLE). Idempotent.
  void Shutdown();

  DataPlaneStats stats() const;

 private:
  struct ConnState;
  struct Request;
  struct Reply;
  enum class Wait { kAllowed, kNever };

  transport::ConnectionHandler Accept(std::shared_ptr<transport::Connection> conn);
  void OnReceive(const std::shared_ptr<ConnState>& state,
                 std::span<transport::IncomingMessage> messages);
  // Execute runs `request` (any frame) for the connection. With
  // Wait::kNever it returns false, having run only what could not block
  // (BATCH entries before the first that would), when the request must go
  // to a worker; otherwise it has replied (or closed) and returns true.
  bool Execute(ConnState& state, const std::shared_ptr<transport::Connection>& conn,
               Request& request, Wait wait);
  // HandOff queues `request` (the connection's first to wait) for the
  // workers; the caller is the connection's I/O thread.
  void HandOff(const std::shared_ptr<ConnState>& state, transport::Connection& conn,
               std::unique_ptr<Request> request);
  void QueueLocked(ConnState& state, transport::Connection& conn, std::unique_ptr<Request> request);
  void WorkerLoop();
  // RunQueued runs one turn of a handed-off connection's queue (worker).
  void RunQueued(const std::shared_ptr<ConnState>& state);
  // PopLocked takes the queue's head, resuming reads once it is at half;
  // the caller holds state.mu.
  std::unique_ptr<Request> PopLocked(ConnState& state, transport::Connection* conn);
  // RunLoads runs `run`, consecutive plain LOADs from the head of the
  // connection's queue: PageStore::LoadBatch reads their written-back
  // pages at once, and this worker replies to each, in order (worker).
  void RunLoads(ConnState& state, const std::shared_ptr<transport::Connection>& conn,
                const std::vector<std::unique_ptr<Request>>& run);
  static bool IsPlainLoad(const Request& r);
  // RunBatchLoads runs the LOAD entries [request.next, end) of a BATCH
  // through one PageStore::LoadBatch (their disk reads in flight together)
  // and adds their sub-replies in order; request.next becomes end (worker).
  void RunBatchLoads(uint32_t tenant, Request& request, size_t end);
  // AddBatchEntry adds entry i's sub-reply (its payload in
  // reply.sub_payloads[i]) to the BATCH reply being built.
  static void AddBatchEntry(Reply& reply, size_t i, const transport::FrameHeader& sub);
  // SessionEnded: whether the connection's session has ended since it was
  // last found open (cheap while TenantRegistry::session_end_generation is
  // unchanged). Takes state.mu, then the registry's lock, one at a time.
  bool SessionEnded(ConnState& state);
  // RefuseEndedSession answers `request` UNAUTHENTICATED, unrun, and closes
  // the connection.
  void RefuseEndedSession(transport::Connection& conn, const transport::FrameHeader& request);
  // LoadReply makes a LOAD's reply from what the store returned.
  transport::FrameHeader LoadReply(const transport::FrameHeader& request,
                                   absl::StatusOr<LoadedPage>& loaded, std::vector<uint8_t>* out);
  // Handle runs one request (not HELLO, not BATCH) for `tenant`; the
  // reply's payload goes to *out (which must stay alive until sent).
  // nullopt (only with Wait::kNever) when it would block; nothing was done.
  // It counts the request (CountOp) and times STORE and LOAD.
  std::optional<transport::FrameHeader> Handle(uint32_t tenant,
                                               const transport::FrameHeader& request,
                                               std::span<const uint8_t> payload,
                                               std::vector<uint8_t>* out, Wait wait);
  // HandleOp is Handle without the counting.
  std::optional<transport::FrameHeader> HandleOp(uint32_t tenant,
                                                 const transport::FrameHeader& request,
                                                 std::span<const uint8_t> payload,
                                                 std::vector<uint8_t>* out, Wait wait);
  // CountOp counts one answered request (DataPlaneStats::ops).
  void CountOp(transport::Opcode op, absl::StatusCode code);
  // SendReply sends `reply` on `conn` and counts its bytes.
  void SendReply(transport::Connection& conn, std::shared_ptr<Reply> reply);
  // SendReplies sends `replies` in order with one Send (one gathered write)
  // and counts their bytes; the vector form then empties the vector.
  void SendReplies(transport::Connection& conn, std::vector<std::shared_ptr<Reply>>& replies);
  void SendReplies(transport::Connection& conn, std::span<std::shared_ptr<Reply>> replies);

  PageStore* const store_;
  TenantRegistry* const tenants_;
  transport::Transport* const transport_;
  const DataPlaneOptions options_;
  std::unique_ptr<transport::Listener> listener_;
  // ListenAlso's listeners and their backends (set up before traffic).
  std::vector<std::pair<transport::Transport*, std::unique_ptr<transport::Listener>>>
      more_listeners_;

  // open_conns_: the connections open now, for connections_by_carrier
  // (weak: a connection's owner is its transport). A leaf lock: taken alone,
  // and released before the connections are asked for their stats.
  mutable Mutex conns_mu_;
  std::map<const ConnState*, std::weak_ptr<transport::Connection>> open_conns_
      ABSL_GUARDED_BY(conns_mu_);

  // Lock order: ConnState::mu -> mu_ is never needed; each is taken alone
  // (ConnState::mu may be held while calling Connection::PauseReading).
  Mutex mu_;
  CondVar work_cv_;
  // ready_: handed-off connections waiting for a worker turn, each at most
  // once (only the connection's current owner puts it here).
  std::deque<std::shared_ptr<ConnState>> ready_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopped_{false};  // stopping_, for I/O threads' fast check
  std::vector<std::thread> workers_;

  std::atomic<uint64_t> accepted_{0}, open_{0}, hello_refused_{0}, requests_{0};
  std::atomic<uint64_t> to_workers_{0}, queued_{0}, queued_peak_{0}, read_pauses_{0}, load_runs_{0};
  // Metrics (DataPlaneStats): relaxed atomics, one add per frame or reply.
  std::atomic<uint64_t> bytes_received_{0}, bytes_sent_{0};
  std::array<std::array<std::atomic<uint64_t>, kStatusCodeSlots>, kOpcodeSlots> ops_{};
  LatencyHistogram store_latency_, load_latency_;
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_DATA_PLANE_H_
