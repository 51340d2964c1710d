// chaos_run.h: one chaos run — a ChaosCluster, a Client with R replicas, a
// Region paging through it and a ClientWorkload beside it, and a scheduler
// that injects one fault at a time until the time is up; then every page is
// read back once more. farswap-bench chaos and tests/chaos drive it.
//
//   ChaosOptions o;  o.duration = absl::Minutes(2);  o.replicas = 2;
//   absl::StatusOr<ChaosReport> r = RunChaos(o);
//   bool ok = r->passed();   // no lost page, no SIGBUS, no data-loss error
//
// The scheduler (the calling thread, which also owns the server processes):
// pick the next kind (each kind once per round, in a seeded random order),
// plan it on a random node, note the counters, inject, wait its duration,
// heal, wait until the node is up again and every slab has R copies (at
// most settle_timeout), and charge the change in the counters to that
// kind. So a failure is attributed to the fault during or after which it
// appeared. A fault that does not settle is a failure of its own
// (recovery_timeouts); the next fault waits another settle_timeout for it,
// and when it still has not settled is injected anyway and marked
// (injected_unsettled, and "[unsettled since ...]" in its failure line):
// its losses are those of two faults at once.
//
// Thread safety: RunChaos may not run concurrently with itself in one
// process (it joins the client namespace on the calling thread, and owns
// the process's SIGBUS handler while it runs).
#ifndef FARSWAP_TESTS_CHAOS_CHAOS_RUN_H_
#define FARSWAP_TESTS_CHAOS_CHAOS_RUN_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chaos_faults.h"
#include "chaos_workload.h"

namespace farswap::chaos {

struct ChaosOptions {
  int nodes = 3;
  int replicas = 2;
  absl::Duration duration = absl::Minutes(2);
  uint64_t seed = 1;
  std::vector<FaultKind> faults = AllFaultKinds();
  FaultTiming timing;
  // The client: its failure timeout is timing.failure_timeout.
  absl::Duration health_interval = absl::Milliseconds(200);
  uint32_t pages_per_slab = 256;
  // Workloads.
  uint64_t region_bytes = 48ull << 20;
  uint64_t region_budget = 12ull << 20;
  int region_threads = 1;
  uint64_t client_pages = 4096;
  int client_threads = 1;
  // After healing: how long the node may take to be up and the slabs to
  // have R copies again; and the quiet time before the next fault.
  absl::Duration settle_timeout = absl::Seconds(30);
  absl::Duration pause = absl::Seconds(1);
  // Nodes' sizes (ChaosClusterOptions).
  std::string pool_limit = "64M";
  std::string backing_size = "32M";
  std::string tmpfs_size = "48M";
  // server_binary: the farswap-server to run ("" = this build's).
  std::string server_binary;
  // Progress lines (one per fault) go here when set.
  std::function<void(const std::string&)> log;
  // Set (e.g. from a signal handler) to end the run early; cleanup still runs.
  const std::atomic<bool>* interrupted = nullptr;
};

struct FaultKindReport {
  uint64_t injected = 0;
  uint64_t inject_errors = 0;  // the fault could not be injected (see errors)
  uint64_t heal_errors = 0;
  uint64_t recovery_timeouts = 0;  // node not up / slabs short settle_timeout after healing
  // Injected while an earlier fault had still not settled (after waiting
  // settle_timeout twice): really a second fault, so R=2 may lose pages.
  uint64_t injected_unsettled = 0;
  WorkloadCounters during;         // change in the counters, from injection to settled
  uint64_t client_lost_pages = 0;  // max rise of ClientStats::lost_pages during one of them
};

struct ChaosReport {
  double seconds = 0;
  int nodes = 0, replicas = 0;
  uint64_t seed = 0;
  uint64_t faults_injected = 0;
  std::array<FaultKindReport, kFaultKinds> by_kind{};
  std::vector<FaultKind> enabled;
  WorkloadCounters client, region;       // the two workloads, whole run incl. final check
  uint64_t client_lost_pages = 0;        // max ClientStats::lost_pages seen
  uint64_t region_sigbus_delivered = 0;  // RegionStats::sigbus_delivered
  uint64_t client_load_errors = 0, client_store_errors = 0;
  uint64_t failovers = 0, rereplicated_slabs = 0;
  std::vector<std::string> failures;  // "fault: what went wrong", one per faulty fault
  std::vector<std::string> errors;    // harness problems (inject/heal failed, timeouts)
  // A few reads that returned wrong bytes: which page and version they held.
  std::vector<std::string> wrong_data_examples;
  bool interrupted = false;

  WorkloadCounters total() const;
  uint64_t lost_pages() const;
  uint64_t sigbus() const;
  uint64_t data_loss_errors() const;
  bool passed() const { return lost_pages() == 0 && sigbus() == 0 && data_loss_errors() == 0; }
};

absl::StatusOr<ChaosReport> RunChaos(const ChaosOptions& options);

}  // namespace farswap::chaos

#endif  // FARSWAP_TESTS_CHAOS_CHAOS_RUN_H_
