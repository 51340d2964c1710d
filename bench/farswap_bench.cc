// farswap-bench: the benchmark driver. Every subcommand prints one JSON
// object on stdout; logs and errors go to stderr.
//
//   farswap-bench pool ...   a corpus through an in-process zspool
//   farswap-bench node ...   a corpus through one memory node (data plane)
//   farswap-bench e2e  ...   a corpus through farswap::Client and N nodes
//   farswap-bench region ... a workload in a far-memory region vs local memory
//   farswap-bench chaos  ... verified workloads while faults hit N nodes
//   farswap-bench index  ... the node's page index alone (time, heap per key)
//   farswap-bench writeback ... the node's writeback alone (CPU per page)
//   farswap-bench [SUBCOMMAND] --help | --version
//
// README.md documents every flag and JSON field. Exit status: 0 success, 1
// the run failed (or did not verify), 2 bad usage.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <map>

#include "bench_args.h"

int main(int argc, char** argv) {
  using namespace farswap::bench;
  CLI::App app(
      "farswap-bench: farswap's benchmarks; each prints one JSON object on stdout.\n"
      "Exit status: 0 success, 1 the run failed or did not verify, 2 bad usage.",
      "farswap-bench");
  farswap::cli::Configure(app);
  app.require_subcommand(1);
  std::map<std::string, CommandRunner> commands = {
      {"pool", AddPoolCommand(app)},
      {"node", AddNodeCommand(app)},
      {"e2e", AddE2eCommand(app)},
      {"region", AddRegionCommand(app)},
      {"chaos", AddChaosCommand(app)},
      {"index", AddIndexCommand(app)},
      {"writeback", AddWritebackCommand(app)},
  };
  if (std::optional<int> exit_status = farswap::cli::Parse(app, argc, argv)) return *exit_status;
  // The client logs node events; stdout is for the JSON object only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("farswap-bench"));
  return commands.at(app.get_subcommands().front()->get_name())();
}
