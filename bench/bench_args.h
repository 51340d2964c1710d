// bench_args.h: what farswap-bench's subcommands share: how a subcommand
// plugs into the command line (CLI11, farswap/common/cli.h), the JSON
// object each prints (nlohmann-json underneath), and statistics.
#ifndef FARSWAP_BENCH_BENCH_ARGS_H_
#define FARSWAP_BENCH_BENCH_ARGS_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "farswap/common/cli.h"
#include "farswap/common/mutex.h"

namespace farswap::bench {

// CommandRunner runs a subcommand once the command line is parsed into the
// flags its Add*Command bound; returns the exit status.
using CommandRunner = std::function<int()>;

// Each Add*Command adds one subcommand (and its flags) to farswap-bench's
// App and returns what runs it.
CommandRunner AddPoolCommand(CLI::App& app);
CommandRunner AddNodeCommand(CLI::App& app);
CommandRunner AddE2eCommand(CLI::App& app);
CommandRunner AddRegionCommand(CLI::App& app);
CommandRunner AddChaosCommand(CLI::App& app);
CommandRunner AddIndexCommand(CLI::App& app);
CommandRunner AddWritebackCommand(CLI::App& app);

// ExitStatusFor: kUsageExitStatus for INVALID_ARGUMENT (a bad flag value
// found after parsing), else 1. Prints "farswap-bench <command>: <status>".
int ExitStatusFor(const std::string& command, const absl::Status& status);

// Json builds one JSON object, keys in insertion order, with nlohmann-json.
// Numbers from Num and NumList keep 6 significant digits (what benchmark
// noise allows); a non-finite one is null. Setting a key again replaces its
// value where it stands. A value type.
class Json {
 public:
  Json& Num(const std::string& key, double v);
  Json& NumList(const std::string& key, const std::vector<double>& v);
  Json& Int(const std::string& key, uint64_t v);
  Json& Bool(const std::string& key, bool v);
  Json& Str(const std::string& key, const std::string& v);
  Json& Obj(const std::string& key, const Json& v);
  Json& StrList(const std::string& key, const std::vector<std::string>& v);
  Json& ObjList(const std::string& key, const std::vector<Json>& v);
  const nlohmann::ordered_json& value() const { return value_; }
  std::string ToString() const { return value_.dump(); }

 private:
  nlohmann::ordered_json value_ = nlohmann::ordered_json::object();
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

// CpuIdleJson: what this machine's idle CPUs do (farswap/common/cpu_idle.h),
// the "cpuidle" object of the benchmarks whose figures depend on it:
// `driver`, `governor`, `guest_halt_poll_ns` (only where the haltpoll module
// is loaded) and `halt_polling_off`.
Json CpuIdleJson();

// Percentile returns the p-th percentile (0..100) of `v` (sorted in place).
double Percentile(std::vector<double>& v, double p);

}  // namespace farswap::bench

#endif  // FARSWAP_BENCH_BENCH_ARGS_H_
