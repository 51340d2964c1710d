// build_info.h: what a farswap binary reports about itself in stats and
// /metrics: its version (CMake's project version) and when the process
// started.
//
//   spdlog::info("farswap {} up {}s", FarswapVersion(),
//                absl::ToInt64Seconds(absl::Now() - ProcessStartTime()));
//
// Thread safety: both are safe to call from any thread.
#ifndef FARSWAP_COMMON_BUILD_INFO_H_
#define FARSWAP_COMMON_BUILD_INFO_H_

#include "absl/time/time.h"

namespace farswap {

// FarswapVersion: "MAJOR.MINOR.PATCH" from project() in CMakeLists.txt
// (cli::kProjectVersion of the generated farswap/common/version.h).
const char* FarswapVersion();

// ProcessStartTime: when this process started (static initialisation of
// farswap_common, before main).
absl::Time ProcessStartTime();

}  // namespace farswap

#endif  // FARSWAP_COMMON_BUILD_INFO_H_
