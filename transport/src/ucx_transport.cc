// ucx_transport.cc: the UCX backend ("ucx://host:port"), on UCP active
// messages. UCX runs the same code over InfiniBand/RoCE verbs (rc, dc, ud)
// where there is hardware and over TCP and shared memory where there is
// none; UCX_TLS / UCX_NET_DEVICES choose, as for any UCX program.
//
// Shape. UcxTransport owns one UCP context and io_threads UcxLoops; a loop
// is a thread, a UCP worker and an epoll set holding the worker's event fd
// and an eventfd for wake-ups. Connections made with Connect are spread
// round-robin over the loops, and so are accepted ones; a listener lives
// on loop 0 (an accepted connection's endpoint is made on its own loop's
// worker from loop 0's connection request, with both workers held).
//
// Frames. One farswap frame is one active message with id kFrameAm: the
// encoded FrameHeader is the AM header and the payload pieces are the
// message's data, gathered by UCX straight from the caller's buffers (an
// IOV datatype), so the ownership rule of transport.h holds unchanged:
// on_sent runs when UCX no longer needs the bytes. Where verbs may carry
// frames, large ones go by rendezvous (UCX decides by size; elsewhere every
// frame is eager: ucx_config.h); the receiver then fetches the data with
// ucp_am_recv_data_nbx, and frames are still delivered in arrival order:
// each connection has an inbox whose head waits until its data is in.
// Control messages (kControlAm: a fixed ControlMessage as the AM header)
// carry the handshake and flow-control credits.
//
// Handshake. Connect creates the endpoint (client-server mode: UCX's
// sockaddr connection manager), sends HELLO and waits (connect_timeout) for
// HELLO_ACK, so a Connect that returns OK has a peer that accepted it.
//
// Flow control (UCX has no per-endpoint "stop reading"). The receiver
// grants each connection kReceiveWindowBytes of frames; the sender keeps
// what does not fit in its backlog, and the receiver hands credit back
// (CREDIT, in chunks of a quarter window) only for frames it delivered to
// the handler. A paused connection (PauseReading) delivers nothing, so its
// sender stops after one window: what a node buffers for a connection that
// it stopped reading is bounded by the window, as with TCP's socket
// buffers. A connected (client) sender refuses Send with RESOURCE_EXHAUSTED
// once its backlog and in-flight bytes pass max_output_queue_bytes; an
// accepted connection whose replies pile up past that bound stops
// delivering requests until they drain (as the TCP backend stops reading).
//
// Errors. An endpoint error (peer gone, connection reset) closes the
// connection with UNAVAILABLE: every message not yet sent gets on_sent
// UNAVAILABLE, then on_close runs.
//
// Locking. Each loop's `mu` serialises every call into its UCP worker
// (UCS_THREAD_MODE_SERIALIZED) and guards the state of the connections on
// it. Handlers and on_sent callbacks never run under it: callbacks UCX makes
// during progress queue work on the loop (`deferred`), which the loop runs
// after it drops the lock; Send runs the callbacks of frames that completed
// at once itself, after it drops the lock. ConnectWait::mu is a leaf.
// Order: UcxTransport::mu_ (Listen, Shutdown) before a loop's mu; of two
// loops' locks, loop 0's first (Accept).
//
// Shutdown. Stop marks its loop `stopped` under the loop's lock, then
// closes the connections on it; Connect and Accept attach an endpoint only
// under that lock to a loop not stopped, so no endpoint outlives its worker
// (a Connect that passed the transport's shut-down check just before
// Shutdown gets UNAVAILABLE). Listen creates and registers its listener
// under mu_ after checking shut_down_ there, so Shutdown, which sets
// shut_down_ before it takes mu_ to collect the listeners, destroys every
// listener before the workers go.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "farswap/common/mutex.h"
#include "farswap/common/sync_point.h"
#include "farswap/common/thread_name.h"
#include "farswap/transport/transport.h"
#include "socket_address.h"
#include "spdlog/spdlog.h"
#include "ucx_config.h"

namespace farswap::transport {
namespace {

constexpr unsigned kFrameAm = 1;
constexpr unsigned kControlAm = 2;
constexpr unsigned kFramesAm = 3;

// Coalescing: the small frames of one Send go out as one kFramesAm message
// (a u32 count as the AM header; the frames' wire bytes, header then
// payload, as the data), as the TCP backend writes them with one writev:
// UCX's TCP transport makes a system call per message. A frame of
// kCoalesceFrameMax bytes or more goes on its own; a coalesced message
// holds at most kCoalesceMax bytes (well under a credit window).
//
// The same across Send calls made from a loop's handlers: while a loop runs
// the work of one round (deliveries, completions), Sends its own thread
// makes on its connections are parked in their backlogs, and at the end of
// the round each such connection's backlog goes out with its small frames
// coalesced (FlushParkedLocked) — a node answering the requests of one round
// sends one message per connection, not one per reply. A Send from another
// thread to a connection with parked frames parks behind them (order is
// kept); to any other connection it posts at once, as always.
constexpr uint64_t kCoalesceFrameMax = 64 * 1024;
constexpr uint64_t kCoalesceMax = 256 * 1024;

// Gathering: UCX sends an IOV message zero-copy (and, with verbs, by
// rendezvous) only while its pieces fit the transport's gather list — over
// TCP four (UCX_TCP_MAX_IOV=6 less its own two headers), fewer where UCP
// adds a piece for the AM header; past that it cuts the message into
// copied 8 KiB fragments, each a system call and a wake-up at both ends (a
// 32-page BATCH is 64 pieces: 8 sendto and 8 recvfrom). A message of
// kUcxZeroCopyThresholdBytes or more with more than kGatherPiecesMax pieces
// is therefore first copied into one contiguous buffer (FlatBuffer, reused
// by the loop, so that with verbs UCX's registration cache knows it) and
// sent from there. Measured on a 2-core VM (farswap-bench e2e, one node,
// 32-page batches, UCX_TLS=tcp): 11,297 sendto and 23,038 epoll_wait
// calls in a run before, 1,094 and ~10,000 after, and loads went from
// 0.56-0.71x of our TCP backend's pages/s to 0.9-1.0x.
constexpr size_t kGatherPiecesMax = 3;
// kFlatBuffersKept: contiguous buffers a loop keeps for reuse; one is held
// per flattened message in flight, and the rest are freed as they come back.
constexpr size_t kFlatBuffersKept = 8;
// kFlatBufferMinBytes: the least a new buffer holds, so that one buffer
// serves batches of different sizes.
constexpr size_t kFlatBufferMinBytes = 256 * 1024;

// FlatBuffer: a contiguous copy of a message's pieces (see Gathering).
struct FlatBuffer {
  std::unique_ptr<uint8_t[]> data;
  size_t capacity = 0;
};

// kReceiveWindowBytes: frame bytes (header + payload) a sender may have
// outstanding before the receiver hands back credit. Must exceed 4/3 of the
// largest frame so that a frame always fits once the receiver caught up.
constexpr uint64_t kReceiveWindowBytes = uint64_t{4} << 20;
static_assert(kReceiveWindowBytes / 4 * 3 >= kMaxFrameSize);

enum class ControlKind : uint32_t { kHello = 1, kHelloAck = 2, kCredit = 3 };
struct ControlMessage {
  ControlKind kind;
  uint32_t reserved = 0;
  uint64_t value = 0;  // kCredit: bytes
};

std::string UcsError(ucs_status_t s) { return ucs_status_string(s); }

// AmCarrier: the transport/device of `ep`'s active-message lane, read from
// ucp_ep_print_info (UCX 1.13 has no query for it), e.g. "tcp/lo.0" from
//   "#  lane[1]:  2:tcp/lo.0 md[1] -> md[1]/tcp/sysdev[255] rma_bw#0 am am_bw#0 wireup".
std::string AmCarrier(ucp_ep_h ep) {
  char* text = nullptr;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  if (f == nullptr) return "?";
  ucp_ep_print_info(ep, f);
  fclose(f);
  std::string out = "?";
  std::string_view all(text, size);
  for (size_t at = 0; at < all.size();) {
    size_t eol = all.find('\n', at);
    if (eol == std::string_view::npos) eol = all.size();
    std::string_view line = all.substr(at, eol - at);
    at = eol + 1;
    if (line.find("lane[") == std::string_view::npos ||
        line.find(" am ") == std::string_view::npos) {
      continue;
    }
    const size_t colon = line.find(':', line.find("]:") + 2);  // "N:name"
    if (colon == std::string_view::npos) continue;
    const size_t end = line.find(' ', colon);
    out = std::string(line.substr(colon + 1, end - colon - 1));
    break;
  }
  free(text);
  return out;
}

// Resolve: "host:port" or "[v6]:port" (scheme stripped) to a socket address.
absl::StatusOr<sockaddr_storage> Resolve(absl::string_view address, bool passive) {
  absl::StatusOr<HostPort> hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  const std::string& host = hp->host;
  const std::string& port = hp->port;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve '", address, "': ", gai_strerror(rc)));
  }
  sockaddr_storage ss{};
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return ss;
}

class UcxConnection;

// InboxEntry: a received frame; `ready` once its payload is in (at once for
// eager messages, when the fetch completes for rendezvous ones). Shared with
// a fetch in progress, so closing the connection never frees the buffer UCX
// is writing into.
struct InboxEntry {
  IncomingMessage msg;  // kFrameAm
  // kFramesAm: `count` frames' wire bytes, split when delivered.
  uint32_t count = 0;
  std::vector<uint8_t> raw;
  bool ready = false;
};

// SendOp is one message UCX holds (or that waits for credit): the encoded
// header, the gather list, and the caller's callback.
struct SendOp {
  std::shared_ptr<UcxConnection> conn;
  unsigned am_id = kFrameAm;
  // kFrameAm: headers[0] is the AM header. kFramesAm: each frame's header,
  // pointed to by `iov` (reserved up front: never reallocated).
  std::vector<std::array<uint8_t, kFrameHeaderSize>> headers;
  uint32_t count = 0;        // kFramesAm: the AM header
  ControlMessage control{};  // kControlAm
  std::vector<ucp_dt_iov_t> iov;
  uint64_t bytes = 0;                 // counted against credit and the output queue (frames only)
  std::vector<SendCallback> on_sent;  // one per frame
  FlatBuffer flat;                    // the pieces copied, when PostLocked gathered them
};

// UcxLoop: one I/O thread and its UCP worker.
class UcxLoop {
 public:
  static absl::StatusOr<std::shared_ptr<UcxLoop>> Create(ucp_context_h context, int index,
                                                         absl::Duration busy_poll);
  ~UcxLoop();

  void Start();
  // DestroyWorker: after Stop, before the context goes. Sends UCX still
  // holds then (sends_in_ucx) are finished here, as failed: see there.
  void DestroyWorker();
  // Stop ends the thread after it has closed every connection on the loop.
  void Stop();
  // Wake: the loop thread is to look at `deferred` and the worker again.
  void Wake();
  // Defer queues `f` to run on the loop thread without the lock.
  void DeferLocked(std::function<void()> f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    deferred.push_back(std::move(f));
  }
  bool OnLoopThread() const { return std::this_thread::get_id() == thread_id_.load(); }
  // TakeFlatBufferLocked: a kept buffer of at least `bytes`, else a new one.
  FlatBuffer TakeFlatBufferLocked(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // ReturnFlatBufferLocked keeps `buffer` for reuse, up to kFlatBuffersKept.
  void ReturnFlatBufferLocked(FlatBuffer buffer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  Mutex mu;
  ucp_worker_h worker = nullptr;
  // stopped: set by Stop before it closes the loop's connections; no
  // endpoint is attached to the worker after it.
  bool stopped ABSL_GUARDED_BY(mu) = false;
  // batching: the loop thread is running a round's work; its Sends park.
  // parked: the connections with parked frames, flushed at the round's end.
  bool batching ABSL_GUARDED_BY(mu) = false;
  std::vector<std::shared_ptr<UcxConnection>> parked ABSL_GUARDED_BY(mu);
  std::unordered_map<ucp_ep_h, std::shared_ptr<UcxConnection>> by_ep ABSL_GUARDED_BY(mu);
  std::vector<std::function<void()>> deferred ABSL_GUARDED_BY(mu);
  // closing: endpoint-close requests in progress and what runs once each
  // completes (the connection's on_close).
  std::vector<std::pair<void*, std::function<void()>>> closing ABSL_GUARDED_BY(mu);
  std::vector<FlatBuffer> flat_buffers ABSL_GUARDED_BY(mu);  // kept for reuse
  // sends_in_ucx: the sends handed to UCX whose completion callback has not
  // run (each owned by its UCX request). Force-closing an endpoint is meant
  // to complete them all, with an error; a large send to a peer that died
  // mid-rendezvous was seen to stay in UCX's hands until the worker was
  // destroyed, leaking the op and, through its reference, the connection
  // (CI's AddressSanitizer run of client_cluster_test over shared memory).
  // DestroyWorker finishes what is left.
  std::unordered_set<SendOp*> sends_in_ucx ABSL_GUARDED_BY(mu);
  const int index;

 private:
  UcxLoop(int loop_index, int epoll_fd, int wake_fd, absl::Duration busy_poll)
      : index(loop_index), epoll_fd_(epoll_fd), wake_fd_(wake_fd), busy_poll_(busy_poll) {}
  void Run();
  void ReapClosingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  const int epoll_fd_;
  const int wake_fd_;
  const absl::Duration busy_poll_;  // TransportOptions::busy_poll
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};
  std::atomic<bool> stop_{false};
};

// UcxConnection: one endpoint. State under loop_->mu unless atomic.
class UcxConnection final : public Connection, public std::enable_shared_from_this<UcxConnection> {
 public:
  UcxConnection(std::shared_ptr<UcxLoop> loop, std::string peer, bool accepted,
                const TransportOptions& options)
      : loop_(std::move(loop)), peer_(std::move(peer)), accepted_(accepted), options_(options) {}

  absl::Status Send(std::span<OutgoingMessage> messages) override;
  void Close(absl::Status reason) override;
  bool is_open() const override { return open_.load(std::memory_order_acquire); }
  const std::string& peer_address() const override { return peer_; }
  ConnectionStats stats() const override;
  void PauseReading(bool paused) override;

  // Called with loop_->mu held (from UCX callbacks during progress, or by
  // the transport while it sets the connection up).
  void AttachLocked(ucp_ep_h ep, ConnectionHandler handler)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  // OnFrameLocked: a kFrameAm (one frame) or kFramesAm (coalesced) message.
  void OnFrameLocked(unsigned am_id, const void* header, size_t header_length, void* data,
                     size_t length, const ucp_am_recv_param_t* param)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  void OnControlLocked(const ControlMessage& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  void OnSendDoneLocked(SendOp* op, ucs_status_t status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  // FinishAbandonedSendLocked: `op`'s UCX request is gone without its
  // callback (UcxLoop::DestroyWorker): its frames count as not sent, and
  // their callbacks go to *done. The caller deletes op.
  void FinishAbandonedSendLocked(SendOp* op, std::vector<std::function<void()>>* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu) {
    FinishSendLocked(op, false, done);
  }
  void CloseLocked(absl::Status reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  // NoteCarrierLocked records (and logs, once) what UCX carries frames on:
  // known once the handshake's message has crossed.
  void NoteCarrierLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu) {
    if (!carrier_.empty() || ep_ == nullptr) return;
    carrier_ = AmCarrier(ep_);
    spdlog::info("ucx transport: {} connection {} carried by {}",
                 accepted_ ? "accepted" : "outgoing", peer_, carrier_);
  }
  void OnFetchDoneLocked(InboxEntry& entry, ucs_status_t status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  // MarkEstablishedLocked: an accepted connection, or a connected one whose
  // HELLO_ACK arrived; only such connections report on_close.
  void MarkAcceptedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu) { established_ = true; }
  // AbandonLocked: Connect gave up on this connection; no callback runs.
  void AbandonLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu) { abandoned_ = true; }
  // FlushParkedLocked ends parking (see kCoalesceFrameMax): the backlog,
  // coalesced, goes out now as far as credit allows (loop thread).
  void FlushParkedLocked(std::vector<std::function<void()>>* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  // PostControlLocked sends a control message (not subject to credit).
  void PostControlLocked(ControlKind kind, uint64_t value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);

  // mu: the lock that guards this connection (its loop's), for callers that
  // hold it under another name (UCX callbacks run with it held).
  Mutex& mu() const ABSL_LOCK_RETURNED(loop_->mu) { return loop_->mu; }

  // ReleaseOnLoopLocked drops a reference on the loop thread, without the
  // lock: the last one runs the handler's destructor, which may call into
  // other connections.
  void ReleaseOnLoopLocked(std::shared_ptr<UcxConnection> self)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu) {
    loop_->DeferLocked([self = std::move(self)] {});
  }

  // Connect's wait for HELLO_ACK (or an error).
  struct ConnectWait {
    Mutex mu;
    CondVar cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::Status status ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<ConnectWait> connect_wait = std::make_shared<ConnectWait>();

 private:
  // Deliver (loop thread, no lock): hands the ready head of the inbox to
  // the handler unless paused.
  void Deliver();
  // ScheduleDeliveryLocked queues a Deliver on the loop when frames are
  // ready and nothing holds them; true when it queued one (a caller off the
  // loop thread then wakes the loop). Called wherever holding may have
  // ended: a resume, a reply leaving (the output queue shrinks), credit.
  bool ScheduleDeliveryLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  bool HoldingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu) {
    return paused_ || (accepted_ && queued_bytes_ > options_.max_output_queue_bytes);
  }
  // PostLocked hands one op to UCX; `done` collects callbacks to run once
  // the lock is dropped (by the caller).
  // Returns true when UCX still holds the op (it completes in progress).
  bool PostLocked(std::unique_ptr<SendOp> op, std::vector<std::function<void()>>* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  // Returns true when something is left for the loop to drive: an op UCX
  // holds, or frames waiting for credit.
  bool PostBacklogLocked(std::vector<std::function<void()>>* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  // CoalesceBacklogLocked merges runs of small frame ops in the backlog
  // into kFramesAm ops (kCoalesceFrameMax, kCoalesceMax), keeping order.
  void CoalesceBacklogLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);
  void FinishSendLocked(SendOp* op, bool ok, std::vector<std::function<void()>>* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_->mu);

  const std::shared_ptr<UcxLoop> loop_;
  const std::string peer_;
  const bool accepted_;
  const TransportOptions options_;
  std::atomic<bool> open_{true};

  ucp_ep_h ep_ ABSL_GUARDED_BY(loop_->mu) = nullptr;
  ConnectionHandler handler_;  // set by AttachLocked before any callback can run
  std::deque<std::shared_ptr<InboxEntry>> inbox_ ABSL_GUARDED_BY(loop_->mu);
  bool delivery_scheduled_ ABSL_GUARDED_BY(loop_->mu) = false;
  bool paused_ ABSL_GUARDED_BY(loop_->mu) = false;
  uint64_t credit_ ABSL_GUARDED_BY(loop_->mu) = kReceiveWindowBytes;  // we may send
  uint64_t to_credit_ ABSL_GUARDED_BY(loop_->mu) = 0;  // delivered, not yet credited back
  bool parked_ ABSL_GUARDED_BY(loop_->mu) = false;     // in loop_->parked
  std::deque<std::unique_ptr<SendOp>> backlog_ ABSL_GUARDED_BY(loop_->mu);
  uint64_t queued_bytes_ ABSL_GUARDED_BY(loop_->mu) = 0;  // backlog + in UCX's hands

  bool established_ ABSL_GUARDED_BY(loop_->mu) = false;
  std::string carrier_ ABSL_GUARDED_BY(loop_->mu);  // ConnectionStats::carrier
  bool abandoned_ ABSL_GUARDED_BY(loop_->mu) = false;
  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<uint64_t> frames_sent_{0}, frames_received_{0}, bytes_sent_{0}, bytes_received_{0},
      read_pauses_{0};
};

// --- UCX callbacks ----------------------------------------------------------------

void SendDoneCallback(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<SendOp*>(user_data);
  // Progress runs under the loop's lock (UcxLoop::Run), and so does every
  // send that can complete here (ucp_ep_close_nbx included).
  std::shared_ptr<UcxConnection> conn = op->conn;
  conn->mu().AssertHeld();
  conn->OnSendDoneLocked(op, status);
  ucp_request_free(request);
  conn->ReleaseOnLoopLocked(std::move(conn));
}

// TakeFrame validates one received frame's payload and appends it.
absl::Status TakeFrame(IncomingMessage m, std::vector<IncomingMessage>* out) {
  if (absl::Status s = ValidatePayload(m.header, m.payload); !s.ok()) return s;
  out->push_back(std::move(m));
  return absl::OkStatus();
}

// SplitFrames parses a coalesced message: exactly `count` frames, each a
// header and its payload, filling `raw`.
absl::Status SplitFrames(uint32_t count, std::span<const uint8_t> raw,
                         std::vector<IncomingMessage>* out) {
  size_t at = 0;
  for (uint32_t i = 0; i < count; ++i) {
    if (raw.size() - at < kFrameHeaderSize) {
      return absl::DataLossError(absl::StrCat("coalesced frame ", i, " of ", count, " is cut"));
    }
    absl::StatusOr<FrameHeader> h = DecodeHeader(raw.subspan(at, kFrameHeaderSize));
    if (!h.ok()) return h.status();
    at += kFrameHeaderSize;
    if (raw.size() - at < h->payload_length) {
      return absl::DataLossError(absl::StrCat("coalesced frame ", i, " of ", count, " is cut"));
    }
    IncomingMessage m{.header = *h};
    m.payload.assign(raw.begin() + at, raw.begin() + at + h->payload_length);
    at += h->payload_length;
    if (absl::Status s = TakeFrame(std::move(m), out); !s.ok()) return s;
  }
  if (at != raw.size()) {
    return absl::DataLossError(absl::StrCat(raw.size() - at, " bytes after ", count, " frames"));
  }
  return absl::OkStatus();
}

ucs_status_t OnAm(void* arg, const void* header, size_t header_length, void* data, size_t length,
                  const ucp_am_recv_param_t* param, unsigned am_id) {
  auto* loop = static_cast<UcxLoop*>(arg);
  loop->mu.AssertHeld();
  if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)) {
    spdlog::warn("ucx transport: a message without its sender's endpoint; dropped");
    return UCS_OK;
  }
  auto it = loop->by_ep.find(param->reply_ep);
  if (it == loop->by_ep.end()) return UCS_OK;  // closed meanwhile
  std::shared_ptr<UcxConnection> conn = it->second;
  conn->mu().AssertHeld();
  if (am_id == kControlAm) {
    if (header_length != sizeof(ControlMessage)) {
      conn->CloseLocked(absl::DataLossError("ucx transport: malformed control message"));
      return UCS_OK;
    }
    ControlMessage m;
    std::memcpy(&m, header, sizeof(m));
    conn->OnControlLocked(m);
    return UCS_OK;
  }
  conn->OnFrameLocked(am_id, header, header_length, data, length, param);
  return UCS_OK;
}

ucs_status_t OnFrameAm(void* arg, const void* header, size_t header_length, void* data,
                       size_t length, const ucp_am_recv_param_t* param) {
  return OnAm(arg, header, header_length, data, length, param, kFrameAm);
}

ucs_status_t OnFramesAm(void* arg, const void* header, size_t header_length, void* data,
                        size_t length, const ucp_am_recv_param_t* param) {
  return OnAm(arg, header, header_length, data, length, param, kFramesAm);
}

ucs_status_t OnControlAm(void* arg, const void* header, size_t header_length, void* data,
                         size_t length, const ucp_am_recv_param_t* param) {
  return OnAm(arg, header, header_length, data, length, param, kControlAm);
}

void OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* loop = static_cast<UcxLoop*>(arg);
  loop->mu.AssertHeld();
  auto it = loop->by_ep.find(ep);
  if (it == loop->by_ep.end()) return;
  std::shared_ptr<UcxConnection> conn = it->second;
  conn->mu().AssertHeld();
  conn->CloseLocked(absl::UnavailableError(
      absl::StrCat("ucx endpoint to ", conn->peer_address(), " failed: ", UcsError(status))));
}

// --- UcxLoop ----------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<UcxLoop>> UcxLoop::Create(ucp_context_h context, int index,
                                                         absl::Duration busy_poll) {
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd < 0 || wake_fd < 0) {
    if (epoll_fd >= 0) close(epoll_fd);
    if (wake_fd >= 0) close(wake_fd);
    return absl::InternalError(absl::StrCat("ucx transport: epoll/eventfd: ", strerror(errno)));
  }
  std::shared_ptr<UcxLoop> loop(new UcxLoop(index, epoll_fd, wake_fd, busy_poll));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  if (ucs_status_t s = ucp_worker_create(context, &wp, &loop->worker); s != UCS_OK) {
    return absl::UnavailableError(absl::StrCat("ucx transport: ucp_worker_create: ", UcsError(s)));
  }
  int efd = -1;
  if (ucs_status_t s = ucp_worker_get_efd(loop->worker, &efd); s != UCS_OK) {
    return absl::UnavailableError(absl::StrCat("ucx transport: ucp_worker_get_efd: ", UcsError(s)));
  }
  for (int fd : {efd, wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  }
  for (auto [id, cb] : {std::pair{kFrameAm, &OnFrameAm}, std::pair{kFramesAm, &OnFramesAm},
                        std::pair{kControlAm, &OnControlAm}}) {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG;
    hp.id = id;
    hp.cb = cb;
    hp.arg = loop.get();
    if (ucs_status_t s = ucp_worker_set_am_recv_handler(loop->worker, &hp); s != UCS_OK) {
      return absl::UnavailableError(absl::StrCat("ucx transport: AM handler: ", UcsError(s)));
    }
  }
  return loop;
}

UcxLoop::~UcxLoop() {
  if (worker != nullptr) ucp_worker_destroy(worker);
  close(epoll_fd_);
  close(wake_fd_);
}

void UcxLoop::Start() {
  thread_ = std::thread([this] {
    thread_id_.store(std::this_thread::get_id());
    Run();
  });
}

void UcxLoop::Wake() {
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;
}

void UcxLoop::DestroyWorker() {
  std::vector<std::function<void()>> done;
  std::vector<std::unique_ptr<SendOp>> abandoned;
  {
    MutexLock l(&mu);
    if (worker != nullptr) ucp_worker_destroy(worker);
    worker = nullptr;
    // No callback can come for what is left now: the worker is gone.
    for (SendOp* op : sends_in_ucx) {
      op->conn->mu().AssertHeld();
      op->conn->FinishAbandonedSendLocked(op, &done);
      abandoned.emplace_back(op);
    }
    sends_in_ucx.clear();
  }
  // The loop thread has stopped: the callbacks run here, without the lock,
  // then the ops go, and with them their references to the connections.
  for (auto& f : done) f();
  abandoned.clear();
}

void UcxLoop::Stop() {
  {
    MutexLock l(&mu);
    stopped = true;
    std::vector<std::shared_ptr<UcxConnection>> conns;
    for (auto& [ep, conn] : by_ep) conns.push_back(conn);
    for (auto& conn : conns) {
      conn->mu().AssertHeld();
      conn->CloseLocked(absl::UnavailableError("transport shut down"));
    }
  }
  stop_.store(true);
  Wake();
  if (thread_.joinable()) thread_.join();
}

FlatBuffer UcxLoop::TakeFlatBufferLocked(size_t bytes) {
  for (size_t i = 0; i < flat_buffers.size(); ++i) {
    if (flat_buffers[i].capacity >= bytes) {
      FlatBuffer b = std::move(flat_buffers[i]);
      flat_buffers[i] = std::move(flat_buffers.back());
      flat_buffers.pop_back();
      return b;
    }
  }
  FlatBuffer b;
  b.capacity = std::max(bytes, kFlatBufferMinBytes);
  b.data.reset(new uint8_t[b.capacity]);  // not zeroed: every byte is copied over
  return b;
}

void UcxLoop::ReturnFlatBufferLocked(FlatBuffer buffer) {
  if (buffer.data != nullptr && flat_buffers.size() < kFlatBuffersKept) {
    flat_buffers.push_back(std::move(buffer));
  }
}

void UcxLoop::ReapClosingLocked() {
  for (size_t i = 0; i < closing.size();) {
    if (ucp_request_check_status(closing[i].first) == UCS_INPROGRESS) {
      ++i;
      continue;
    }
    ucp_request_free(closing[i].first);
    DeferLocked(std::move(closing[i].second));
    closing[i] = std::move(closing.back());
    closing.pop_back();
  }
}

void UcxLoop::Run() {
  SetCurrentThreadName("fs-ucx-" + std::to_string(index));
  epoll_event events[4];
  // Busy-poll (TransportOptions::busy_poll): after progress the loop keeps
  // polling the worker, yielding the CPU between rounds, before it arms the
  // worker and sleeps, so a reply within a round trip is read by a thread
  // that is awake (over shared memory, where the wire costs under a
  // microsecond, the kernel wake-up is most of a round trip).
  const auto spin = std::chrono::nanoseconds(absl::ToInt64Nanoseconds(busy_poll_));
  auto spin_until = std::chrono::steady_clock::now();
  for (;;) {
    std::vector<std::function<void()>> work;
    bool progressed = false;
    bool closing_left;
    {
      MutexLock l(&mu);
      // One round per lock hold: senders on other threads get the lock in
      // between, and what it delivered is handed on before the next round.
      progressed = ucp_worker_progress(worker) != 0;
      ReapClosingLocked();
      work.swap(deferred);
      closing_left = !closing.empty();
    }
    if (!work.empty()) {
      {
        MutexLock l(&mu);
        batching = true;
      }
      for (auto& f : work) f();
      FARSWAP_SYNC_POINT("UcxLoop::BeforeFlushingParked");  // [none], loop thread
      std::vector<std::function<void()>> done;
      {
        MutexLock l(&mu);
        batching = false;
        for (auto& conn : parked) {
          conn->mu().AssertHeld();
          conn->FlushParkedLocked(&done);
        }
        parked.clear();
      }
      for (auto& f : done) f();
    }
    if (progressed || !work.empty()) {
      if (spin.count() > 0) spin_until = std::chrono::steady_clock::now() + spin;
      continue;
    }
    if (stop_.load() && !closing_left) return;
    if (spin.count() > 0 && std::chrono::steady_clock::now() < spin_until) {
      std::this_thread::yield();
      continue;
    }
    ucs_status_t armed;
    {
      MutexLock l(&mu);
      armed = deferred.empty() ? ucp_worker_arm(worker) : UCS_ERR_BUSY;
    }
    if (armed == UCS_ERR_BUSY) continue;
    // Endpoints being closed make progress without events: poll for them.
    int n = epoll_wait(epoll_fd_, events, 4, closing_left || stop_.load() ? 1 : -1);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == wake_fd_) {
        uint64_t v;
        ssize_t r = read(wake_fd_, &v, sizeof(v));
        (void)r;
      }
    }
  }
}

// --- UcxConnection ----------------------------------------------------------------

void UcxConnection::AttachLocked(ucp_ep_h ep, ConnectionHandler handler) {
  ep_ = ep;
  handler_ = std::move(handler);
  loop_->by_ep[ep] = shared_from_this();
}

ConnectionStats UcxConnection::stats() const {
  ConnectionStats s;
  s.frames_sent = frames_sent_.load();
  s.frames_received = frames_received_.load();
  s.bytes_sent = bytes_sent_.load();
  s.bytes_received = bytes_received_.load();
  s.read_pauses = read_pauses_.load();
  {
    MutexLock l(&loop_->mu);
    // Under the lock: a message is counted while the lock is held, so a
    // reader that saw it arrive sees it counted.
    s.messages_sent = messages_sent_.load();
    s.queued_bytes = queued_bytes_;
    s.carrier = carrier_;
  }
  return s;
}

absl::Status UcxConnection::Send(std::span<OutgoingMessage> messages) {
  // Validate every frame first: all or nothing.
  std::vector<uint64_t> lengths(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    OutgoingMessage& m = messages[i];
    uint64_t len = 0;
    for (const PayloadPiece& p : m.payload) len += p.size();
    if (len > kMaxFrameSize) {
      return absl::InvalidArgumentError(absl::StrCat("frame payload of ", len, " bytes"));
    }
    m.header.payload_length = uint32_t(len);
    if (absl::Status s = ValidateHeader(m.header); !s.ok()) return s;
    lengths[i] = kFrameHeaderSize + len;
  }
  // Group them: a large frame alone, runs of small ones coalesced.
  std::vector<std::unique_ptr<SendOp>> ops;
  for (size_t i = 0; i < messages.size();) {
    size_t end = i + 1;
    if (lengths[i] < kCoalesceFrameMax) {
      uint64_t bytes = lengths[i];
      while (end < messages.size() && lengths[end] < kCoalesceFrameMax &&
             bytes + lengths[end] <= kCoalesceMax) {
        bytes += lengths[end++];
      }
    }
    auto op = std::make_unique<SendOp>();
    op->am_id = end - i == 1 ? kFrameAm : kFramesAm;
    op->count = uint32_t(end - i);
    op->headers.resize(end - i);
    for (size_t k = i; k < end; ++k) {
      OutgoingMessage& m = messages[k];
      EncodeHeader(m.header, op->headers[k - i]);
      if (op->am_id == kFramesAm) op->iov.push_back({op->headers[k - i].data(), kFrameHeaderSize});
      for (const PayloadPiece& p : m.payload) {
        if (!p.empty()) op->iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
      }
      op->bytes += lengths[k];
    }
    ops.push_back(std::move(op));
    i = end;
  }
  std::vector<std::function<void()>> done;
  bool left_for_loop;
  {
    MutexLock l(&loop_->mu);
    if (!open_.load()) {
      return absl::UnavailableError(absl::StrCat("connection to ", peer_, " is closed"));
    }
    if (!accepted_ && queued_bytes_ > options_.max_output_queue_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "output queue to ", peer_, " holds ", queued_bytes_, " bytes (the peer is not reading)"));
    }
    size_t next = 0;
    for (auto& op : ops) {
      op->conn = shared_from_this();
      for (uint32_t k = 0; k < op->count; ++k) {
        op->on_sent.push_back(std::move(messages[next++].on_sent));
      }
      queued_bytes_ += op->bytes;
      backlog_.push_back(std::move(op));
    }
    if (parked_ || (loop_->batching && loop_->OnLoopThread())) {
      // The loop flushes it at the end of its round (it is in one).
      if (!parked_) {
        parked_ = true;
        loop_->parked.push_back(shared_from_this());
      }
      left_for_loop = false;
    } else {
      left_for_loop = PostBacklogLocked(&done);
    }
    left_for_loop |= ScheduleDeliveryLocked();  // the queue may have shrunk below the bound
  }
  for (auto& f : done) f();
  // Most frames leave at once (eager); what UCX kept (rendezvous, a full
  // socket) completes only in progress, which a sleeping loop must be woken
  // for.
  if (left_for_loop && !loop_->OnLoopThread()) loop_->Wake();
  return absl::OkStatus();
}

bool UcxConnection::PostBacklogLocked(std::vector<std::function<void()>>* done) {
  bool held = false;
  while (!backlog_.empty() && ep_ != nullptr && open_.load() &&
         backlog_.front()->bytes <= credit_) {
    std::unique_ptr<SendOp> op = std::move(backlog_.front());
    backlog_.pop_front();
    credit_ -= op->bytes;
    held |= PostLocked(std::move(op), done);
  }
  return held || !backlog_.empty();
}

void UcxConnection::FlushParkedLocked(std::vector<std::function<void()>>* done) {
  parked_ = false;
  CoalesceBacklogLocked();
  PostBacklogLocked(done);
}

void UcxConnection::CoalesceBacklogLocked() {
  auto small = [](const std::unique_ptr<SendOp>& op) {
    return op->am_id != kControlAm && op->bytes < kCoalesceFrameMax;
  };
  std::deque<std::unique_ptr<SendOp>> out;
  for (size_t i = 0; i < backlog_.size();) {
    size_t end = i + 1;
    if (small(backlog_[i])) {
      uint64_t bytes = backlog_[i]->bytes;
      while (end < backlog_.size() && small(backlog_[end]) &&
             bytes + backlog_[end]->bytes <= kCoalesceMax) {
        bytes += backlog_[end++]->bytes;
      }
    }
    if (end - i == 1) {
      out.push_back(std::move(backlog_[i]));
      i = end;
      continue;
    }
    auto merged = std::make_unique<SendOp>();
    merged->conn = backlog_[i]->conn;
    merged->am_id = kFramesAm;
    size_t frames = 0;
    for (size_t k = i; k < end; ++k) frames += backlog_[k]->count;
    merged->headers.reserve(frames);  // `iov` points into it: never reallocated
    for (size_t k = i; k < end; ++k) {
      SendOp& op = *backlog_[k];
      // A kFrameAm op's header is the AM header, its iov the payload; a
      // kFramesAm op's iov holds its frames' headers (in op.headers)
      // between their payload pieces.
      size_t h = 0;
      auto add_header = [&] {
        merged->headers.push_back(op.headers[h++]);
        merged->iov.push_back({merged->headers.back().data(), kFrameHeaderSize});
      };
      if (op.am_id == kFrameAm) add_header();
      for (const ucp_dt_iov_t& piece : op.iov) {
        if (op.am_id == kFramesAm && h < op.headers.size() &&
            piece.buffer == op.headers[h].data()) {
          add_header();
        } else {
          merged->iov.push_back(piece);
        }
      }
      merged->count += op.am_id == kFrameAm ? 1 : op.count;
      merged->bytes += op.bytes;
      for (SendCallback& cb : op.on_sent) merged->on_sent.push_back(std::move(cb));
    }
    out.push_back(std::move(merged));
    i = end;
  }
  backlog_.swap(out);
}

bool UcxConnection::PostLocked(std::unique_ptr<SendOp> op,
                               std::vector<std::function<void()>>* done) {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                       UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE;
  param.cb.send = SendDoneCallback;
  param.user_data = op.get();
  param.flags = UCP_AM_SEND_FLAG_REPLY;
  const void* header;
  size_t header_length;
  if (op->am_id == kControlAm) {
    header = &op->control;
    header_length = sizeof(op->control);
  } else if (op->am_id == kFramesAm) {
    header = &op->count;
    header_length = sizeof(op->count);
  } else {
    header = op->headers[0].data();
    header_length = kFrameHeaderSize;
  }
  ucs_status_ptr_t r;
  if (op->iov.empty()) {
    param.datatype = ucp_dt_make_contig(1);
    r = ucp_am_send_nbx(ep_, op->am_id, header, header_length, nullptr, 0, &param);
  } else if (op->iov.size() > kGatherPiecesMax && op->bytes >= kUcxZeroCopyThresholdBytes) {
    // Gathering (above): one contiguous message.
    size_t length = 0;
    for (const ucp_dt_iov_t& piece : op->iov) length += piece.length;
    op->flat = loop_->TakeFlatBufferLocked(length);
    uint8_t* at = op->flat.data.get();
    for (const ucp_dt_iov_t& piece : op->iov) {
      std::memcpy(at, piece.buffer, piece.length);
      at += piece.length;
    }
    param.datatype = ucp_dt_make_contig(1);
    r = ucp_am_send_nbx(ep_, op->am_id, header, header_length, op->flat.data.get(), length, &param);
  } else {
    param.datatype = ucp_dt_make_iov();
    r = ucp_am_send_nbx(ep_, op->am_id, header, header_length, op->iov.data(), op->iov.size(),
                        &param);
  }
  if (op->am_id != kControlAm && !UCS_PTR_IS_ERR(r)) {
    messages_sent_.fetch_add(1, std::memory_order_relaxed);  // handed to UCX
  }
  if (r == nullptr) {  // done at once
    FinishSendLocked(op.get(), true, done);
    loop_->ReturnFlatBufferLocked(std::move(op->flat));
    return false;
  }
  if (UCS_PTR_IS_ERR(r)) {
    FinishSendLocked(op.get(), false, done);
    loop_->ReturnFlatBufferLocked(std::move(op->flat));
    CloseLocked(absl::UnavailableError(
        absl::StrCat("ucx send to ", peer_, " failed: ", UcsError(UCS_PTR_STATUS(r)))));
    return false;
  }
  loop_->sends_in_ucx.insert(op.get());
  op.release();  // SendDoneCallback owns it now
  return true;
}

void UcxConnection::FinishSendLocked(SendOp* op, bool ok,
                                     std::vector<std::function<void()>>* done) {
  if (op->am_id != kControlAm) {
    queued_bytes_ -= op->bytes;
    if (ok) {
      frames_sent_.fetch_add(op->count, std::memory_order_relaxed);
      bytes_sent_.fetch_add(op->bytes, std::memory_order_relaxed);
    }
  }
  for (SendCallback& cb : op->on_sent) {
    if (!cb) continue;
    done->push_back([cb = std::move(cb), ok, peer = peer_] {
      cb(ok ? absl::OkStatus()
            : absl::UnavailableError(absl::StrCat("connection to ", peer, " closed")));
    });
  }
}

void UcxConnection::OnSendDoneLocked(SendOp* op, ucs_status_t status) {
  std::unique_ptr<SendOp> owned(op);
  loop_->sends_in_ucx.erase(op);
  std::vector<std::function<void()>> done;
  FinishSendLocked(op, status == UCS_OK, &done);
  loop_->ReturnFlatBufferLocked(std::move(op->flat));
  for (auto& f : done) loop_->DeferLocked(std::move(f));
  ScheduleDeliveryLocked();
  if (status != UCS_OK && status != UCS_ERR_CANCELED) {
    CloseLocked(
        absl::UnavailableError(absl::StrCat("ucx send to ", peer_, " failed: ", UcsError(status))));
  }
}

void UcxConnection::PostControlLocked(ControlKind kind, uint64_t value) {
  if (ep_ == nullptr || !open_.load()) return;
  auto op = std::make_unique<SendOp>();
  op->conn = shared_from_this();
  op->am_id = kControlAm;
  op->control = ControlMessage{.kind = kind, .value = value};
  std::vector<std::function<void()>> done;
  PostLocked(std::move(op), &done);
  for (auto& f : done) loop_->DeferLocked(std::move(f));
}

void UcxConnection::OnControlLocked(const ControlMessage& m) {
  switch (m.kind) {
    case ControlKind::kHello:
      if (!accepted_) return;
      NoteCarrierLocked();
      PostControlLocked(ControlKind::kHelloAck, 0);
      return;
    case ControlKind::kHelloAck: {
      if (abandoned_) return;
      NoteCarrierLocked();
      established_ = true;
      MutexLock l(&connect_wait->mu);
      connect_wait->done = true;
      connect_wait->cv.SignalAll();
      return;
    }
    case ControlKind::kCredit: {
      credit_ += m.value;
      std::vector<std::function<void()>> done;
      PostBacklogLocked(&done);
      for (auto& f : done) loop_->DeferLocked(std::move(f));
      // Replies that left shrank the output queue: an accepted connection
      // held back by it delivers requests again.
      ScheduleDeliveryLocked();
      return;
    }
  }
  CloseLocked(absl::DataLossError("ucx transport: unknown control message"));
}

void UcxConnection::OnFrameLocked(unsigned am_id, const void* header, size_t header_length,
                                  void* data, size_t length, const ucp_am_recv_param_t* param) {
  auto entry = std::make_shared<InboxEntry>();
  std::vector<uint8_t>* into;  // where the message's data goes
  if (am_id == kFramesAm) {
    uint32_t count = 0;
    if (header_length == sizeof(count)) std::memcpy(&count, header, sizeof(count));
    if (count < 2 || length < uint64_t{count} * kFrameHeaderSize) {
      CloseLocked(absl::DataLossError(absl::StrCat("malformed coalesced message from ", peer_, ": ",
                                                   count, " frames in ", length, " bytes")));
      return;
    }
    entry->count = count;
    into = &entry->raw;
  } else {
    if (header_length != kFrameHeaderSize) {
      CloseLocked(absl::DataLossError(absl::StrCat("frame header of ", header_length, " bytes")));
      return;
    }
    absl::StatusOr<FrameHeader> h =
        DecodeHeader({static_cast<const uint8_t*>(header), header_length});
    if (!h.ok() || h->payload_length != length) {
      CloseLocked(absl::DataLossError(absl::StrCat(
          "malformed frame from ", peer_, ": ",
          h.ok() ? absl::StrCat("payload ", length, " bytes, header says ", h->payload_length)
                 : h.status().ToString())));
      return;
    }
    entry->msg.header = *h;
    into = &entry->msg.payload;
    length += kFrameHeaderSize;  // for the byte count below
  }
  inbox_.push_back(entry);
  bytes_received_.fetch_add(length, std::memory_order_relaxed);
  if (am_id == kFrameAm) length -= kFrameHeaderSize;
  if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
    // One pass: allocated and copied, not zeroed first.
    const auto* bytes = static_cast<const uint8_t*>(data);
    into->assign(bytes, bytes + length);
    entry->ready = true;
    ScheduleDeliveryLocked();
    return;
  }
  // Rendezvous: the data is still at the sender; fetch it into the payload.
  struct FetchOp {
    std::shared_ptr<UcxConnection> conn;
    std::shared_ptr<InboxEntry> entry;
  };
  auto* fetch = new FetchOp{shared_from_this(), entry};
  ucp_request_param_t rp{};
  rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  rp.user_data = fetch;
  rp.cb.recv_am = [](void* request, ucs_status_t status, size_t, void* user_data) {
    std::unique_ptr<FetchOp> op(static_cast<FetchOp*>(user_data));
    ucp_request_free(request);
    op->conn->mu().AssertHeld();  // UCX calls back from progress, under the loop's lock
    op->conn->OnFetchDoneLocked(*op->entry, status);
    op->conn->ReleaseOnLoopLocked(std::move(op->conn));
  };
  into->resize(length);
  ucs_status_ptr_t r = ucp_am_recv_data_nbx(loop_->worker, data, into->data(), length, &rp);
  if (r == nullptr) {  // done at once: no callback comes
    delete fetch;
    OnFetchDoneLocked(*entry, UCS_OK);
  } else if (UCS_PTR_IS_ERR(r)) {
    delete fetch;
    OnFetchDoneLocked(*entry, UCS_PTR_STATUS(r));
  }
}

void UcxConnection::OnFetchDoneLocked(InboxEntry& entry, ucs_status_t status) {
  if (status != UCS_OK) {
    CloseLocked(absl::UnavailableError(
        absl::StrCat("ucx receive from ", peer_, " failed: ", UcsError(status))));
    return;
  }
  entry.ready = true;
  ScheduleDeliveryLocked();
}

bool UcxConnection::ScheduleDeliveryLocked() {
  if (delivery_scheduled_ || inbox_.empty() || !inbox_.front()->ready || HoldingLocked() ||
      !open_.load()) {
    return false;
  }
  delivery_scheduled_ = true;
  loop_->DeferLocked([self = shared_from_this()] { self->Deliver(); });
  return true;
}

void UcxConnection::Deliver() {
  std::vector<IncomingMessage> batch;
  {
    MutexLock l(&loop_->mu);
    delivery_scheduled_ = false;
    if (!open_.load() || HoldingLocked()) return;
    uint64_t bytes = 0;
    while (!inbox_.empty() && inbox_.front()->ready) {
      InboxEntry& e = *inbox_.front();
      absl::Status s =
          e.count == 0 ? TakeFrame(std::move(e.msg), &batch) : SplitFrames(e.count, e.raw, &batch);
      if (!s.ok()) {
        CloseLocked(
            absl::DataLossError(absl::StrCat("malformed frame from ", peer_, ": ", s.message())));
        return;
      }
      bytes += e.count == 0 ? kFrameHeaderSize + batch.back().payload.size() : e.raw.size();
      inbox_.pop_front();
    }
    to_credit_ += bytes;
    if (to_credit_ >= kReceiveWindowBytes / 4) {
      PostControlLocked(ControlKind::kCredit, to_credit_);
      to_credit_ = 0;
    }
  }
  if (batch.empty()) return;
  frames_received_.fetch_add(batch.size(), std::memory_order_relaxed);
  if (handler_.on_receive) handler_.on_receive(*this, std::span<IncomingMessage>(batch));
}

void UcxConnection::PauseReading(bool paused) {
  {
    MutexLock l(&loop_->mu);
    if (paused_ == paused) return;
    paused_ = paused;
    if (paused) {
      read_pauses_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    ScheduleDeliveryLocked();
  }
  if (!loop_->OnLoopThread()) loop_->Wake();
}

void UcxConnection::Close(absl::Status reason) {
  {
    MutexLock l(&loop_->mu);
    CloseLocked(std::move(reason));
  }
  loop_->Wake();
}

void UcxConnection::CloseLocked(absl::Status reason) {
  if (!open_.exchange(false)) return;
  {
    MutexLock l(&connect_wait->mu);
    if (!connect_wait->done) {
      connect_wait->done = true;
      connect_wait->status = reason;
      connect_wait->cv.SignalAll();
    }
  }
  std::vector<std::function<void()>> done;
  for (auto& op : backlog_) FinishSendLocked(op.get(), false, &done);
  backlog_.clear();
  inbox_.clear();  // a fetch in progress holds its own entry
  for (auto& f : done) loop_->DeferLocked(std::move(f));
  std::function<void()> on_close = [] {};
  if (established_ && !abandoned_) {
    on_close = [self = shared_from_this(), reason] {
      if (self->handler_.on_close) self->handler_.on_close(reason);
    };
  }
  if (ep_ == nullptr) {
    loop_->DeferLocked(std::move(on_close));
    return;
  }
  loop_->by_ep.erase(ep_);
  // The endpoint is closed from the loop, outside every UCX callback: this
  // may run inside one (an endpoint error, a failed send), and UCX still
  // uses the endpoint after its callback returns.
  loop_->DeferLocked([loop = loop_, ep = ep_, on_close = std::move(on_close)]() mutable {
    MutexLock l(&loop->mu);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;  // in-flight sends complete with an error
    ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &param);
    if (r != nullptr && UCS_PTR_IS_PTR(r)) {
      loop->closing.emplace_back(r, std::move(on_close));
    } else {
      loop->DeferLocked(std::move(on_close));
    }
  });
  ep_ = nullptr;
}

// --- listener -------------------------------------------------------------------

// ListenerState is shared by the listener, UCX's connection-request
// callback (loop 0's lock held) and the accept work it queues. `listener`
// is under loop 0's lock; the rest is set before the listener exists.
struct ListenerState : std::enable_shared_from_this<ListenerState> {
  std::shared_ptr<UcxLoop> loop;                // loop 0: the listener's
  std::vector<std::shared_ptr<UcxLoop>> loops;  // accepted connections go round-robin
  std::atomic<size_t> next{0};
  AcceptHandler on_accept;
  TransportOptions options;
  ucp_listener_h listener = nullptr;  // under loop->mu; null once closed

  void DestroyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop->mu) {
    if (listener != nullptr) ucp_listener_destroy(listener);
    listener = nullptr;
  }
  // Accept runs on loop 0's thread without the lock.
  void Accept(ucp_conn_request_h request);
};

void OnConnectionRequest(ucp_conn_request_h request, void* arg) {
  auto* state = static_cast<ListenerState*>(arg);
  state->loop->mu.AssertHeld();
  state->loop->DeferLocked([keep = state->shared_from_this(), request] { keep->Accept(request); });
}

void ListenerState::Accept(ucp_conn_request_h request) {
  std::string peer = "ucx://?";
  ucp_conn_request_attr_t attr{};
  attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
  if (ucp_conn_request_query(request, &attr) == UCS_OK)
    peer = FormatSockaddr(attr.client_address, "ucx");
  {
    MutexLock l(&loop->mu);
    if (listener == nullptr) return;  // closed meanwhile; UCX drops the request
  }
  const std::shared_ptr<UcxLoop>& to = loops[next.fetch_add(1) % loops.size()];
  auto conn = std::make_shared<UcxConnection>(to, peer, /*accepted=*/true, options);
  ConnectionHandler handler = on_accept(conn);  // before any frame of it arrives
  // The endpoint is made on its own loop's worker from a request of the
  // listener's: both workers are held (loop 0's first, the only order in
  // which two loop locks are ever taken).
  std::optional<MutexLock> listener_lock;
  if (to != loop) listener_lock.emplace(&loop->mu);
  MutexLock l(&conn->mu());
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                  UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  ep.conn_request = request;
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = OnEndpointError;
  ep.err_handler.arg = to.get();
  ucp_ep_h handle = nullptr;
  conn->MarkAcceptedLocked();
  to->mu.AssertHeld();  // conn->mu() is to->mu
  if (to->stopped) {    // its transport is shutting down
    loop->mu.AssertHeld();
    if (listener != nullptr) ucp_listener_reject(listener, request);
    conn->AttachLocked(nullptr, std::move(handler));
    conn->CloseLocked(absl::UnavailableError("ucx transport is shut down"));
    return;
  }
  if (ucs_status_t s = ucp_ep_create(to->worker, &ep, &handle); s != UCS_OK) {
    spdlog::warn("ucx transport: accepting {} failed: {}", peer, UcsError(s));
    conn->AttachLocked(nullptr, std::move(handler));
    conn->CloseLocked(absl::UnavailableError(absl::StrCat("accept failed: ", UcsError(s))));
    return;
  }
  conn->AttachLocked(handle, std::move(handler));
}

class UcxListener final : public Listener {
 public:
  UcxListener(std::shared_ptr<ListenerState> state, std::string address)
      : state_(std::move(state)), address_(std::move(address)) {}
  ~UcxListener() override { Close(); }
  std::string address() const override { return address_; }
  void Close() override {
    MutexLock l(&state_->loop->mu);
    state_->DestroyLocked();
  }

 private:
  const std::shared_ptr<ListenerState> state_;
  const std::string address_;
};

// --- transport ------------------------------------------------------------------

std::string SharedMemoryHint(const TransportOptions& options, const sockaddr_storage& peer);

class UcxTransport final : public Transport {
 public:
  UcxTransport(ucp_context_h context, TransportOptions options)
      : context_(context), options_(std::move(options)) {}
  ~UcxTransport() override { Shutdown(); }

  absl::Status Init() {
    for (int i = 0; i < options_.io_threads; ++i) {
      absl::StatusOr<std::shared_ptr<UcxLoop>> loop =
          UcxLoop::Create(context_, i, options_.busy_poll);
      if (!loop.ok()) return loop.status();
      loops_.push_back(*std::move(loop));
    }
    for (auto& loop : loops_) loop->Start();
    return absl::OkStatus();
  }

  absl::StatusOr<std::shared_ptr<Connection>> Connect(const std::string& address,
                                                      ConnectionHandler handler) override {
    if (shut_down_.load()) return absl::UnavailableError("ucx transport is shut down");
    absl::StatusOr<sockaddr_storage> ss = Resolve(address, /*passive=*/false);
    if (!ss.ok()) return ss.status();
    std::shared_ptr<UcxLoop> loop = loops_[next_.fetch_add(1) % loops_.size()];
    auto conn = std::make_shared<UcxConnection>(loop, FormatSockaddr(*ss, "ucx"),
                                                /*accepted=*/false, options_);
    // Shutdown may run from here until the loop's lock is taken.
    FARSWAP_SYNC_POINT("UcxTransport::Connect:before-endpoint");  // [none]
    {
      MutexLock l(&conn->mu());  // the loop's
      loop->mu.AssertHeld();
      if (loop->stopped) return absl::UnavailableError("ucx transport is shut down");
      ucp_ep_params_t ep{};
      ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
      ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
      ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&*ss);
      ep.sockaddr.addrlen = ss->ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
      ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      ep.err_handler.cb = OnEndpointError;
      ep.err_handler.arg = loop.get();
      ucp_ep_h handle = nullptr;
      if (ucs_status_t s = ucp_ep_create(loop->worker, &ep, &handle); s != UCS_OK) {
        return absl::UnavailableError(
            absl::StrCat("ucx connect to ", address, " failed: ", UcsError(s)));
      }
      conn->AttachLocked(handle, std::move(handler));
      conn->PostControlLocked(ControlKind::kHello, 0);
    }
    loop->Wake();
    auto& wait = *conn->connect_wait;
    absl::Status status;
    bool done;
    {
      MutexLock l(&wait.mu);
      const absl::Time deadline = absl::Now() + options_.connect_timeout;
      while (!wait.done && !wait.cv.WaitWithDeadline(&wait.mu, deadline)) {
      }
      done = wait.done;
      status = wait.status;
    }
    if (done && status.ok()) return conn;
    {
      MutexLock l(&conn->mu());
      conn->AbandonLocked();
      conn->CloseLocked(absl::CancelledError("connect abandoned"));
    }
    loop->Wake();
    if (!done) {
      return absl::DeadlineExceededError(absl::StrCat(
          "ucx connect to ", address, " timed out after ",
          absl::FormatDuration(options_.connect_timeout), SharedMemoryHint(options_, *ss)));
    }
    return absl::UnavailableError(absl::StrCat("ucx connect to ", address, " failed: ",
                                               status.message(), SharedMemoryHint(options_, *ss)));
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const std::string& address,
                                                   AcceptHandler on_accept) override {
    if (shut_down_.load()) return absl::UnavailableError("ucx transport is shut down");
    absl::StatusOr<sockaddr_storage> ss = Resolve(address, /*passive=*/true);
    if (!ss.ok()) return ss.status();
    // Shutdown may run from here until mu_ is taken.
    FARSWAP_SYNC_POINT("UcxTransport::Listen:before-listener");  // [none]
    MutexLock transport_lock(&mu_);
    if (shut_down_.load()) return absl::UnavailableError("ucx transport is shut down");
    auto state = std::make_shared<ListenerState>();
    state->loop = loops_[0];
    state->loops = loops_;
    state->on_accept = std::move(on_accept);
    state->options = options_;
    std::string bound;
    {
      MutexLock l(&state->loop->mu);
      ucp_listener_params_t lp{};
      lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
      lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&*ss);
      lp.sockaddr.addrlen = ss->ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
      lp.conn_handler.cb = OnConnectionRequest;
      lp.conn_handler.arg = state.get();
      if (ucs_status_t s = ucp_listener_create(state->loop->worker, &lp, &state->listener);
          s != UCS_OK) {
        state->listener = nullptr;
        return absl::UnavailableError(
            absl::StrCat("ucx listen on ", address, " failed: ", UcsError(s)));
      }
      ucp_listener_attr_t attr{};
      attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
      if (ucs_status_t s = ucp_listener_query(state->listener, &attr); s != UCS_OK) {
        state->DestroyLocked();
        return absl::UnavailableError(absl::StrCat("ucx listener query: ", UcsError(s)));
      }
      bound = FormatSockaddr(attr.sockaddr, "ucx");
    }
    listeners_.push_back(state);
    return std::make_unique<UcxListener>(std::move(state), bound);
  }

  void Shutdown() override {
    if (shut_down_.exchange(true)) return;
    std::vector<std::shared_ptr<ListenerState>> listeners;
    {
      MutexLock l(&mu_);
      listeners.swap(listeners_);
    }
    for (auto& state : listeners) {
      MutexLock l(&state->loop->mu);
      state->DestroyLocked();
    }
    for (auto& loop : loops_) loop->Stop();
    // Workers go before the context; connections still held by users keep
    // their loop object but find themselves closed and never touch it.
    for (auto& loop : loops_) loop->DestroyWorker();
    ucp_cleanup(context_);
  }

  absl::string_view scheme() const override { return "ucx"; }

 private:
  const ucp_context_h context_;
  const TransportOptions options_;
  std::vector<std::shared_ptr<UcxLoop>> loops_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> shut_down_{false};
  Mutex mu_;
  std::vector<std::shared_ptr<ListenerState>> listeners_ ABSL_GUARDED_BY(mu_);
};

// OnThisMachine: whether `peer` is a loopback address or one of this
// network namespace's interface addresses.
bool OnThisMachine(const sockaddr_storage& peer) {
  if (peer.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(peer);
    if ((ntohl(in.sin_addr.s_addr) >> 24) == 127) return true;
  } else if (peer.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(peer);
    if (IN6_IS_ADDR_LOOPBACK(&in6.sin6_addr)) return true;
  } else {
    return false;
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* i = list; i != nullptr && !found; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != peer.ss_family) continue;
    if (peer.ss_family == AF_INET) {
      found = reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr ==
              reinterpret_cast<const sockaddr_in&>(peer).sin_addr.s_addr;
    } else {
      found = std::memcmp(&reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr,
                          &reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr,
                          sizeof(in6_addr)) == 0;
    }
  }
  freeifaddrs(list);
  return found;
}

// SharedMemoryHint: what to add to a failed Connect's message when the peer
// is on this machine and UCX may pick shared memory for it: UCX's sysv and
// posix segments are mapped by their owner only (modes 0660 and 0600), so
// processes of two users that share IPC and PID namespaces cannot connect
// (UCX fails the endpoint: "Endpoint timeout", "Connection reset by remote
// peer"). Empty otherwise.
std::string SharedMemoryHint(const TransportOptions& options, const sockaddr_storage& peer) {
  if (!MayUseSharedMemory(options) || !OnThisMachine(peer)) return "";
  return " (the node is on this machine, where UCX picks shared memory; if it runs as another "
         "user, it cannot map this process's segments: run both as one user, or leave shared "
         "memory out on either side, e.g. UCX_TLS=^sm)";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Transport>> CreateUcxTransport(const TransportOptions& options) {
  if (options.io_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("io_threads must be at least 1 (got ", options.io_threads, ")"));
  }
  ucp_config_t* config = nullptr;
  if (ucs_status_t s = ucp_config_read(nullptr, nullptr, &config); s != UCS_OK) {
    return absl::UnavailableError(absl::StrCat("ucx: reading its configuration: ", UcsError(s)));
  }
  if (absl::Status st = ConfigureUcx(options, config, !ProbeRdmaDevices().devices.empty());
      !st.ok()) {
    ucp_config_release(config);
    return st;
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  ucp_context_h context = nullptr;
  ucs_status_t s = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (s != UCS_OK) {
    const char* tls = std::getenv("UCX_TLS");
    return absl::UnavailableError(absl::StrCat("ucx: ucp_init: ", UcsError(s), " (transports: ",
                                               !options.ucx_transports.empty()
                                                   ? options.ucx_transports
                                               : tls != nullptr ? absl::StrCat(tls, " from UCX_TLS")
                                                                : "UCX's default",
                                               ")"));
  }
  // spdlog's registry is made on first use (a function-local static inside
  // libspdlog); make it here, before the loop threads can be the first two
  // to log at once (a connection's carrier is logged by both loops when
  // both ends are in one process, and uninstrumented static initialisation
  // reads as a race to ThreadSanitizer).
  spdlog::default_logger_raw();
  auto transport = std::make_unique<UcxTransport>(context, options);
  if (absl::Status st = transport->Init(); !st.ok()) return st;
  return transport;
}

}  // namespace farswap::transport
