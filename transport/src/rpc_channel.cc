// rpc_channel.cc: request ids, out-of-order completion and deadlines over a
// Connection (rpc_channel.h).
//
// State. Core::pending_ maps request id -> the call's callback. A call
// leaves it exactly once — by its reply, its deadline, a failed Send, the
// connection closing, or Close — and whoever removes it completes it, after
// dropping the lock. That is the whole exactly-once argument.
//
// Deadlines. deadlines_ is a min-heap of (deadline, id) for the timer
// thread. A call that completes otherwise leaves its entry behind, so the
// reply path does no search and no tree rebalancing; the timer skips an
// entry whose id is no longer pending (ids are never reused), and the heap
// is rebuilt from pending_ when it holds more than twice the calls in
// flight (plus kMinHeapSlack), which bounds it and keeps the rebuild's cost
// amortised over the calls that made it stale. Neither map nor heap
// allocates per call once they have grown to the channel's depth.
//
// Threads. Replies and close notices arrive on the transport's I/O thread;
// deadlines fire on the channel's timer thread, which sleeps on a CondVar
// until the earliest deadline (or an idle tick) and is signalled only by a
// call whose deadline comes before that: not once per call.
//
// Locking: one mutex, Core::mu_. Send and callbacks run without it.
#include "farswap/transport/rpc_channel.h"

#include <algorithm>
#include <cassert>
#include <functional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "farswap/common/mutex.h"

namespace farswap::transport {

// kIdleTick: how often an idle timer thread looks for new deadlines. A
// deadline fires at most this late, far below any op timeout in use
// (hundreds of milliseconds to seconds), and an idle channel costs 100
// wakeups a second rather than one per call.
constexpr absl::Duration kIdleTick = absl::Milliseconds(10);

// kMinHeapSlack: stale deadline entries tolerated beyond twice the calls in
// flight before the heap is rebuilt, so a channel with a few calls in
// flight does not rebuild on every call.
constexpr size_t kMinHeapSlack = 256;

class RpcChannel::Core {
 public:
  struct Call {
    ReplyCallback done;
    Opcode opcode;
    absl::Time deadline;
  };

  // conn_ is set once in Connect, before the channel is returned, and never
  // changes; the I/O thread does not read it.
  std::shared_ptr<Connection> conn_;

  void OnReceive(Connection& conn, std::span<IncomingMessage> messages) {
    // Inline for the replies of a typical read: no allocation per reply.
    absl::InlinedVector<std::pair<Call, IncomingMessage>, 4> ready;
    bool protocol_error = false;
    {
      MutexLock lock(&mu_);
      for (IncomingMessage& m : messages) {
        if (!m.header.is_reply()) {
          protocol_error = true;
          break;
        }
        auto it = pending_.find(m.header.request_id);
        if (it == pending_.end()) {
          ++late_replies_;
          continue;
        }
        ++replies_;
        ready.emplace_back(std::move(it->second), std::move(m));
        pending_.erase(it);
      }
    }
    for (auto& [call, reply] : ready) Complete(call, std::move(reply));
    if (protocol_error) {
      conn.Close(absl::InvalidArgumentError("peer sent a request on a client connection"));
    }
  }

  void OnClose(const absl::Status& reason) {
    FailAll(absl::UnavailableError(
        absl::StrCat("connection to ", conn_peer_, " closed: ", reason.message())));
  }

  // FailAll completes every outstanding call with `status` and makes later
  // calls fail with it (the first such status sticks).
  void FailAll(const absl::Status& status) {
    absl::flat_hash_map<uint64_t, Call> failed;
    absl::Status sticky;
    {
      MutexLock lock(&mu_);
      if (closed_.ok()) closed_ = status;
      sticky = closed_;
      failed.swap(pending_);
      deadlines_.clear();
    }
    for (auto& [id, call] : failed) call.done(sticky);
  }

  // CallMany sends `requests`, completing each through done[i]; ids[i]
  // gets its request id (0 when refused).
  void CallMany(std::span<OutgoingMessage> requests, absl::Duration timeout,
                std::span<ReplyCallback> done, std::span<uint64_t> ids) {
    assert(done.size() == requests.size() && ids.size() == requests.size());
    std::fill(ids.begin(), ids.end(), 0);
    absl::Status refused;
    for (const OutgoingMessage& r : requests) {
      if (r.header.is_reply()) {
        refused = absl::InvalidArgumentError("RpcChannel sends requests; a message has REPLY set");
      }
    }
    const absl::Time deadline =
        timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
    if (refused.ok()) {
      MutexLock lock(&mu_);
      if (!closed_.ok()) {
        refused = closed_;
      } else {
        for (size_t i = 0; i < requests.size(); ++i) {
          ids[i] = next_id_++;
          requests[i].header.request_id = ids[i];
          pending_.emplace(ids[i], Call{std::move(done[i]), requests[i].header.opcode, deadline});
          if (deadline != absl::InfiniteFuture()) PushDeadlineLocked(deadline, ids[i]);
          ++calls_;
        }
        // Wake the timer only when it would otherwise sleep past this
        // deadline. Calls share one timeout, so deadlines arrive in order
        // and this almost never fires: no thread is woken per call.
        if (deadline < timer_wakes_at_) timer_cv_.Signal();
      }
    }
    if (!refused.ok()) {
      for (ReplyCallback& cb : done) cb(refused);
      return;
    }
    // A reply may complete a call before Send returns; that is fine, the
    // call has left pending_ by then.
    absl::Status sent = conn_->Send(requests);
    if (!sent.ok()) {
      std::vector<Call> failed;
      {
        MutexLock lock(&mu_);
        for (uint64_t id : ids) {
          auto it = pending_.find(id);
          if (it == pending_.end()) continue;
          failed.push_back(std::move(it->second));
          pending_.erase(it);
        }
      }
      for (Call& call : failed) call.done(sent);
    }
  }

  // TimerLoop completes calls whose deadline has passed, until Stop.
  void TimerLoop() {
    mu_.Lock();
    while (!stop_timer_) {
      const absl::Time now = absl::Now();
      DropStaleTopLocked();
      if (deadlines_.empty()) {
        // Idle: look again after a tick, so that a call made meanwhile
        // need not wake this thread (its deadline is at least one op
        // timeout away; the tick bounds how late it can fire).
        timer_wakes_at_ = now + kIdleTick;
        timer_cv_.WaitWithDeadline(&mu_, timer_wakes_at_);
        continue;
      }
      const absl::Time first = deadlines_.front().first;
      if (first > now) {
        timer_wakes_at_ = first;
        timer_cv_.WaitWithDeadline(&mu_, first);
        continue;
      }
      timer_wakes_at_ = absl::InfinitePast();  // running: nobody need wake it
      std::vector<std::pair<uint64_t, Call>> expired;
      while (!deadlines_.empty() && deadlines_.front().first <= now) {
        const uint64_t id = deadlines_.front().second;
        std::pop_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
        deadlines_.pop_back();
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;  // completed otherwise: a stale entry
        expired.emplace_back(id, std::move(it->second));
        pending_.erase(it);
        ++timeouts_;
      }
      mu_.Unlock();
      for (auto& [id, call] : expired) {
        call.done(
            absl::DeadlineExceededError(absl::StrCat(OpcodeName(call.opcode), " request ", id,
                                                     " to ", conn_peer_, " got no reply in time")));
      }
      mu_.Lock();
    }
    mu_.Unlock();
  }

  void StopTimer() {
    MutexLock lock(&mu_);
    stop_timer_ = true;
    timer_cv_.Signal();
  }

  RpcChannelStats stats() const {
    RpcChannelStats s;
    {
      MutexLock lock(&mu_);
      s = {calls_, replies_, timeouts_, late_replies_, pending_.size()};
      s.deadline_entries = deadlines_.size();
    }
    s.carrier = conn_->stats().carrier;  // not under mu_: the transport has its own locks
    return s;
  }

  std::string conn_peer_;  // set once with conn_

 private:
  // PushDeadlineLocked adds a call's deadline, first rebuilding the heap
  // from pending_ when stale entries have piled up (see the top).
  void PushDeadlineLocked(absl::Time deadline, uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (deadlines_.size() >= 2 * pending_.size() + kMinHeapSlack) {
      deadlines_.clear();
      for (const auto& [pending_id, call] : pending_) {
        if (call.deadline != absl::InfiniteFuture() && pending_id != id) {
          deadlines_.emplace_back(call.deadline, pending_id);
        }
      }
      std::make_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
    }
    deadlines_.emplace_back(deadline, id);
    std::push_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
  }

  // DropStaleTopLocked pops entries of calls no longer pending off the top,
  // so the top (if any) is the earliest live deadline.
  void DropStaleTopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!deadlines_.empty() && !pending_.contains(deadlines_.front().second)) {
      std::pop_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
      deadlines_.pop_back();
    }
  }

  static void Complete(Call& call, IncomingMessage reply) {
    if (reply.header.opcode != call.opcode) {
      call.done(absl::InternalError(absl::StrCat("reply to a ", OpcodeName(call.opcode),
                                                 " request has opcode ",
                                                 OpcodeName(reply.header.opcode))));
    } else if (reply.header.status != absl::StatusCode::kOk) {
      call.done(absl::Status(reply.header.status,
                             std::string(reply.payload.begin(), reply.payload.end())));
    } else {
      call.done(std::move(reply));
    }
  }

  mutable Mutex mu_;
  CondVar timer_cv_;
  absl::flat_hash_map<uint64_t, Call> pending_ ABSL_GUARDED_BY(mu_);
  // A min-heap (std::greater) of (deadline, id), stale entries included.
  std::vector<std::pair<absl::Time, uint64_t>> deadlines_ ABSL_GUARDED_BY(mu_);
  absl::Status closed_ ABSL_GUARDED_BY(mu_);  // OK while open; sticky
  bool stop_timer_ ABSL_GUARDED_BY(mu_) = false;
  // timer_wakes_at_: when the timer thread will look at deadlines_ next
  // (InfinitePast while it is awake); a call whose deadline is earlier
  // signals it.
  absl::Time timer_wakes_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t replies_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t timeouts_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t late_replies_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::StatusOr<std::unique_ptr<RpcChannel>> RpcChannel::Connect(Transport& transport,
                                                                const std::string& address,
                                                                const TlsClientOptions* tls) {
  auto core = std::make_shared<Core>();
  core->conn_peer_ = address;
  std::weak_ptr<Core> weak = core;
  ConnectionHandler handler;
  handler.on_receive = [weak](Connection& conn, std::span<IncomingMessage> messages) {
    if (auto c = weak.lock()) c->OnReceive(conn, messages);
  };
  handler.on_close = [weak](const absl::Status& reason) {
    if (auto c = weak.lock()) c->OnClose(reason);
  };
  absl::StatusOr<std::shared_ptr<Connection>> conn =
      tls != nullptr ? transport.ConnectTls(address, std::move(handler), *tls)
                     : transport.Connect(address, std::move(handler));
  if (!conn.ok()) return conn.status();
  core->conn_ = *std::move(conn);
  return std::unique_ptr<RpcChannel>(new RpcChannel(std::move(core)));
}

RpcChannel::RpcChannel(std::shared_ptr<Core> core)
    : core_(std::move(core)), timer_([core = core_] { core->TimerLoop(); }) {}

RpcChannel::~RpcChannel() { Close(); }

std::vector<uint64_t> RpcChannel::CallMany(std::span<OutgoingMessage> requests,
                                           absl::Duration timeout,
                                           std::vector<ReplyCallback> done) {
  std::vector<uint64_t> ids(requests.size());
  core_->CallMany(requests, timeout, std::span<ReplyCallback>(done), std::span<uint64_t>(ids));
  return ids;
}

uint64_t RpcChannel::Call(OutgoingMessage request, absl::Duration timeout, ReplyCallback done) {
  uint64_t id = 0;
  core_->CallMany({&request, 1}, timeout, {&done, 1}, {&id, 1});
  return id;
}

std::future<absl::StatusOr<IncomingMessage>> RpcChannel::Call(const FrameHeader& header,
                                                              std::vector<uint8_t> payload,
                                                              absl::Duration timeout) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<IncomingMessage>>>();
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(payload));
  OutgoingMessage m;
  m.header = header;
  if (!owned->empty()) m.payload.push_back(*owned);
  m.on_sent = [owned](absl::Status) {};  // keeps the payload alive until written
  auto future = promise->get_future();
  Call(std::move(m), timeout,
       [promise](absl::StatusOr<IncomingMessage> r) { promise->set_value(std::move(r)); });
  return future;
}

void RpcChannel::Close() {
  core_->FailAll(absl::CancelledError("RPC channel closed"));
  core_->conn_->Close(absl::CancelledError("RPC channel closed"));
  // Nothing can be pending any more (later calls fail at once), so the
  // timer thread goes now: a closed channel kept for its address (a client
  // re-attaching to a flapping node keeps one per attach) holds no thread.
  core_->StopTimer();
  MutexLock l(&join_mu_);
  if (timer_.joinable() && timer_.get_id() != std::this_thread::get_id()) timer_.join();
}

RpcChannelStats RpcChannel::stats() const { return core_->stats(); }

const std::string& RpcChannel::peer_address() const { return core_->conn_->peer_address(); }

}  // namespace farswap::transport
