#include "farswap/common/cli.h"

#include <cmath>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "farswap/common/byte_size.h"
#include "farswap/common/version.h"

namespace farswap::cli {

std::string VersionString(const std::string& program) {
  std::string v = absl::StrCat(program, " ", kProjectVersion);
  if (kGitCommit[0] != '\0') absl::StrAppend(&v, " (git ", kGitCommit, ")");
  return v;
}

void Configure(CLI::App& app) {
  app.set_version_flag("--version", VersionString(app.get_name()), "Print the version and exit");
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.fallthrough();
}

std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e, std::cout, std::cerr);  // --help, --version
    std::cerr << app.get_name() << ": " << e.what() << "\n"
              << "Run with --help for more information.\n";
    return kUsageExitStatus;
  }
  return std::nullopt;
}

int UsageError(const CLI::App& app, const std::string& message) {
  std::cerr << app.get_name() << ": " << message << "\n"
            << "Run with --help for more information.\n";
  return kUsageExitStatus;
}

CLI::Validator Bytes() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        absl::StatusOr<uint64_t> bytes = ParseBytes(value);
        if (!bytes.ok()) return std::string(bytes.status().message());
        value = std::to_string(*bytes);
        return "";
      },
      "BYTES (K/M/G suffixes)", "Bytes");
}

namespace {
// ParseDouble: a finite number, or nullopt.
std::optional<double> ParseFinite(const std::string& value) {
  double v;
  if (!absl::SimpleAtod(value, &v) || !std::isfinite(v)) return std::nullopt;
  return v;
}
}  // namespace

CLI::Validator Fraction() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        std::optional<double> v = ParseFinite(value);
        if (!v || *v < 0 || *v > 1) return absl::StrCat("not a fraction in [0, 1]: '", value, "'");
        return "";
      },
      "", "Fraction");
}

CLI::Validator Finite() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        if (!ParseFinite(value)) return absl::StrCat("not a finite number: '", value, "'");
        return "";
      },
      "", "Finite");
}

CLI::Validator NonNegative() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        uint64_t v;
        if (value.empty() || value[0] == '-' || !absl::SimpleAtoi(value, &v)) {
          return absl::StrCat("not a whole number >= 0: '", value, "'");
        }
        return "";
      },
      "", "NonNegative");
}

}  // namespace farswap::cli
