// ucx_config.h: what the UCX backend sets on top of UCX's own configuration
// (its UCX_* environment variables). Internal to the transport library;
// ucx_transport.cc applies it to the UCP context it creates.
#ifndef FARSWAP_TRANSPORT_SRC_UCX_CONFIG_H_
#define FARSWAP_TRANSPORT_SRC_UCX_CONFIG_H_

#include <ucp/api/ucp.h>

#include <cstddef>

#include "absl/status/status.h"
#include "farswap/transport/transport.h"

namespace farswap::transport {

// kUcxZeroCopyThreshold: UCX's ZCOPY_THRESH unless UCX_ZCOPY_THRESH is set.
// A message below it is copied into UCX's own send buffer (bcopy), at or
// above it sent from the caller's buffers (zcopy); see ConfigureUcx.
inline constexpr char kUcxZeroCopyThreshold[] = "8K";
inline constexpr size_t kUcxZeroCopyThresholdBytes = 8 * 1024;

// MayUseVerbs: whether the transports UCX will consider include an RDMA
// (InfiniBand/RoCE verbs) one: rc, dc, ud in any of their flavours, "ib",
// or all of them.
bool MayUseVerbs(const TransportOptions& options);

// MayUseSharedMemory: whether the transports UCX will consider (the
// options' ucx_transports, else UCX_TLS, else UCX's default: all) include a
// shared-memory one.
bool MayUseSharedMemory(const TransportOptions& options);

// ConfigureUcx applies farswap's settings to `config` (from
// ucp_config_read): the options' ucx_transports as TLS; MM_ERROR_HANDLING=y
// where shared memory may be used; ZCOPY_THRESH=kUcxZeroCopyThreshold; and,
// unless verbs may carry frames (MayUseVerbs and `rdma_device_present`),
// RNDV_THRESH=inf. A UCX_MM_ERROR_HANDLING, UCX_ZCOPY_THRESH or
// UCX_RNDV_THRESH in the environment wins over farswap's value.
// INVALID_ARGUMENT for transports UCX does not know.
absl::Status ConfigureUcx(const TransportOptions& options, ucp_config_t* config,
                          bool rdma_device_present);

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_SRC_UCX_CONFIG_H_
