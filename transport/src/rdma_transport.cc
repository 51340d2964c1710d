// rdma_transport.cc: the raw-verbs RDMA backend's entry point — device
// probing only (ProbeRdmaDevices, reported in node stats). RDMA data goes
// through the UCX backend (ucx_transport.cc).
//
// A raw-verbs data path would be: librdmacm for connection setup, RC queue
// pairs, two-sided SEND/RECV of header + payload into pre-posted registered
// receive slots, credit-based flow control and zero-copy replies from the
// registered pool arena. None of that is written; UCX carries RDMA today. What is here is the
// honest part: the backend builds against rdma-core, and CreateRdmaTransport tells the caller
// precisely why it cannot run — no device (the common case without a NIC or Soft-RoCE), or a device
// but no data path yet. It never pretends to work.
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "farswap/transport/transport.h"

namespace farswap::transport {

RdmaProbe ProbeRdmaDevices() {
  RdmaProbe probe;
  int num_devices = 0;
  errno = 0;
  ibv_device** devices = ibv_get_device_list(&num_devices);
  if (devices == nullptr) {
    const int err = errno;
    probe.missing = absl::StrCat("ibv_get_device_list returned NULL (",
                                 err == ENOSYS ? "ENOSYS" : std::strerror(err), ")");
    return probe;
  }
  for (int i = 0; i < num_devices; ++i) probe.devices.push_back(ibv_get_device_name(devices[i]));
  ibv_free_device_list(devices);
  if (probe.devices.empty()) probe.missing = "ibv_get_device_list found 0 devices";
  return probe;
}

absl::StatusOr<std::unique_ptr<Transport>> CreateRdmaTransport(const TransportOptions& options) {
  (void)options;
  const RdmaProbe probe = ProbeRdmaDevices();
  if (probe.devices.empty()) {
    return absl::UnavailableError(
        absl::StrCat("no RDMA device: ", probe.missing,
                     "; to get one in software: rdma link add rxe0 type rxe netdev eth0"));
  }
  return absl::UnimplementedError(
      absl::StrCat("RDMA device(s) found (", absl::StrJoin(probe.devices, ", "),
                   ") but the raw-verbs data path is not implemented; use ucx:// (UCX runs over "
                   "these devices) or tcp://"));
}

}  // namespace farswap::transport
