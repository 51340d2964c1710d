// cli.h: what farswap's binaries share on top of CLI11, the command-line
// parser they all use (https://cliutils.github.io/CLI11/book/).
//
//   CLI::App app("a memory node", "farswap-server");
//   cli::Configure(app);                            // --version, last flag wins
//   uint64_t limit = 256 << 20;
//   app.add_option("--pool-limit", limit, "...")->transform(cli::Bytes());
//   if (std::optional<int> exit_status = cli::Parse(app, argc, argv)) return *exit_status;
//
// Every binary answers --help (usage on stdout, exit 0) and --version
// ("farswap-server 0.1.0 (git 1a2b3c4)" on stdout, exit 0). A bad flag or
// value is an error on stderr that names the flag, with exit status
// kUsageExitStatus. Boolean flags take --x, --x=true and --x=false.
#ifndef FARSWAP_COMMON_CLI_H_
#define FARSWAP_COMMON_CLI_H_

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

namespace farswap::cli {

// kUsageExitStatus: the exit status of every binary for bad usage.
inline constexpr int kUsageExitStatus = 2;

// VersionString: "<program> <project version>[ (git <commit>)]"; the commit
// is the one checked out when CMake configured the build, if it was known.
std::string VersionString(const std::string& program);

// Configure sets what every farswap binary's App shares: --version (named
// by app.get_name()), the last of a repeated flag wins, and options of the
// App may also follow a subcommand (call it before adding subcommands).
void Configure(CLI::App& app);

// Parse parses argv into `app`. Returns the exit status the program should
// exit with now: 0 after --help or --version was printed on stdout,
// kUsageExitStatus after a usage error (naming the flag) was printed on
// stderr. nullopt: parsed; carry on.
std::optional<int> Parse(CLI::App& app, int argc, char** argv);

// UsageError prints "<program>: <message>" and the --help hint on stderr
// and returns kUsageExitStatus: for checks CLI11 cannot express (one flag
// against another).
int UsageError(const CLI::App& app, const std::string& message);

// Bytes: a transformer for byte-count options: "64K", "256M", "2G" (powers
// of 1024, see farswap/common/byte_size.h) become the number of bytes.
CLI::Validator Bytes();

// Fraction: a check that the value is a number in [0, 1].
CLI::Validator Fraction();

// Finite: a check that a floating-point value is a finite number (CLI11
// takes "inf" and "nan").
CLI::Validator Finite();

// NonNegative: a check for unsigned options, which CLI11 would otherwise
// fill from "-1" with a wrapped-around value.
CLI::Validator NonNegative();

}  // namespace farswap::cli

#endif  // FARSWAP_COMMON_CLI_H_
