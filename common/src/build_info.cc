#include "farswap/common/build_info.h"

#include "absl/time/clock.h"

#ifndef FARSWAP_VERSION
#error "FARSWAP_VERSION is set by common/CMakeLists.txt"
#endif

namespace farswap {
namespace {
// Initialised before main: the process's start, as close as a library sees it.
const absl::Time kProcessStart = absl::Now();
}  // namespace

const char* FarswapVersion() { return FARSWAP_VERSION; }

absl::Time ProcessStartTime() { return kProcessStart; }

}  // namespace farswap
