#include "farswap/client/control_plane_channel.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace farswap {
namespace {

// ReadTlsFile reads one of the PEM files of ControlPlaneTls; `field` names
// it in errors.
absl::StatusOr<std::string> ReadTlsFile(const char* field, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(field, " ", path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().empty())
    return absl::InvalidArgumentError(absl::StrCat(field, " ", path, ": empty"));
  return text.str();
}

// ReadCredentials checks the fields of `tls` and reads its files.
absl::StatusOr<grpc::SslCredentialsOptions> ReadCredentials(const ControlPlaneTls& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("TLS client certificate and key go together");
  }
  if (!tls.enabled() && (!tls.cert_file.empty() || !tls.server_name.empty())) {
    return absl::InvalidArgumentError(
        "a TLS client certificate or server name needs the CA file of the nodes");
  }
  grpc::SslCredentialsOptions ssl;
  if (!tls.enabled()) return ssl;
  absl::StatusOr<std::string> ca = ReadTlsFile("TLS CA file", tls.ca_file);
  if (!ca.ok()) return ca.status();
  ssl.pem_root_certs = std::move(*ca);
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadTlsFile("TLS certificate file", tls.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadTlsFile("TLS key file", tls.key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = std::move(*cert);
    ssl.pem_private_key = std::move(*key);
  }
  return ssl;
}

}  // namespace

absl::Status CheckControlPlaneTls(const ControlPlaneTls& tls) {
  return ReadCredentials(tls).status();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewControlPlaneChannel(const std::string& address,
                                                                      const ControlPlaneTls& tls) {
  absl::StatusOr<grpc::SslCredentialsOptions> ssl = ReadCredentials(tls);
  if (!ssl.ok()) return ssl.status();
  if (!tls.enabled()) return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::ChannelArguments args;
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(*ssl), args);
}

}  // namespace farswap
