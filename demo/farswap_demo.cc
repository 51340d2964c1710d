// farswap-demo: a real workload paged through far memory.
//
// It starts three local memory nodes (small pools, so their LRU writeback
// to the backing file really happens), attaches a farswap::Client with two
// replicas, and runs a records workload in a far-memory Region several times
// larger than its local budget: generate 64-byte records, sort them with
// std::sort, verify the order and the contents, then answer random lookups
// by binary search. Part-way through the sort it SIGKILLs one node; with
// R=2 the workload carries on. It ends with a table and exits non-zero if
// any check failed. Everything it starts is stopped and removed at exit.
//
//   farswap-demo [--size BYTES] [--local FRACTION] [--nodes N] [--replicas R]
//                [--pool-limit BYTES] [--kill-at FRACTION] [--lookups N] [--seed N]
//                [--server-bin PATH]
//                [--dns-name NAME:PORT [--tenant ID] [--secret-file PATH]
//                 [--tls-ca PATH [--tls-cert PATH --tls-key PATH] [--tls-server-name NAME]]]
//   farswap-demo --help | --version
//
// With --dns-name it starts no nodes and runs the same workload against
// running ones (a Kubernetes headless Service: deploy/kubernetes/examples),
// as --tenant with the secret read from --secret-file; nothing is killed.
//
// It runs the farswap-server given by --server-bin, else the one beside it,
// in the build tree or on PATH (tests/util/server_binary.h). Exit status: 0
// every check passed, 1 a check failed or it could not run, 2 bad usage.
#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/client/client.h"
#include "farswap/client/client_page_backend.h"
#include "farswap/client/region.h"
#include "farswap/common/cli.h"
#include "farswap/common/mutex.h"
#include "farswap/common/status_macros.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "server_binary.h"
#include "server_process.h"

namespace farswap {
namespace {

using Clock = std::chrono::steady_clock;

// Record is one 64-byte row: a sort key, an id, and a text field that
// compresses like real application data.
struct Record {
  uint64_t key;
  uint64_t id;
  char name[48];
};
static_assert(sizeof(Record) == 64);

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

void MakeRecord(uint64_t id, uint64_t seed, Record* r) {
  r->key = Mix(id ^ seed) >> 1;
  r->id = id;
  std::memset(r->name, 0, sizeof r->name);
  std::snprintf(r->name, sizeof r->name, "user-%08" PRIu64 " region-%02u plan-%s", id,
                unsigned(r->key % 17), (r->key & 4) ? "premium" : "basic");
}

uint64_t RecordHash(const Record& r) { return XXH3_64bits(&r, sizeof r); }

struct Progress {
  Mutex mu;
  CondVar cv;
  bool done ABSL_GUARDED_BY(mu) = false;
  std::atomic<const char*> phase{"start"};
};

std::string Mib(uint64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MiB", double(b) / (1 << 20));
  return s;
}

struct DemoFlags {
  uint64_t size = 128ull << 20;
  double local = 0.25;
  uint64_t nodes = 3;
  uint64_t replicas = 2;
  std::string pool_limit = "8M";
  double kill_at = 0.5;
  uint64_t lookups = 10000;
  uint64_t seed = 42;
  std::string server_bin;
  std::string dns_name;
  std::string tenant = "default";
  std::string secret_file;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;  // the nodes' TLS control plane
};

void AddFlags(CLI::App& app, DemoFlags& f) {
  app.add_option("--size", f.size, "the region, K/M/G suffixes (default 128M; at least 8M)")
      ->transform(cli::Bytes());
  app.add_option("--local", f.local, "local budget as a fraction of --size (in (0, 1])")
      ->type_name("FRACTION")
      ->check(cli::Fraction())
      ->capture_default_str();
  app.add_option("--nodes", f.nodes, "memory nodes to start")
      ->type_name("N")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  app.add_option("--replicas", f.replicas, "copies of each page (at most --nodes)")
      ->type_name("R")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  app.add_option("--pool-limit", f.pool_limit, "each node's --pool-limit")
      ->check(cli::Bytes())
      ->capture_default_str();
  app.add_option("--kill-at", f.kill_at,
                 "SIGKILL node 1 this far into the sort (0: never; needs 2 nodes and R=2)")
      ->type_name("FRACTION")
      ->check(cli::Fraction())
      ->capture_default_str();
  app.add_option("--lookups", f.lookups, "random lookups after the sort")
      ->type_name("N")
      ->check(cli::NonNegative())
      ->capture_default_str();
  app.add_option("--seed", f.seed, "seed of the records and lookups")
      ->type_name("N")
      ->check(cli::NonNegative())
      ->capture_default_str();
  app.add_option("--server-bin", f.server_bin,
                 "the farswap-server to start (default: beside this program, then the build "
                 "tree, then PATH)")
      ->type_name("PATH");
  CLI::Option* dns = app.add_option("--dns-name", f.dns_name,
                                    "run against the memory nodes this name resolves to (gRPC "
                                    "port; e.g. a Kubernetes headless Service) instead of "
                                    "starting any; kills none")
                         ->type_name("NAME:PORT");
  app.add_option("--tenant", f.tenant, "tenant to attach as (with --dns-name)")
      ->type_name("ID")
      ->needs(dns)
      ->capture_default_str();
  app.add_option("--secret-file", f.secret_file,
                 "file whose first line is the tenant's secret (with --dns-name)")
      ->type_name("PATH")
      ->check(CLI::ExistingFile)
      ->needs(dns);
  // The client's TLS options (README.md, "TLS on the control plane"),
  // checked by Client::Connect.
  app.add_option("--tls-ca", f.tls_ca,
                 "attach over TLS, trusting this PEM CA bundle (with "
                 "--dns-name; ClientOptions::tls_ca_file)")
      ->type_name("PATH")
      ->needs(dns);
  app.add_option("--tls-cert", f.tls_cert, "client certificate for mutual TLS (with --tls-ca)")
      ->type_name("PATH")
      ->needs(dns);
  app.add_option("--tls-key", f.tls_key, "the PEM private key of --tls-cert")
      ->type_name("PATH")
      ->needs(dns);
  app.add_option("--tls-server-name", f.tls_server_name,
                 "the name the nodes' certificates carry (default: the address dialled)")
      ->type_name("NAME")
      ->needs(dns);
}

int Run(int argc, char** argv) {
  CLI::App app(
      "farswap-demo: sorts and looks up records in a far-memory region over local memory "
      "nodes,\nkilling one part-way. Exit status: 0 every check passed, 1 a check failed or it "
      "could not run, 2 bad usage.",
      "farswap-demo");
  cli::Configure(app);
  DemoFlags flags;
  AddFlags(app, flags);
  if (std::optional<int> exit_status = cli::Parse(app, argc, argv)) return *exit_status;
  const uint64_t size = flags.size, n_nodes = flags.nodes, replicas = flags.replicas,
                 lookups = flags.lookups, seed = flags.seed;
  const double local = flags.local, kill_at = flags.kill_at;
  const std::string& pool_limit = flags.pool_limit;
  if (size < (8u << 20)) return cli::UsageError(app, "--size: at least 8M");
  if (local <= 0) return cli::UsageError(app, "--local: a fraction in (0, 1]");
  const bool remote = !flags.dns_name.empty();
  if (!remote && replicas > n_nodes) return cli::UsageError(app, "--replicas: at most --nodes");
  absl::StatusOr<std::string> server =
      remote ? absl::StatusOr<std::string>("") : testing::FindServerBinary(flags.server_bin);
  if (!server.ok()) {
    std::fprintf(stderr, "farswap-demo: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  // Logs (the client's, about nodes going down) go to stderr; stdout
  // carries the demo's own lines.
  spdlog::set_default_logger(spdlog::stderr_color_mt("farswap-demo"));
  const bool kill_one = !remote && kill_at > 0 && n_nodes >= 2 && replicas >= 2;

  // 1. Memory nodes: started here, or found through --dns-name.
  std::vector<std::unique_ptr<testing::ServerProcess>> nodes;
  ClientOptions o;
  if (remote) {
    o.dns_name = flags.dns_name;
    o.tenant_id = flags.tenant;
    o.tls_ca_file = flags.tls_ca;
    o.tls_cert_file = flags.tls_cert;
    o.tls_key_file = flags.tls_key;
    o.tls_server_name = flags.tls_server_name;
    if (!flags.secret_file.empty()) {
      std::ifstream f(flags.secret_file);
      if (!f || !std::getline(f, o.secret)) {
        return cli::UsageError(app, "--secret-file " + flags.secret_file + ": cannot read");
      }
    }
    std::printf("farswap demo: memory nodes behind %s, tenant %s\n", flags.dns_name.c_str(),
                o.tenant_id.c_str());
  } else {
    std::printf("farswap demo: starting %" PRIu64
                " memory nodes (pool limit %s each, backing file "
                "for writeback)...\n",
                n_nodes, pool_limit.c_str());
  }
  for (uint64_t i = 0; !remote && i < n_nodes; ++i) {
    auto node = testing::ServerProcess::Start({.pool_limit = pool_limit,
                                               .backing_size = "1G",
                                               .high_watermark = "0.8",
                                               .low_watermark = "0.6",
                                               .extra_args = {"--log-level", "warn"},
                                               .binary = *server});
    if (!node.ok()) {
      std::fprintf(stderr, "farswap-demo: %s\n", node.status().ToString().c_str());
      return 1;
    }
    std::printf("  node %" PRIu64 ": gRPC %s, data %s\n", i, (*node)->grpc_addr().c_str(),
                (*node)->data_addr().c_str());
    o.nodes.push_back((*node)->grpc_addr());
    nodes.push_back(std::move(*node));
  }
  o.replicas = int(replicas);
  o.client_name = "farswap-demo";
  o.poll_while_waiting = true;  // only the region calls it, synchronously
  auto client = Client::Connect(o);
  if (!client.ok()) {
    std::fprintf(stderr, "farswap-demo: %s\n", client.status().ToString().c_str());
    return 1;
  }
  ClientPageBackend backend(client->get());
  RegionOptions ro;
  ro.local_budget = uint64_t(double(size) * local) & ~uint64_t{4095};
  auto region = Region::Create(&backend, size, ro);
  if (!region.ok()) {
    std::fprintf(stderr, "farswap-demo: %s\n", region.status().ToString().c_str());
    return 1;
  }
  Record* records = reinterpret_cast<Record*>((*region)->data());
  const uint64_t n = size / sizeof(Record);
  std::printf("region: %s, local budget %s (%.0fx smaller), %" PRIu64
              " records of 64 bytes, R=%" PRIu64 "\n",
              Mib(size).c_str(), Mib(ro.local_budget).c_str(), double(size) / ro.local_budget, n,
              replicas);

  // 2. The live progress line.
  Progress progress;
  const bool tty = isatty(1);
  auto t0 = Clock::now();
  std::thread reporter([&] {
    MutexLock l(&progress.mu);
    while (!progress.done) {
      progress.cv.WaitWithTimeout(&progress.mu, absl::Milliseconds(tty ? 250 : 2000));
      if (progress.done) break;
      RegionStats s = (*region)->stats();
      ClientStats cs = (*client)->stats();
      int up = 0;
      for (const auto& ns : cs.nodes) up += ns.state == "up";
      double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      std::printf("%s[%6.1fs] %-8s faults %8" PRIu64
                  "  resident %s / %s  sent %s  recv %s  "
                  "nodes up %d/%zu%s",
                  tty ? "\r" : "", secs, progress.phase.load(), s.missing_faults + s.wp_faults,
                  Mib(s.resident_pages * 4096).c_str(), Mib(ro.local_budget).c_str(),
                  Mib(s.bytes_sent).c_str(), Mib(s.bytes_received).c_str(), up, cs.nodes.size(),
                  tty ? "   " : "\n");
      std::fflush(stdout);
    }
  });

  // 3. The workload.
  bool ok = true;
  std::string failure;
  progress.phase = "generate";
  uint64_t expected_sum = 0;
  Record r;
  for (uint64_t i = 0; i < n; ++i) {
    MakeRecord(i, seed, &r);
    records[i] = r;
    expected_sum += RecordHash(r);
  }
  progress.phase = "sort";
  std::atomic<uint64_t> comparisons{0};
  const double expected_cmp = 1.2 * double(n) * std::log2(double(n));
  std::atomic<bool> killed{false};
  std::sort(records, records + n, [&](const Record& x, const Record& y) {
    if (kill_one && !killed.load(std::memory_order_relaxed) &&
        double(comparisons.fetch_add(1, std::memory_order_relaxed)) > kill_at * expected_cmp) {
      killed = true;
      nodes[1]->Kill();  // SIGKILL: a crash, mid-sort
    }
    return x.key < y.key || (x.key == y.key && x.id < y.id);
  });
  if (kill_one && !killed) {
    killed = true;
    nodes[1]->Kill();
  }
  progress.phase = "verify";
  uint64_t sum = 0;
  for (uint64_t i = 0; i < n; ++i) {
    sum += RecordHash(records[i]);
    if (i > 0 && records[i - 1].key > records[i].key) {
      ok = false;
      failure = absl::StrCat("records ", i - 1, " and ", i, " are out of order");
      break;
    }
  }
  if (ok && sum != expected_sum) {
    ok = false;
    failure = "the sorted records are not the generated ones (content checksum differs)";
  }
  progress.phase = "lookup";
  std::mt19937_64 rng(seed);
  uint64_t found = 0;
  for (uint64_t q = 0; q < lookups && ok; ++q) {
    uint64_t id = rng() % n;
    MakeRecord(id, seed, &r);
    const Record* lo =
        std::lower_bound(records, records + n, r, [](const Record& x, const Record& y) {
          return x.key < y.key || (x.key == y.key && x.id < y.id);
        });
    if (lo == records + n || std::memcmp(lo, &r, sizeof r) != 0) {
      ok = false;
      failure = absl::StrCat("lookup of record ", id, " did not find it intact");
    } else {
      found++;
    }
  }
  double runtime = std::chrono::duration<double>(Clock::now() - t0).count();
  {
    MutexLock l(&progress.mu);
    progress.done = true;
    progress.cv.SignalAll();
  }
  reporter.join();
  if (tty) std::printf("\n");

  // 4. The table.
  RegionStats s = (*region)->stats();
  ClientStats cs = (*client)->stats();
  std::printf("\n%-34s %s\n", "region size / local budget",
              absl::StrCat(Mib(size), " / ", Mib(ro.local_budget)).c_str());
  std::printf("%-34s %.2f s (generate, sort, verify, %" PRIu64 " lookups)\n", "runtime", runtime,
              lookups);
  std::printf("%-34s %" PRIu64 " missing (%" PRIu64 " zero-filled), %" PRIu64 " write-protect\n",
              "faults", s.missing_faults, s.zero_fills, s.wp_faults);
  std::printf("%-34s p50 %.0f us, p99 %.0f us (handler service time)\n", "fault latency",
              s.FaultLatencyPercentileUs(50), s.FaultLatencyPercentileUs(99));
  std::printf("%-34s %" PRIu64 " (%" PRIu64 " clean, no transfer), prefetch hits %" PRIu64 "\n",
              "evictions", s.evictions, s.clean_evictions, s.prefetch_hits);
  std::printf("%-34s %s sent, %s received\n", "region traffic", Mib(s.bytes_sent).c_str(),
              Mib(s.bytes_received).c_str());
  double ratio = cs.bytes_after_compression
                     ? double(cs.bytes_before_compression) / cs.bytes_after_compression
                     : 0;
  std::printf("%-34s %.2f : 1 (%" PRIu64 " same-filled pages)\n", "compression ratio", ratio,
              cs.same_pages);
  std::printf("%-34s %" PRIu64 " failovers, %" PRIu64 " slabs re-replicated, %" PRIu64
              " lost pages\n",
              "replication", cs.failovers, cs.rereplicated_slabs, cs.lost_pages);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!nodes[i]->running()) {
      std::printf("  node %zu: killed (SIGKILL during the sort)\n", i);
      continue;
    }
    auto stub = v1::MemoryNode::NewStub(
        grpc::CreateChannel(nodes[i]->grpc_addr(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::GetStatsResponse st;
    if (!stub->GetStats(&ctx, v1::GetStatsRequest(), &st).ok()) {
      std::printf("  node %zu: stats unavailable\n", i);
      continue;
    }
    std::printf("  node %zu: %" PRIu64 " pages, pool %s (compressed %s), %" PRIu64
                " written back to SSD, %s on SSD now\n",
                i, st.node().stored_pages(), Mib(st.node().pool().mem_used_total()).c_str(),
                Mib(st.node().pool().compr_data_size()).c_str(), st.node().written_back_pages(),
                Mib(st.node().backing().used_bytes()).c_str());
  }
  std::printf(
      "%-34s %s\n", "verification",
      ok ? absl::StrCat("OK: ", n, " records sorted and intact, ", found, " lookups found").c_str()
         : absl::StrCat("FAILED: ", failure).c_str());
  region->reset();
  client->reset();
  nodes.clear();  // stops the nodes and removes their files
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace farswap

int main(int argc, char** argv) { return farswap::Run(argc, argv); }
