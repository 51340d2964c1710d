// farswap-region-workload: the `farswap-bench region` workload as a plain
// program in ordinary memory, for bench/compare-zram-swap to run inside a
// memory cgroup with zram swap. Prints one JSON object:
//   {"workload", "size", "threads", "runtime_s", "faulted_accesses",
//    "faulted_us_p50", "faulted_us_p90", "faulted_us_p99", "checksum"}
// (faulted_*: accesses that took >= 2 µs, i.e. that faulted, as the
// workload thread saw them; see region_workload.h).
#include <sys/mman.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "bench_args.h"
#include "region_workload.h"

int main(int argc, char** argv) {
  using namespace farswap::bench;
  CLI::App app(
      "farswap-region-workload: the farswap-bench region workload in ordinary memory;\n"
      "prints one JSON object. Exit status: 0 done, 1 it could not run, 2 bad usage.",
      "farswap-region-workload");
  farswap::cli::Configure(app);
  WorkloadFlags flags;
  AddWorkloadFlags(app, flags);
  bool json = false;
  app.add_flag("--json", json, "accepted for compatibility (the output is always JSON)");
  if (std::optional<int> exit_status = farswap::cli::Parse(app, argc, argv)) return *exit_status;
  absl::StatusOr<WorkloadSpec> spec = WorkloadFromFlags(flags);
  if (!spec.ok()) return farswap::cli::UsageError(app, std::string(spec.status().message()));
  void* mem =
      mmap(nullptr, spec->pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::cerr << "farswap-region-workload: mmap failed\n";
    return 1;
  }
  WorkloadResult r = RunWorkload(static_cast<uint8_t*>(mem), *spec);
  uint64_t sum = Checksum(static_cast<uint8_t*>(mem), spec->pages);
  Json j;
  j.Str("workload", spec->kind)
      .Int("size", spec->pages * 4096)
      .Int("threads", spec->threads)
      .Num("runtime_s", r.seconds)
      .Int("faulted_accesses", r.faulted_accesses)
      .Num("faulted_us_p50", r.faulted_us_p50)
      .Num("faulted_us_p90", r.faulted_us_p90)
      .Num("faulted_us_p99", r.faulted_us_p99)
      .Str("checksum", absl::StrCat(sum));
  std::cout << j.ToString() << "\n";
  return 0;
}
