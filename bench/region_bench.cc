// farswap-bench region: an application-style workload in a far-memory
// region with a local budget, and the same workload in plain local memory
// in the same run. Prints one JSON object (README.md lists the fields).
//
// The region's pages go to a PageBackend chosen by MakeBackend: the
// in-process MemoryPageBackend (--backend memory, the default), or with
// --spawn N real farswap-server processes on loopback reached through
// farswap::Client (R = --replicas) and its PageBackend adapter.
#include <sys/mman.h>

#include <iostream>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "bench_args.h"
#include "client_spin_flags.h"
#include "farswap/client/client.h"
#include "farswap/client/client_page_backend.h"
#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"
#include "farswap/common/status_macros.h"
#include "region_workload.h"
#include "server_binary.h"
#include "server_process.h"

namespace farswap::bench {
namespace {

constexpr uint64_t kPage = 4096;

// SpawnedClusterBackend owns N memory-node processes and a Client
// attached to them, and pages through the Client.
class SpawnedClusterBackend final : public PageBackend {
 public:
  static absl::StatusOr<std::unique_ptr<SpawnedClusterBackend>> Start(
      const std::string& server_binary, int nodes, int replicas, Codec codec,
      const std::string& pool_limit, uint64_t busy_poll_us, std::optional<uint64_t> node_io_threads,
      std::optional<uint64_t> client_io_threads, bool one_connection,
      const ClientSpinFlags& client_spin, bool client_poll, const std::string& transport) {
    auto b = std::unique_ptr<SpawnedClusterBackend>(new SpawnedClusterBackend);
    ClientOptions o;
    std::vector<std::string> node_args = {"--log-level", "warn", "--busy-poll-us",
                                          absl::StrCat(busy_poll_us)};
    if (node_io_threads)
      node_args.insert(node_args.end(), {"--io-threads", absl::StrCat(*node_io_threads)});
    for (int i = 0; i < nodes; ++i) {
      FARSWAP_ASSIGN_OR_RETURN(auto node, testing::ServerProcess::Start({.pool_limit = pool_limit,
                                                                         .backing_size = "1G",
                                                                         .extra_args = node_args,
                                                                         .binary = server_binary,
                                                                         .transport = transport}));
      o.nodes.push_back(node->grpc_addr());
      b->nodes_.push_back(std::move(node));
    }
    o.replicas = replicas;
    o.codec = codec;
    o.client_name = "farswap-bench region";
    o.busy_poll = absl::Microseconds(int64_t(busy_poll_us));
    if (client_io_threads) o.io_threads = int(*client_io_threads);
    o.load_connection = !one_connection;
    ApplyClientSpinFlags(client_spin, &o);
    // The region makes only synchronous calls: its waits may read replies.
    o.poll_while_waiting = client_poll;
    FARSWAP_ASSIGN_OR_RETURN(b->client_, Client::Connect(o));
    b->adapter_ = std::make_unique<ClientPageBackend>(b->client_.get());
    return b;
  }
  absl::StatusOr<size_t> Store(uint64_t page_no, const uint8_t* page) override {
    return adapter_->Store(page_no, page);
  }
  absl::StatusOr<size_t> Load(uint64_t page_no, uint8_t* out) override {
    return adapter_->Load(page_no, out);
  }
  absl::Status Invalidate(uint64_t page_no) override { return adapter_->Invalidate(page_no); }
  ClientStats client_stats() const { return client_->stats(); }
  void StoreBatch(std::span<const uint64_t> page_nos, std::span<const uint8_t* const> pages,
                  std::span<absl::StatusOr<size_t>> results) override {
    adapter_->StoreBatch(page_nos, pages, results);
  }
  void LoadBatch(std::span<const uint64_t> page_nos, std::span<uint8_t* const> outs,
                 std::span<absl::StatusOr<size_t>> results) override {
    adapter_->LoadBatch(page_nos, outs, results);
  }

 private:
  SpawnedClusterBackend() = default;
  std::vector<std::unique_ptr<testing::ServerProcess>> nodes_;
  std::unique_ptr<Client> client_;  // destroyed before the nodes
  std::unique_ptr<ClientPageBackend> adapter_;
};

struct RegionFlags {
  WorkloadFlags workload;
  std::string corpus;  // --corpus: fill the pages from these page corpora
  double local = 0.25;
  std::string backend = "memory";
  std::string codec = "lz4";
  std::optional<uint64_t> spawn;
  std::optional<uint64_t> replicas;
  std::string server_bin;
  std::string transport = "tcp";  // the spawned nodes' --transport
  std::string pool_limit = "256M";
  uint64_t evict_batch = 32;
  uint64_t fault_threads = 0;
  uint64_t evict_threads = 0;
  std::optional<uint64_t> evict_nice;  // unset: RegionOptions' default
  uint64_t spin_us = 50;
  uint64_t busy_poll_us = 0;
  std::optional<uint64_t> node_io_threads;    // unset: farswap-server's default
  std::optional<uint64_t> client_io_threads;  // unset: ClientOptions' default
  bool no_prefetch = false;
  bool write_protect_loads = false;
  bool no_drop_by_move = false;
  bool write_protect_evictions = false;
  bool one_connection = false;
  ClientSpinFlags client_spin;  // --client-spin-us, --client-spin-per-page-us
  bool no_client_poll = false;
  bool json = false;
};

absl::StatusOr<std::unique_ptr<PageBackend>> MakeBackend(const RegionFlags& f) {
  FARSWAP_ASSIGN_OR_RETURN(Codec codec, ParseCodec(f.codec));
  if (f.spawn) {
    const uint64_t nodes = *f.spawn;
    const uint64_t replicas = f.replicas.value_or(nodes >= 2 ? 2 : 1);
    if (replicas < 1 || replicas > nodes) {
      return absl::InvalidArgumentError("--replicas: 1..the number of nodes");
    }
    FARSWAP_ASSIGN_OR_RETURN(std::string server, testing::FindServerBinary(f.server_bin));
    FARSWAP_ASSIGN_OR_RETURN(
        auto cluster, SpawnedClusterBackend::Start(server, int(nodes), int(replicas), codec,
                                                   f.pool_limit, f.busy_poll_us, f.node_io_threads,
                                                   f.client_io_threads, f.one_connection,
                                                   f.client_spin, !f.no_client_poll, f.transport));
    return std::unique_ptr<PageBackend>(std::move(cluster));
  }
  if (f.replicas) return absl::InvalidArgumentError("--replicas needs --spawn N");
  return std::unique_ptr<PageBackend>(new MemoryPageBackend({.codec = codec}));
}

// FaultBreakdown: where a remote fault's time goes, as means in µs over
// the faults (and loads) each part covers:
//   seen_by_thread   access issued → returned, for accesses that faulted
//                    (every kind of fault: remote, zero-fill, write-protect);
//   handler          fault message read → page installed (remote faults);
//   backend_load     the Load call inside the handler;
//   network          request sent → reply read by the client (network + node);
//   decode           decompress + verify the checksum;
//   completion       backend_load − network − decode: handing the reply to
//                    the waiting fault thread;
//   install          UFFDIO_COPY and bookkeeping;
//   kernel_and_wake  seen_by_thread − handler (p50s): delivering the fault to
//                    the handler thread and waking the faulting thread.
Json FaultBreakdown(const WorkloadResult& far, const RegionStats& s, const ClientStats& c) {
  auto mean = [](uint64_t ns, uint64_t n) { return n ? double(ns) / double(n) / 1000.0 : 0.0; };
  const double handler = mean(s.remote_fault_ns, s.remote_faults);
  const double load = mean(s.remote_load_ns, s.remote_faults);
  const double network = mean(c.load_network_ns, c.loads);
  const double decode = mean(c.load_decode_ns, c.loads);
  Json j;
  j.Int("remote_faults", s.remote_faults)
      .Num("seen_by_thread_p50", far.faulted_us_p50)
      .Num("handler", handler)
      .Num("backend_load", load)
      .Num("network", network)
      .Num("decode", decode)
      .Num("completion", c.loads ? std::max(0.0, load - network - decode) : 0.0)
      .Num("install", mean(s.remote_install_ns, s.remote_faults))
      .Num("kernel_and_wake", std::max(0.0, far.faulted_us_p50 - s.FaultLatencyPercentileUs(50)));
  return j;
}

absl::StatusOr<Json> Run(const RegionFlags& f) {
  FARSWAP_ASSIGN_OR_RETURN(WorkloadSpec spec, WorkloadFromFlags(f.workload));
  if (!f.corpus.empty()) {
    // Outside the region (the program's own memory, not its far memory).
    FARSWAP_ASSIGN_OR_RETURN(PageFile pages, ReadPageFiles(f.corpus));
    spec.fill = std::make_shared<const PageFile>(std::move(pages));
    FARSWAP_RETURN_IF_ERROR(ValidateWorkload(spec));
  }
  const double local = f.local;
  if (local <= 0) return absl::InvalidArgumentError("--local: a fraction in (0, 1]");
  FARSWAP_ASSIGN_OR_RETURN(std::unique_ptr<PageBackend> backend, MakeBackend(f));

  // 1. The region.
  RegionOptions options;
  options.local_budget = static_cast<uint64_t>(local * spec.pages) * kPage;
  options.evict_batch = static_cast<uint32_t>(f.evict_batch);
  options.fault_threads = static_cast<int>(f.fault_threads);
  options.evict_threads = static_cast<int>(f.evict_threads);
  if (f.evict_nice) options.evict_nice = static_cast<int>(*f.evict_nice);
  options.spin_us = static_cast<uint32_t>(f.spin_us);
  options.prefetch = !f.no_prefetch;
  options.install_writable = !f.write_protect_loads;
  options.drop_by_move = !f.no_drop_by_move;
  options.write_protect_evictions = f.write_protect_evictions;
  FARSWAP_ASSIGN_OR_RETURN(std::unique_ptr<Region> region,
                           Region::Create(backend.get(), spec.pages * kPage, options));
  WorkloadResult far = RunWorkload(region->data(), spec);
  RegionStats s = region->stats();  // before the checksum reads every page
  ClientStats cs;
  if (auto* cluster = dynamic_cast<SpawnedClusterBackend*>(backend.get())) {
    cs = cluster->client_stats();
  }
  const uint64_t far_sum = Checksum(region->data(), spec.pages);
  region.reset();

  // 2. The same workload in local memory.
  void* mem =
      mmap(nullptr, spec.pages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return absl::ResourceExhaustedError("mmap of the local run failed");
  WorkloadResult near = RunWorkload(static_cast<uint8_t*>(mem), spec);
  const uint64_t near_sum = Checksum(static_cast<uint8_t*>(mem), spec.pages);
  munmap(mem, spec.pages * kPage);

  const uint64_t faults = s.missing_faults + s.wp_faults;
  Json j;
  j.Str("workload", spec.kind)
      .Str("pages_from", spec.fill ? f.corpus : "pattern")
      .Int("size", spec.pages * kPage)
      .Num("local", local)
      .Int("local_budget", options.local_budget)
      .Int("threads", spec.threads)
      .Int("ops", spec.ops ? spec.ops : 4 * spec.pages)
      .Str("backend", f.spawn ? absl::StrCat("spawn:", *f.spawn) : f.backend)
      .Str("transport", f.spawn ? f.transport : "none")
      .Num("runtime_s", far.seconds)
      .Num("local_runtime_s", near.seconds)
      .Num("slowdown", near.seconds > 0 ? far.seconds / near.seconds : 0)
      .Int("faults", faults)
      .Int("missing_faults", s.missing_faults)
      .Int("wp_faults", s.wp_faults)
      .Int("zero_fills", s.zero_fills)
      .Num("fault_us_p50", s.FaultLatencyPercentileUs(50))
      .Num("fault_us_p99", s.FaultLatencyPercentileUs(99))
      .Int("faulted_accesses", far.faulted_accesses)
      .Num("faulted_us_p50", far.faulted_us_p50)
      .Num("faulted_us_p90", far.faulted_us_p90)
      .Num("faulted_us_p99", far.faulted_us_p99)
      .Num("faulted_us_max", far.faulted_us_max)
      .Int("local_faulted_accesses", near.faulted_accesses)
      .Obj("remote_fault_breakdown_us", FaultBreakdown(far, s, cs))
      .Int("evictions", s.evictions)
      .Int("clean_evictions", s.clean_evictions)
      .Int("evictions_cancelled", s.evictions_cancelled)
      .Int("unchanged_evictions", s.unchanged_evictions)
      .Bool("install_writable", options.install_writable)
      .Bool("drop_by_move", options.drop_by_move)
      .Int("moved_evictions", s.moved_evictions)
      .Int("unreported_moves", s.unreported_moves)
      .Int("evict_nice", options.evict_nice)
      .Int("urgent_evictions", s.urgent_evictions)
      .Bool("write_protect_evictions", options.write_protect_evictions)
      .Bool("client_poll", f.spawn.has_value() && !f.no_client_poll)
      .Int("prefetch_issued", s.prefetch_issued)
      .Int("prefetch_hits", s.prefetch_hits)
      .Int("prefetch_waste", s.prefetch_waste)
      .Int("bytes_sent", s.bytes_sent)
      .Int("bytes_received", s.bytes_received)
      .Int("pages_stored", s.pages_stored)
      .Int("pages_loaded", s.pages_loaded)
      .Int("max_resident_pages", s.max_resident_pages)
      .Int("budget_pages", s.budget_pages)
      .Int("parked_faults", s.parked_faults)
      .Int("sigbus", s.sigbus_delivered)
      .Bool("verified", far_sum == near_sum && s.sigbus_delivered == 0 && s.store_errors == 0)
      .Obj("cpuidle", CpuIdleJson());
  return j;
}

}  // namespace

CommandRunner AddRegionCommand(CLI::App& app) {
  auto f = std::make_shared<RegionFlags>();
  CLI::App* cmd =
      app.add_subcommand("region", "a workload in a far-memory region vs the same in local memory");
  AddWorkloadFlags(*cmd, f->workload);
  cmd->add_option("--corpus", f->corpus,
                  "fill the pages from these page corpora (*.pages.zst; page p gets corpus page "
                  "p mod their count) instead of the synthetic pattern")
      ->type_name("FILE[,FILE...]");
  cmd->add_option("--local", f->local, "local budget as a fraction of --size")
      ->type_name("FRACTION")
      ->check(cli::Fraction())
      ->capture_default_str();
  cmd->add_option("--backend", f->backend, "in-process page backend (without --spawn)")
      ->check(CLI::IsMember({"memory"}))
      ->capture_default_str();
  cmd->add_option("--codec", f->codec, "page codec")
      ->check(CLI::IsMember({"lz4", "zstd"}))
      ->capture_default_str();
  cmd->add_option("--spawn", f->spawn, "page through N farswap-server processes on loopback")
      ->type_name("N")
      ->check(CLI::Range(1, 16));
  cmd->add_option("--replicas", f->replicas,
                  "copies of each page (needs --spawn; default 2, "
                  "1 with one node)")
      ->type_name("R");
  cmd->add_option("--transport", f->transport,
                  "the spawned nodes' data-plane backend (farswap-server --transport); the "
                  "client follows each node's address")
      ->check(CLI::IsMember({"tcp", "ucx"}))
      ->capture_default_str();
  cmd->add_option("--server-bin", f->server_bin,
                  "the farswap-server --spawn runs (default: beside this program, then the "
                  "build tree, then PATH)")
      ->type_name("PATH");
  cmd->add_option("--pool-limit", f->pool_limit, "the spawned nodes' --pool-limit")
      ->check(cli::Bytes())
      ->capture_default_str();
  cmd->add_option("--evict-batch", f->evict_batch, "pages per eviction batch")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--fault-threads", f->fault_threads, "fault-handler threads (0: the default)")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--evict-threads", f->evict_threads, "eviction threads (0: the default)")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--evict-nice", f->evict_nice,
                  "the background evictor threads run this much nicer than the program "
                  "(RegionOptions::evict_nice; default: the region's, 19; 0: as the program)")
      ->check(CLI::Range(0, 39));
  cmd->add_option("--spin-us", f->spin_us, "fault threads spin this long before sleeping")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--busy-poll-us", f->busy_poll_us, "the spawned nodes' and client's busy poll")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  cmd->add_option("--node-io-threads", f->node_io_threads,
                  "the spawned nodes' --io-threads (default: farswap-server's, 2)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--client-io-threads", f->client_io_threads,
                  "the client's I/O threads (default: ClientOptions::io_threads, 2)")
      ->check(CLI::Range(1, 64));
  cmd->add_flag("--no-prefetch", f->no_prefetch, "turn the region's prefetcher off");
  cmd->add_flag("--write-protect-loads", f->write_protect_loads,
                "install loaded pages write-protected (a write then faults again)");
  cmd->add_flag("--no-drop-by-move", f->no_drop_by_move,
                "evicted pages leave by MADV_DONTNEED, one REMOVE event per run "
                "(RegionOptions::drop_by_move off)");
  cmd->add_flag("--write-protect-evictions", f->write_protect_evictions,
                "write-protect each dirty victim before its snapshot, rather than compare "
                "it with the snapshot after its move (RegionOptions::write_protect_evictions)");
  AddClientSpinOptions(cmd, &f->client_spin);
  cmd->add_flag("--no-client-poll", f->no_client_poll,
                "the client's waits leave replies to its I/O threads "
                "(ClientOptions::poll_while_waiting off)");
  cmd->add_flag("--one-connection", f->one_connection,
                "loads share each node's connection with stores (ClientOptions::load_connection "
                "off)");
  cmd->add_flag("--json", f->json, "accepted for compatibility (the output is always JSON)");
  return [f] {
    absl::StatusOr<Json> out = Run(*f);
    if (!out.ok()) return ExitStatusFor("region", out.status());
    std::cout << out->ToString() << "\n";
    // The figures are printed either way; a run that did not verify fails.
    if (!out->value().value("verified", false)) {
      return ExitStatusFor(
          "region", absl::DataLossError("the region's pages did not match local memory, a "
                                        "page raised SIGBUS or a store failed (verified: false)"));
    }
    return 0;
  };
}

}  // namespace farswap::bench
