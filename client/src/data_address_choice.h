// data_address_choice.h: which of a node's data-plane addresses a client
// dials. A node may serve its data plane on several backends (farswap-server
// --ucx-data-addr beside TCP) and hands them all out in Attach, with the
// RDMA devices of its host; the client picks by ClientOptions::data_transport.
//
//   a.data_addr = ChooseDataAddress(a, options.data_transport, client_has_rdma);
//
// Thread safety: pure functions.
#ifndef FARSWAP_CLIENT_SRC_DATA_ADDRESS_CHOICE_H_
#define FARSWAP_CLIENT_SRC_DATA_ADDRESS_CHOICE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "farswap/client/node_attacher.h"

namespace farswap::client_internal {

// CheckDataTransportPreference: OK for "auto", "tcp" and "ucx"; else
// INVALID_ARGUMENT naming the value.
absl::Status CheckDataTransportPreference(absl::string_view preference);

// ChooseDataAddress returns the address to dial:
// - "auto": the node's ucx:// address when it serves one and both the node's
//   host (a.rdma_devices) and this one (client_has_rdma) have an RDMA device
//   (UCX then runs over verbs); else the node's primary (a.data_addr). Without
//   RDMA the TCP backend is the faster way over TCP.
// - "tcp" / "ucx": the node's address of that backend when it serves one,
//   else the primary.
// An address without a scheme is tcp. A node that lists no data_addrs (older
// nodes) gets its data_addr.
std::string ChooseDataAddress(const Attachment& a, absl::string_view preference,
                              bool client_has_rdma);

}  // namespace farswap::client_internal

#endif  // FARSWAP_CLIENT_SRC_DATA_ADDRESS_CHOICE_H_
