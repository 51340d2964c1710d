#include "bench_args.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace farswap::bench {

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
Json& Json::StrList(const std::string& key, const std::vector<std::string>& v) {
  std::string list = "[";
  for (size_t i = 0; i < v.size(); ++i) list += (i ? ", " : "") + Quote(v[i]);
  return Raw(key, list + "]");
}
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
