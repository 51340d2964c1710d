#include "bench_args.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace farswap::bench {

absl::StatusOr<Args> Args::Parse(int argc, char** argv, const std::set<std::string>& known,
                                 const std::set<std::string>& boolean_flags) {
  Args a;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
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

absl::StatusOr<uint64_t> Args::GetBytes(const std::string& name, uint64_t fallback) const {
  if (!Has(name)) return fallback;
  std::string s = Get(name);
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
  if (!absl::SimpleAtoi(s, &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not a byte count: ", Get(name)));
  }
  return v * mult;
}

namespace {
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}
}  // namespace

Json& Json::Num(const std::string& key, double v) {
  char buf[64];
  if (!std::isfinite(v)) return Raw(key, "null");
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return Raw(key, buf);
}
Json& Json::Int(const std::string& key, uint64_t v) { return Raw(key, std::to_string(v)); }
Json& Json::Bool(const std::string& key, bool v) { return Raw(key, v ? "true" : "false"); }
Json& Json::Str(const std::string& key, const std::string& v) { return Raw(key, Quote(v)); }
Json& Json::Obj(const std::string& key, const Json& v) { return Raw(key, v.ToString()); }
Json& Json::Raw(const std::string& key, const std::string& json) {
  fields_.emplace_back(key, json);
  return *this;
}
std::string Json::ToString() const {
  std::string s = "{";
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (i) s += ", ";
    s += Quote(fields_[i].first) + ": " + fields_[i].second;
  }
  return s + "}";
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, size_t(p / 100.0 * double(v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

}  // namespace farswap::bench
