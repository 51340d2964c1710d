// tcp_connection.cc: one TCP data-plane connection (tcp_connection.h).
//
// Sending. Send (any thread) validates the headers and encodes them into the
// connection's output queue next to the caller's payload pieces. When the
// queue was empty it writes them at once on the calling thread (a
// non-blocking sendmsg under mu_: no hand-off, no wakeup of the loop);
// whatever the kernel does not take, or everything when frames were already
// queued, waits for a flush posted to the loop (one post per burst:
// flush_posted_). The loop gathers up
// to kMaxIovecs pieces across queued frames into one sendmsg (writev with
// MSG_NOSIGNAL), keeps partial progress per frame, and waits for EPOLLOUT
// when the kernel buffer is full. A frame's on_sent runs once its last byte
// is written. Replies sent from inside on_receive are flushed before the
// loop reads again, so a request/reply exchange costs no extra wakeup.
//
// Receiving. The loop reads into a per-connection buffer (at most
// kReadBudget bytes per readiness event, for fairness between connections;
// a plain read that brings exactly one whole frame and leaves the buffer
// unfilled ends the turn, since the level-triggered registration reports
// what comes after it),
// decodes each complete frame with DecodeHeader as soon as its 48 header
// bytes arrive — so an absurd length is rejected before anything is
// buffered for it — then ValidatePayload once it is whole, and hands the
// frames decoded from each read to on_receive in one call. A malformed
// frame closes that connection only, with the reason logged and passed to
// on_close.
//
// Back-pressure (README "Back-pressure"). Connections made with Connect
// refuse Send with RESOURCE_EXHAUSTED while more than
// max_output_queue_bytes are queued: the caller (the RPC client) fails or
// retries that request. Accepted connections never refuse a reply: when
// their queue passes the limit they stop reading requests from that peer
// (EPOLLIN off) and resume when it drains to half. So a peer that sends but
// never reads costs the server at most one read beyond the limit,
// and cannot slow any other connection.
//
// The owner may pause reading too (PauseReading, any thread): it sets
// owner_pause_requested_ and posts ApplyOwnerPause, which makes the epoll
// interest follow the latest request. HandleReadable checks the flag before
// each read, so a pause asked for from inside on_receive stops reading at
// once, without touching epoll from inside the callback. Reading happens
// only when neither the output queue nor the owner asks for a pause.
//
// TLS (ConnectTls / ListenTls; tls_context.h has the OpenSSL side). A
// client connection arrives with its handshake done (ConnectTls runs it
// before the connection exists). An accepted one first runs the server
// handshake on its loop (ContinueHandshake, driven by EPOLLIN/EPOLLOUT as
// SSL_do_handshake asks), and only then is the listener's on_accept called
// for it: a failed handshake closes it unseen by the owner. Afterwards:
//  - Writes. With kernel TLS for sending, nothing changes: the kernel
//    encrypts what the gathered sendmsg gives it. Otherwise WriteTlsLocked
//    copies up to kTlsChunk bytes of queued frames (many frames, as the
//    gathered write takes them) into one SSL_write, whose records land in
//    cipher_out_ (the append BIO), and sends them with one send; the next
//    chunk is encrypted only once those are sent. A frame's on_sent runs
//    once it is encrypted: its payload is no longer needed. The inline
//    write on Send's thread works the same way, under mu_.
//  - Reads. ReadTls calls SSL_read (read-ahead: one recv takes many
//    records) until it has filled the buffer or OpenSSL wants more from the
//    socket. Records OpenSSL has buffered raise no epoll event, so whenever
//    reading stops with some left (the read budget, a pause lifted) a read
//    is posted (KickTlsRead).
//  - Every SSL call is made under mu_ (OpenSSL objects are not
//    thread-safe); decoding and callbacks still run with no lock held.
//
// Locking. Each TcpConnection has one mutex, mu_, guarding its output queue,
// closed state and SSL object; IoLoop::mu_ guards the loop's task queue.
// No code holds two of these at once (Send releases mu_ before
// IoLoop::Post), so there is no lock order to keep; TlsAcceptGate::mu is
// held only around the listener's on_accept, which takes no connection
// lock. Callbacks run with no lock held.
#include "tcp_connection.h"

#include <openssl/err.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "farswap/common/status_macros.h"
#include "farswap/common/sync_point.h"
#include "spdlog/spdlog.h"

namespace farswap::transport {
namespace {

// kReadChunk: the smallest read; kReadBudget: the most bytes one readiness
// event reads before the loop serves other connections (one maximal BATCH).
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kReadBudget = kMaxFrameSize;
// kMaxIovecs: pieces per sendmsg, well under IOV_MAX (1024).
constexpr int kMaxIovecs = 256;
// kTlsChunk: plaintext bytes per SSL_write (8 TLS records): big enough
// that one send carries many frames, small enough that the records
// buffered per connection stay modest.
constexpr size_t kTlsChunk = 128 * 1024;

}  // namespace

absl::Status ErrnoUnavailable(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

TcpConnection::TcpConnection(std::shared_ptr<IoLoop> loop, int fd, std::string peer, bool accepted,
                             const TransportOptions& options)
    : loop_(std::move(loop)),
      fd_(fd),
      peer_(std::move(peer)),
      accepted_(accepted),
      max_queue_bytes_(options.max_output_queue_bytes),
      socket_(fd) {}

TcpConnection::~TcpConnection() {
  if (fd_ >= 0) close(fd_);  // never registered (its loop stopped first)
}

void TcpConnection::SetEstablishedTls(SslPtr ssl) {
  MutexLock lock(&mu_);
  ssl_ = std::move(ssl);
  tls_mode_ = FinishHandshake(ssl_.get(), &cipher_out_);
  tls_userspace_ = !tls_mode_.ktls_send;
  tls_ = true;
  spdlog::info("farswap transport: TLS connection to {}: {}", peer_, tls_mode_.description);
}

void TcpConnection::StartServerHandshake(SslPtr ssl, std::shared_ptr<TlsAcceptGate> gate) {
  MutexLock lock(&mu_);
  ssl_ = std::move(ssl);
  handshaking_ = true;
  accept_gate_ = std::move(gate);
}

void TcpConnection::Register() {
  absl::StatusOr<IoLoop::Registration> reg = loop_->Add(fd_, EPOLLIN, shared_from_this());
  if (!reg.ok()) {
    CloseNow(absl::UnavailableError(absl::StrCat("cannot watch socket: ", reg.status().message())));
    return;
  }
  registration_ = *reg;
  registered_ = true;
  if (handshaking_) return;  // ContinueHandshake runs when the client's hello arrives
  ApplyOwnerPause();         // a pause asked for before registration
  if (fd_ < 0) return;
  FlushOutput();  // frames sent before registration
  if (fd_ >= 0) KickTlsRead();
}

void TcpConnection::PostRegister() {
  auto self = shared_from_this();
  if (!loop_->Post([self] { self->Register(); })) {
    CloseNow(absl::UnavailableError("transport is shutting down"));
  }
}

absl::Status TcpConnection::Send(std::span<OutgoingMessage> messages) {
  // Sizes and validation first, outside the lock; at most a few frames per
  // call, so a small inline array avoids a heap allocation per Send.
  absl::InlinedVector<size_t, 4> sizes(messages.size());
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
  Callbacks sent;  // frames written inline
  bool post = false;
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
    const size_t first_new = out_.size();
    for (size_t i = 0; i < messages.size(); ++i) {
      PendingWrite& w = out_.emplace_back();
      w.header = EncodeHeader(messages[i].header);
      w.payload = std::move(messages[i].payload);
      w.on_sent = std::move(messages[i].on_sent);
      w.size = sizes[i];
    }
    queued_bytes_ += total;
    // Inline write: when nothing was queued before these frames, no other
    // thread is writing this socket (FlushOutput pops frames only after its
    // sendmsg, under mu_, so an empty queue means it is not mid-write), and
    // the socket stays open while mu_ is held (CloseNow sets closed_ under
    // mu_ before it closes the fd). So write here, on the caller's thread,
    // and hand the loop only what the kernel did not take.
    //
    // Not while this connection's own on_receive runs on the loop thread:
    // the replies to one read are gathered into one sendmsg after it
    // (HandleReadable), which beats a system call per reply.
    const bool delivering = loop_->InLoopThread() && delivering_;
    if (first_new == 0 && !delivering && !CipherPendingLocked()) WriteQueuedLocked(sent);
    // Only now: frames this thread is writing inline are not the loop's to
    // flush, so FlushOutput may skip them without the mutex.
    if (!out_.empty()) output_queued_.store(true, std::memory_order_relaxed);
    // While delivering, HandleReadable flushes right after on_receive
    // returns (and turns on EPOLLOUT for what the kernel does not take), so
    // a posted flush would only cost an eventfd write, a wake-up of this
    // same loop and an eventfd read per read of requests.
    if (!delivering && (!out_.empty() || CipherPendingLocked())) {
      post = !flush_posted_;
      flush_posted_ = true;
    }
  }
  for (SendCallback& cb : sent) cb(absl::OkStatus());
  if (post) {
    flushes_posted_.fetch_add(1, std::memory_order_relaxed);
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

int TcpConnection::GatherLocked(iovec* iov, size_t* gathered) {
  mu_.AssertHeld();
  int iovcnt = 0;
  *gathered = 0;
  for (auto it = out_.begin(); it != out_.end() && iovcnt < kMaxIovecs; ++it) {
    size_t skip = it->written;
    auto add = [&](const uint8_t* p, size_t n) {
      if (skip >= n) {
        skip -= n;
        return;
      }
      if (iovcnt == kMaxIovecs) return;
      iov[iovcnt++] = {const_cast<uint8_t*>(p + skip), n - skip};
      *gathered += n - skip;
      skip = 0;
    };
    add(it->header.data(), it->header.size());
    for (const PayloadPiece& piece : it->payload) add(piece.data(), piece.size());
  }
  return iovcnt;
}

void TcpConnection::ConsumeWrittenLocked(size_t n, Callbacks& done) {
  mu_.AssertHeld();
  bytes_sent_.fetch_add(uint64_t(n), std::memory_order_relaxed);
  queued_bytes_ -= n;
  while (n > 0) {
    PendingWrite& w = out_.front();
    size_t take = std::min(n, w.size - w.written);
    w.written += take;
    n -= take;
    if (w.written == w.size) {
      if (w.on_sent) done.push_back(std::move(w.on_sent));
      out_.pop_front();
      frames_sent_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (out_.empty()) output_queued_.store(false, std::memory_order_relaxed);
}

void TcpConnection::WriteQueuedLocked(Callbacks& done) {
  mu_.AssertHeld();
  if (tls_userspace_) {
    // A failure is met again by the loop's flush, which closes with it.
    absl::Status ignored;
    inline_writes_.fetch_add(1, std::memory_order_relaxed);
    WriteTlsLocked(done, &ignored);
    return;
  }
  while (!out_.empty()) {
    iovec iov[kMaxIovecs];
    size_t gathered;
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = size_t(GatherLocked(iov, &gathered));
    ssize_t n = sendmsg(socket_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    FARSWAP_SYNC_POINT("TcpConnection::WriteQueuedLocked:sent");  // [mu_], the sender
    if (n < 0) {
      if (errno == EINTR) continue;
      // EAGAIN: the loop waits for EPOLLOUT. Any other error: the loop's
      // own write hits it again and closes the connection with the reason.
      return;
    }
    inline_writes_.fetch_add(1, std::memory_order_relaxed);
    ConsumeWrittenLocked(size_t(n), done);
    if (size_t(n) < gathered) return;  // the kernel buffer is full
  }
}

TcpConnection::TlsWrite TcpConnection::WriteTlsLocked(Callbacks& done, absl::Status* error) {
  mu_.AssertHeld();
  if (ssl_ == nullptr) {
    *error = absl::UnavailableError("connection closed");
    return TlsWrite::kFailed;
  }
  for (;;) {
    while (CipherPendingLocked()) {
      ssize_t n = send(socket_, cipher_out_.data() + cipher_sent_,
                       cipher_out_.size() - cipher_sent_, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return TlsWrite::kBlocked;
        *error = ErrnoUnavailable(absl::StrCat("write to ", peer_, " failed"));
        return TlsWrite::kFailed;
      }
      cipher_sent_ += size_t(n);
    }
    cipher_out_.clear();
    cipher_sent_ = 0;
    if (out_.empty()) return TlsWrite::kDrained;
    // Copy the next chunk of queued frames, across frame boundaries.
    iovec iov[kMaxIovecs];
    size_t gathered;
    const int iovcnt = GatherLocked(iov, &gathered);
    plain_stage_.resize(std::min(gathered, kTlsChunk));
    size_t staged = 0;
    for (int i = 0; i < iovcnt && staged < plain_stage_.size(); ++i) {
      const size_t take = std::min(iov[i].iov_len, plain_stage_.size() - staged);
      std::memcpy(plain_stage_.data() + staged, iov[i].iov_base, take);
      staged += take;
    }
    // The write BIO appends and never blocks, so SSL_write takes it all.
    size_t done_bytes = 0;
    while (done_bytes < staged) {
      size_t written = 0;
      ERR_clear_error();
      if (SSL_write_ex(ssl_.get(), plain_stage_.data() + done_bytes, staged - done_bytes,
                       &written) != 1) {
        *error = absl::UnavailableError(
            absl::StrCat("TLS write to ", peer_, " failed: ", OpenSslErrors()));
        return TlsWrite::kFailed;
      }
      done_bytes += written;
    }
    ConsumeWrittenLocked(staged, done);
  }
}

ssize_t TcpConnection::ReadTls(uint8_t* buf, size_t len, std::string* error) {
  MutexLock lock(&mu_);
  if (ssl_ == nullptr) {
    errno = EBADF;
    return -1;
  }
  size_t total = 0;
  while (total < len) {
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    const int rc = SSL_read_ex(ssl_.get(), buf + total, len - total, &got);
    if (rc == 1) {
      total += got;
      continue;
    }
    if (total > 0) return ssize_t(total);  // an error shows again on the next call
    switch (SSL_get_error(ssl_.get(), rc)) {
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
      case SSL_ERROR_ZERO_RETURN:
        return 0;
      case SSL_ERROR_SYSCALL:
        if (errno == 0) return 0;
        return -1;
      default:
        *error = OpenSslErrors();
        errno = EPROTO;
        return -1;
    }
  }
  return ssize_t(total);
}

void TcpConnection::ContinueHandshake() {
  int code = SSL_ERROR_NONE;
  std::string error;
  TlsMode mode;
  {
    MutexLock lock(&mu_);
    if (ssl_ == nullptr) return;
    ERR_clear_error();
    errno = 0;
    const int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) {
      tls_mode_ = FinishHandshake(ssl_.get(), &cipher_out_);
      tls_userspace_ = !tls_mode_.ktls_send;
      mode = tls_mode_;
    } else {
      code = SSL_get_error(ssl_.get(), rc);
      if (code != SSL_ERROR_WANT_READ && code != SSL_ERROR_WANT_WRITE) {
        error = HandshakeError(ssl_.get(), code);
      }
    }
  }
  std::shared_ptr<TlsAcceptGate> gate = accept_gate_;
  if (!error.empty()) {
    gate->failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("farswap transport: TLS handshake from {} failed: {}; connection closed", peer_,
                 error);
    CloseNow(absl::UnavailableError(absl::StrCat("TLS handshake failed: ", error)));
    return;
  }
  if (code != SSL_ERROR_NONE) {  // wants the socket readable or writable
    const bool want_write = code == SSL_ERROR_WANT_WRITE;
    if (want_write != want_write_) {
      want_write_ = want_write;
      UpdateInterest();
    }
    return;
  }
  handshaking_ = false;
  tls_ = true;
  accept_gate_.reset();
  gate->handshakes.fetch_add(1, std::memory_order_relaxed);
  if (mode.ktls_send) gate->ktls.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("farswap transport: TLS connection from {}: {}", peer_, mode.description);
  bool accepted = false;
  {
    MutexLock lock(&gate->mu);
    if (gate->on_accept) {
      handler_ = gate->on_accept(shared_from_this());
      accepted = true;
    }
  }
  if (!accepted) {
    CloseNow(absl::UnavailableError("the listener closed during the TLS handshake"));
    return;
  }
  want_write_ = false;
  UpdateInterest();
  ApplyOwnerPause();
  if (fd_ < 0) return;
  FlushOutput();
  if (fd_ >= 0) HandleReadable();  // records that came with the handshake
}

void TcpConnection::KickTlsRead() {
  if (!tls_ || fd_ < 0 || read_kick_posted_ || !reading_allowed()) return;
  {
    MutexLock lock(&mu_);
    if (ssl_ == nullptr || SSL_has_pending(ssl_.get()) == 0) return;
  }
  read_kick_posted_ = true;
  auto self = shared_from_this();
  loop_->Post([self] {
    self->read_kick_posted_ = false;
    if (self->fd_ < 0) return;
    self->HandleReadable();
    if (self->fd_ >= 0) self->ApplyBackPressure();
  });
}

void TcpConnection::Close(absl::Status reason) {
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

bool TcpConnection::is_open() const {
  MutexLock lock(&mu_);
  return !closed_ && !close_posted_;  // closing counts as closed for callers
}

ConnectionStats TcpConnection::stats() const {
  ConnectionStats s;
  s.frames_sent = frames_sent_.load(std::memory_order_relaxed);
  s.frames_received = frames_received_.load(std::memory_order_relaxed);
  s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  s.bytes_received = bytes_received_.load(std::memory_order_relaxed);
  s.read_pauses = read_pauses_.load(std::memory_order_relaxed);
  s.inline_writes = inline_writes_.load(std::memory_order_relaxed);
  s.read_calls = read_calls_.load(std::memory_order_relaxed);
  s.flushes_posted = flushes_posted_.load(std::memory_order_relaxed);
  MutexLock lock(&mu_);
  s.queued_bytes = queued_bytes_;
  s.tls = !tls_mode_.description.empty();
  s.ktls_send = tls_mode_.ktls_send;
  s.ktls_recv = tls_mode_.ktls_recv;
  s.carrier = "tcp";
  return s;
}

void TcpConnection::PauseReading(bool paused) {
  owner_pause_requested_.store(paused, std::memory_order_release);
  auto self = shared_from_this();
  // Always posted: the caller may be inside this connection's on_receive,
  // where an epoll failure's CloseNow would destroy the running handler. If
  // the loop has stopped, the connection is closing anyway.
  loop_->Post([self] { self->ApplyOwnerPause(); });
}

void TcpConnection::ApplyOwnerPause() {
  if (fd_ < 0 || !registered_ || handshaking_) return;
  const bool want = owner_pause_requested_.load(std::memory_order_acquire);
  if (want == owner_paused_) return;
  owner_paused_ = want;
  if (want) {
    read_pauses_.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("farswap transport: reads from {} paused by the owner", peer_);
  }
  UpdateInterest();
  if (!want && fd_ >= 0) KickTlsRead();
}

void TcpConnection::OnEvents(uint32_t events) {
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
  if (handshaking_) {
    ContinueHandshake();
    return;
  }
  if (events & EPOLLOUT) {
    FlushOutput();
    if (fd_ < 0) return;
  }
  if (events & EPOLLIN) HandleReadable();
  if (fd_ >= 0) ApplyBackPressure();
}

void TcpConnection::FlushOutput() {
  if (fd_ < 0 || !registered_ || handshaking_) return;
  // Nothing queued for the loop (the common case after a read of replies):
  // return without mu_, which a sender holds across its inline sendmsg — a
  // sender preempted there (its send woke the peer on its own CPU) would
  // otherwise put this thread to sleep on the mutex, and the next reply
  // behind a wake-up. Frames another thread queues are written inline by it
  // or come with a posted flush; frames this thread's own on_receive queued
  // are seen (sequenced before).
  if (!tls_ && !want_write_ && !output_queued_.load(std::memory_order_relaxed)) return;
  Callbacks done;
  bool tls_pending = false;
  absl::Status tls_error;
  bool tls_failed = false;
  bool userspace;
  {
    MutexLock lock(&mu_);
    userspace = tls_userspace_;
    if (userspace) {
      tls_failed = WriteTlsLocked(done, &tls_error) == TlsWrite::kFailed;
      tls_pending = !out_.empty() || CipherPendingLocked();
    }
  }
  if (userspace) {
    RunCallbacks(done, absl::OkStatus());
    if (tls_failed) {
      CloseNow(tls_error);
      return;
    }
    if (tls_pending != want_write_) {
      want_write_ = tls_pending;
      UpdateInterest();
    }
    return;
  }
  for (;;) {
    iovec iov[kMaxIovecs];
    size_t gathered;
    int iovcnt;
    {
      // Queue elements stay put while unlocked: Send only appends to the
      // deque (which keeps references valid) and only this thread pops.
      MutexLock lock(&mu_);
      iovcnt = GatherLocked(iov, &gathered);
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
    {
      MutexLock lock(&mu_);
      ConsumeWrittenLocked(size_t(n), done);
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

void TcpConnection::RunCallbacks(Callbacks& callbacks, const absl::Status& status) {
  for (SendCallback& cb : callbacks) cb(status);
  callbacks.clear();
}

void TcpConnection::ApplyBackPressure() {
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
    if (fd_ >= 0) KickTlsRead();
    FARSWAP_SYNC_POINT("TcpConnection::ResumeReading");
  }
}

void TcpConnection::UpdateInterest() {
  uint32_t events = (reading_paused_ || owner_paused_ ? 0u : uint32_t{EPOLLIN}) |
                    (want_write_ ? uint32_t{EPOLLOUT} : 0u);
  if (absl::Status s = loop_->Modify(registration_, fd_, events); !s.ok()) {
    CloseNow(absl::UnavailableError(s.message()));
  }
}

void TcpConnection::HandleReadable() {
  std::vector<IncomingMessage>& messages = received_;
  size_t budget = kReadBudget;
  bool drained = false;  // the socket said EAGAIN
  while (budget > 0 && reading_allowed() && fd_ >= 0) {
    // Make room: compact consumed bytes, then grow to fit the frame in
    // progress (never beyond one maximal frame plus a chunk).
    if (in_begin_ > 0) {
      std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
      in_end_ -= in_begin_;
      in_begin_ = 0;
    }
    size_t want = std::max(in_end_ + kReadChunk, frame_need_);
    if (in_.size() < want) in_.resize(want);
    std::string tls_error;
    const size_t space = in_.size() - in_end_;
    read_calls_.fetch_add(1, std::memory_order_relaxed);
    ssize_t n = tls_ ? ReadTls(in_.data() + in_end_, space, &tls_error)
                     : read(fd_, in_.data() + in_end_, space);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        drained = true;
        break;
      }
      if (!tls_error.empty()) {
        spdlog::warn("farswap transport: closing TLS connection {}: {}", peer_, tls_error);
        CloseNow(absl::UnavailableError(absl::StrCat("TLS read from ", peer_, ": ", tls_error)));
        return;
      }
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
    const size_t frames = messages.size();
    Deliver(messages);  // the good frames before a bad one still count
    if (!decoded.ok()) {
      spdlog::warn("farswap transport: closing connection from {}: malformed frame: {}", peer_,
                   std::string(decoded.message()));
      CloseNow(absl::InvalidArgumentError(absl::StrCat("malformed frame: ", decoded.message())));
      return;
    }
    FlushOutput();  // replies (or requests) sent by on_receive, in one write
    if (accepted_ && fd_ >= 0) ApplyBackPressure();
    // A plain read that did not fill the buffer took all the socket held.
    // If it brought one whole frame and no more — an exchange of requests
    // and replies — the turn ends: the registration is level-triggered, so
    // epoll reports whatever comes next, and the read that would only say
    // EAGAIN is saved (one system call per exchange). A stream (several
    // frames a read, or a frame in progress) is read on at once, as before:
    // more of it has usually arrived meanwhile, and a read is cheaper than
    // an epoll_wait. TLS reads go on to EAGAIN: OpenSSL may hold decrypted
    // bytes the socket no longer shows.
    if (!tls_ && size_t(n) < space && frames == 1 && in_begin_ == in_end_) break;
  }
  // After EAGAIN OpenSSL holds at most part of a record, which the next
  // EPOLLIN completes; stopped early (budget, pause), it may hold more.
  if (fd_ >= 0 && !drained) KickTlsRead();
}

absl::Status TcpConnection::DecodeBuffered(std::vector<IncomingMessage>& out) {
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

void TcpConnection::Deliver(std::vector<IncomingMessage>& messages) {
  if (messages.empty()) return;
  if (!handler_.on_receive) {  // dropped, as before: the list is kept across reads
    messages.clear();
    return;
  }
  delivering_ = true;
  handler_.on_receive(*this, std::span<IncomingMessage>(messages));
  delivering_ = false;
  messages.clear();
}

void TcpConnection::CloseNow(const absl::Status& reason) {
  std::deque<PendingWrite> failed;
  {
    MutexLock lock(&mu_);
    if (fd_ < 0) return;
    closed_ = true;
    failed.swap(out_);
    queued_bytes_ = 0;
    output_queued_.store(false, std::memory_order_relaxed);
    ssl_.reset();  // before the fd closes; no close_notify (peers take EOF as the end)
    cipher_out_.clear();
    cipher_sent_ = 0;
    tls_userspace_ = false;
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

}  // namespace farswap::transport
