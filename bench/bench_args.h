// bench_args.h: the JSON writer and statistics farswap-bench's subcommands
// share (flags: farswap/common/cli.h).
#ifndef FARSWAP_BENCH_BENCH_ARGS_H_
#define FARSWAP_BENCH_BENCH_ARGS_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "farswap/common/cli.h"
#include "farswap/common/mutex.h"

namespace farswap::bench {

using ::farswap::Args;

// Json builds one JSON object (flat, or with nested objects) as text.
class Json {
 public:
  Json& Num(const std::string& key, double v);
  Json& Int(const std::string& key, uint64_t v);
  Json& Bool(const std::string& key, bool v);
  Json& Str(const std::string& key, const std::string& v);
  Json& Obj(const std::string& key, const Json& v);
  Json& StrList(const std::string& key, const std::vector<std::string>& v);
  Json& Raw(const std::string& key, const std::string& json);
  std::string ToString() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// InFlightWindow keeps at most `depth` asynchronous operations of one
// issuing thread in flight: Acquire before issuing, Release from the
// completion (any thread), Drain to wait for the rest. Thread-safe.
class InFlightWindow {
 public:
  explicit InFlightWindow(uint64_t depth) : depth_(depth) {}
  void Acquire() {
    MutexLock l(&mu_);
    while (in_flight_ >= depth_) cv_.Wait(&mu_);
    in_flight_++;
  }
  void Release() {
    MutexLock l(&mu_);
    in_flight_--;
    cv_.SignalAll();
  }
  void Drain() {
    MutexLock l(&mu_);
    while (in_flight_ > 0) cv_.Wait(&mu_);
  }

 private:
  const uint64_t depth_;
  Mutex mu_;
  CondVar cv_;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

// Percentile returns the p-th percentile (0..100) of `v` (sorted in place).
double Percentile(std::vector<double>& v, double p);

}  // namespace farswap::bench

#endif  // FARSWAP_BENCH_BENCH_ARGS_H_
