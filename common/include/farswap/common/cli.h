// cli.h: the command-line flag parser farswap's binaries share
// (farswap-server, farswapctl, farswap-bench). Flags are "--name value",
// "--name=value" or, for boolean flags, a bare "--name". Byte counts take
// K/M/G suffixes (powers of 1024). Every error names the flag.
//
//   FARSWAP_ASSIGN_OR_RETURN(Args args, Args::Parse(argc, argv, {"pool-limit"}, {}));
//   FARSWAP_ASSIGN_OR_RETURN(uint64_t limit, args.GetBytes("pool-limit", 256 << 20));
#ifndef FARSWAP_COMMON_CLI_H_
#define FARSWAP_COMMON_CLI_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace farswap {

// ParseBytes parses "123", "64K", "256M", "2G".
absl::StatusOr<uint64_t> ParseBytes(const std::string& text);

// Args holds parsed flags; a value type. Positional arguments (words not
// starting with "--") are kept in order when `allow_positional` is set.
class Args {
 public:
  // Parse reads argv; every flag must be in `known`. INVALID_ARGUMENT names
  // the offending flag.
  static absl::StatusOr<Args> Parse(int argc, char** argv, const std::set<std::string>& known,
                                    const std::set<std::string>& boolean_flags,
                                    bool allow_positional = false);
  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
  absl::StatusOr<uint64_t> GetUint(const std::string& name, uint64_t fallback) const;
  // GetBytes accepts K/M/G suffixes (powers of 1024).
  absl::StatusOr<uint64_t> GetBytes(const std::string& name, uint64_t fallback) const;

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace farswap

#endif  // FARSWAP_COMMON_CLI_H_
