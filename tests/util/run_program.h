// run_program.h: runs a program to completion and captures what it printed,
// for tests of command lines (exit status, stdout, stderr).
//
//   auto r = RunProgram({FarswapBinary("server/farswap-server"), "--version"});
//   EXPECT_EQ(r->exit_status, 0);
//
// The child dies with the calling thread's process (PR_SET_PDEATHSIG).
// Thread-safe: no shared state.
#ifndef FARSWAP_TESTS_UTIL_RUN_PROGRAM_H_
#define FARSWAP_TESTS_UTIL_RUN_PROGRAM_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace farswap::testing {

struct ProgramResult {
  int exit_status = -1;  // -1: killed by a signal
  std::string out, err;
};

// RunProgram runs argv[0] (a path) with argv and waits for it. `path_env`:
// the PATH it sees (nullopt: this process's).
absl::StatusOr<ProgramResult> RunProgram(const std::vector<std::string>& argv,
                                         std::optional<std::string> path_env = std::nullopt);

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_RUN_PROGRAM_H_
