// tls_context.h: the OpenSSL side of TLS on the TCP data plane (private to
// transport/): contexts for both ends, the server's certificate reload, the
// client's blocking handshake, and what a connection switches to once its
// handshake is done (tcp_connection.cc explains the connection's side).
//
// After the handshake a connection writes in one of two ways:
//  - kernel TLS (OpenSSL's SSL_OP_ENABLE_KTLS; needs the kernel's `tls`
//    module and an OpenSSL built with ktls): the kernel encrypts, so the
//    connection keeps its plaintext gathered sendmsg, zero copy;
//  - user space: OpenSSL encrypts into a connection-owned buffer (an
//    "append" BIO replaces the socket as the write BIO), which is then sent
//    with one send per burst rather than one per 16 KiB TLS record.
// Reads always go through SSL_read on the socket BIO, with read-ahead, so
// one recv takes many records (or the kernel decrypts, with ktls receive).
#ifndef FARSWAP_TRANSPORT_SRC_TLS_CONTEXT_H_
#define FARSWAP_TRANSPORT_SRC_TLS_CONTEXT_H_

#include <openssl/ssl.h>
#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "farswap/transport/transport.h"

namespace farswap::transport {

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslCtxPtr = std::shared_ptr<SSL_CTX>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

// OpenSslErrors drains this thread's OpenSSL error queue into "; "-joined
// reasons ("" when empty).
std::string OpenSslErrors();

// NewServerContext / NewClientContext read the files of `tls` and build a
// context: TLS 1.2 or 1.3, no session tickets, kernel TLS asked for.
// NOT_FOUND for a file that cannot be read, INVALID_ARGUMENT (naming the
// file and OpenSSL's reason) for one that does not parse or a key that does
// not match its certificate.
absl::StatusOr<SslCtxPtr> NewServerContext(const TlsServerOptions& tls);
absl::StatusOr<SslCtxPtr> NewClientContext(const TlsClientOptions& tls);

// ServerTlsContext is a listener's context, rebuilt for new connections
// when its files change. Not thread-safe: the listener's loop thread uses
// it (stat of two or three files per accept: cheap next to a handshake).
class ServerTlsContext {
 public:
  static absl::StatusOr<std::unique_ptr<ServerTlsContext>> Create(const TlsServerOptions& tls);

  // Current returns the context for a new connection: rebuilt first if a
  // file's modification time, size or inode changed since the last build
  // or failed attempt (a failed rebuild is logged and keeps the old one).
  SslCtxPtr Current();

 private:
  explicit ServerTlsContext(TlsServerOptions tls) : tls_(std::move(tls)) {}
  // StampFiles fingerprints the files (mtime, and size and inode folded in).
  std::vector<uint64_t> StampFiles() const;

  const TlsServerOptions tls_;
  SslCtxPtr ctx_;
  std::vector<uint64_t> stamps_;  // of the files as last tried
};

// NewServerSsl makes the server side of an accepted socket `fd`.
absl::StatusOr<SslPtr> NewServerSsl(SSL_CTX* ctx, int fd);

// ClientHandshake runs the client side of the handshake on the connected,
// non-blocking socket `fd`, polling until `deadline`, and verifies the
// server's certificate against tls.ca_file and `server_name` (DNS name or
// IP address). UNAVAILABLE "TLS handshake with <peer> failed: <reason>"
// (the certificate verification result when that is what failed),
// DEADLINE_EXCEEDED when it takes too long.
absl::StatusOr<SslPtr> ClientHandshake(const TlsClientOptions& tls, const std::string& server_name,
                                       int fd, const std::string& peer, absl::Time deadline);

// HandshakeError describes why a handshake on `ssl` failed, given
// SSL_get_error's `code`: OpenSSL's reasons, and the certificate
// verification result when it is not OK.
std::string HandshakeError(SSL* ssl, int code);

// TlsMode is how an established connection moves its records.
struct TlsMode {
  bool ktls_send = false;
  bool ktls_recv = false;
  std::string description;  // "TLSv1.3 TLS_AES_128_GCM_SHA256, user-space encryption"
};

// FinishHandshake switches an established `ssl` to its data mode: with
// kernel TLS for sending it stays as it is; otherwise its write BIO becomes
// one that appends the records to `*cipher_out` (which must outlive ssl).
TlsMode FinishHandshake(SSL* ssl, std::vector<uint8_t>* cipher_out);

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_SRC_TLS_CONTEXT_H_
