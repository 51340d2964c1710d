// rpc_channel.h: request/reply on top of a Connection — request ids,
// out-of-order completion and per-request deadlines.
//
//   auto channel = RpcChannel::Connect(*transport, "tcp://10.0.0.5:7000").value();
//   std::future<absl::StatusOr<IncomingMessage>> f =
//       channel->Call({.opcode = Opcode::kLoad, .page = 42}, {}, absl::Milliseconds(50));
//   absl::StatusOr<IncomingMessage> reply = f.get();  // OK, or the reply's status,
//                                                     // UNAVAILABLE, DEADLINE_EXCEEDED
//
// Many requests are in flight at once on one connection; each completes when
// the reply with its request id arrives, in whatever order replies come.
// Every call completes exactly once and never hangs:
//  - with the reply, when its status is OK;
//  - with absl::Status(reply status, reply message) when the peer says no;
//  - DEADLINE_EXCEEDED when its timeout passes first (a late reply is then
//    dropped and counted in late_replies);
//  - UNAVAILABLE when the connection closes first, or Send reports it;
//  - RESOURCE_EXHAUSTED when the connection's output queue is full;
//  - CANCELLED when the channel is closed or destroyed.
//
// Buffer ownership follows transport.h: a request's payload pieces stay
// alive until its own on_sent runs, which may be after the reply callback
// (a timeout while the frame is still queued). The future-returning Call
// owns its payload, so it has no such rule.
//
// Thread safety: an RpcChannel is safe for concurrent use from any thread.
// Reply callbacks run on a transport I/O thread or on the channel's timer
// thread, never with a channel lock held; they must not block.
#ifndef FARSWAP_TRANSPORT_RPC_CHANNEL_H_
#define FARSWAP_TRANSPORT_RPC_CHANNEL_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "farswap/common/mutex.h"
#include "farswap/transport/transport.h"

namespace farswap::transport {

using ReplyCallback = std::function<void(absl::StatusOr<IncomingMessage>)>;

struct RpcChannelStats {
  uint64_t calls = 0;
  uint64_t replies = 0;
  uint64_t timeouts = 0;
  uint64_t late_replies = 0;  // replies for calls that had already completed
  uint64_t in_flight = 0;
  // deadline_entries: entries in the timer's deadline heap — the calls in
  // flight with a deadline plus answered ones not yet pruned; at most about
  // twice in_flight plus a small constant.
  uint64_t deadline_entries = 0;
  std::string carrier;  // the connection's ConnectionStats::carrier
};

class RpcChannel {
 public:
  // Connect opens a connection through `transport` (which must outlive the
  // channel) and wraps it: Transport::ConnectTls with `tls`, else Connect.
  static absl::StatusOr<std::unique_ptr<RpcChannel>> Connect(Transport& transport,
                                                             const std::string& address,
                                                             const TlsClientOptions* tls = nullptr);
  // Destroying the channel completes outstanding calls with CANCELLED and
  // closes the connection. Must not run on an I/O thread.
  ~RpcChannel();
  RpcChannel(const RpcChannel&) = delete;
  RpcChannel& operator=(const RpcChannel&) = delete;

  // CallMany sends `requests` in one Send (one gathered write on TCP),
  // assigning each a fresh request id (overwriting header.request_id), and
  // calls done[i] exactly once for requests[i]. Returns the ids assigned.
  // requests[i] must be requests (no REPLY flag); done.size() must match.
  std::vector<uint64_t> CallMany(std::span<OutgoingMessage> requests, absl::Duration timeout,
                                 std::vector<ReplyCallback> done);

  // Call sends one request whose payload the caller owns (see above).
  uint64_t Call(OutgoingMessage request, absl::Duration timeout, ReplyCallback done);

  // Call sends one request whose payload the channel owns.
  std::future<absl::StatusOr<IncomingMessage>> Call(const FrameHeader& header,
                                                    std::vector<uint8_t> payload,
                                                    absl::Duration timeout);

  // Close completes outstanding calls with CANCELLED, closes the connection
  // and stops the channel's timer thread; later calls fail with CANCELLED.
  // Idempotent.
  void Close();

  RpcChannelStats stats() const;
  const std::string& peer_address() const;

 private:
  class Core;
  explicit RpcChannel(std::shared_ptr<Core> core);

  const std::shared_ptr<Core> core_;
  Mutex join_mu_;      // serialises joining timer_ (Close may race itself)
  std::thread timer_;  // completes calls whose deadline passes; joined by Close
};

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_RPC_CHANNEL_H_
