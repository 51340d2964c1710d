// tls_context.cc: OpenSSL contexts, reload, handshakes (tls_context.h).
#include "tls_context.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "farswap/common/status_macros.h"
#include "spdlog/spdlog.h"

namespace farswap::transport {
namespace {

// kReadBufferBytes: OpenSSL's read buffer with read-ahead, so one recv
// takes several 16 KiB records (a BATCH of pages is up to 1 MiB).
constexpr size_t kReadBufferBytes = 128 * 1024;

// CheckReadable: NOT_FOUND naming `what` when `path` cannot be opened.
absl::Status CheckReadable(absl::string_view what, const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(what, " ", path, ": cannot be read: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status OpenSslInvalid(absl::string_view what, const std::string& path) {
  return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": ", OpenSslErrors()));
}

// NewBaseContext: what both ends share.
absl::StatusOr<SslCtxPtr> NewBaseContext(const SSL_METHOD* method) {
  SslCtxPtr ctx(SSL_CTX_new(method), SslCtxFree());
  if (ctx == nullptr) {
    return absl::InternalError(absl::StrCat("SSL_CTX_new: ", OpenSslErrors()));
  }
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  // AES-128-GCM first: the cheapest with AES-NI, and what kernel TLS runs.
  SSL_CTX_set_ciphersuites(c,
                           "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                           "TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_cipher_list(c, "ECDHE+AESGCM:ECDHE+CHACHA20");
  // Data-plane connections are long-lived: no resumption, so no tickets
  // arriving after the handshake; no renegotiation; a peer that closes
  // without close_notify is a closed connection, not an error.
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(c, SSL_OP_ENABLE_KTLS | SSL_OP_IGNORE_UNEXPECTED_EOF |
                             SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_default_read_buffer_len(c, kReadBufferBytes);
  return ctx;
}

absl::Status UseCertificateAndKey(SSL_CTX* ctx, const std::string& cert_what,
                                  const std::string& cert_file, const std::string& key_what,
                                  const std::string& key_file) {
  FARSWAP_RETURN_IF_ERROR(CheckReadable(cert_what, cert_file));
  FARSWAP_RETURN_IF_ERROR(CheckReadable(key_what, key_file));
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return OpenSslInvalid(cert_what, cert_file);
  }
  // A key that does not match the certificate fails either call.
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_what, " ", key_file, ": not a PEM key usable with the certificate in ",
                     cert_file, ": ", OpenSslErrors()));
  }
  return absl::OkStatus();
}

absl::Status UseCaFile(SSL_CTX* ctx, const std::string& what, const std::string& ca_file) {
  FARSWAP_RETURN_IF_ERROR(CheckReadable(what, ca_file));
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
    return OpenSslInvalid(what, ca_file);
  }
  return absl::OkStatus();
}

// The append BIO: writes go to the end of a std::vector<uint8_t> (its data
// pointer); it never blocks and never fails.
int AppendWrite(BIO* bio, const char* data, int len) {
  auto* out = static_cast<std::vector<uint8_t>*>(BIO_get_data(bio));
  out->insert(out->end(), reinterpret_cast<const uint8_t*>(data),
              reinterpret_cast<const uint8_t*>(data) + len);
  return len;
}

long AppendCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int AppendCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* AppendMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "farswap append");
    BIO_meth_set_write(m, AppendWrite);
    BIO_meth_set_ctrl(m, AppendCtrl);
    BIO_meth_set_create(m, AppendCreate);
    return m;
  }();
  return method;
}

bool IsIpAddress(const std::string& host) {
  in6_addr buf;
  return inet_pton(AF_INET, host.c_str(), &buf) == 1 ||
         inet_pton(AF_INET6, host.c_str(), &buf) == 1;
}

}  // namespace

std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(e);
    if (!out.empty()) out += "; ";
    out += reason != nullptr ? reason : buf;
  }
  return out;
}

absl::StatusOr<SslCtxPtr> NewServerContext(const TlsServerOptions& tls) {
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError("TLS listener: a certificate and a key file are required");
  }
  FARSWAP_ASSIGN_OR_RETURN(SslCtxPtr ctx, NewBaseContext(TLS_server_method()));
  FARSWAP_RETURN_IF_ERROR(UseCertificateAndKey(ctx.get(), "TLS certificate file", tls.cert_file,
                                               "TLS key file", tls.key_file));
  if (!tls.client_ca_file.empty()) {
    FARSWAP_RETURN_IF_ERROR(UseCaFile(ctx.get(), "TLS client CA file", tls.client_ca_file));
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca_file.c_str());
    if (names == nullptr) return OpenSslInvalid("TLS client CA file", tls.client_ca_file);
    SSL_CTX_set_client_CA_list(ctx.get(), names);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return ctx;
}

absl::StatusOr<SslCtxPtr> NewClientContext(const TlsClientOptions& tls) {
  if (tls.ca_file.empty()) {
    return absl::InvalidArgumentError("TLS connection: a CA file is required");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS connection: a client certificate and key go together (both or neither)");
  }
  FARSWAP_ASSIGN_OR_RETURN(SslCtxPtr ctx, NewBaseContext(TLS_client_method()));
  FARSWAP_RETURN_IF_ERROR(UseCaFile(ctx.get(), "TLS CA file", tls.ca_file));
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (!tls.cert_file.empty()) {
    FARSWAP_RETURN_IF_ERROR(UseCertificateAndKey(ctx.get(), "TLS certificate file", tls.cert_file,
                                                 "TLS key file", tls.key_file));
  }
  return ctx;
}

absl::StatusOr<std::unique_ptr<ServerTlsContext>> ServerTlsContext::Create(
    const TlsServerOptions& tls) {
  std::unique_ptr<ServerTlsContext> c(new ServerTlsContext(tls));
  c->stamps_ = c->StampFiles();
  FARSWAP_ASSIGN_OR_RETURN(c->ctx_, NewServerContext(tls));
  return c;
}

std::vector<uint64_t> ServerTlsContext::StampFiles() const {
  std::vector<uint64_t> stamps;
  for (const std::string* f : {&tls_.cert_file, &tls_.key_file, &tls_.client_ca_file}) {
    struct stat st {};
    if (f->empty() || stat(f->c_str(), &st) != 0) {
      stamps.insert(stamps.end(), {0, 0, 0, 0});
      continue;
    }
    stamps.insert(stamps.end(), {uint64_t(st.st_mtim.tv_sec), uint64_t(st.st_mtim.tv_nsec),
                                 uint64_t(st.st_size), uint64_t(st.st_ino)});
  }
  return stamps;
}

SslCtxPtr ServerTlsContext::Current() {
  std::vector<uint64_t> now = StampFiles();
  if (now != stamps_) {
    stamps_ = std::move(now);
    absl::StatusOr<SslCtxPtr> fresh = NewServerContext(tls_);
    if (fresh.ok()) {
      ctx_ = *std::move(fresh);
      spdlog::info(
          "farswap transport: TLS certificate files changed: re-read {} for new connections",
          tls_.cert_file);
    } else {
      spdlog::warn(
          "farswap transport: TLS certificate files changed but cannot be used ({}); new "
          "connections keep the previous certificate",
          fresh.status().ToString());
    }
  }
  return ctx_;
}

absl::StatusOr<SslPtr> NewServerSsl(SSL_CTX* ctx, int fd) {
  SslPtr ssl(SSL_new(ctx));
  if (ssl == nullptr || SSL_set_fd(ssl.get(), fd) != 1) {
    return absl::InternalError(absl::StrCat("SSL_new: ", OpenSslErrors()));
  }
  SSL_set_accept_state(ssl.get());
  return ssl;
}

std::string HandshakeError(SSL* ssl, int code) {
  std::string reason = OpenSslErrors();
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    reason = absl::StrCat("certificate verify failed: ", X509_verify_cert_error_string(verify),
                          reason.empty() ? "" : " (", reason, reason.empty() ? "" : ")");
  }
  if (!reason.empty()) return reason;
  if (code == SSL_ERROR_SYSCALL) {
    return errno != 0 ? std::strerror(errno) : "the peer closed the connection";
  }
  if (code == SSL_ERROR_ZERO_RETURN) return "the peer closed the connection";
  return absl::StrCat("SSL error ", code);
}

absl::StatusOr<SslPtr> ClientHandshake(const TlsClientOptions& tls, const std::string& server_name,
                                       int fd, const std::string& peer, absl::Time deadline) {
  FARSWAP_ASSIGN_OR_RETURN(SslCtxPtr ctx, NewClientContext(tls));
  SslPtr ssl(SSL_new(ctx.get()));
  if (ssl == nullptr || SSL_set_fd(ssl.get(), fd) != 1) {
    return absl::InternalError(absl::StrCat("SSL_new: ", OpenSslErrors()));
  }
  if (IsIpAddress(server_name)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), server_name.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl.get(), server_name.c_str());
    SSL_set1_host(ssl.get(), server_name.c_str());
  }
  SSL_set_connect_state(ssl.get());
  for (;;) {
    ERR_clear_error();
    errno = 0;
    const int rc = SSL_do_handshake(ssl.get());
    if (rc == 1) {
      // TLS 1.3 finishes the client's side before the server has checked
      // the client's certificate, so a refusal for having none would only
      // show later as a closed connection: say it now. (farswap nodes ask
      // only when they require one, naming the CAs they accept.)
      const STACK_OF(X509_NAME)* wanted = SSL_get_client_CA_list(ssl.get());
      if (tls.cert_file.empty() && wanted != nullptr && sk_X509_NAME_num(wanted) > 0) {
        return absl::UnavailableError(absl::StrCat(
            "TLS handshake with ", peer, " (as '", server_name,
            "') failed: the server requires a client certificate, and none is configured "
            "(tls_cert_file, tls_key_file)"));
      }
      return ssl;
    }
    const int code = SSL_get_error(ssl.get(), rc);
    short events;
    if (code == SSL_ERROR_WANT_READ) {
      events = POLLIN;
    } else if (code == SSL_ERROR_WANT_WRITE) {
      events = POLLOUT;
    } else {
      return absl::UnavailableError(absl::StrCat("TLS handshake with ", peer, " (as '", server_name,
                                                 "') failed: ", HandshakeError(ssl.get(), code)));
    }
    pollfd pfd{fd, events, 0};
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    const int64_t ms = left >= INT32_MAX ? INT32_MAX : std::max<int64_t>(0, left + 1);
    const int n = ms == 0 ? 0 : poll(&pfd, 1, int(ms));
    if (n == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("TLS handshake with ", peer, " timed out (it speaks no TLS?)"));
    }
    if (n < 0 && errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat("TLS handshake with ", peer, ": poll: ", std::strerror(errno)));
    }
  }
}

TlsMode FinishHandshake(SSL* ssl, std::vector<uint8_t>* cipher_out) {
  TlsMode mode;
  mode.ktls_send = BIO_get_ktls_send(SSL_get_wbio(ssl)) != 0;
  mode.ktls_recv = BIO_get_ktls_recv(SSL_get_rbio(ssl)) != 0;
  if (!mode.ktls_send) {
    BIO* append = BIO_new(AppendMethod());
    BIO_set_data(append, cipher_out);
    SSL_set0_wbio(ssl, append);
  }
  mode.description =
      absl::StrCat(SSL_get_version(ssl), " ", SSL_get_cipher_name(ssl), ", ",
                   mode.ktls_send ? "kernel TLS send" : "user-space encryption", ", ",
                   mode.ktls_recv ? "kernel TLS receive" : "user-space decryption");
  return mode;
}

}  // namespace farswap::transport
