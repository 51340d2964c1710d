#include "farswap/server/data_plane.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace farswap::server {

using transport::BatchEncoder;
using transport::Connection;
using transport::FrameHeader;
using transport::FrameView;
using transport::IncomingMessage;
using transport::kFlagReply;
using transport::kFlagSameFilled;
using transport::kMaxErrorMessageSize;
using transport::Opcode;
using transport::OutgoingMessage;

namespace {

constexpr uint32_t kNoTenant = UINT32_MAX;

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

// Reply owns everything an outgoing reply points at until it is sent.
struct Reply {
  FrameHeader header;
  std::vector<uint8_t> payload;
  std::vector<std::vector<uint8_t>> sub_payloads;  // BATCH entries' payloads
  std::unique_ptr<BatchEncoder> batch;
};

void SendReply(Connection& conn, std::shared_ptr<Reply> reply) {
  OutgoingMessage m;
  m.header = reply->header;
  if (reply->batch) {
    for (auto piece : reply->batch->pieces()) m.payload.push_back(piece);
  } else if (!reply->payload.empty()) {
    m.payload.push_back(reply->payload);
  }
  m.on_sent = [reply](absl::Status) {};  // keeps the bytes alive until written
  absl::Status s = conn.Send({&m, 1});
  if (!s.ok() && conn.is_open()) {
    spdlog::warn("data plane: reply to {} not sent: {}", conn.peer_address(), s.ToString());
  }
}

}  // namespace

// ConnState is one connection's session. It holds the connection weakly:
// the connection owns its handler, which owns this.
struct DataPlaneServer::ConnState {
  std::weak_ptr<Connection> conn;
  std::string peer;
  std::atomic<uint32_t> tenant{kNoTenant};
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
  absl::StatusOr<std::unique_ptr<transport::Listener>> l = transport_->Listen(
      address, [this](std::shared_ptr<Connection> c) { return Accept(std::move(c)); });
  if (!l.ok()) return l.status();
  listener_ = std::move(*l);
  spdlog::info("data plane listening on {}", listener_->address());
  return absl::OkStatus();
}

std::string DataPlaneServer::address() const {
  return listener_ ? listener_->address() : std::string();
}

void DataPlaneServer::Shutdown() {
  if (listener_) listener_->Close();
  {
    MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
    work_cv_.SignalAll();
  }
  for (std::thread& t : workers_) t.join();
}

DataPlaneStats DataPlaneServer::stats() const {
  return DataPlaneStats{accepted_.load(), open_.load(), hello_refused_.load(), requests_.load()};
}

transport::ConnectionHandler DataPlaneServer::Accept(std::shared_ptr<Connection> conn) {
  auto state = std::make_shared<ConnState>();
  state->conn = conn;
  state->peer = conn->peer_address();
  accepted_++;
  open_++;
  spdlog::info("data plane: connection from {}", conn->peer_address());
  transport::ConnectionHandler h;
  // The handler holds the state; the state holds the connection only until
  // it closes (then the cycle is broken).
  h.on_receive = [this, state](Connection&, std::span<IncomingMessage> messages) {
    OnReceive(state, messages);
  };
  h.on_close = [this, state](const absl::Status& reason) {
    open_--;
    spdlog::info("data plane: connection from {} closed: {}", state->peer, reason.ToString());
  };
  return h;
}

void DataPlaneServer::OnReceive(const std::shared_ptr<ConnState>& state,
                                std::span<IncomingMessage> messages) {
  std::shared_ptr<Connection> conn_ref = state->conn.lock();
  if (!conn_ref) return;
  Connection& conn = *conn_ref;
  for (IncomingMessage& msg : messages) {
    if (!conn.is_open()) return;
    if (msg.header.is_reply()) {
      auto reply = std::make_shared<Reply>();
      reply->header = ErrorReply(
          msg.header, absl::InvalidArgumentError("a memory node takes requests, not replies"),
          &reply->payload);
      SendReply(conn, reply);
      conn.Close(absl::InvalidArgumentError("peer sent a reply frame"));
      return;
    }
    if (msg.header.opcode == Opcode::kHello) {
      std::string token(msg.payload.begin(), msg.payload.end());
      absl::StatusOr<Session> session = tenants_->LookupSession(token);
      auto reply = std::make_shared<Reply>();
      if (session.ok()) {
        state->tenant.store(session->tenant_index);
        reply->header = OkReply(msg.header);
        SendReply(conn, reply);
        continue;
      }
      hello_refused_++;
      reply->header = ErrorReply(msg.header, session.status(), &reply->payload);
      SendReply(conn, reply);
      spdlog::warn("data plane: {} refused: {}", conn.peer_address(), session.status().ToString());
      conn.Close(session.status());
      return;
    }
    if (state->tenant.load() == kNoTenant) {
      hello_refused_++;
      absl::Status s = absl::UnauthenticatedError(
          absl::StrCat(transport::OpcodeName(msg.header.opcode),
                       " before HELLO: send HELLO with a session token from Attach first"));
      auto reply = std::make_shared<Reply>();
      reply->header = ErrorReply(msg.header, s, &reply->payload);
      SendReply(conn, reply);
      spdlog::warn("data plane: {} refused: {}", conn.peer_address(), s.ToString());
      conn.Close(s);
      return;
    }
    Enqueue([this, state, m = std::move(msg)]() mutable { HandleAndReply(state, std::move(m)); });
  }
}

void DataPlaneServer::Enqueue(Work work) {
  MutexLock l(&mu_);
  queue_.push_back(std::move(work));
  work_cv_.Signal();
}

void DataPlaneServer::WorkerLoop() {
  for (;;) {
    Work work;
    {
      MutexLock l(&mu_);
      while (queue_.empty() && !stopping_) work_cv_.Wait(&mu_);
      if (queue_.empty()) return;  // stopping, and everything queued is done
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    work();
  }
}

void DataPlaneServer::HandleAndReply(const std::shared_ptr<ConnState>& state, IncomingMessage msg) {
  std::shared_ptr<Connection> conn = state->conn.lock();
  if (!conn || !conn->is_open()) return;  // nobody to answer
  const uint32_t tenant = state->tenant.load();
  auto reply = std::make_shared<Reply>();
  if (msg.header.opcode != Opcode::kBatch) {
    reply->header = Handle(tenant, msg.header, msg.payload, &reply->payload);
    SendReply(*conn, reply);
    return;
  }
  FrameView view{msg.header, msg.payload};
  absl::StatusOr<std::vector<FrameView>> entries = transport::DecodeBatch(view);
  if (!entries.ok()) {  // the transport validated it; this would be a bug
    reply->header = ErrorReply(msg.header, entries.status(), &reply->payload);
    SendReply(*conn, reply);
    return;
  }
  reply->batch = std::make_unique<BatchEncoder>();
  reply->sub_payloads.resize(entries->size());
  for (size_t i = 0; i < entries->size(); ++i) {
    const FrameView& e = (*entries)[i];
    FrameHeader sub = Handle(tenant, e.header, e.payload, &reply->sub_payloads[i]);
    std::span<const uint8_t> piece(reply->sub_payloads[i]);
    absl::Status s = reply->batch->Add(
        sub, piece.empty() ? std::span<const std::span<const uint8_t>>()
                           : std::span<const std::span<const uint8_t>>(&piece, 1));
    if (!s.ok()) spdlog::error("data plane: batch reply entry {}: {}", i, s.ToString());
  }
  reply->header = reply->batch->Header(msg.header.request_id);
  SendReply(*conn, reply);
}

FrameHeader DataPlaneServer::Handle(uint32_t tenant, const FrameHeader& request,
                                    std::span<const uint8_t> payload, std::vector<uint8_t>* out) {
  requests_++;
  switch (request.opcode) {
    case Opcode::kStore: {
      StoreRequest r;
      r.codec = uint8_t(request.codec);
      r.checksum = request.checksum;
      if (request.same_filled()) {
        absl::StatusOr<uint64_t> fill = transport::DecodeU64Payload(payload);
        if (!fill.ok()) return ErrorReply(request, fill.status(), out);
        r.same_filled = true;
        r.fill = *fill;
      } else {
        r.payload = absl::Span<const uint8_t>(payload.data(), payload.size());
      }
      absl::Status s = store_->Store(tenant, request.page, r);
      return s.ok() ? OkReply(request) : ErrorReply(request, s, out);
    }
    case Opcode::kLoad: {
      absl::StatusOr<LoadedPage> p = store_->Load(tenant, request.page);
      if (!p.ok()) return ErrorReply(request, p.status(), out);
      FrameHeader h = OkReply(request);
      h.codec = transport::Codec(p->codec);
      h.checksum = p->checksum;
      if (p->same_filled) {
        h.flags |= kFlagSameFilled;
        h.codec = transport::Codec::kNone;
        auto fill = transport::EncodeU64Payload(p->fill);
        out->assign(fill.begin(), fill.end());
      } else {
        *out = std::move(p->payload);
      }
      if (options_.test_corrupt_loads && !out->empty()) (*out)[out->size() / 2] ^= 0x10;
      h.payload_length = uint32_t(out->size());
      return h;
    }
    case Opcode::kInvalidate: {
      absl::Status s = store_->Invalidate(tenant, request.page);
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
      out->assign(payload.begin(), payload.end());
      h.payload_length = uint32_t(out->size());
      return h;
    }
    case Opcode::kHello:
    case Opcode::kBatch:
      break;
  }
  return ErrorReply(request,
                    absl::InvalidArgumentError(absl::StrCat(transport::OpcodeName(request.opcode),
                                                            " is not allowed here")),
                    out);
}

}  // namespace farswap::server
