// data_address_choice.cc: ChooseDataAddress (data_address_choice.h).
#include "data_address_choice.h"

#include "absl/strings/str_cat.h"
#include "farswap/transport/transport.h"

namespace farswap::client_internal {

absl::Status CheckDataTransportPreference(absl::string_view preference) {
  if (preference == "auto" || preference == "tcp" || preference == "ucx") {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("ClientOptions: data_transport \"", preference, "\" is not auto, tcp or ucx"));
}

std::string ChooseDataAddress(const Attachment& a, absl::string_view preference,
                              bool client_has_rdma) {
  absl::string_view want = preference;
  if (preference == "auto") {
    if (a.rdma_devices.empty() || !client_has_rdma) return a.data_addr;
    want = "ucx";
  }
  for (const std::string& addr : a.data_addrs) {
    if (transport::AddressScheme(addr) == want) return addr;
  }
  return a.data_addr;
}

}  // namespace farswap::client_internal
