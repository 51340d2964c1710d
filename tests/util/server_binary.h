// server_binary.h: where programs that start memory nodes (farswap-bench,
// farswap-demo) find the farswap-server to run.
//
//   FARSWAP_ASSIGN_OR_RETURN(std::string server, FindServerBinary(flags.server_bin));
//   ServerProcess::Start({.binary = server, ...});
//
// The order: the --server-bin flag's path when given; else farswap-server
// beside the running executable (/proc/self/exe: an installed or copied set
// of binaries); else the build tree's layout (<dir>/../server/farswap-server
// for a program built in bench/ or demo/); else the first farswap-server on
// PATH. Thread-safe (no shared state).
#ifndef FARSWAP_TESTS_UTIL_SERVER_BINARY_H_
#define FARSWAP_TESTS_UTIL_SERVER_BINARY_H_

#include <string>

#include "absl/status/statusor.h"

namespace farswap::testing {

// FindServerBinary returns the path of the farswap-server to run. `flag`:
// the --server-bin value ("" when not given); a given path must be an
// executable file (NOT_FOUND otherwise). NOT_FOUND, listing every place
// looked at, when there is none.
absl::StatusOr<std::string> FindServerBinary(const std::string& flag);

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_SERVER_BINARY_H_
