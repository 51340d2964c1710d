// farswap-bench chaos: the chaos suite (tests/chaos/chaos_run.h) for as long
// as asked — N farswap-server processes in network namespaces, a region and
// a Client workload verifying every page, one fault at a time. Prints one
// JSON object (README.md lists the fields); progress goes to stderr. Exit
// status 0 when nothing was lost (lost_pages, sigbus, data_loss_errors all
// 0), 1 when something was or the run could not start, 2 for bad flags.
// SIGINT/SIGTERM end the run early; the namespaces and mounts are removed.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "bench_args.h"
#include "chaos_run.h"
#include "farswap/common/status_macros.h"

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

absl::StatusOr<ChaosReport> Run(int argc, char** argv) {
  FARSWAP_ASSIGN_OR_RETURN(
      Args args, Args::Parse(argc, argv,
                             {"minutes", "seconds", "nodes", "replicas", "faults", "seed",
                              "failure-timeout-ms", "region-size", "region-budget", "client-pages",
                              "threads", "json"},
                             {"json"}));
  ChaosOptions o;
  FARSWAP_ASSIGN_OR_RETURN(double minutes, args.GetDouble("minutes", 2));
  FARSWAP_ASSIGN_OR_RETURN(uint64_t seconds, args.GetUint("seconds", 0));
  o.duration = seconds ? absl::Seconds(int64_t(seconds)) : absl::Seconds(minutes * 60);
  FARSWAP_ASSIGN_OR_RETURN(uint64_t nodes, args.GetUint("nodes", 3));
  FARSWAP_ASSIGN_OR_RETURN(uint64_t replicas, args.GetUint("replicas", 2));
  if (nodes < 1 || nodes > 16) return absl::InvalidArgumentError("--nodes: 1..16");
  if (replicas < 1 || replicas > nodes) {
    return absl::InvalidArgumentError("--replicas: 1..the number of nodes");
  }
  o.nodes = int(nodes);
  o.replicas = int(replicas);
  FARSWAP_ASSIGN_OR_RETURN(o.faults, chaos::ParseFaultKinds(args.Get("faults", "all")));
  FARSWAP_ASSIGN_OR_RETURN(o.seed, args.GetUint("seed", 1));
  FARSWAP_ASSIGN_OR_RETURN(uint64_t timeout_ms, args.GetUint("failure-timeout-ms", 1000));
  if (timeout_ms < 100) return absl::InvalidArgumentError("--failure-timeout-ms: at least 100");
  o.timing.failure_timeout = absl::Milliseconds(int64_t(timeout_ms));
  FARSWAP_ASSIGN_OR_RETURN(o.region_bytes, args.GetBytes("region-size", o.region_bytes));
  FARSWAP_ASSIGN_OR_RETURN(o.region_budget, args.GetBytes("region-budget", o.region_budget));
  FARSWAP_ASSIGN_OR_RETURN(o.client_pages, args.GetUint("client-pages", o.client_pages));
  FARSWAP_ASSIGN_OR_RETURN(uint64_t threads, args.GetUint("threads", 1));
  if (threads < 1 || threads > 64) return absl::InvalidArgumentError("--threads: 1..64");
  o.region_threads = o.client_threads = int(threads);
  o.log = [](const std::string& line) { std::cerr << line << std::endl; };
  o.interrupted = &interrupted;
  // The client logs node events; stdout is for the JSON object only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("farswap-bench"));
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  return chaos::RunChaos(o);
}

}  // namespace

int ChaosMain(int argc, char** argv) {
  absl::StatusOr<ChaosReport> r = Run(argc, argv);
  if (!r.ok()) {
    std::cerr << "farswap-bench chaos: " << r.status().message() << "\n";
    return r.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::cout << ReportJson(*r) << "\n";
  return r->passed() && !r->interrupted ? 0 : 1;
}

}  // namespace farswap::bench
