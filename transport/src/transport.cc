// transport.cc: address helpers and the backend factory (transport.h).
#include "farswap/transport/transport.h"

#include "absl/strings/str_cat.h"

namespace farswap::transport {

absl::string_view AddressScheme(absl::string_view address) {
  size_t sep = address.find("://");
  if (sep == address.npos) {
    // A bare scheme name ("tcp", "rdma") names itself; "host:port" is TCP.
    if (address.find(':') == address.npos && !address.empty()) return address;
    return "tcp";
  }
  return address.substr(0, sep);
}

absl::string_view StripScheme(absl::string_view address) {
  size_t sep = address.find("://");
  return sep == address.npos ? address : address.substr(sep + 3);
}

absl::StatusOr<std::shared_ptr<Connection>> Transport::ConnectTls(const std::string& address,
                                                                  ConnectionHandler,
                                                                  const TlsClientOptions&) {
  return absl::UnimplementedError(
      absl::StrCat("the ", scheme(), " transport has no TLS (connecting to ", address, ")"));
}

absl::StatusOr<std::unique_ptr<Listener>> Transport::ListenTls(const std::string& address,
                                                               AcceptHandler,
                                                               const TlsServerOptions&) {
  return absl::UnimplementedError(
      absl::StrCat("the ", scheme(), " transport has no TLS (listening on ", address, ")"));
}

absl::StatusOr<std::unique_ptr<Transport>> CreateTransport(absl::string_view address_or_scheme,
                                                           const TransportOptions& options) {
  absl::string_view scheme = AddressScheme(address_or_scheme);
  if (scheme == "tcp") return CreateTcpTransport(options);
  if (scheme == "rdma") return CreateRdmaTransport(options);
  if (scheme == "ucx") return CreateUcxTransport(options);
  return absl::InvalidArgumentError(absl::StrCat("unknown transport scheme '", scheme, "' in '",
                                                 address_or_scheme,
                                                 "' (expected tcp, ucx or rdma)"));
}

}  // namespace farswap::transport
