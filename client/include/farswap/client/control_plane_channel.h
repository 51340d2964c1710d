// control_plane_channel.h: a gRPC channel to a memory node's control plane,
// plaintext or TLS (README.md, "TLS on the control plane"). Used by the
// client library's Attach and by farswapctl.
//
//   auto channel = NewControlPlaneChannel("node-1:7070", {.ca_file = "ca.crt"});
//   auto stub = v1::MemoryNode::NewStub(*channel);
//
// The files are read on every call, so a caller that makes a channel per
// use (Attach does) picks up rotated certificates by itself.
#ifndef FARSWAP_CLIENT_CONTROL_PLANE_CHANNEL_H_
#define FARSWAP_CLIENT_CONTROL_PLANE_CHANNEL_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace farswap {

// ControlPlaneTls: what a client verifies the node with and proves itself
// with. All empty: plaintext.
struct ControlPlaneTls {
  // ca_file: PEM bundle of the CAs the node's certificate must chain to.
  // Required for TLS.
  std::string ca_file;
  // cert_file / key_file: the client's own PEM certificate chain and key,
  // for nodes that require client certificates (farswap-server
  // --tls-client-ca). Both or neither.
  std::string cert_file;
  std::string key_file;
  // server_name: the name the node's certificate must carry, when it is not
  // the host part of the address dialled (e.g. nodes reached by pod IP with
  // a certificate for the Service's DNS name). "": the address's host.
  std::string server_name;

  bool enabled() const { return !ca_file.empty(); }
};

// CheckControlPlaneTls checks that the fields of `tls` go together and that
// its files can be read: INVALID_ARGUMENT (a certificate without a key, a
// client certificate or server name without a CA, an empty file) or
// NOT_FOUND (a file that cannot be read), each naming the field.
absl::Status CheckControlPlaneTls(const ControlPlaneTls& tls);

// NewControlPlaneChannel returns a channel to `address` ("host:port"):
// plaintext when !tls.enabled(), else TLS verified against tls.ca_file (the
// files read now). Errors as CheckControlPlaneTls.
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewControlPlaneChannel(const std::string& address,
                                                                      const ControlPlaneTls& tls);

}  // namespace farswap

#endif  // FARSWAP_CLIENT_CONTROL_PLANE_CHANNEL_H_
