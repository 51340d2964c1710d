// grpc_node_attacher.cc: NodeAttacher over gRPC (farswap.v1.MemoryNode/
// Attach), and Client::Connect with it. The only client file that includes
// gRPC headers (with control_plane_channel.cc).
#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "farswap/client/client.h"
#include "farswap/client/control_plane_channel.h"
#include "farswap/client/node_attacher.h"
#include "farswap/v1/memory_node.grpc.pb.h"

namespace farswap {
namespace {

// GrpcNodeAttacher makes one short-lived gRPC channel per Attach (attaches
// are rare: at start and after a failure), reading the TLS files anew each
// time. Thread-safe: no mutable state.
class GrpcNodeAttacher final : public NodeAttacher {
 public:
  explicit GrpcNodeAttacher(ControlPlaneTls tls) : tls_(std::move(tls)) {}

  absl::StatusOr<Attachment> Attach(const std::string& address, const std::string& tenant_id,
                                    const std::string& secret, const std::string& client_name,
                                    absl::Duration timeout) override {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = NewControlPlaneChannel(address, tls_);
    if (!channel.ok()) {
      // The files were good at Connect: one that has gone since makes this
      // node unreachable until it is back, as a network fault would.
      return absl::UnavailableError(
          absl::StrCat("attach to ", address, ": ", channel.status().message()));
    }
    auto stub = v1::MemoryNode::NewStub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
    v1::AttachRequest req;
    req.set_tenant_id(tenant_id);
    req.set_secret(secret);
    req.set_client_name(client_name);
    v1::AttachResponse resp;
    grpc::Status s = stub->Attach(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::Status(absl::StatusCode(s.error_code()),
                          "attach to " + address + ": " + s.error_message());
    }
    return Attachment{.session_token = resp.session_token(),
                      .data_addr = resp.data_addr(),
                      .node_id = resp.node_id(),
                      .incarnation = resp.incarnation(),
                      .data_tls = resp.data_tls(),
                      .data_addrs = {resp.data_addrs().begin(), resp.data_addrs().end()},
                      .rdma_devices = {resp.rdma_devices().begin(), resp.rdma_devices().end()},
                      .conditional_invalidate = resp.conditional_invalidate(),
                      .scrub_loads = resp.scrub_loads()};
  }

 private:
  const ControlPlaneTls tls_;
};

}  // namespace

std::unique_ptr<NodeAttacher> NewGrpcNodeAttacher(const ControlPlaneTls& tls) {
  return std::make_unique<GrpcNodeAttacher>(tls);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  const ControlPlaneTls tls{.ca_file = options.tls_ca_file,
                            .cert_file = options.tls_cert_file,
                            .key_file = options.tls_key_file,
                            .server_name = options.tls_server_name};
  if (absl::Status s = CheckControlPlaneTls(tls); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("Client::Connect: ", s.message()));
  }
  return Connect(options, NewGrpcNodeAttacher(tls));
}

}  // namespace farswap
