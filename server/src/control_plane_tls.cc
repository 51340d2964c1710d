#include "control_plane_tls.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace farswap::server {
namespace {

absl::StatusOr<std::string> ReadPemFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": empty"));
  }
  return text.str();
}

// OpenSslError: the reason of OpenSSL's last error on this thread ("" if
// none), and the queue cleared for the next check.
std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return absl::StrCat(" (", buf, ")");
}

// Owning handles for the OpenSSL objects below.
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Certificate = std::unique_ptr<X509, X509Free>;
using PrivateKey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Bio MemoryBio(const std::string& pem) { return Bio(BIO_new_mem_buf(pem.data(), int(pem.size()))); }

// FirstCertificate parses the first PEM certificate of `pem`.
absl::StatusOr<Certificate> FirstCertificate(const std::string& flag, const std::string& path,
                                             const std::string& pem) {
  Bio bio = MemoryBio(pem);
  Certificate cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": no PEM certificate", OpenSslError()));
  }
  return cert;
}

}  // namespace

absl::Status CheckControlPlaneTlsFiles(const ControlPlaneTlsOptions& options) {
  if (options.cert_file.empty()) {
    if (!options.key_file.empty() || !options.client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls-key and --tls-client-ca need --tls-cert");
    }
    return absl::OkStatus();
  }
  if (options.key_file.empty()) return absl::InvalidArgumentError("--tls-cert needs --tls-key");
  if (options.reload_interval_s < 1) {
    return absl::InvalidArgumentError("--tls-reload-interval must be at least 1 second");
  }
  absl::StatusOr<std::string> cert_pem = ReadPemFile("--tls-cert", options.cert_file);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadPemFile("--tls-key", options.key_file);
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<Certificate> cert = FirstCertificate("--tls-cert", options.cert_file, *cert_pem);
  if (!cert.ok()) return cert.status();
  Bio key_bio = MemoryBio(*key_pem);
  PrivateKey key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key ", options.key_file, ": no unencrypted PEM private key", OpenSslError()));
  }
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-key ", options.key_file,
                                                   " does not belong to the certificate in ",
                                                   options.cert_file, OpenSslError()));
  }
  if (!options.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca_pem = ReadPemFile("--tls-client-ca", options.client_ca_file);
    if (!ca_pem.ok()) return ca_pem.status();
    absl::StatusOr<Certificate> ca =
        FirstCertificate("--tls-client-ca", options.client_ca_file, *ca_pem);
    if (!ca.ok()) return ca.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ControlPlaneServerCredentials(
    const ControlPlaneTlsOptions& options) {
  if (absl::Status s = CheckControlPlaneTlsFiles(options); !s.ok()) return s;
  if (options.cert_file.empty()) return grpc::InsecureServerCredentials();
  // The provider re-reads the files every reload_interval_s on its own
  // thread (the first read happens there too, at once); handshakes take the
  // newest pair it distributed.
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.key_file, options.cert_file, options.client_ca_file, options.reload_interval_s);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (!options.client_ca_file.empty()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace farswap::server
