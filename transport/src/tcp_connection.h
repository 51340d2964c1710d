// tcp_connection.h: one TCP data-plane connection (private to transport/).
// tcp_connection.cc explains sending, receiving and back-pressure.
#ifndef FARSWAP_TRANSPORT_SRC_TCP_CONNECTION_H_
#define FARSWAP_TRANSPORT_SRC_TCP_CONNECTION_H_

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "farswap/common/mutex.h"
#include "farswap/transport/transport.h"
#include "io_loop.h"
#include "tls_context.h"

namespace farswap::transport {

// ErrnoUnavailable returns UNAVAILABLE "<what>: <strerror(errno)>".
absl::Status ErrnoUnavailable(absl::string_view what);

// TlsAcceptGate is what a listener's TLS connections need once their
// handshake completes: the listener's accept handler (cleared when the
// listener closes: it is called under mu, so Listener::Close, which clears
// it under mu, returns only after any call in progress) and its counters.
struct TlsAcceptGate {
  Mutex mu;
  AcceptHandler on_accept ABSL_GUARDED_BY(mu);
  std::atomic<uint64_t> handshakes{0}, failures{0}, ktls{0};
};

// TcpConnection is one TCP data-plane connection. Thread-safe (Connection's
// promise): Send, Close and the accessors may be called from any thread;
// everything that touches the socket runs on the owning loop's thread.
class TcpConnection final : public Connection,
                            public EpollTarget,
                            public std::enable_shared_from_this<TcpConnection> {
 public:
  TcpConnection(std::shared_ptr<IoLoop> loop, int fd, std::string peer, bool accepted,
                const TransportOptions& options);

  ~TcpConnection() override;

  // set_handler runs before Register, on whatever thread creates the
  // connection; the post to the loop orders it before any callback.
  void set_handler(ConnectionHandler handler) { handler_ = std::move(handler); }

  // SetEstablishedTls makes this connection speak TLS over `ssl`, whose
  // client handshake is complete (ConnectTls). Before PostRegister.
  void SetEstablishedTls(SslPtr ssl);
  // StartServerHandshake makes this accepted connection run the server
  // side of a TLS handshake on its loop first; when it completes,
  // gate->on_accept supplies the handler. Before PostRegister.
  void StartServerHandshake(SslPtr ssl, std::shared_ptr<TlsAcceptGate> gate);

  // Register starts watching the socket (loop thread).
  void Register();

  // PostRegister hands the connection to its loop; if the loop has stopped,
  // closes it here (it was never registered, so no other thread touches it).
  void PostRegister();

  absl::Status Send(std::span<OutgoingMessage> messages) override;

  void Close(absl::Status reason) override;

  bool is_open() const override;
  const std::string& peer_address() const override { return peer_; }

  ConnectionStats stats() const override;

  void PauseReading(bool paused) override;

  void OnEvents(uint32_t events) override;

  void OnLoopShutdown() override { CloseNow(absl::UnavailableError("transport shut down")); }

 private:
  // Callbacks collects the on_sent callbacks of frames written whole.
  using Callbacks = absl::InlinedVector<SendCallback, 4>;
  struct PendingWrite {
    std::array<uint8_t, kFrameHeaderSize> header;
    std::vector<PayloadPiece> payload;
    SendCallback on_sent;
    size_t size = 0;     // header + payload bytes
    size_t written = 0;  // bytes already handed to the kernel
  };

  // WriteQueuedLocked writes as much of the output queue as the socket
  // takes without blocking, on the calling thread (Send's inline write),
  // collecting the callbacks of frames written whole into `done`.
  void WriteQueuedLocked(Callbacks& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // GatherLocked fills `iov` (kMaxIovecs entries) with the unwritten bytes
  // of the output queue, in order; returns the count and their total.
  int GatherLocked(iovec* iov, size_t* gathered) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ConsumeWrittenLocked drops `n` written bytes from the front of the
  // queue, collecting the callbacks of frames now written whole.
  void ConsumeWrittenLocked(size_t n, Callbacks& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // FlushOutput writes as much of the output queue as the socket takes
  // (loop thread).
  void FlushOutput();

  static void RunCallbacks(Callbacks& callbacks, const absl::Status& status);

  // TLS (tcp_connection.cc, "TLS"). TlsWrite is what WriteTlsLocked did.
  enum class TlsWrite { kDrained, kBlocked, kFailed };
  // WriteTlsLocked sends the records in cipher_out_, then encrypts the next
  // kTlsChunk bytes of queued frames into it and sends those, until the
  // queue is empty or the socket is full. kFailed: `*error` says why.
  TlsWrite WriteTlsLocked(Callbacks& done, absl::Status* error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool CipherPendingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return cipher_sent_ < cipher_out_.size();
  }
  // ReadTls reads decrypted bytes into buf (as read(2) would: >0, 0 at the
  // peer's close, -1 with errno; EPROTO with `*error` for a TLS failure).
  ssize_t ReadTls(uint8_t* buf, size_t len, std::string* error);
  // ContinueHandshake advances the server handshake (loop thread).
  void ContinueHandshake();
  // KickTlsRead: records OpenSSL has already taken off the socket raise no
  // epoll event, so when reading stopped early (the budget) or resumes (a
  // pause lifted) with bytes buffered there, a read is posted (loop thread).
  // Not after EAGAIN: then only part of a record can be buffered, and the
  // rest arrives with an EPOLLIN (posting would spin).
  void KickTlsRead();

  // ApplyBackPressure pauses or resumes reading on accepted connections
  // (loop thread); see the file comment.
  void ApplyBackPressure();

  void UpdateInterest();

  // ApplyOwnerPause makes the epoll interest follow owner_pause_requested_
  // (loop thread).
  void ApplyOwnerPause();
  // reading_allowed: neither back-pressure nor the owner pauses reading
  // (loop thread).
  bool reading_allowed() const {
    return !reading_paused_ && !owner_pause_requested_.load(std::memory_order_acquire);
  }

  // HandleReadable reads, decodes and delivers frames. After each read's
  // frames are delivered, replies are flushed and back-pressure applied, so
  // a paused connection overshoots its limit by at most one read.
  void HandleReadable();

  // DecodeBuffered moves every complete frame out of the input buffer.
  absl::Status DecodeBuffered(std::vector<IncomingMessage>& out);

  void Deliver(std::vector<IncomingMessage>& messages);

  // CloseNow closes the socket, fails queued frames and tells the handler
  // (loop thread, or any thread for a never-registered connection).
  void CloseNow(const absl::Status& reason);

  const std::shared_ptr<IoLoop> loop_;
  // fd_: the socket; -1 once closed. Written only by the loop thread (or by
  // the creating thread before registration); read under mu_ in CloseNow's
  // check only for idempotence, so it is not itself guarded.
  int fd_;
  const std::string peer_;
  const bool accepted_;
  const size_t max_queue_bytes_;
  // socket_: the fd as created, for Send's inline writes, which happen only
  // under mu_ while !closed_ (CloseNow closes the fd after setting closed_).
  const int socket_;

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
  bool reading_paused_ = false;  // by back-pressure (the output queue)
  bool owner_paused_ = false;    // by PauseReading, as the epoll interest shows it
  // delivering_: on_receive is running (Send then queues instead of writing
  // inline, and posts no flush: HandleReadable flushes after on_receive;
  // read by Send only on the loop thread).
  bool delivering_ = false;
  bool want_write_ = false;
  std::vector<uint8_t> in_;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  size_t frame_need_ = 0;  // size of the frame being buffered, once known
  // received_: the frames of one read, handed to on_receive; empty between
  // reads, kept for its capacity (no allocation per read).
  std::vector<IncomingMessage> received_;

  // TLS. The SSL object is not thread-safe and Send's inline write, the
  // loop's flush and the loop's reads all use it, so every SSL call is made
  // under mu_. cipher_out_ (records not yet sent; cipher_sent_ of them are)
  // is the user-space write path's buffer: declared before ssl_, whose
  // write BIO appends to it, so ssl_ goes first.
  std::vector<uint8_t> cipher_out_ ABSL_GUARDED_BY(mu_);
  size_t cipher_sent_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint8_t> plain_stage_ ABSL_GUARDED_BY(mu_);  // frames copied for SSL_write
  SslPtr ssl_ ABSL_GUARDED_BY(mu_);
  TlsMode tls_mode_ ABSL_GUARDED_BY(mu_);
  // tls_userspace_: established TLS whose records OpenSSL writes.
  bool tls_userspace_ ABSL_GUARDED_BY(mu_) = false;
  // Loop thread only (or the creating thread before registration).
  bool tls_ = false;          // established TLS: reads go through ReadTls
  bool handshaking_ = false;  // the server handshake is in progress
  bool read_kick_posted_ = false;
  std::shared_ptr<TlsAcceptGate> accept_gate_;  // until the handshake completes

  // owner_pause_requested_: the latest PauseReading argument (any thread).
  std::atomic<bool> owner_pause_requested_{false};
  // output_queued_: frames wait in out_ for the loop. Written under mu_: set
  // by Send once its inline write (if any) left frames behind, cleared when
  // out_ empties. FlushOutput reads it without mu_ to skip an empty queue,
  // and a queue a sender is still writing inline.
  std::atomic<bool> output_queued_{false};

  std::atomic<uint64_t> frames_sent_{0}, frames_received_{0}, bytes_sent_{0}, bytes_received_{0},
      read_pauses_{0}, inline_writes_{0}, read_calls_{0}, flushes_posted_{0};
};

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_SRC_TCP_CONNECTION_H_
