// node_service.h: the gRPC control plane of a memory node
// (proto/farswap/v1/memory_node.proto), on the callback server API.
//
//   MemoryNodeService service(&store, &tenants,
//                             {.node_id = "node-a", .data_addr = dp.address(), .auth = &auth});
//   builder.RegisterService(&service);
//
// absl::Status codes map 1:1 onto gRPC's at this edge.
//
// Thread safety: safe for concurrent calls (gRPC calls it from its threads).
#ifndef FARSWAP_SERVER_NODE_SERVICE_H_
#define FARSWAP_SERVER_NODE_SERVICE_H_

#include <functional>
#include <string>
#include <vector>

#include "farswap/common/mutex.h"
#include "farswap/server/control_plane_auth.h"
#include "farswap/server/data_plane.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "farswap/transport/transport.h"
#include "farswap/v1/memory_node.grpc.pb.h"

namespace farswap::server {

struct NodeServiceOptions {
  std::string node_id;
  std::string data_addr;  // what Attach tells clients to connect to
  // more_data_addrs: further data-plane addresses, with their scheme
  // ("ucx://10.0.0.5:7001"), handed out after data_addr in
  // AttachResponse.data_addrs.
  std::vector<std::string> more_data_addrs;
  bool data_tls = false;   // Attach tells clients the data plane speaks only TLS
  PageStoreLimits limits;  // the limits the store was created with
  // data_plane: where GetStats reads connections and bytes in/out; not
  // owned, must outlive the service. nullptr reports them as 0.
  const DataPlaneServer* data_plane = nullptr;
  // on_drain_changed: called after every Drain RPC has set the store's
  // draining flag (the server updates its health status at once, rather
  // than at its next once-a-second look). May be empty.
  std::function<void()> on_drain_changed;
  // auth: who may call GetStats, SetLimits, Compact and Drain
  // (control_plane_auth.h). Not owned; must outlive the service. Required.
  ControlPlaneAuth* auth = nullptr;
};

class MemoryNodeService final : public v1::MemoryNode::CallbackService {
 public:
  // store and tenants are not owned and must outlive the service.
  MemoryNodeService(PageStore* store, TenantRegistry* tenants, const NodeServiceOptions& options);

  grpc::ServerUnaryReactor* Attach(grpc::CallbackServerContext* ctx, const v1::AttachRequest* req,
                                   v1::AttachResponse* resp) override;
  grpc::ServerUnaryReactor* Detach(grpc::CallbackServerContext* ctx, const v1::DetachRequest* req,
                                   v1::DetachResponse* resp) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* req,
                                     v1::GetStatsResponse* resp) override;
  grpc::ServerUnaryReactor* SetLimits(grpc::CallbackServerContext* ctx,
                                      const v1::SetLimitsRequest* req,
                                      v1::SetLimitsResponse* resp) override;
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx, const v1::CompactRequest* req,
                                    v1::CompactResponse* resp) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx, const v1::DrainRequest* req,
                                  v1::DrainResponse* resp) override;

  // FillStats is an operator's GetStats without gRPC, for the server's own
  // logging.
  absl::Status FillStats(const std::string& tenant_filter, v1::GetStatsResponse* resp) const;

 private:
  PageStore* const store_;
  TenantRegistry* const tenants_;
  const std::string node_id_;
  const uint64_t incarnation_;  // random per process (AttachResponse.incarnation)
  const std::string data_addr_;
  const std::vector<std::string> data_addrs_;  // data_addr_, then more_data_addrs
  const bool data_tls_;
  const DataPlaneServer* const data_plane_;
  const transport::RdmaProbe rdma_;  // probed once, at construction
  const std::function<void()> on_drain_changed_;
  ControlPlaneAuth* const auth_;
  // mu_ serialises SetLimits (read, change, apply, record) as one step.
  // Lock order: mu_ -> the page store's and tenant registry's locks.
  Mutex mu_;
  PageStoreLimits limits_ ABSL_GUARDED_BY(mu_);
};

// ToGrpcStatus maps an absl::Status onto the same gRPC code and message.
grpc::Status ToGrpcStatus(const absl::Status& s);

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_NODE_SERVICE_H_
