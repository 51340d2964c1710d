// socket_address.cc: see socket_address.h.
#include "socket_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "absl/strings/str_cat.h"
#include "farswap/transport/transport.h"

namespace farswap::transport {

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address) {
  absl::string_view rest = StripScheme(address);
  HostPort hp;
  size_t colon;
  if (!rest.empty() && rest.front() == '[') {  // [v6]:port
    size_t close = rest.find(']');
    if (close == rest.npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("address '", address, "' is not [host]:port"));
    }
    hp.host = std::string(rest.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = rest.rfind(':');
    if (colon == rest.npos) {
      return absl::InvalidArgumentError(absl::StrCat("address '", address, "' is not host:port"));
    }
    hp.host = std::string(rest.substr(0, colon));
  }
  hp.port = std::string(rest.substr(colon + 1));
  if (hp.port.empty() || hp.port.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("address '", address, "' has no numeric port"));
  }
  return hp;
}

std::string FormatSockaddr(const sockaddr_storage& ss, absl::string_view scheme) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return absl::StrCat(scheme, "://", host, ":", ntohs(in->sin_port));
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
  return absl::StrCat(scheme, "://[", host, "]:", ntohs(in6->sin6_port));
}

}  // namespace farswap::transport
