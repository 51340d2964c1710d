// control_plane_tls.h: the credentials farswap-server's gRPC control plane
// listens with — plaintext, TLS, or mutual TLS (README.md, "TLS on the
// control plane").
//
//   auto creds = ControlPlaneServerCredentials({.cert_file = "node.crt",
//                                               .key_file = "node.key"});
//   builder.AddListeningPort(addr, *creds, &port);
//
// The files are watched by gRPC's FileWatcherCertificateProvider: every
// reload_interval it re-reads the certificate chain, the key and the client
// CA bundle, and new handshakes use what it read (connections already open
// keep theirs). Swap the key and the certificate together (a Kubernetes
// Secret volume renames one symbolic link): gRPC installs whatever it reads,
// so a new key read with the old certificate fails handshakes until the
// next reload finds a matching pair.
#ifndef FARSWAP_SERVER_CONTROL_PLANE_TLS_H_
#define FARSWAP_SERVER_CONTROL_PLANE_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ServerCredentials;
}  // namespace grpc

namespace farswap::server {

struct ControlPlaneTlsOptions {
  // cert_file: PEM certificate chain, the node's own certificate first.
  // "" serves plaintext (and every other field must be unset).
  std::string cert_file;
  // key_file: PEM private key of the first certificate in cert_file.
  std::string key_file;
  // client_ca_file: PEM CA bundle; when set, every client must present a
  // certificate it signed (mutual TLS). "": no client certificate asked for.
  std::string client_ca_file;
  // reload_interval_s: how often the files are re-read (at least 1).
  unsigned reload_interval_s = 60;
};

// CheckControlPlaneTlsFiles reads the files of `options` once and checks
// that they are what they say: the chain's first certificate and the key
// parse and belong together, the CA bundle holds at least one certificate.
// INVALID_ARGUMENT (naming the file and the problem) otherwise, NOT_FOUND
// for a file that cannot be read. Run at start, so a node with a broken
// pair refuses to start instead of failing every handshake.
absl::Status CheckControlPlaneTlsFiles(const ControlPlaneTlsOptions& options);

// ControlPlaneServerCredentials returns insecure credentials when
// options.cert_file is empty, else TLS credentials (mutual TLS with
// client_ca_file) backed by a file watcher as described above. Checks the
// files first (CheckControlPlaneTlsFiles).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ControlPlaneServerCredentials(
    const ControlPlaneTlsOptions& options);

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_CONTROL_PLANE_TLS_H_
