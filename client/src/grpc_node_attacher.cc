// grpc_node_attacher.cc: NodeAttacher over gRPC (farswap.v1.MemoryNode/
// Attach), and Client::Connect with it. The only client file that includes
// gRPC headers.
#include <grpcpp/grpcpp.h>

#include <chrono>

#include "farswap/client/client.h"
#include "farswap/client/node_attacher.h"
#include "farswap/v1/memory_node.grpc.pb.h"

namespace farswap {
namespace {

// GrpcNodeAttacher makes one short-lived gRPC channel per Attach (attaches
// are rare: at start and after a failure). Thread-safe: no shared state.
class GrpcNodeAttacher final : public NodeAttacher {
 public:
  absl::StatusOr<Attachment> Attach(const std::string& address, const std::string& tenant_id,
                                    const std::string& secret, const std::string& client_name,
                                    absl::Duration timeout) override {
    auto stub =
        v1::MemoryNode::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
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
                      .incarnation = resp.incarnation()};
  }
};

}  // namespace

std::unique_ptr<NodeAttacher> NewGrpcNodeAttacher() { return std::make_unique<GrpcNodeAttacher>(); }

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  return Connect(options, NewGrpcNodeAttacher());
}

}  // namespace farswap
