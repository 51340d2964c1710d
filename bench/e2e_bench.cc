// farswap-bench e2e: a page corpus through farswap::Client and real memory
// nodes — stored with T threads, each D pages at a time through the batch
// API (one BATCH frame per node, as the memcached driver writes D requests
// at a time), loaded back the same way and
// verified — optionally with one node SIGKILLed part-way, and optionally
// side by side with memcached. With --data-tls the same workload runs twice
// in one invocation, on plaintext nodes and then on --data-tls nodes, and the
// JSON holds both and their ratios. Prints one JSON object (README.md).
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench_args.h"
#include "client_spin_flags.h"
#include "farswap/client/client.h"
#include "farswap/common/mutex.h"
#include "farswap/common/page_file.h"
#include "farswap/common/status_macros.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "memcached_driver.h"
#include "server_binary.h"
#include "server_process.h"
#include "test_ca.h"

namespace farswap::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct E2eFlags {
  uint64_t spawn = 0;
  std::string transport = "tcp";  // the spawned nodes' --transport
  std::vector<std::string> nodes;
  std::string server_bin;
  std::string corpus;
  int replicas = 0;
  std::string codec_name = "lz4";
  Codec codec = Codec::kLz4;
  int threads = 2;
  int depth = 32;
  std::optional<double> kill_after;
  std::string compare;
  bool compare_memcached = false;
  std::string pool_limit = "512M";
  // The spawned nodes' cold tier (--cold-after, --cold-zstd-level); 0 = off.
  uint32_t cold_after_s = 0;
  int cold_zstd_level = 5;
  int cold_rounds = 5;
  // --scrub: after the loads, one Client::Scrub over every stored page.
  bool scrub = false;
  // --no-client-poll: the client's waits leave replies to its I/O threads.
  bool no_client_poll = false;
  // --client-spin-us, --client-spin-per-page-us.
  ClientSpinFlags client_spin;
  bool json = false;
  // --data-tls: plaintext and TLS side by side; the certificate files (all
  // three, or none: the bench makes a throwaway CA with the openssl CLI).
  bool data_tls = false;
  // --data-tls: plaintext/TLS pairs; --compare memcached: farswap/memcached
  // pairs. The rates are medians over the rounds.
  int rounds = 1;
  std::string tls_ca, tls_cert, tls_key;
};

// TlsFiles: what the TLS half of a --data-tls run uses. Empty: plaintext.
struct TlsFiles {
  std::string ca, cert, key;
  bool enabled() const { return !ca.empty(); }
};

// CheckE2e checks what one flag says about another, and fills codec and
// compare_memcached.
absl::Status CheckE2e(E2eFlags& f) {
  if ((f.spawn == 0) == f.nodes.empty()) {
    return absl::InvalidArgumentError("give exactly one of --spawn N or --nodes ADDR,...");
  }
  FARSWAP_ASSIGN_OR_RETURN(f.codec, ParseCodec(f.codec_name));
  if (f.kill_after && f.spawn < 2) {
    return absl::InvalidArgumentError("--kill-one-after F needs --spawn >= 2");
  }
  f.compare_memcached = f.compare == "memcached";
  if (f.data_tls && f.spawn == 0) {
    return absl::InvalidArgumentError("--data-tls needs --spawn N (it starts both kinds of node)");
  }
  if (f.data_tls && f.compare_memcached) {
    return absl::InvalidArgumentError("--data-tls and --compare are separate runs");
  }
  if (f.data_tls && f.kill_after) {
    return absl::InvalidArgumentError("--data-tls and --kill-one-after are separate runs");
  }
  if (f.rounds != 1 && !f.data_tls && !f.compare_memcached) {
    return absl::InvalidArgumentError("--rounds needs --data-tls or --compare memcached");
  }
  const bool any = !f.tls_ca.empty() || !f.tls_cert.empty() || !f.tls_key.empty();
  const bool all = !f.tls_ca.empty() && !f.tls_cert.empty() && !f.tls_key.empty();
  if (any && !f.data_tls) {
    return absl::InvalidArgumentError("--tls-ca, --tls-cert and --tls-key need --data-tls");
  }
  if (any && !all) {
    return absl::InvalidArgumentError(
        "--tls-ca, --tls-cert and --tls-key go together (or none: throwaway certificates)");
  }
  if (f.cold_after_s > 0 && f.spawn == 0) {
    return absl::InvalidArgumentError("--cold-after needs --spawn (it is the spawned nodes' flag)");
  }
  if (f.cold_after_s > 0 && f.kill_after) {
    return absl::InvalidArgumentError(
        "--cold-after reads every spawned node's stats: not with --kill-one-after");
  }
  if (f.cold_after_s > 0 && f.data_tls) {
    return absl::InvalidArgumentError("--cold-after and --data-tls are separate runs");
  }
  return absl::OkStatus();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// NodeGetStats: a node's stats (an empty message when it does not answer),
// over TLS when `tls` is enabled.
v1::NodeStats NodeGetStats(const std::string& grpc_addr, const TlsFiles& tls) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (tls.enabled()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(tls.ca);
    creds = grpc::SslCredentials(ssl);
  }
  auto stub = v1::MemoryNode::NewStub(grpc::CreateChannel(grpc_addr, creds));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetStatsResponse resp;
  if (!stub->GetStats(&ctx, v1::GetStatsRequest(), &resp).ok()) return {};
  return resp.node();
}

absl::StatusOr<v1::NodeStats> GetNodeStats(const std::string& grpc_addr) {
  auto stub =
      v1::MemoryNode::NewStub(grpc::CreateChannel(grpc_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetStatsResponse resp;
  grpc::Status s = stub->GetStats(&ctx, v1::GetStatsRequest(), &resp);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat("GetStats on ", grpc_addr, ": ", s.error_message()));
  }
  return resp.node();
}

// ColdFigures: the spawned nodes' pool memory and cold-tier counters, summed.
struct ColdFigures {
  uint64_t mem_used_total = 0;
  uint64_t passes = 0;  // the fewest any node has finished
  uint64_t recompressed_pages = 0, bytes_saved = 0, kept_pages = 0, loads = 0;
};

absl::StatusOr<ColdFigures> SpawnedColdFigures(
    const std::vector<std::unique_ptr<testing::ServerProcess>>& spawned) {
  ColdFigures c;
  c.passes = UINT64_MAX;
  for (const auto& p : spawned) {
    FARSWAP_ASSIGN_OR_RETURN(v1::NodeStats s, GetNodeStats(p->grpc_addr()));
    c.mem_used_total += s.pool().mem_used_total();
    c.passes = std::min<uint64_t>(c.passes, s.cold().passes());
    c.recompressed_pages += s.cold().recompressed_pages();
    c.bytes_saved += s.cold().bytes_saved();
    c.kept_pages += s.cold().kept_pages();
    c.loads += s.cold().loads();
  }
  return c;
}

// WaitForColdPasses returns once every spawned node has finished `passes`
// more cold passes than `from` (polling its stats every 100 ms, for at most
// 5 passes' time plus 30 s).
absl::StatusOr<ColdFigures> WaitForColdPasses(
    const std::vector<std::unique_ptr<testing::ServerProcess>>& spawned, const ColdFigures& from,
    uint64_t passes, uint32_t cold_after_s) {
  const auto deadline = Clock::now() + std::chrono::seconds(5 * passes * cold_after_s + 30);
  for (;;) {
    FARSWAP_ASSIGN_OR_RETURN(ColdFigures now, SpawnedColdFigures(spawned));
    if (now.passes >= from.passes + passes) return now;
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the nodes finished ", now.passes - from.passes, " of ", passes, " cold passes in time"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// RunE2eOnce: one run's JSON (store_pages_per_s, load_pages_per_s and
// verified are what paired rounds compare).
absl::StatusOr<Json> RunE2eOnce(const E2eFlags& f, const PageFile& pages, const TlsFiles& tls) {
  const size_t n = pages.page_count();
  std::vector<std::unique_ptr<testing::ServerProcess>> spawned;
  std::vector<std::string> addrs = f.nodes;
  for (uint64_t i = 0; i < f.spawn; ++i) {
    FARSWAP_ASSIGN_OR_RETURN(std::string server, testing::FindServerBinary(f.server_bin));
    std::vector<std::string> args;
    if (tls.enabled()) args = {"--tls-cert", tls.cert, "--tls-key", tls.key, "--data-tls"};
    if (f.cold_after_s > 0) {
      args.insert(args.end(), {"--cold-after", std::to_string(f.cold_after_s), "--cold-zstd-level",
                               std::to_string(f.cold_zstd_level)});
    }
    FARSWAP_ASSIGN_OR_RETURN(auto p, testing::ServerProcess::Start({.pool_limit = f.pool_limit,
                                                                    .backing_size = "",
                                                                    .extra_args = args,
                                                                    .binary = server,
                                                                    .transport = f.transport}));
    addrs.push_back(p->grpc_addr());
    spawned.push_back(std::move(p));
  }
  ClientOptions o;
  o.nodes = addrs;
  o.tls_ca_file = tls.ca;
  o.require_data_tls = tls.enabled();
  o.replicas = f.replicas;
  o.codec = f.codec;
  o.op_timeout = absl::Seconds(1);
  o.health_interval = absl::Milliseconds(200);
  // The bench makes only synchronous calls, holding no lock: its waits may
  // read replies themselves (ClientOptions::poll_while_waiting).
  o.poll_while_waiting = !f.no_client_poll;
  ApplyClientSpinFlags(f.client_spin, &o);
  FARSWAP_ASSIGN_OR_RETURN(std::unique_ptr<Client> client, Client::Connect(o));

  const size_t kill_at = f.kill_after ? size_t(*f.kill_after * double(n)) : SIZE_MAX;
  std::atomic<size_t> issued{0};
  std::atomic<uint64_t> store_errors{0}, lost{0}, bad{0};
  std::string first_error;
  Mutex err_mu;
  auto note_error = [&](const absl::Status& s) {
    MutexLock l(&err_mu);
    if (first_error.empty()) first_error = s.ToString();
  };
  // Stores of the corpus at page numbers base.., timed.
  auto run_stores = [&](uint64_t base) {
    const auto start_all = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < f.threads; ++t) {
      ts.emplace_back([&, t] {
        // D pages at a time through the batch API (one BATCH frame per
        // node), as the memcached driver writes D requests at a time.
        std::vector<PageWrite> batch;
        auto flush = [&] {
          if (batch.empty()) return;
          std::vector<absl::Status> r = client->StoreBatch(batch);
          for (const absl::Status& s : r) {
            if (!s.ok()) {
              store_errors++;
              note_error(s);
            }
          }
          batch.clear();
        };
        for (size_t i = size_t(t); i < n; i += size_t(f.threads)) {
          if (issued.fetch_add(1) == kill_at) spawned[0]->Kill();  // exactly one thread
          batch.push_back({base + i, pages.page(i)});
          if (batch.size() == size_t(f.depth)) flush();
        }
        flush();
      });
    }
    for (auto& th : ts) th.join();
    return std::chrono::duration<double>(Clock::now() - start_all).count();
  };
  const double store_s = run_stores(0);
  // Loads of the pages stored at base.., verified against the corpus: one
  // pass of every page, timed.
  std::vector<std::vector<double>> lat(f.threads);
  auto run_loads = [&](uint64_t base) {
    for (auto& v : lat) v.clear();
    const auto start_all = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < f.threads; ++t) {
      ts.emplace_back([&, t] {
        std::vector<uint8_t> bufs(size_t(f.depth) * kPageSize);
        std::vector<PageRead> batch;
        auto flush = [&] {
          if (batch.empty()) return;
          auto start = Clock::now();
          std::vector<absl::Status> r = client->LoadBatch(batch);
          double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
          for (size_t k = 0; k < batch.size(); ++k) {
            if (!r[k].ok()) {
              lost++;
              note_error(r[k]);
            } else if (std::memcmp(batch[k].out, pages.page(batch[k].page_no - base), kPageSize) !=
                       0) {
              bad++;
            }
            lat[t].push_back(us);  // a page's latency is its batch's
          }
          batch.clear();
        };
        for (size_t i = size_t(t); i < n; i += size_t(f.threads)) {
          batch.push_back({base + i, bufs.data() + batch.size() * kPageSize});
          if (batch.size() == size_t(f.depth)) flush();
        }
        flush();
      });
    }
    for (auto& th : ts) th.join();
    return std::chrono::duration<double>(Clock::now() - start_all).count();
  };
  auto latencies = [&] {
    std::vector<double> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    return all;
  };
  const double load_s = run_loads(0);
  std::vector<double> all = latencies();
  // --scrub: every replica's copy of every page read and verified once
  // (Client::Scrub), timed.
  std::optional<ScrubResult> scrub;
  double scrub_s = 0;
  if (f.scrub) {
    const auto scrub_start = Clock::now();
    FARSWAP_ASSIGN_OR_RETURN(scrub, client->Scrub(0, n));
    scrub_s = std::chrono::duration<double>(Clock::now() - scrub_start).count();
  }
  // The cold tier: wait for the passes that find every page unloaded (the
  // first pass that starts after the loads clears their referenced bits, the
  // next recompresses; one more for a pass in flight meanwhile) and read the
  // pool memory. Then store the corpus again at pages n.. (a hot, lz4 copy)
  // and load the cold copy and the hot copy in turn, --cold-rounds times:
  // both rates are medians over rounds run side by side, so load on a
  // shared machine hits both alike. The hot copy, loaded every round, stays
  // hot (a page is recompressed only after a whole pass without a load).
  const double page_bytes = double(n) * kPageSize * double(client->replicas());
  std::optional<ColdFigures> cold_before, cold_after, cold_end;
  double cold_load_s = 0, hot_copy_load_s = 0;
  std::vector<double> all_cold;
  // Where a load's time goes, cold rounds and hot rounds apart: the
  // client's per-load network and decode+verify time (ClientStats).
  struct LoadSplit {
    uint64_t loads = 0, network_ns = 0, decode_ns = 0;
  } cold_split, hot_split;
  auto timed_loads = [&](uint64_t base, LoadSplit* split) {
    const ClientStats a = client->stats();
    const double s = run_loads(base);
    const ClientStats b = client->stats();
    split->loads += b.loads - a.loads;
    split->network_ns += b.load_network_ns - a.load_network_ns;
    split->decode_ns += b.load_decode_ns - a.load_decode_ns;
    return s;
  };
  auto per_load_us = [](uint64_t ns, const LoadSplit& split) {
    return split.loads == 0 ? 0.0 : double(ns) / 1000.0 / double(split.loads);
  };
  if (f.cold_after_s > 0) {
    FARSWAP_ASSIGN_OR_RETURN(cold_before, SpawnedColdFigures(spawned));
    FARSWAP_ASSIGN_OR_RETURN(cold_after,
                             WaitForColdPasses(spawned, *cold_before, 3, f.cold_after_s));
    run_stores(n);
    std::vector<double> cold_rounds, hot_rounds;
    for (int r = 0; r < f.cold_rounds; ++r) {
      cold_rounds.push_back(timed_loads(0, &cold_split));
      std::vector<double> l = latencies();
      all_cold.insert(all_cold.end(), l.begin(), l.end());
      hot_rounds.push_back(timed_loads(n, &hot_split));
    }
    cold_load_s = Percentile(cold_rounds, 50);
    hot_copy_load_s = Percentile(hot_rounds, 50);
    FARSWAP_ASSIGN_OR_RETURN(cold_end, SpawnedColdFigures(spawned));
  }
  ClientStats st = client->stats();
  uint64_t mem = 0, ktls = 0;
  int live = 0;
  for (const NodeStats& ns : st.nodes) {
    if (ns.state != "up") continue;
    const v1::NodeStats node = NodeGetStats(ns.address, tls);
    mem += node.pool().mem_used_total();
    ktls += node.ktls_connections();
    live++;
  }
  Json j;
  j.Int("pages", n)
      .Int("nodes", addrs.size())
      .Int("live_nodes", live)
      .Int("replicas", client->replicas())
      .Str("codec", CodecName(f.codec))
      .Str("transport", f.transport)
      .Int("threads", f.threads)
      .Int("depth", f.depth)
      .Bool("client_poll", !f.no_client_poll)
      .Int("client_spin_us", uint64_t(absl::ToInt64Microseconds(o.spin_wait)))
      .Int("client_spin_per_page_us", uint64_t(absl::ToInt64Microseconds(o.spin_wait_per_page)))
      .Obj("cpuidle", CpuIdleJson())
      .Num("store_pages_per_s", n / store_s)
      .Num("load_pages_per_s", n / load_s)
      .Num("load_us_p50", Percentile(all, 50))
      .Num("load_us_p99", Percentile(all, 99))
      .Bool("verified",
            bad == 0 && lost == 0 && store_errors == 0 && (!scrub || scrub->unreadable_pages == 0))
      .Int("lost_pages", lost)
      .Int("store_errors", store_errors)
      .Int("node_mem_used_total", mem)
      .Num("bytes_per_page_byte", double(mem) / (double(n) * kPageSize * client->replicas()))
      .Int("bytes_after_compression", st.bytes_after_compression)
      .Int("same_pages", st.same_pages)
      .Int("raw_pages", st.raw_pages)
      .Int("checksum_failures", st.checksum_failures)
      .Int("failovers", st.failovers)
      .Int("copies_repaired", st.copies_repaired)
      .Int("rereplicated_slabs", st.rereplicated_slabs)
      .Int("under_replicated_slabs", st.under_replicated_slabs);
  if (scrub) {
    j.Num("scrub_copies_per_s", double(scrub->copies_checked) / scrub_s)
        .Int("scrub_copies_checked", scrub->copies_checked)
        .Int("scrub_bad_copies", scrub->bad_copies)
        .Int("scrub_copies_repaired", scrub->copies_repaired)
        .Int("scrub_unreadable_pages", scrub->unreadable_pages);
  }
  if (tls.enabled()) {
    // Which encryption ran: the nodes count the connections the kernel
    // encrypts (kTLS); the rest are OpenSSL in user space.
    j.Bool("data_tls", true)
        .Int("ktls_connections", ktls)
        .Str("tls_encryption", ktls > 0 ? "kernel (kTLS)" : "user space (OpenSSL)");
  }
  if (cold_after) {
    // Per original page byte (pages x 4096 x replicas), as bytes_per_page_byte.
    j.Int("cold_after_s", f.cold_after_s)
        .Int("cold_zstd_level", uint64_t(f.cold_zstd_level))
        .Num("pool_bytes_per_page_byte_before_cold",
             double(cold_before->mem_used_total) / page_bytes)
        .Num("pool_bytes_per_page_byte_after_cold", double(cold_after->mem_used_total) / page_bytes)
        .Int("cold_recompressed_pages", cold_after->recompressed_pages)
        .Int("cold_bytes_saved", cold_after->bytes_saved)
        .Int("cold_kept_pages", cold_after->kept_pages)
        .Int("cold_rounds", uint64_t(f.cold_rounds))
        .Num("cold_load_pages_per_s", double(n) / cold_load_s)
        .Num("hot_load_pages_per_s", double(n) / hot_copy_load_s)
        .Num("cold_to_hot_load_rate", hot_copy_load_s / cold_load_s)
        .Int("hot_copy_recompressed_pages",
             cold_end->recompressed_pages - cold_after->recompressed_pages)
        .Num("cold_load_us_p50", Percentile(all_cold, 50))
        .Num("cold_load_us_p99", Percentile(all_cold, 99))
        .Num("cold_load_decode_us", per_load_us(cold_split.decode_ns, cold_split))
        .Num("hot_load_decode_us", per_load_us(hot_split.decode_ns, hot_split))
        .Num("cold_load_network_us", per_load_us(cold_split.network_ns, cold_split))
        .Num("hot_load_network_us", per_load_us(hot_split.network_ns, hot_split));
  }
  if (f.kill_after) j.Num("killed_after_fraction", *f.kill_after);
  if (!first_error.empty()) j.Str("first_error", first_error);
  client.reset();
  spawned.clear();
  return j;
}

// ThrowawayCa makes a CA and a node certificate (for 127.0.0.1 and
// localhost) in a new temporary folder, with the openssl command line.
absl::StatusOr<TlsFiles> ThrowawayCa(std::string* dir) {
  char tmpl[] = "/tmp/farswap-bench-tls-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  *dir = tmpl;
  FARSWAP_ASSIGN_OR_RETURN(auto ca, testing::TestCa::Create(*dir, "farswap bench CA"));
  FARSWAP_ASSIGN_OR_RETURN(testing::CertificateFiles node, ca->Issue("bench-node"));
  return TlsFiles{.ca = ca->cert_file(), .cert = node.cert_file, .key = node.key_file};
}

// Median of a copy (Percentile sorts what it is given).
double Median(std::vector<double> v) { return Percentile(v, 50); }

// RoundsOfOneSide: what one side of a paired comparison (farswap,
// memcached, a plaintext or a TLS node) measured over the rounds. Its
// `verified` holds only if every round verified: a round that lost a page
// is not hidden by a later one that did not.
struct RoundsOfOneSide {
  std::vector<double> store_pages_per_s, load_pages_per_s;
  bool verified = true;
  Json last;  // the last round's JSON; Summary overwrites its rates and verified

  void Add(Json run) {
    store_pages_per_s.push_back(run.value().at("store_pages_per_s").get<double>());
    load_pages_per_s.push_back(run.value().at("load_pages_per_s").get<double>());
    verified = verified && run.value().at("verified").get<bool>();
    last = std::move(run);
  }
  double store_median() const { return Median(store_pages_per_s); }
  double load_median() const { return Median(load_pages_per_s); }
  // Summary: the last round's JSON with the median rates and the
  // every-round verdict in place of that round's own.
  Json Summary() const {
    Json j = last;
    j.Num("store_pages_per_s", store_median())
        .Num("load_pages_per_s", load_median())
        .Bool("verified", verified);
    return j;
  }
};

// RatiosByRound: a's rate over b's, round by round (a and b ran the same
// rounds in turn).
std::vector<double> RatiosByRound(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) r.push_back(a[i] / b[i]);
  return r;
}

// RunE2eAgainstMemcached: --compare memcached. Rounds alternate a farswap
// run and a memcached run of the same pages, threads and depth, so both
// meet the same background load on a shared machine; a round's ratio
// compares its two runs (seconds apart), and the figures are medians over
// the rounds. `verified` (ours and memcached's) holds only if every round
// verified; the other fields are the last round's.
absl::StatusOr<Json> RunE2eAgainstMemcached(const E2eFlags& f, const PageFile& pages) {
  RoundsOfOneSide ours, theirs;
  for (int round = 0; round < f.rounds; ++round) {
    FARSWAP_ASSIGN_OR_RETURN(Json r, RunE2eOnce(f, pages, {}));
    FARSWAP_ASSIGN_OR_RETURN(Json mc, RunMemcached(pages, f.threads, f.depth));
    ours.Add(std::move(r));
    theirs.Add(std::move(mc));
  }
  const std::vector<double> store_ratio =
      RatiosByRound(ours.store_pages_per_s, theirs.store_pages_per_s);
  const std::vector<double> load_ratio =
      RatiosByRound(ours.load_pages_per_s, theirs.load_pages_per_s);
  Json j = ours.Summary();
  j.Obj("memcached", theirs.Summary())
      .Int("rounds", uint64_t(f.rounds))
      .Num("memcached_store_ratio", Median(store_ratio))
      .Num("memcached_load_ratio", Median(load_ratio))
      .NumList("memcached_store_ratio_by_round", store_ratio)
      .NumList("memcached_load_ratio_by_round", load_ratio);
  return j;
}

absl::StatusOr<Json> RunE2e(const E2eFlags& f) {
  FARSWAP_ASSIGN_OR_RETURN(PageFile pages, ReadPageFiles(f.corpus));
  if (f.compare_memcached) return RunE2eAgainstMemcached(f, pages);
  if (!f.data_tls) return RunE2eOnce(f, pages, {});
  std::string dir;
  absl::StatusOr<TlsFiles> tls = f.tls_ca.empty()
                                     ? ThrowawayCa(&dir)
                                     : absl::StatusOr<TlsFiles>(TlsFiles{
                                           .ca = f.tls_ca, .cert = f.tls_cert, .key = f.tls_key});
  // Rounds alternate plaintext and TLS, so both meet the same background
  // load; each figure is the median over rounds, and each side's
  // `verified` holds only if all its rounds verified.
  RoundsOfOneSide plain, secure;
  absl::Status status = tls.status();
  for (int round = 0; round < f.rounds && status.ok(); ++round) {
    absl::StatusOr<Json> p = RunE2eOnce(f, pages, {});
    absl::StatusOr<Json> s = p.ok() ? RunE2eOnce(f, pages, *tls) : p;
    status = s.status();
    if (status.ok()) {
      plain.Add(*std::move(p));
      secure.Add(*std::move(s));
    }
  }
  if (!dir.empty()) std::filesystem::remove_all(dir);
  FARSWAP_RETURN_IF_ERROR(status);
  Json j;
  j.Obj("plaintext", plain.Summary())
      .Obj("tls", secure.Summary())
      .Int("rounds", uint64_t(f.rounds))
      .Num("plaintext_store_pages_per_s", plain.store_median())
      .Num("plaintext_load_pages_per_s", plain.load_median())
      .Num("tls_store_pages_per_s", secure.store_median())
      .Num("tls_load_pages_per_s", secure.load_median())
      .Num("tls_store_ratio", secure.store_median() / plain.store_median())
      .Num("tls_load_ratio", secure.load_median() / plain.load_median());
  return j;
}

// Verified: every `verified` in the output is true — ours and memcached's
// with --compare, both kinds of node's with --data-tls.
bool Verified(const nlohmann::ordered_json& j) {
  if (j.contains("plaintext")) {
    return j["plaintext"].value("verified", false) && j["tls"].value("verified", false);
  }
  if (j.contains("memcached") && !j["memcached"].value("verified", false)) return false;
  return j.value("verified", false);
}

}  // namespace

CommandRunner AddE2eCommand(CLI::App& app) {
  auto f = std::make_shared<E2eFlags>();
  CLI::App* cmd =
      app.add_subcommand("e2e", "a page corpus through farswap::Client and N memory nodes");
  cmd->add_option("--spawn", f->spawn, "start N farswap-server processes on loopback")
      ->type_name("N")
      ->check(CLI::Range(1, 32));
  cmd->add_option("--nodes", f->nodes, "running nodes' gRPC addresses (or --spawn)")
      ->type_name("ADDR,...")
      ->delimiter(',');
  cmd->add_option("--transport", f->transport,
                  "the spawned nodes' data-plane backend (farswap-server --transport); the "
                  "client follows each node's address")
      ->check(CLI::IsMember({"tcp", "ucx"}))
      ->capture_default_str();
  cmd->add_option("--server-bin", f->server_bin,
                  "the farswap-server --spawn runs (default: beside this program, then the "
                  "build tree, then PATH)")
      ->type_name("PATH");
  cmd->add_option("--corpus", f->corpus, "page corpora (*.pages.zst)")
      ->type_name("FILE[,FILE...]")
      ->required();
  cmd->add_option("--replicas", f->replicas, "copies of each page (default: the client's)")
      ->type_name("R")
      ->check(CLI::Range(0, 32));
  cmd->add_option("--codec", f->codec_name, "page codec")
      ->check(CLI::IsMember({"lz4", "zstd"}))
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "client threads")
      ->type_name("T")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--depth", f->depth, "pages per batch and thread")
      ->type_name("D")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--kill-one-after", f->kill_after,
                  "SIGKILL one spawned node after this fraction of the stores")
      ->type_name("FRACTION")
      ->check(cli::Fraction());
  cmd->add_option("--compare", f->compare, "also run the corpus through memcached")
      ->check(CLI::IsMember({"memcached"}));
  cmd->add_option("--pool-limit", f->pool_limit, "the spawned nodes' --pool-limit")
      ->check(cli::Bytes())
      ->capture_default_str();
  cmd->add_option("--cold-after", f->cold_after_s,
                  "the spawned nodes' --cold-after: after the loads, wait for the cold passes, "
                  "report pool memory per page byte before and after, then load the cold pages "
                  "and a hot copy in turn (--cold-rounds); 0 = off")
      ->type_name("SECONDS")
      ->check(CLI::Range(uint32_t{0}, uint32_t{3600}))
      ->capture_default_str();
  cmd->add_option("--cold-rounds", f->cold_rounds,
                  "with --cold-after: rounds of loading the cold and a hot copy in turn")
      ->type_name("N")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--cold-zstd-level", f->cold_zstd_level, "the spawned nodes' --cold-zstd-level")
      ->type_name("N")
      ->check(CLI::Range(1, 19))
      ->capture_default_str();
  cmd->add_flag("--scrub", f->scrub,
                "after the loads, scrub every page once (Client::Scrub) and report its rate");
  cmd->add_flag("--no-client-poll", f->no_client_poll,
                "the client's waits leave replies to its I/O threads "
                "(ClientOptions::poll_while_waiting off; on by default: the bench makes only "
                "synchronous calls)");
  AddClientSpinOptions(cmd, &f->client_spin);
  cmd->add_flag("--json", f->json, "accepted for compatibility (the output is always JSON)");
  cmd->add_flag("--data-tls", f->data_tls,
                "run the workload twice, on plaintext nodes then on --data-tls nodes, and report "
                "both and tls_store_ratio / tls_load_ratio (needs --spawn)");
  cmd->add_option("--rounds", f->rounds,
                  "with --data-tls: plaintext/TLS pairs to run; with --compare memcached: "
                  "farswap/memcached pairs; the figures are medians")
      ->type_name("N")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--tls-ca", f->tls_ca,
                  "with --data-tls: the CA the nodes' certificate chains to (default: a "
                  "throwaway CA made with the openssl command line)")
      ->type_name("PATH");
  cmd->add_option("--tls-cert", f->tls_cert,
                  "with --data-tls: the nodes' certificate (for 127.0.0.1)")
      ->type_name("PATH");
  cmd->add_option("--tls-key", f->tls_key, "with --data-tls: the nodes' key")->type_name("PATH");
  return [f] {
    if (absl::Status s = CheckE2e(*f); !s.ok()) return ExitStatusFor("e2e", s);
    absl::StatusOr<Json> j = RunE2e(*f);
    if (!j.ok()) return ExitStatusFor("e2e", j.status());
    std::cout << j->ToString() << std::endl;
    // The figures are printed either way; a run that did not verify fails.
    if (!Verified(j->value())) {
      return ExitStatusFor("e2e",
                           absl::DataLossError("not every page was stored and loaded back equal "
                                               "(verified: false; first_error says why)"));
    }
    return 0;
  };
}

}  // namespace farswap::bench
