// node_attacher.h: how the client opens a session on a memory node — the
// control-plane step, behind an interface so the data-path core stays free
// of gRPC (and its tests can run under ThreadSanitizer).
#ifndef FARSWAP_CLIENT_NODE_ATTACHER_H_
#define FARSWAP_CLIENT_NODE_ATTACHER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "farswap/client/control_plane_channel.h"

namespace farswap {

// Attachment is what a node's Attach returns.
struct Attachment {
  std::string session_token;  // presented in the data plane's HELLO
  std::string data_addr;      // host:port of the node's data plane
  std::string node_id;
  // incarnation: the node process's identity; a change means the node
  // restarted empty. 0: unknown (treated as unchanged).
  uint64_t incarnation = 0;
  // data_tls: the node's data plane speaks only TLS.
  bool data_tls = false;
  // data_addrs: every data-plane address the node serves, data_addr first
  // (AttachResponse.data_addrs; empty from older nodes). rdma_devices: the
  // RDMA devices of the node's host. The client dials one of data_addrs
  // (ClientOptions::data_transport).
  std::vector<std::string> data_addrs;
  std::vector<std::string> rdma_devices;
  // conditional_invalidate: the node takes a conditional INVALIDATE (one
  // with a version: transport/frame.h). false from older nodes.
  bool conditional_invalidate = false;
  // scrub_loads: the node takes the SCRUB flag on LOAD requests (a scrub's
  // load reads the medium, not the node's read cache: transport/frame.h).
  // false from older nodes.
  bool scrub_loads = false;
};

// NodeAttacher attaches to one node by its control-plane address.
// Implementations must be safe for concurrent use.
class NodeAttacher {
 public:
  virtual ~NodeAttacher() = default;
  // Attach opens a session for `tenant_id`; the node's status on failure
  // (UNAVAILABLE unreachable, UNAUTHENTICATED wrong secret,
  // FAILED_PRECONDITION draining), DEADLINE_EXCEEDED after `timeout`.
  virtual absl::StatusOr<Attachment> Attach(const std::string& address,
                                            const std::string& tenant_id, const std::string& secret,
                                            const std::string& client_name,
                                            absl::Duration timeout) = 0;
};

// NewGrpcNodeAttacher calls farswap.v1.MemoryNode/Attach over gRPC,
// through TLS when tls.enabled() (its files read at each Attach). Defined
// in the farswap_client library (the only part that links gRPC).
std::unique_ptr<NodeAttacher> NewGrpcNodeAttacher(const ControlPlaneTls& tls = {});

}  // namespace farswap

#endif  // FARSWAP_CLIENT_NODE_ATTACHER_H_
