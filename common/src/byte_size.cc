#include "farswap/common/byte_size.h"

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace farswap {

absl::StatusOr<uint64_t> ParseBytes(const std::string& text) {
  std::string s = text;
  uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'K':
      case 'k':
        mult = uint64_t{1} << 10;
        break;
      case 'M':
      case 'm':
        mult = uint64_t{1} << 20;
        break;
      case 'G':
      case 'g':
        mult = uint64_t{1} << 30;
        break;
      default:
        break;
    }
    if (mult != 1) s.pop_back();
  }
  uint64_t v;
  if (s.empty() || s[0] == '-' || s[0] == '+' || !absl::SimpleAtoi(s, &v) ||
      v > UINT64_MAX / mult) {
    return absl::InvalidArgumentError(absl::StrCat("not a byte count: '", text, "'"));
  }
  return v * mult;
}

}  // namespace farswap
