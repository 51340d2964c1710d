#include "advertised_address.h"

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "farswap/transport/transport.h"

namespace farswap::server {
namespace {

struct HostPort {
  absl::string_view host;  // brackets removed
  absl::string_view port;
};

// SplitHostPort splits "HOST:PORT" or "[V6]:PORT" at the last colon; false
// when there is no colon.
bool SplitHostPort(absl::string_view address, HostPort* out) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return false;
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  *out = {host, address.substr(colon + 1)};
  return true;
}

bool UnspecifiedHost(absl::string_view host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "0:0:0:0:0:0:0:0";
}

}  // namespace

bool IsUnspecifiedHost(absl::string_view address) {
  HostPort hp;
  return SplitHostPort(transport::StripScheme(address), &hp) && UnspecifiedHost(hp.host);
}

absl::Status CheckAdvertisable(absl::string_view data_addr, absl::string_view advertise_addr) {
  if (advertise_addr.empty()) {
    if (!IsUnspecifiedHost(data_addr)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "--data-addr ", data_addr,
        " listens on every address, which clients cannot dial (they would connect to "
        "themselves): pass --advertise-addr HOST:PORT, the address clients reach this node at "
        "(in Kubernetes the pod IP, from the downward API)"));
  }
  HostPort hp;
  uint32_t port = 0;
  if (!SplitHostPort(advertise_addr, &hp) || hp.host.empty() || !absl::SimpleAtoi(hp.port, &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--advertise-addr ", advertise_addr, ": expected HOST:PORT (port 0 = the bound port)"));
  }
  if (UnspecifiedHost(hp.host)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--advertise-addr ", advertise_addr,
                     ": an unspecified address cannot be dialled; give one clients reach"));
  }
  return absl::OkStatus();
}

std::string AdvertisedDataAddress(absl::string_view bound, absl::string_view advertise_addr) {
  const absl::string_view scheme = transport::AddressScheme(bound);
  const absl::string_view bound_hostport = transport::StripScheme(bound);
  const std::string prefix = scheme == "tcp" ? "" : absl::StrCat(scheme, "://");
  if (advertise_addr.empty()) return absl::StrCat(prefix, bound_hostport);
  HostPort adv, b;
  SplitHostPort(advertise_addr, &adv);
  if (adv.port != "0" || !SplitHostPort(bound_hostport, &b)) {
    return absl::StrCat(prefix, advertise_addr);
  }
  return absl::StrCat(prefix, advertise_addr.substr(0, advertise_addr.rfind(':')), ":", b.port);
}

}  // namespace farswap::server
