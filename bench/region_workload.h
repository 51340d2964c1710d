// region_workload.h: the application-style workload `farswap-bench region`
// runs in a far-memory region and in plain local memory, and that
// `farswap-region-workload` runs as a plain program (bench/compare-zram-swap
// puts that one in a memory cgroup with zram swap).
//
// The memory is an array of 4 KiB pages. Init writes every page (a
// deterministic pattern, or, where the spec names fill pages, page p gets
// fill page p mod their count: real memory contents), then `ops` accesses pick a page by the
// workload (seq: each thread scans its slice in order, round after round; random: uniform; zipf:
// Zipf(theta) over a scrambled page order, so hot pages are not neighbours), read one 64-byte line
// of it, and with probability `write_fraction` add 1 to a word in it. The additions are atomic and
// commute, so the final contents — and their checksum — do not depend on
// the thread interleaving: a region run and a local run must agree exactly.
#ifndef FARSWAP_BENCH_REGION_WORKLOAD_H_
#define FARSWAP_BENCH_REGION_WORKLOAD_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "farswap/common/cli.h"
#include "farswap/common/page_file.h"

namespace farswap::bench {

struct WorkloadSpec {
  std::string kind = "zipf";  // seq | random | zipf
  uint64_t pages = 0;
  uint64_t ops = 0;  // 0: 4 accesses per page
  int threads = 1;
  uint64_t seed = 1;
  double zipf_theta = 0.99;
  double write_fraction = 0.2;
  // fill: the pages init copies in (page p gets fill->page(p % count)); null:
  // the synthetic pattern (64-bit words p x 0x100000001b3 + i: every word
  // differs, so LZ4 finds only short matches, its slow case).
  std::shared_ptr<const PageFile> fill;
};

// kFaultedAccessNs: an access that took this long is counted as one that
// faulted. A resident access (one 64-byte line, maybe a TLB and cache miss)
// takes well under a microsecond; the cheapest fault the workload can take
// (a userfaultfd write-protect fault, or a swap-cache hit under zram) takes
// several.
inline constexpr uint64_t kFaultedAccessNs = 2000;

struct WorkloadResult {
  double seconds = 0;  // init + accesses
  // Latency of the accesses that faulted (took >= kFaultedAccessNs), as the
  // workload thread saw it: from issuing the access to its return. Access
  // phase only (init writes every page once).
  uint64_t faulted_accesses = 0;
  double faulted_us_p50 = 0, faulted_us_p90 = 0, faulted_us_p99 = 0, faulted_us_max = 0;
};

absl::Status ValidateWorkload(const WorkloadSpec& spec);
// RunWorkload runs init + accesses over `mem` (spec.pages * 4096 bytes,
// zero at the start) and returns the time taken.
WorkloadResult RunWorkload(uint8_t* mem, const WorkloadSpec& spec);
// Checksum is the xxh3 of the final contents (untimed; reads every page).
uint64_t Checksum(const uint8_t* mem, uint64_t pages);
// WorkloadFlags: the workload's command-line flags (--size in bytes, the
// rest straight into the spec).
struct WorkloadFlags {
  uint64_t size_bytes = 64ull << 20;
  WorkloadSpec spec;
};

// AddWorkloadFlags declares --size, --workload, --ops, --threads, --seed,
// --theta and --write-fraction on `cmd`, bound to `f`.
void AddWorkloadFlags(CLI::App& cmd, WorkloadFlags& f);
// WorkloadFromFlags returns the spec the flags describe, validated.
absl::StatusOr<WorkloadSpec> WorkloadFromFlags(const WorkloadFlags& f);

}  // namespace farswap::bench

#endif  // FARSWAP_BENCH_REGION_WORKLOAD_H_
