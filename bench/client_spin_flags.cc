#include "client_spin_flags.h"

#include "absl/time/time.h"

namespace farswap::bench {

void AddClientSpinOptions(CLI::App* cmd, ClientSpinFlags* f) {
  cmd->add_option("--client-spin-us", f->spin_us,
                  "the client's synchronous calls spin this long before they sleep "
                  "(ClientOptions::spin_wait; default: the client's, 100)")
      ->check(CLI::Range(0, 1000000));
  cmd->add_option("--client-spin-per-page-us", f->spin_per_page_us,
                  "a batch call of n pages spins n - 1 times this longer, at most 1 ms in all "
                  "(ClientOptions::spin_wait_per_page; default: the client's, 6)")
      ->check(CLI::Range(0, 1000000));
}

void ApplyClientSpinFlags(const ClientSpinFlags& f, ClientOptions* o) {
  if (f.spin_us) o->spin_wait = absl::Microseconds(int64_t(*f.spin_us));
  if (f.spin_per_page_us) o->spin_wait_per_page = absl::Microseconds(int64_t(*f.spin_per_page_us));
}

}  // namespace farswap::bench
