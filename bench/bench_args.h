// bench_args.h: the flag parser and JSON writer farswap-bench's subcommands
// share. Flags are "--name value", "--name=value" or a bare "--name" (true).
#ifndef FARSWAP_BENCH_BENCH_ARGS_H_
#define FARSWAP_BENCH_BENCH_ARGS_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace farswap::bench {

class Args {
 public:
  // Parse reads argv; every flag must be in `known`. INVALID_ARGUMENT names
  // the offending flag.
  static absl::StatusOr<Args> Parse(int argc, char** argv, const std::set<std::string>& known,
                                    const std::set<std::string>& boolean_flags);
  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
  absl::StatusOr<uint64_t> GetUint(const std::string& name, uint64_t fallback) const;
  // GetBytes accepts K/M/G suffixes (powers of 1024).
  absl::StatusOr<uint64_t> GetBytes(const std::string& name, uint64_t fallback) const;

 private:
  std::map<std::string, std::string> values_;
};

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
