// socket_address.h: the "host:port" / "[v6]:port" addresses both socket
// backends (tcp_transport.cc, ucx_transport.cc) parse and print. Internal to
// the transport library.
#ifndef FARSWAP_TRANSPORT_SRC_SOCKET_ADDRESS_H_
#define FARSWAP_TRANSPORT_SRC_SOCKET_ADDRESS_H_

#include <sys/socket.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace farswap::transport {

struct HostPort {
  std::string host;  // without brackets; empty: any (a listener's wildcard)
  std::string port;  // digits only
};

// ParseHostPort splits "[scheme://]host:port" or "[scheme://][v6]:port".
// INVALID_ARGUMENT, naming the address, when it has no port or a port that
// is not numeric.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address);

// FormatSockaddr prints an IPv4 or IPv6 socket address as
// "scheme://host:port" or "scheme://[host]:port".
std::string FormatSockaddr(const sockaddr_storage& ss, absl::string_view scheme);

}  // namespace farswap::transport

#endif  // FARSWAP_TRANSPORT_SRC_SOCKET_ADDRESS_H_
