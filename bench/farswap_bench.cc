// farswap-bench: the benchmark driver. Every subcommand prints one JSON
// object on stdout; errors go to stderr with a non-zero exit.
//
//   farswap-bench pool ...   a corpus through an in-process zspool
//   farswap-bench node ...   a corpus through one memory node (data plane)
//   farswap-bench e2e  ...   a corpus through farswap::Client and N nodes
//   farswap-bench region ... a workload in a far-memory region vs local memory
//   farswap-bench chaos  ... verified workloads while faults hit N nodes
// README.md documents every flag and JSON field.
#include <cstring>
#include <iostream>

namespace farswap::bench {
int PoolMain(int argc, char** argv);
int NodeMain(int argc, char** argv);
int E2eMain(int argc, char** argv);
int RegionMain(int argc, char** argv);
int ChaosMain(int argc, char** argv);
}  // namespace farswap::bench

namespace {
void Usage() {
  std::cerr
      << "usage: farswap-bench SUBCOMMAND [flags]\n"
         "  pool --corpus FILE[,FILE...] [--codec lz4|zstd|none] [--churn FRACTION]\n"
         "       [--seed N] [--max-pages-per-zspage N] [--zstd-level N] [--classes]\n"
         "       [--victims-out FILE] [--json]\n"
         "  node --corpus FILE[,FILE...] (--node GRPC_ADDR | --spawn) [--pool-limit BYTES]\n"
         "       [--backing-size BYTES] [--connections N] [--depth D] [--codec lz4|zstd]\n"
         "       [--tenant ID] [--secret S] [--json]\n"
         "  e2e  --spawn N | --nodes ADDR,... --corpus FILE[,FILE...] [--replicas R]\n"
         "       [--codec lz4|zstd] [--threads T] [--depth D] [--kill-one-after FRACTION]\n"
         "       [--compare memcached] [--pool-limit BYTES] [--json]\n"
         "  region --size BYTES --local FRACTION --workload seq|random|zipf [--threads T]\n"
         "       [--backend memory] [--ops N] [--seed N] [--theta F] [--write-fraction F]\n"
         "       [--codec lz4|zstd] [--evict-batch N] [--fault-threads N] [--spin-us N]\n"
         "       [--no-prefetch] [--spawn N] [--replicas R] [--json]\n"
         "  chaos (--minutes N | --seconds N) [--replicas R] [--nodes N] [--faults all|K,...]\n"
         "       [--seed N] [--failure-timeout-ms N] [--region-size BYTES]\n"
         "       [--region-budget BYTES] [--client-pages N] [--threads T] [--json]\n"
         "       (root: network namespaces; README.md lists the fault kinds)\n"
         "See README.md for the JSON fields.\n";
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    Usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "pool")) return farswap::bench::PoolMain(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "node")) return farswap::bench::NodeMain(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "e2e")) return farswap::bench::E2eMain(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "region")) return farswap::bench::RegionMain(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "chaos")) return farswap::bench::ChaosMain(argc - 2, argv + 2);
  std::cerr << "farswap-bench: unknown subcommand '" << argv[1] << "'\n";
  Usage();
  return 2;
}
