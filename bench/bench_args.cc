#include "bench_args.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "farswap/common/cpu_idle.h"

namespace farswap::bench {

int ExitStatusFor(const std::string& command, const absl::Status& status) {
  std::cerr << "farswap-bench " << command << ": " << status << std::endl;
  return status.code() == absl::StatusCode::kInvalidArgument ? cli::kUsageExitStatus : 1;
}

Json& Json::Num(const std::string& key, double v) {
  if (!std::isfinite(v)) {
    value_[key] = nullptr;
    return *this;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  value_[key] = std::strtod(buf, nullptr);
  return *this;
}
Json& Json::NumList(const std::string& key, const std::vector<double>& v) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (double x : v) {
    Json one;
    one.Num("x", x);  // the same rounding (and null for a non-finite number) as Num
    list.push_back(one.value_["x"]);
  }
  value_[key] = std::move(list);
  return *this;
}
Json& Json::Int(const std::string& key, uint64_t v) {
  value_[key] = v;
  return *this;
}
Json& Json::Bool(const std::string& key, bool v) {
  value_[key] = v;
  return *this;
}
Json& Json::Str(const std::string& key, const std::string& v) {
  value_[key] = v;
  return *this;
}
Json& Json::Obj(const std::string& key, const Json& v) {
  value_[key] = v.value_;
  return *this;
}
Json& Json::StrList(const std::string& key, const std::vector<std::string>& v) {
  value_[key] = v;
  return *this;
}
Json& Json::ObjList(const std::string& key, const std::vector<Json>& v) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Json& j : v) list.push_back(j.value_);
  value_[key] = std::move(list);
  return *this;
}

Json CpuIdleJson() {
  const CpuIdleState s = ReadCpuIdleState();
  Json j;
  j.Str("driver", s.driver).Str("governor", s.governor);
  if (s.guest_halt_poll_ns.has_value()) j.Int("guest_halt_poll_ns", *s.guest_halt_poll_ns);
  j.Bool("halt_polling_off", s.halt_polling_off());
  return j;
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, size_t(p / 100.0 * double(v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

}  // namespace farswap::bench
