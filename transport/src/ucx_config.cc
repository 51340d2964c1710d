// ucx_config.cc: farswap's settings on top of UCX's configuration.
#include "ucx_config.h"

#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace farswap::transport {

namespace {

// TransportsUcxConsiders: the options' ucx_transports, else UCX_TLS; empty
// when neither names any (UCX's default: all of them).
std::string TransportsUcxConsiders(const TransportOptions& options) {
  if (!options.ucx_transports.empty()) return options.ucx_transports;
  const char* env = std::getenv("UCX_TLS");
  return env == nullptr ? "" : env;
}

bool IsVerbsTransport(absl::string_view name) {
  return name == "ib" || absl::StartsWith(name, "rc") || absl::StartsWith(name, "dc") ||
         absl::StartsWith(name, "ud");
}

}  // namespace

bool MayUseVerbs(const TransportOptions& options) {
  const std::string tls = TransportsUcxConsiders(options);
  if (tls.empty()) return true;
  if (absl::StartsWith(tls, "^")) {
    // All but the ones named: verbs unless they name all of it.
    for (absl::string_view name : absl::StrSplit(tls.substr(1), ',')) {
      if (name == "ib") return false;
    }
    return true;
  }
  for (absl::string_view name : absl::StrSplit(tls, ',')) {
    if (name == "all" || IsVerbsTransport(name)) return true;
  }
  return false;
}

// Asked before setting MM_ERROR_HANDLING: setting a variable no transport
// reads makes UCX warn.
bool MayUseSharedMemory(const TransportOptions& options) {
  const std::string tls = TransportsUcxConsiders(options);
  if (tls.empty()) return true;  // UCX's default: all
  if (absl::StartsWith(tls, "^")) {
    // All but the ones named: shared memory unless they name all of it.
    for (absl::string_view name : absl::StrSplit(tls.substr(1), ',')) {
      if (name == "sm" || name == "shm" || name == "mm") return false;
    }
    return true;
  }
  for (absl::string_view name : absl::StrSplit(tls, ',')) {
    if (name == "all" || name == "sm" || name == "shm" || name == "mm" || name == "posix" ||
        name == "sysv" || name == "xpmem") {
      return true;
    }
  }
  return false;
}

// Shared memory: every endpoint asks for peer-failure handling (a node
// that dies must fail its requests with UNAVAILABLE), and UCX 1.13 leaves
// the shared-memory transports out of such endpoints unless
// MM_ERROR_HANDLING=y, so two processes of one machine would talk over
// loopback TCP.
//
// Zero-copy threshold: UCX's automatic ZCOPY_THRESH weighs memory
// registration, which its TCP transport does not need, so it sent every
// page's frame zero-copy. Measured on a 2-core VM (farswap-bench node,
// UCX_TLS=tcp, 4 rounds side by side), that held stores to 53-60k pages/s
// against 75-83k with 8 KiB (our TCP backend: 68-75k); loads, and shared
// memory, were unchanged. 8 KiB is UCX's bcopy segment over TCP, shared
// memory and verbs (UCX_SEG_SIZE and the transports' own, 8K-8256): a
// one-page frame always fits one, and coalesced frames and batches above
// it still go zero-copy or by rendezvous.
//
// Rendezvous: a message sent by rendezvous waits a round trip before its
// data moves (the receiver asks for it), which pays where RDMA then moves
// the data without a copy. Over TCP the bytes cross the socket either way,
// and over shared memory the round trip (two wake-ups) costs more than
// copying any frame (at most kMaxFrameSize, about 1 MiB) through UCX's
// segments. So where verbs cannot carry frames, everything goes eager.
// Measured on a 2-core VM (farswap-bench e2e, one node, 32-page batches
// sent as one contiguous message: UcxConnection::PostLocked, UCX_TLS=tcp,
// 3 rounds): loads 106-133k pages/s with UCX's threshold,
// 173-210k with 128K, 179-232k with 1M; our TCP backend 208-223k.
absl::Status ConfigureUcx(const TransportOptions& options, ucp_config_t* config,
                          bool rdma_device_present) {
  if (std::getenv("UCX_ZCOPY_THRESH") == nullptr) {
    if (ucs_status_t s = ucp_config_modify(config, "ZCOPY_THRESH", kUcxZeroCopyThreshold);
        s != UCS_OK) {
      return absl::UnavailableError(
          absl::StrCat("ucx: setting ZCOPY_THRESH: ", ucs_status_string(s)));
    }
  }
  const bool verbs = rdma_device_present && MayUseVerbs(options);
  if (!verbs && std::getenv("UCX_RNDV_THRESH") == nullptr) {
    if (ucs_status_t s = ucp_config_modify(config, "RNDV_THRESH", "inf"); s != UCS_OK) {
      return absl::UnavailableError(
          absl::StrCat("ucx: setting RNDV_THRESH: ", ucs_status_string(s)));
    }
  }
  if (!options.ucx_transports.empty()) {
    if (ucs_status_t s = ucp_config_modify(config, "TLS", options.ucx_transports.c_str());
        s != UCS_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat("ucx transports \"", options.ucx_transports, "\": ", ucs_status_string(s)));
    }
  }
  if (std::getenv("UCX_MM_ERROR_HANDLING") == nullptr && MayUseSharedMemory(options)) {
    if (ucs_status_t s = ucp_config_modify(config, "MM_ERROR_HANDLING", "y"); s != UCS_OK) {
      return absl::UnavailableError(
          absl::StrCat("ucx: setting MM_ERROR_HANDLING: ", ucs_status_string(s)));
    }
  }
  return absl::OkStatus();
}

}  // namespace farswap::transport
