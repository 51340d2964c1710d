// advertised_address.h: the data-plane address a node hands to clients in
// Attach. A node listening on an unspecified address (0.0.0.0:7000, [::]:7000,
// :7000) accepts connections on every interface, but that address means
// "this host" to whoever dials it: a client would connect to itself. Such a
// node must be told the address clients reach it at (--advertise-addr, in
// Kubernetes the pod IP from the downward API).
//
//   FARSWAP_RETURN_IF_ERROR(CheckAdvertisable(flags.data_addr, flags.advertise_addr));
//   std::string addr = AdvertisedDataAddress(bound, flags.advertise_addr);
//
// Thread safety: pure functions.
#ifndef FARSWAP_SERVER_SRC_ADVERTISED_ADDRESS_H_
#define FARSWAP_SERVER_SRC_ADVERTISED_ADDRESS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace farswap::server {

// IsUnspecifiedHost: the host part of "[scheme://]HOST:PORT" is empty,
// 0.0.0.0 or :: (with or without brackets).
bool IsUnspecifiedHost(absl::string_view address);

// CheckAdvertisable returns INVALID_ARGUMENT, with the flag to pass, when
// clients could not be handed a reachable address: data_addr unspecified and
// no advertise_addr, or an advertise_addr that is not HOST:PORT (port 0..65535)
// or names an unspecified host itself.
absl::Status CheckAdvertisable(absl::string_view data_addr, absl::string_view advertise_addr);

// AdvertisedDataAddress returns what Attach hands out: `bound` (the bound
// data-plane address, scheme stripped for tcp) when advertise_addr is empty;
// else advertise_addr with bound's scheme kept, and port 0 replaced by the
// bound port.
std::string AdvertisedDataAddress(absl::string_view bound, absl::string_view advertise_addr);

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_SRC_ADVERTISED_ADDRESS_H_
