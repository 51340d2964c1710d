// farswap-bench chaos: the chaos suite (tests/chaos/chaos_run.h) for as long
// as asked — N farswap-server processes in network namespaces, a region and
// a Client workload verifying every page, one fault at a time. Prints one
// JSON object (README.md lists the fields); progress goes to stderr. Exit
// status 0 when nothing was lost (lost_pages, sigbus, data_loss_errors all
// 0), 1 when something was or the run could not start, 2 for bad flags.
// SIGINT/SIGTERM end the run early; the namespaces and mounts are removed.
#include <signal.h>

#include <atomic>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "bench_args.h"
#include "chaos_run.h"
#include "farswap/common/status_macros.h"
#include "server_binary.h"

namespace farswap::bench {
namespace {

using chaos::ChaosOptions;
using chaos::ChaosReport;
using chaos::WorkloadCounters;

std::atomic<bool> interrupted{false};
void OnSignal(int) { interrupted = true; }

Json Counters(const WorkloadCounters& c) {
  Json j;
  j.Int("operations", c.operations)
      .Int("pages_verified", c.pages_verified)
      .Int("data_loss_errors", c.data_loss_errors)
      .Int("wrong_data", c.wrong_data)
      .Int("lost_pages", c.lost_pages)
      .Int("sigbus", c.sigbus)
      .Int("transient_errors", c.transient_errors)
      .Int("store_errors", c.store_errors)
      .Int("unverified_at_end", c.unverified_at_end);
  return j;
}

std::string ReportJson(const ChaosReport& r) {
  Json by_kind;
  for (chaos::FaultKind k : r.enabled) {
    const chaos::FaultKindReport& f = r.by_kind[int(k)];
    Json j;
    j.Int("injected", f.injected)
        .Int("data_loss_errors", f.during.data_loss_errors)
        .Int("wrong_data", f.during.wrong_data)
        .Int("lost_pages", f.during.lost_pages)
        .Int("client_lost_pages", f.client_lost_pages)
        .Int("sigbus", f.during.sigbus)
        .Int("operations", f.during.operations)
        .Int("pages_verified", f.during.pages_verified)
        .Int("transient_errors", f.during.transient_errors)
        .Int("inject_errors", f.inject_errors)
        .Int("heal_errors", f.heal_errors)
        .Int("recovery_timeouts", f.recovery_timeouts)
        .Int("injected_unsettled", f.injected_unsettled);
    by_kind.Obj(chaos::FaultName(k), j);
  }
  const WorkloadCounters t = r.total();
  Json j;
  j.Num("seconds", r.seconds)
      .Int("nodes", uint64_t(r.nodes))
      .Int("replicas", uint64_t(r.replicas))
      .Int("seed", r.seed)
      .Int("faults_injected", r.faults_injected)
      .Obj("faults", by_kind)
      .Int("operations", t.operations)
      .Int("pages_verified", t.pages_verified)
      .Int("lost_pages", r.lost_pages())
      .Int("sigbus", r.sigbus())
      .Int("data_loss_errors", r.data_loss_errors())
      .Int("wrong_data", t.wrong_data)
      .Int("client_lost_pages", r.client_lost_pages)
      .Int("region_sigbus_delivered", r.region_sigbus_delivered)
      .Obj("client_workload", Counters(r.client))
      .Obj("region_workload", Counters(r.region))
      .Int("client_load_errors", r.client_load_errors)
      .Int("client_store_errors", r.client_store_errors)
      .Int("failovers", r.failovers)
      .Int("rereplicated_slabs", r.rereplicated_slabs)
      .StrList("failures", r.failures)
      .StrList("harness_errors", r.errors)
      .StrList("wrong_data_examples", r.wrong_data_examples)
      .Bool("interrupted", r.interrupted)
      .Bool("passed", r.passed() && !r.interrupted);
  return j.ToString();
}

struct ChaosFlags {
  ChaosOptions options;
  double minutes = 2;
  uint64_t seconds = 0;
  std::string faults = "all";
  uint64_t failure_timeout_ms = 1000;
  int threads = 1;
  std::string server_bin;
  bool json = false;
};

absl::StatusOr<ChaosReport> Run(const ChaosFlags& f) {
  ChaosOptions o = f.options;
  o.duration = f.seconds ? absl::Seconds(int64_t(f.seconds)) : absl::Seconds(f.minutes * 60);
  if (o.replicas > o.nodes) return absl::InvalidArgumentError("--replicas: 1..the number of nodes");
  FARSWAP_ASSIGN_OR_RETURN(o.faults, chaos::ParseFaultKinds(f.faults));
  o.timing.failure_timeout = absl::Milliseconds(int64_t(f.failure_timeout_ms));
  o.region_threads = o.client_threads = f.threads;
  FARSWAP_ASSIGN_OR_RETURN(o.server_binary, testing::FindServerBinary(f.server_bin));
  o.log = [](const std::string& line) { std::cerr << line << std::endl; };
  o.interrupted = &interrupted;
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  return chaos::RunChaos(o);
}

}  // namespace

CommandRunner AddChaosCommand(CLI::App& app) {
  auto f = std::make_shared<ChaosFlags>();
  CLI::App* cmd = app.add_subcommand(
      "chaos", "verified workloads while faults hit N nodes (root: network namespaces)");
  cmd->add_option("--minutes", f->minutes, "run length")
      ->type_name("N")
      ->check(cli::Finite())
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--seconds", f->seconds, "run length (instead of --minutes)")
      ->type_name("N")
      ->check(cli::NonNegative());
  cmd->add_option("--nodes", f->options.nodes, "memory nodes")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  cmd->add_option("--replicas", f->options.replicas, "copies of each page")
      ->type_name("R")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  cmd->add_option("--faults", f->faults, "fault kinds to inject (README.md lists them)")
      ->type_name("all|K,...")
      ->capture_default_str();
  cmd->add_option("--seed", f->options.seed, "seed of the fault schedule and workloads")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--failure-timeout-ms", f->failure_timeout_ms, "the client's failure timeout")
      ->check(CLI::Range(uint64_t{100}, uint64_t{3600} * 1000))
      ->capture_default_str();
  cmd->add_option("--region-size", f->options.region_bytes, "the region, K/M/G suffixes")
      ->transform(cli::Bytes());
  cmd->add_option("--region-budget", f->options.region_budget,
                  "the region's local budget, K/M/G suffixes")
      ->transform(cli::Bytes());
  cmd->add_option("--client-pages", f->options.client_pages, "pages of the Client workload")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "threads of each workload")
      ->type_name("T")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--server-bin", f->server_bin,
                  "the farswap-server to run (default: beside this program, then the build "
                  "tree, then PATH)")
      ->type_name("PATH");
  cmd->add_flag("--json", f->json, "accepted for compatibility (the output is always JSON)");
  return [f] {
    absl::StatusOr<ChaosReport> r = Run(*f);
    if (!r.ok()) return ExitStatusFor("chaos", r.status());
    std::cout << ReportJson(*r) << "\n";
    return r->passed() && !r->interrupted ? 0 : 1;
  };
}

}  // namespace farswap::bench
