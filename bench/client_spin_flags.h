// client_spin_flags.h: the client's spin settings as farswap-bench's
// subcommands that start a Client (e2e, region) take them on the command
// line: --client-spin-us and --client-spin-per-page-us.
#ifndef FARSWAP_BENCH_CLIENT_SPIN_FLAGS_H_
#define FARSWAP_BENCH_CLIENT_SPIN_FLAGS_H_

#include <cstdint>
#include <optional>

#include "farswap/client/client_options.h"
#include "farswap/common/cli.h"

namespace farswap::bench {

// ClientSpinFlags: ClientOptions::spin_wait and spin_wait_per_page in
// microseconds; unset: the client's defaults.
struct ClientSpinFlags {
  std::optional<uint64_t> spin_us;
  std::optional<uint64_t> spin_per_page_us;
};

// AddClientSpinOptions adds --client-spin-us and --client-spin-per-page-us
// to `cmd`, bound to *f.
void AddClientSpinOptions(CLI::App* cmd, ClientSpinFlags* f);

// ApplyClientSpinFlags writes the settings that were given into *o.
void ApplyClientSpinFlags(const ClientSpinFlags& f, ClientOptions* o);

}  // namespace farswap::bench

#endif  // FARSWAP_BENCH_CLIENT_SPIN_FLAGS_H_
