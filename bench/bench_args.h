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
  Json& Raw(const std::string& key, const std::string& json);
  std::string ToString() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// Percentile returns the p-th percentile (0..100) of `v` (sorted in place).
double Percentile(std::vector<double>& v, double p);

}  // namespace farswap::bench

#endif  // FARSWAP_BENCH_BENCH_ARGS_H_
