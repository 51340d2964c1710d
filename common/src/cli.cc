#include "farswap/common/cli.h"

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace farswap {

absl::StatusOr<Args> Args::Parse(int argc, char** argv, const std::set<std::string>& known,
                                 const std::set<std::string>& boolean_flags,
                                 bool allow_positional) {
  Args a;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      if (allow_positional) {
        a.positional_.push_back(arg);
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2), value;
    size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (boolean_flags.count(name)) {
      value = "true";
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
    }
    if (!known.count(name))
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    a.values_[name] = value;
  }
  return a;
}

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<double> Args::GetDouble(const std::string& name, double fallback) const {
  if (!Has(name)) return fallback;
  double v;
  if (!absl::SimpleAtod(Get(name), &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not a number: ", Get(name)));
  }
  return v;
}

absl::StatusOr<uint64_t> Args::GetUint(const std::string& name, uint64_t fallback) const {
  if (!Has(name)) return fallback;
  uint64_t v;
  if (!absl::SimpleAtoi(Get(name), &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": not a whole number: ", Get(name)));
  }
  return v;
}

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
  if (!absl::SimpleAtoi(s, &v) || v > UINT64_MAX / mult) {
    return absl::InvalidArgumentError(absl::StrCat("not a byte count: '", text, "'"));
  }
  return v * mult;
}

absl::StatusOr<uint64_t> Args::GetBytes(const std::string& name, uint64_t fallback) const {
  if (!Has(name)) return fallback;
  absl::StatusOr<uint64_t> v = ParseBytes(Get(name));
  if (!v.ok())
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", v.status().message()));
  return v;
}

}  // namespace farswap
