// constant_time.h: comparing secrets without leaking where they differ.
#ifndef FARSWAP_SERVER_SRC_CONSTANT_TIME_H_
#define FARSWAP_SERVER_SRC_CONSTANT_TIME_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace farswap::server {

// ConstantTimeEquals: a == b, in time that depends on the lengths only (a
// length mismatch returns at once: lengths are not secret here).
inline bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = diff | uint8_t(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_SRC_CONSTANT_TIME_H_
