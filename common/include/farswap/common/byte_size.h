// byte_size.h: byte counts as people write them ("64K", "256M", "2G").
//
//   FARSWAP_ASSIGN_OR_RETURN(uint64_t quota, ParseBytes("512M"));  // 536870912
#ifndef FARSWAP_COMMON_BYTE_SIZE_H_
#define FARSWAP_COMMON_BYTE_SIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace farswap {

// ParseBytes parses a whole number with an optional K, M or G suffix (either
// case; powers of 1024). INVALID_ARGUMENT for anything else or an overflow.
absl::StatusOr<uint64_t> ParseBytes(const std::string& text);

}  // namespace farswap

#endif  // FARSWAP_COMMON_BYTE_SIZE_H_
