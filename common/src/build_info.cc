#include "farswap/common/build_info.h"

#include "absl/time/clock.h"
#include "farswap/common/version.h"  // generated (common/src/version.h.in)

namespace farswap {
namespace {
// Initialised before main: the process's start, as close as a library sees it.
const absl::Time kProcessStart = absl::Now();
}  // namespace

const char* FarswapVersion() { return cli::kProjectVersion; }

absl::Time ProcessStartTime() { return kProcessStart; }

}  // namespace farswap
