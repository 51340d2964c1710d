// data_plane.cc: the data plane's request path (data_plane.h).
//
// Why. A loopback round trip costs a few microseconds; handing a request to
// another thread and back costs tens (a condvar wake-up on a busy box). So a
// request runs where it was read, memcached-style, unless it may block: the
// page store's TryStore/TryLoad say "would block" (a store that must wait
// for writeback to make room, a load of a written-back page) with no effect,
// and only then does the request go to a worker, which runs the blocking
// form. Most requests never leave the I/O thread.
//
// Per-connection state (ConnState). `handed_off` says who runs the
// connection's requests: false — its I/O thread, inline; true — the
// workers, from the connection's serial queue `queue`, one worker at a
// time. The protocol, with the locks held at each step in brackets:
//
//  1. [state.mu] The I/O thread, for each frame read: if handed_off, append
//     the frame to `queue` (step 4) and go on with the next frame. Else drop
//     the lock — only this thread can set handed_off, so it stays false.
//  2. [none] Execute the frame with Wait::kNever. Done (replied) -> next
//     frame. Would block (a BATCH keeps the entries already run, and their
//     sub-replies, in the Request) -> step 3.
//  3. [state.mu] handed_off = true; append the frame to `queue`.
//     [mu_] unless stopping, put the connection on `ready_` and wake a
//     worker; when stopping, close the connection (UNAVAILABLE).
//                        sync point "DataPlane::HandedOff" [none]
//  4. Appending counts the frame and its bytes; reaching either per-
//     connection bound sets reading_paused and calls PauseReading(true)
//     [state.mu held, so pause and resume calls reach the transport in the
//     order they were decided].
//                        sync point "DataPlane::Queued" [state.mu]
//  5. [mu_] A worker takes a connection from `ready_`. Then, at most
//     kRequestsPerTurn times: [state.mu] if `queue` is empty, handed_off =
//     false and the turn ends (the I/O thread runs the next frame inline);
//     else pop the front (resuming reads once the queue is at half both
//     ways) and [none] Execute it with Wait::kAllowed, which replies.
//                        sync point "DataPlane::BeforeQueuedRequest" [none]
//                        sync point "DataPlane::Drained" [none], once
//                        handed_off is false again
//     A turn that ends with frames left puts the connection back at the end
//     of `ready_` [mu_], so busy connections share the workers.
//  6. A popped plain LOAD takes the plain LOADs right behind it along (up
//     to kMaxLoadRun): RunLoads hands their pages to PageStore::LoadBatch
//     [none], which submits every disk read of the run at once (io_uring,
//     touching block ranges coalesced) and returns the results in order,
//     each as soon as it and the ones before it are done; reply i is sent
//     then. Disk-bound loads on one connection thus keep up to a run's
//     worth of reads in flight on one worker.
//  7. The same for a BATCH on a worker: its consecutive LOAD entries from
//     the next one to run go to one PageStore::LoadBatch (RunBatchLoads), so
//     the 16 pages of a prefetch batch that lie on disk are read together,
//     not one after the other; the reply still lists the entries in order.
//
// Why this keeps each connection's order: a connection's frames are
// executed by one thread at a time in arrival order — the I/O thread while
// handed_off is false, one worker at a time while it is true, and the
// switch either way happens under state.mu between two frames (the I/O
// thread reads handed_off under state.mu before each frame, the worker
// clears it under state.mu only once the queue is empty). A reply is sent
// before the next frame is executed, so replies leave in order too. The
// LOADs of one run (steps 6 and 7) are read concurrently, which no request can
// tell from reading them in order: every frame before the run has been
// answered, none after it starts before the run's last reply, and a load
// changes nothing another load returns (it only sets the referenced bit,
// cancels a pending writeback, or promotes a page from disk into the pool).
//
// Shutdown sets stopping_ and joins the workers once `ready_` is empty; a
// worker in a
// turn finishes it (and requeues, and takes the connection again) first, so
// the frames queued before stopping_ are answered. A read after stopping_
// closes its connection instead (frames of it still queued then find it
// closed and get no reply, as on any closed connection): no new work
// reaches a pool that is being joined.
//
// Locks: ConnState::mu and mu_ are never held together. None
// is held while executing a request or sending a reply. ConnState::mu is
// held across TenantRegistry::OpenConnection (a HELLO) so that a
// connection closing meanwhile (on_close) never leaves a connection counted
// on its session; the registry's lock is a leaf.
//
// Ended sessions. HELLO checks the token once; after it, each frame (each
// run of LOADs) first compares the registry's session_end_generation with
// the one the connection saw when it last found its session open, and only
// on a change takes state.mu (to read the token) and then the registry's
// lock (to look it up) — never both at once. A frame that finds its session
// ended is refused UNAUTHENTICATED without being run, and the connection
// closes. A BATCH that started before the session ended finishes.
#include "farswap/server/data_plane.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <tuple>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"
#include "farswap/common/thread_name.h"

namespace farswap::server {

using transport::BatchEncoder;
using transport::Connection;
using transport::FrameHeader;
using transport::FrameView;
using transport::IncomingMessage;
using transport::kFlagReply;
using transport::kFlagSameFilled;
using transport::kFrameHeaderSize;
using transport::kMaxErrorMessageSize;
using transport::Opcode;
using transport::OutgoingMessage;

namespace {

constexpr uint32_t kNoTenant = UINT32_MAX;

// kRequestsPerTurn: frames a worker runs for one connection before it lets
// the next waiting connection have a turn. Each may wait for a writeback
// pass, so a turn is short enough that no connection waits long behind
// another, and long enough that a backlog is not re-queued per frame.
constexpr size_t kRequestsPerTurn = 32;

// kMaxLoadRun: the most consecutive LOADs a worker takes from a queue's head
// at once to read in parallel (RunLoads: one LoadBatch, every disk read in
// flight together). Enough to keep the device busy; few enough that the
// last reply of a run is not held back long.
constexpr size_t kMaxLoadRun = 16;
static_assert(kMaxLoadRun <= kRequestsPerTurn, "a run fits in a turn");

// IsPlainLoadHeader: a LOAD request on its own (not in a BATCH).
bool IsPlainLoadHeader(const FrameHeader& h) { return !h.is_reply() && h.opcode == Opcode::kLoad; }

// IsLoadEntry: a BATCH entry that is a LOAD.
bool IsLoadEntry(const FrameHeader& h) { return h.opcode == Opcode::kLoad; }

// KindOf: what a LOAD request is for (frame.h kFlagScrub).
PageStore::LoadKind KindOf(const FrameHeader& load) {
  return load.scrub() ? PageStore::LoadKind::kScrub : PageStore::LoadKind::kUse;
}

// ErrorReply makes the reply header for a failed request; the message goes
// into *out (truncated to what the wire allows).
FrameHeader ErrorReply(const FrameHeader& request, const absl::Status& status,
                       std::vector<uint8_t>* out) {
  FrameHeader h;
  h.opcode = request.opcode;
  h.flags = kFlagReply;
  h.request_id = request.request_id;
  h.status = status.code();
  std::string msg(status.message().substr(0, kMaxErrorMessageSize));
  out->assign(msg.begin(), msg.end());
  h.payload_length = uint32_t(out->size());
  return h;
}

FrameHeader OkReply(const FrameHeader& request) {
  FrameHeader h;
  h.opcode = request.opcode;
  h.flags = kFlagReply;
  h.request_id = request.request_id;
  h.page = request.opcode == Opcode::kPing ? 0 : request.page;
  return h;
}

}  // namespace

// Reply owns everything an outgoing reply points at until it is sent.
struct DataPlaneServer::Reply {
  FrameHeader header;
  std::vector<uint8_t> payload;
  std::vector<std::vector<uint8_t>> sub_payloads;  // BATCH entries' payloads
  std::unique_ptr<BatchEncoder> batch;
  // sending: the reply itself while the transport may still read its bytes
  // (set by SendReplies, dropped by the frame's on_sent, which the
  // transport runs exactly once for a frame it accepted). Holding it here
  // keeps on_sent one pointer, which std::function stores without
  // allocating.
  std::shared_ptr<Reply> sending;
};

void DataPlaneServer::SendReply(Connection& conn, std::shared_ptr<Reply> reply) {
  SendReplies(conn, std::span<std::shared_ptr<Reply>>(&reply, 1));
}

void DataPlaneServer::SendReplies(Connection& conn, std::vector<std::shared_ptr<Reply>>& replies) {
  SendReplies(conn, std::span<std::shared_ptr<Reply>>(replies));
  replies.clear();
}

void DataPlaneServer::SendReplies(Connection& conn, std::span<std::shared_ptr<Reply>> replies) {
  if (replies.empty()) return;
  // Inline for a single reply (a plain LOAD or STORE): no allocation.
  absl::InlinedVector<OutgoingMessage, 1> messages(replies.size());
  uint64_t bytes = 0;
  for (size_t i = 0; i < replies.size(); ++i) {
    const std::shared_ptr<Reply>& reply = replies[i];
    OutgoingMessage& m = messages[i];
    m.header = reply->header;
    bytes += kFrameHeaderSize;
    if (reply->batch) {
      for (auto piece : reply->batch->pieces()) {
        m.payload.push_back(piece);
        bytes += piece.size();
      }
    } else if (!reply->payload.empty()) {
      m.payload.push_back(reply->payload);
      bytes += reply->payload.size();
    }
    reply->sending = reply;  // keeps the bytes alive until written
    m.on_sent = [sent = reply.get()](absl::Status) { sent->sending.reset(); };
  }
  // The caller's references keep every reply alive through Send, even if
  // the transport writes (and runs on_sent) inline.
  absl::Status s = conn.Send(std::span<OutgoingMessage>(messages.data(), messages.size()));
  if (s.ok()) {
    bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
    return;
  }
  // Refused: nothing was queued and no on_sent will run.
  for (const std::shared_ptr<Reply>& reply : replies) reply->sending.reset();
  if (conn.is_open()) {
    spdlog::warn("data plane: replies to {} not sent: {}", conn.peer_address(), s.ToString());
  }
}

void DataPlaneServer::CountOp(Opcode op, absl::StatusCode code) {
  const size_t o = std::min(size_t(op), kOpcodeSlots - 1);
  size_t c = size_t(code);
  if (c >= kStatusCodeSlots) c = size_t(absl::StatusCode::kUnknown);
  ops_[o][c].fetch_add(1, std::memory_order_relaxed);
}

// Request is one received frame on its way through Execute. For a BATCH
// that had to stop part-way it also holds what is done: the decoded entries
// (views into msg.payload, whose buffer never moves), the reply built so far
// and the first entry not yet run.
struct DataPlaneServer::Request {
  explicit Request(IncomingMessage m) : msg(std::move(m)) {}
  size_t bytes() const { return kFrameHeaderSize + msg.payload.size(); }

  IncomingMessage msg;
  std::vector<FrameView> entries;
  std::shared_ptr<Reply> reply;  // BATCH: set once decoded
  size_t next = 0;
};

bool DataPlaneServer::IsPlainLoad(const Request& r) { return IsPlainLoadHeader(r.msg.header); }

// ConnState is one connection's session and its serial queue (see the file
// comment). It holds the connection weakly: the connection owns its
// handler, which owns this.
struct DataPlaneServer::ConnState {
  std::weak_ptr<Connection> conn;
  std::string peer;
  // tenant: set once, by the connection's one successful HELLO; a second
  // HELLO is refused, so every frame runs under the tenant it was read
  // under. Written and read in frame order.
  std::atomic<uint32_t> tenant{kNoTenant};
  // session_checked_generation: TenantRegistry::session_end_generation()
  // as read before the session was last found open (HELLO, SessionEnded).
  std::atomic<uint64_t> session_checked_generation{0};

  Mutex mu;
  // session_token: the session this connection counts against
  // (TenantRegistry::OpenConnection) until it closes; empty before HELLO.
  std::string session_token ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;  // on_close has run
  bool handed_off ABSL_GUARDED_BY(mu) = false;
  std::deque<std::unique_ptr<Request>> queue ABSL_GUARDED_BY(mu);
  uint64_t queue_bytes ABSL_GUARDED_BY(mu) = 0;
  bool reading_paused ABSL_GUARDED_BY(mu) = false;
};

DataPlaneServer::DataPlaneServer(PageStore* store, TenantRegistry* tenants,
                                 transport::Transport* transport, const DataPlaneOptions& options)
    : store_(store), tenants_(tenants), transport_(transport), options_(options) {
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

DataPlaneServer::~DataPlaneServer() { Shutdown(); }

absl::Status DataPlaneServer::Listen(const std::string& address) {
  auto accept = [this](std::shared_ptr<Connection> c) { return Accept(std::move(c)); };
  absl::StatusOr<std::unique_ptr<transport::Listener>> l =
      options_.tls ? transport_->ListenTls(address, accept, *options_.tls)
                   : transport_->Listen(address, accept);
  if (!l.ok()) return l.status();
  listener_ = std::move(*l);
  if (options_.tls) {
    spdlog::info("data plane listening on {} (TLS{})", listener_->address(),
                 options_.tls->client_ca_file.empty() ? "" : ", client certificates required");
  } else {
    spdlog::warn(
        "data plane listening on {} in plaintext: page contents travel in the clear, so the "
        "network must be trusted (--data-tls encrypts them)",
        listener_->address());
  }
  return absl::OkStatus();
}

absl::Status DataPlaneServer::ListenAlso(transport::Transport* transport,
                                         const std::string& address) {
  if (options_.tls) {
    return absl::FailedPreconditionError(absl::StrCat("the data plane speaks only TLS, and the ",
                                                      transport->scheme(), " backend has none"));
  }
  absl::StatusOr<std::unique_ptr<transport::Listener>> l = transport->Listen(
      address, [this](std::shared_ptr<Connection> c) { return Accept(std::move(c)); });
  if (!l.ok()) return l.status();
  spdlog::warn(
      "data plane also listening on {} in plaintext: page contents travel in the clear, so the "
      "network must be trusted",
      (*l)->address());
  more_listeners_.emplace_back(transport, std::move(*l));
  return absl::OkStatus();
}

std::string DataPlaneServer::address() const {
  return listener_ ? listener_->address() : std::string();
}

std::vector<std::string> DataPlaneServer::addresses() const {
  std::vector<std::string> out;
  if (listener_) out.push_back(listener_->address());
  for (const auto& [transport, listener] : more_listeners_) out.push_back(listener->address());
  return out;
}

void DataPlaneServer::Shutdown() {
  if (listener_) listener_->Close();
  for (auto& [transport, listener] : more_listeners_) listener->Close();
  {
    MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
    stopped_.store(true);
    work_cv_.SignalAll();
  }
  for (std::thread& t : workers_) t.join();
}

DataPlaneStats DataPlaneServer::stats() const {
  const transport::ListenerStats l = listener_ ? listener_->stats() : transport::ListenerStats{};
  DataPlaneStats s{.tls = options_.tls.has_value(),
                   .tls_handshake_failures = l.tls_handshake_failures,
                   .ktls_connections = l.ktls_connections,
                   .connections_accepted = accepted_.load(),
                   .connections_open = open_.load(),
                   .hello_refused = hello_refused_.load(),
                   .requests = requests_.load(),
                   .requests_to_workers = to_workers_.load(),
                   .queued_requests = queued_.load(),
                   .queued_requests_peak = queued_peak_.load(),
                   .read_pauses = read_pauses_.load(),
                   .load_runs = load_runs_.load(),
                   .bytes_received = bytes_received_.load(std::memory_order_relaxed),
                   .bytes_sent = bytes_sent_.load(std::memory_order_relaxed),
                   .store_latency = SnapshotOf(store_latency_),
                   .load_latency = SnapshotOf(load_latency_)};
  for (size_t o = 0; o < kOpcodeSlots; ++o) {
    for (size_t c = 0; c < kStatusCodeSlots; ++c) {
      s.ops[o][c] = ops_[o][c].load(std::memory_order_relaxed);
    }
  }
  s.backend = std::string(transport_->scheme());
  for (const auto& [transport, listener] : more_listeners_) {
    absl::StrAppend(&s.backend, ",", transport->scheme());
  }
  std::vector<std::shared_ptr<Connection>> conns;
  {
    MutexLock lock(&conns_mu_);
    for (const auto& [state, weak] : open_conns_) {
      if (std::shared_ptr<Connection> c = weak.lock()) conns.push_back(std::move(c));
    }
  }
  for (const auto& c : conns) s.connections_by_carrier[c->stats().carrier]++;
  return s;
}

transport::ConnectionHandler DataPlaneServer::Accept(std::shared_ptr<Connection> conn) {
  auto state = std::make_shared<ConnState>();
  state->conn = conn;
  state->peer = conn->peer_address();
  accepted_++;
  open_++;
  {
    MutexLock l(&conns_mu_);
    open_conns_[state.get()] = conn;
  }
  spdlog::info("data plane: connection from {}", conn->peer_address());
  transport::ConnectionHandler h;
  // The handler holds the state; the state holds the connection only
  // weakly, so closing the connection frees both.
  h.on_receive = [this, state](Connection&, std::span<IncomingMessage> messages) {
    OnReceive(state, messages);
  };
  h.on_close = [this, state](const absl::Status& reason) {
    std::string token;
    {
      MutexLock l(&state->mu);
      state->closed = true;
      token = std::move(state->session_token);
    }
    if (!token.empty()) tenants_->CloseConnection(token);
    {
      MutexLock l(&conns_mu_);
      open_conns_.erase(state.get());
    }
    open_--;
    spdlog::info("data plane: connection from {} closed: {}", state->peer, reason.ToString());
  };
  return h;
}

// --- the I/O thread ----------------------------------------------------------------

void DataPlaneServer::OnReceive(const std::shared_ptr<ConnState>& state,
                                std::span<IncomingMessage> messages) {
  std::shared_ptr<Connection> conn_ref = state->conn.lock();
  if (!conn_ref) return;
  Connection& conn = *conn_ref;
  if (stopped_.load()) {
    conn.Close(absl::UnavailableError("memory node is shutting down"));
    return;
  }
  uint64_t bytes = 0;
  for (const IncomingMessage& msg : messages) bytes += kFrameHeaderSize + msg.payload.size();
  bytes_received_.fetch_add(bytes, std::memory_order_relaxed);
  for (IncomingMessage& msg : messages) {
    if (!conn.is_open()) return;
    {
      // Step 1: behind a request a worker has, every frame queues.
      MutexLock l(&state->mu);
      if (state->handed_off) {
        QueueLocked(*state, conn, std::make_unique<Request>(std::move(msg)));
        continue;
      }
    }
    // Step 2: handed_off is false and only this thread sets it.
    Request request(std::move(msg));
    if (Execute(*state, conn_ref, request, Wait::kNever)) continue;
    HandOff(state, conn, std::make_unique<Request>(std::move(request)));  // step 3
  }
}

void DataPlaneServer::HandOff(const std::shared_ptr<ConnState>& state, Connection& conn,
                              std::unique_ptr<Request> request) {
  {
    MutexLock l(&state->mu);
    state->handed_off = true;
    QueueLocked(*state, conn, std::move(request));
  }
  bool scheduled;
  {
    MutexLock l(&mu_);
    scheduled = !stopping_;
    if (scheduled) {
      ready_.push_back(state);
      work_cv_.Signal();
    }
  }
  if (!scheduled) conn.Close(absl::UnavailableError("memory node is shutting down"));
  FARSWAP_SYNC_POINT("DataPlane::HandedOff");
}

void DataPlaneServer::QueueLocked(ConnState& state, Connection& conn,
                                  std::unique_ptr<Request> request) {
  state.mu.AssertHeld();
  state.queue_bytes += request->bytes();
  state.queue.push_back(std::move(request));
  to_workers_++;
  queued_++;
  const uint64_t depth = state.queue.size();
  uint64_t peak = queued_peak_.load(std::memory_order_relaxed);
  while (depth > peak && !queued_peak_.compare_exchange_weak(peak, depth)) {
  }
  // Step 4.
  if (!state.reading_paused && (depth >= options_.max_queued_requests_per_connection ||
                                state.queue_bytes >= options_.max_queued_bytes_per_connection)) {
    state.reading_paused = true;
    read_pauses_++;
    conn.PauseReading(true);
    spdlog::debug("data plane: pausing reads from {}: {} requests ({} bytes) wait for workers",
                  state.peer, depth, state.queue_bytes);
  }
  FARSWAP_SYNC_POINT("DataPlane::Queued");
}

// --- both ----------------------------------------------------------------------------

bool DataPlaneServer::Execute(ConnState& state, const std::shared_ptr<Connection>& conn_ref,
                              Request& request, Wait wait) {
  if (!conn_ref || !conn_ref->is_open()) return true;  // nobody to answer
  Connection& conn = *conn_ref;
  IncomingMessage& msg = request.msg;
  if (msg.header.is_reply()) {
    auto reply = std::make_shared<Reply>();
    reply->header = ErrorReply(
        msg.header, absl::InvalidArgumentError("a memory node takes requests, not replies"),
        &reply->payload);
    SendReply(conn, reply);
    conn.Close(absl::InvalidArgumentError("peer sent a reply frame"));
    return true;
  }
  if (msg.header.opcode == Opcode::kHello) {
    auto reply = std::make_shared<Reply>();
    if (state.tenant.load() != kNoTenant) {
      // Frames already read (queued for a worker, or a BATCH part-way) were
      // read under this connection's session: a second HELLO may not
      // re-tenant them, or anything after. The connection stays as it was.
      hello_refused_++;
      CountOp(Opcode::kHello, absl::StatusCode::kFailedPrecondition);
      reply->header = ErrorReply(
          msg.header,
          absl::FailedPreconditionError(
              "this connection already has a session; open a new connection for another"),
          &reply->payload);
      SendReply(conn, reply);
      return true;
    }
    std::string token(msg.payload.begin(), msg.payload.end());
    absl::StatusOr<Session> session;
    // Read before the session is found open: a session that ends after
    // this read changes the generation, so the next frame looks again.
    state.session_checked_generation.store(tenants_->session_end_generation(),
                                           std::memory_order_relaxed);
    {
      MutexLock l(&state.mu);
      if (state.closed) return true;  // nobody to answer, nothing to count
      session = tenants_->OpenConnection(token);
      if (session.ok()) state.session_token = token;
    }
    CountOp(Opcode::kHello, session.status().code());
    if (session.ok()) {
      state.tenant.store(session->tenant_index);
      reply->header = OkReply(msg.header);
      SendReply(conn, reply);
      return true;
    }
    hello_refused_++;
    reply->header = ErrorReply(msg.header, session.status(), &reply->payload);
    SendReply(conn, reply);
    spdlog::warn("data plane: {} refused: {}", conn.peer_address(), session.status().ToString());
    conn.Close(session.status());
    return true;
  }
  const uint32_t tenant = state.tenant.load();
  if (tenant == kNoTenant) {
    hello_refused_++;
    absl::Status s = absl::UnauthenticatedError(
        absl::StrCat(transport::OpcodeName(msg.header.opcode),
                     " before HELLO: send HELLO with a session token from Attach first"));
    CountOp(msg.header.opcode, s.code());
    auto reply = std::make_shared<Reply>();
    reply->header = ErrorReply(msg.header, s, &reply->payload);
    SendReply(conn, reply);
    spdlog::warn("data plane: {} refused: {}", conn.peer_address(), s.ToString());
    conn.Close(s);
    return true;
  }
  // A frame (a BATCH: before its first entry) runs only while its session
  // is open: one whose session ended (Detach, or a tenants-file reload that
  // removed its tenant or changed its secret) is refused unread, and the
  // connection closed.
  if (request.reply == nullptr && SessionEnded(state)) {
    RefuseEndedSession(conn, msg.header);
    return true;
  }

  if (msg.header.opcode != Opcode::kBatch) {
    auto reply = std::make_shared<Reply>();
    std::optional<FrameHeader> h = Handle(tenant, msg.header, msg.payload, &reply->payload, wait);
    if (!h.has_value()) return false;
    reply->header = *h;
    SendReply(conn, reply);
    return true;
  }

  if (request.reply == nullptr) {  // first time here: decode
    auto reply = std::make_shared<Reply>();
    absl::StatusOr<std::vector<FrameView>> entries =
        transport::DecodeBatch(FrameView{msg.header, msg.payload});
    if (!entries.ok()) {  // the transport validated it; this would be a bug
      reply->header = ErrorReply(msg.header, entries.status(), &reply->payload);
      SendReply(conn, reply);
      return true;
    }
    request.entries = std::move(*entries);
    reply->batch = std::make_unique<BatchEncoder>(request.entries.size());
    reply->sub_payloads.resize(request.entries.size());  // never resized again: pieces point in
    request.reply = std::move(reply);
  }
  Reply& reply = *request.reply;
  while (request.next < request.entries.size()) {
    const size_t i = request.next;
    const FrameView& e = request.entries[i];
    if (wait == Wait::kAllowed && IsLoadEntry(e.header)) {
      // On a worker: this LOAD and the LOADs right behind it are read
      // together (step 7 of the protocol above).
      size_t end = i + 1;
      while (end < request.entries.size() && IsLoadEntry(request.entries[end].header)) ++end;
      RunBatchLoads(tenant, request, end);
      continue;
    }
    std::optional<FrameHeader> sub =
        Handle(tenant, e.header, e.payload, &reply.sub_payloads[i], wait);
    if (!sub.has_value()) return false;  // entries before i are done; i runs on a worker
    AddBatchEntry(reply, i, *sub);
    ++request.next;
  }
  reply.header = reply.batch->Header(msg.header.request_id);
  SendReply(conn, request.reply);
  return true;
}

bool DataPlaneServer::SessionEnded(ConnState& state) {
  const uint64_t generation = tenants_->session_end_generation();
  if (generation == state.session_checked_generation.load(std::memory_order_relaxed)) return false;
  std::string token;
  {
    MutexLock l(&state.mu);
    token = state.session_token;  // empty once closed: on_close took it
  }
  if (token.empty() || !tenants_->SessionIsOpen(token)) return true;
  state.session_checked_generation.store(generation, std::memory_order_relaxed);
  return false;
}

void DataPlaneServer::RefuseEndedSession(Connection& conn, const FrameHeader& request) {
  absl::Status s = absl::UnauthenticatedError(
      "this connection's session has ended (detached, or its tenant was removed or its secret "
      "changed by a tenants-file reload): attach again");
  CountOp(request.opcode, s.code());
  auto reply = std::make_shared<Reply>();
  reply->header = ErrorReply(request, s, &reply->payload);
  SendReply(conn, reply);
  spdlog::warn("data plane: {} refused: {}", conn.peer_address(), s.ToString());
  conn.Close(s);
}

std::optional<FrameHeader> DataPlaneServer::Handle(uint32_t tenant, const FrameHeader& request,
                                                   std::span<const uint8_t> payload,
                                                   std::vector<uint8_t>* out, Wait wait) {
  // Two clock reads (vDSO, tens of ns) and two relaxed adds per STORE or
  // LOAD: cheap beside the page-store call they time.
  const bool timed = request.opcode == Opcode::kStore || request.opcode == Opcode::kLoad;
  const auto start =
      timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  std::optional<FrameHeader> reply = HandleOp(tenant, request, payload, out, wait);
  if (!reply.has_value()) return reply;  // would block: counted when it runs
  if (request.opcode == Opcode::kStore || request.opcode == Opcode::kInvalidate) {
    // [none] The write is applied (loads see it), its reply not yet sent.
    FARSWAP_SYNC_POINT("DataPlane::Write:applied");
  }
  if (timed) {
    const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - start);
    (request.opcode == Opcode::kStore ? store_latency_ : load_latency_).Record(took);
  }
  CountOp(request.opcode, reply->status);
  return reply;
}

std::optional<FrameHeader> DataPlaneServer::HandleOp(uint32_t tenant, const FrameHeader& request,
                                                     std::span<const uint8_t> payload,
                                                     std::vector<uint8_t>* out, Wait wait) {
  switch (request.opcode) {
    case Opcode::kStore: {
      StoreRequest r;
      r.codec = uint8_t(request.codec);
      r.checksum = request.checksum;
      r.version = request.version;
      if (request.same_filled()) {
        absl::StatusOr<uint64_t> fill = transport::DecodeU64Payload(payload);
        if (!fill.ok()) {
          requests_++;
          return ErrorReply(request, fill.status(), out);
        }
        r.same_filled = true;
        r.fill = *fill;
      } else {
        r.payload = absl::Span<const uint8_t>(payload.data(), payload.size());
      }
      std::optional<absl::Status> s = wait == Wait::kNever
                                          ? store_->TryStore(tenant, request.page, r)
                                          : std::optional(store_->Store(tenant, request.page, r));
      if (!s.has_value()) return std::nullopt;
      requests_++;
      return s->ok() ? OkReply(request) : ErrorReply(request, *s, out);
    }
    case Opcode::kLoad: {
      const PageStore::LoadKind kind = KindOf(request);
      std::optional<absl::StatusOr<LoadedPage>> p =
          wait == Wait::kNever ? store_->TryLoad(tenant, request.page, kind)
                               : std::optional(store_->Load(tenant, request.page, kind));
      if (!p.has_value()) return std::nullopt;
      requests_++;
      return LoadReply(request, *p, out);
    }
    default:
      break;
  }
  requests_++;
  switch (request.opcode) {
    case Opcode::kInvalidate: {
      // request.version: 0, or the newest version to drop (frame.h).
      absl::Status s = store_->Invalidate(tenant, request.page, request.version);
      return s.ok() ? OkReply(request) : ErrorReply(request, s, out);
    }
    case Opcode::kInvalidateRange: {
      absl::StatusOr<uint64_t> count = transport::DecodeU64Payload(payload);
      if (!count.ok()) return ErrorReply(request, count.status(), out);
      absl::StatusOr<uint64_t> n = store_->InvalidateRange(tenant, request.page, *count);
      return n.ok() ? OkReply(request) : ErrorReply(request, n.status(), out);
    }
    case Opcode::kPing: {
      FrameHeader h = OkReply(request);
      // Clients ping every node once per health interval: that is how
      // they learn of a drain and start moving their slabs off.
      if (store_->draining()) h.flags |= transport::kFlagNodeDraining;
      out->assign(payload.begin(), payload.end());
      h.payload_length = uint32_t(out->size());
      return h;
    }
    default:
      break;
  }
  return ErrorReply(request,
                    absl::InvalidArgumentError(absl::StrCat(transport::OpcodeName(request.opcode),
                                                            " is not allowed here")),
                    out);
}

FrameHeader DataPlaneServer::LoadReply(const FrameHeader& request,
                                       absl::StatusOr<LoadedPage>& loaded,
                                       std::vector<uint8_t>* out) {
  if (!loaded.ok()) return ErrorReply(request, loaded.status(), out);
  LoadedPage& page = *loaded;
  FrameHeader h = OkReply(request);
  h.codec = transport::Codec(page.codec);
  h.checksum = page.checksum;
  h.version = page.version;
  if (page.same_filled) {
    h.flags |= kFlagSameFilled;
    h.codec = transport::Codec::kNone;
    auto fill = transport::EncodeU64Payload(page.fill);
    out->assign(fill.begin(), fill.end());
  } else {
    *out = std::move(page.payload);
  }
  if (options_.test_corrupt_loads && !out->empty()) (*out)[out->size() / 2] ^= 0x10;
  h.payload_length = uint32_t(out->size());
  return h;
}

// --- the workers ----------------------------------------------------------------------

void DataPlaneServer::WorkerLoop() {
  SetCurrentThreadName("fs-worker");
  for (;;) {
    std::shared_ptr<ConnState> state;
    {
      MutexLock l(&mu_);
      while (ready_.empty() && !stopping_) work_cv_.Wait(&mu_);
      if (ready_.empty()) return;  // stopping, and everything queued is done
      state = std::move(ready_.front());
      ready_.pop_front();
    }
    RunQueued(state);
  }
}

std::unique_ptr<DataPlaneServer::Request> DataPlaneServer::PopLocked(ConnState& state,
                                                                     Connection* conn) {
  state.mu.AssertHeld();
  std::unique_ptr<Request> request = std::move(state.queue.front());
  state.queue.pop_front();
  state.queue_bytes -= request->bytes();
  queued_--;
  if (state.reading_paused &&
      state.queue.size() <= options_.max_queued_requests_per_connection / 2 &&
      state.queue_bytes <= options_.max_queued_bytes_per_connection / 2) {
    state.reading_paused = false;
    if (conn != nullptr) conn->PauseReading(false);
  }
  return request;
}

void DataPlaneServer::RunQueued(const std::shared_ptr<ConnState>& state) {
  std::shared_ptr<Connection> conn = state->conn.lock();  // null once closed
  for (size_t turn = 0; turn < kRequestsPerTurn;) {
    std::vector<std::unique_ptr<Request>> run;
    {
      MutexLock l(&state->mu);
      if (state->queue.empty()) {
        state->handed_off = false;  // the I/O thread runs the next frame itself
      } else {
        run.push_back(PopLocked(*state, conn.get()));
        while (IsPlainLoad(*run.back()) && run.size() < kMaxLoadRun && !state->queue.empty() &&
               IsPlainLoad(*state->queue.front())) {
          run.push_back(PopLocked(*state, conn.get()));
        }
      }
    }
    if (run.empty()) {
      FARSWAP_SYNC_POINT("DataPlane::Drained");
      return;
    }
    turn += run.size();
    FARSWAP_SYNC_POINT("DataPlane::BeforeQueuedRequest");
    if (run.size() == 1) {
      Execute(*state, conn, *run.front(), Wait::kAllowed);
    } else {
      RunLoads(*state, conn, run);
    }
  }
  // The turn is over with frames (maybe) left: back of the line. Its
  // handed_off stays true, so nobody else puts it on ready_ meanwhile.
  MutexLock l(&mu_);
  ready_.push_back(state);
  work_cv_.Signal();
}

void DataPlaneServer::AddBatchEntry(Reply& reply, size_t i, const FrameHeader& sub) {
  std::span<const uint8_t> piece(reply.sub_payloads[i]);
  absl::Status s =
      reply.batch->Add(sub, piece.empty() ? std::span<const std::span<const uint8_t>>()
                                          : std::span<const std::span<const uint8_t>>(&piece, 1));
  if (!s.ok()) spdlog::error("data plane: batch reply entry {}: {}", i, s.ToString());
}

void DataPlaneServer::RunBatchLoads(uint32_t tenant, Request& request, size_t end) {
  const size_t begin = request.next;
  std::vector<uint64_t> pages;
  bool any_scrub = false;
  for (size_t k = begin; k < end; ++k) {
    pages.push_back(request.entries[k].header.page);
    any_scrub |= KindOf(request.entries[k].header) == PageStore::LoadKind::kScrub;
  }
  // Empty (all kUse) unless a scrub's load is in the run: no allocation for
  // the usual run.
  std::vector<PageStore::LoadKind> kinds;
  if (any_scrub) {
    for (size_t k = begin; k < end; ++k) kinds.push_back(KindOf(request.entries[k].header));
  }
  load_runs_++;
  Reply& reply = *request.reply;
  const auto start = std::chrono::steady_clock::now();
  // LoadBatch hands the results back in order, so the entries go into the
  // reply in order.
  store_->LoadBatch(
      tenant, pages,
      [&](size_t k, absl::StatusOr<LoadedPage>& loaded) {
        load_latency_.Record(absl::FromChrono(std::chrono::steady_clock::now() - start));
        requests_++;
        const size_t i = begin + k;
        FrameHeader sub = LoadReply(request.entries[i].header, loaded, &reply.sub_payloads[i]);
        CountOp(Opcode::kLoad, sub.status);
        AddBatchEntry(reply, i, sub);
      },
      nullptr, kinds);
  request.next = end;
}

void DataPlaneServer::RunLoads(ConnState& state, const std::shared_ptr<Connection>& conn,
                               const std::vector<std::unique_ptr<Request>>& run) {
  const uint32_t tenant = state.tenant.load();
  if (conn == nullptr || !conn->is_open() || tenant == kNoTenant || SessionEnded(state)) {
    for (const auto& r : run) Execute(state, conn, *r, Wait::kAllowed);  // refuses or skips
    return;
  }
  std::vector<uint64_t> pages;
  bool any_scrub = false;
  for (const auto& r : run) {
    pages.push_back(r->msg.header.page);
    any_scrub |= KindOf(r->msg.header) == PageStore::LoadKind::kScrub;
  }
  std::vector<PageStore::LoadKind> kinds;  // empty: all kUse (as in RunBatchLoads)
  if (any_scrub) {
    for (const auto& r : run) kinds.push_back(KindOf(r->msg.header));
  }
  load_runs_++;
  // The store reads every written-back page of the run at once and hands
  // the results back in order; each reply goes out as soon as it and the
  // ones before it are done.
  // Replies that become ready together leave together: one gathered write
  // per round of completions, not one per page (a worker's largest cost in
  // a profile of disk-bound loads was its write per reply).
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<Reply>> ready;
  store_->LoadBatch(
      tenant, pages,
      [&](size_t i, absl::StatusOr<LoadedPage>& loaded) {
        load_latency_.Record(absl::FromChrono(std::chrono::steady_clock::now() - start));
        requests_++;
        auto reply = std::make_shared<Reply>();
        reply->header = LoadReply(run[i]->msg.header, loaded, &reply->payload);
        CountOp(Opcode::kLoad, reply->header.status);
        ready.push_back(std::move(reply));
      },
      [&] { SendReplies(*conn, ready); }, kinds);
  SendReplies(*conn, ready);  // (on_ready_done has sent them all; nothing is left)
}

}  // namespace farswap::server
