// farswap-bench e2e: a page corpus through farswap::Client and real memory
// nodes — stored with T threads, each D pages at a time through the batch
// API (one BATCH frame per node, as the memcached driver writes D requests
// at a time), loaded back the same way and
// verified — optionally with one node SIGKILLed part-way, and optionally
// side by side with memcached. Prints one JSON object (README.md).
#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench_args.h"
#include "farswap/client/client.h"
#include "farswap/common/mutex.h"
#include "farswap/common/page_file.h"
#include "farswap/common/status_macros.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "memcached_driver.h"
#include "server_process.h"

namespace farswap::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct E2eFlags {
  uint64_t spawn = 0;
  std::vector<std::string> nodes;
  std::string corpus;
  int replicas = 0;
  Codec codec = Codec::kLz4;
  int threads = 2;
  int depth = 32;
  double kill_after = -1;
  bool compare_memcached = false;
  std::string pool_limit = "512M";
};

absl::StatusOr<E2eFlags> ParseE2e(int argc, char** argv) {
  FARSWAP_ASSIGN_OR_RETURN(
      Args a, Args::Parse(argc, argv,
                          {"spawn", "nodes", "corpus", "replicas", "codec", "threads", "depth",
                           "kill-one-after", "compare", "json", "pool-limit"},
                          {"json"}));
  E2eFlags f;
  FARSWAP_ASSIGN_OR_RETURN(f.spawn, a.GetUint("spawn", 0));
  if (a.Has("nodes")) f.nodes = absl::StrSplit(a.Get("nodes"), ',', absl::SkipEmpty());
  if ((f.spawn == 0) == f.nodes.empty()) {
    return absl::InvalidArgumentError("give exactly one of --spawn N or --nodes ADDR,...");
  }
  if (f.spawn > 32) return absl::InvalidArgumentError("--spawn: at most 32 nodes");
  f.corpus = a.Get("corpus");
  if (f.corpus.empty()) return absl::InvalidArgumentError("--corpus FILE[,FILE...] is required");
  FARSWAP_ASSIGN_OR_RETURN(uint64_t r, a.GetUint("replicas", 0));
  f.replicas = int(r);
  FARSWAP_ASSIGN_OR_RETURN(f.codec, ParseCodec(a.Get("codec", "lz4")));
  if (f.codec == Codec::kNone) return absl::InvalidArgumentError("--codec: lz4 or zstd");
  FARSWAP_ASSIGN_OR_RETURN(uint64_t t, a.GetUint("threads", 2));
  FARSWAP_ASSIGN_OR_RETURN(uint64_t d, a.GetUint("depth", 32));
  if (t < 1 || t > 256 || d < 1 || d > 4096) {
    return absl::InvalidArgumentError("--threads must be 1..256 and --depth 1..4096");
  }
  f.threads = int(t);
  f.depth = int(d);
  FARSWAP_ASSIGN_OR_RETURN(f.kill_after, a.GetDouble("kill-one-after", -1));
  if (a.Has("kill-one-after") && (f.kill_after < 0 || f.kill_after > 1 || f.spawn < 2)) {
    return absl::InvalidArgumentError("--kill-one-after F needs 0 <= F <= 1 and --spawn >= 2");
  }
  if (a.Has("compare")) {
    if (a.Get("compare") != "memcached") {
      return absl::InvalidArgumentError("--compare: only 'memcached' is supported");
    }
    f.compare_memcached = true;
  }
  f.pool_limit = a.Get("pool-limit", f.pool_limit);
  return f;
}

uint64_t NodeMemUsed(const std::string& grpc_addr) {
  auto stub =
      v1::MemoryNode::NewStub(grpc::CreateChannel(grpc_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetStatsResponse resp;
  if (!stub->GetStats(&ctx, v1::GetStatsRequest(), &resp).ok()) return 0;
  return resp.node().pool().mem_used_total();
}

absl::StatusOr<Json> RunE2e(const E2eFlags& f) {
  FARSWAP_ASSIGN_OR_RETURN(PageFile pages, ReadPageFiles(f.corpus));
  const size_t n = pages.page_count();
  std::vector<std::unique_ptr<testing::ServerProcess>> spawned;
  std::vector<std::string> addrs = f.nodes;
  for (uint64_t i = 0; i < f.spawn; ++i) {
    FARSWAP_ASSIGN_OR_RETURN(
        auto p, testing::ServerProcess::Start({.pool_limit = f.pool_limit, .backing_size = ""}));
    addrs.push_back(p->grpc_addr());
    spawned.push_back(std::move(p));
  }
  ClientOptions o;
  o.nodes = addrs;
  o.replicas = f.replicas;
  o.codec = f.codec;
  o.op_timeout = absl::Seconds(1);
  o.health_interval = absl::Milliseconds(200);
  FARSWAP_ASSIGN_OR_RETURN(std::unique_ptr<Client> client, Client::Connect(o));

  const size_t kill_at = f.kill_after >= 0 ? size_t(f.kill_after * double(n)) : SIZE_MAX;
  std::atomic<size_t> issued{0};
  std::atomic<uint64_t> store_errors{0}, lost{0}, bad{0};
  std::string first_error;
  Mutex err_mu;
  auto note_error = [&](const absl::Status& s) {
    MutexLock l(&err_mu);
    if (first_error.empty()) first_error = s.ToString();
  };
  // Stores.
  auto t0 = Clock::now();
  {
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
          batch.push_back({i, pages.page(i)});
          if (batch.size() == size_t(f.depth)) flush();
        }
        flush();
      });
    }
    for (auto& th : ts) th.join();
  }
  double store_s = std::chrono::duration<double>(Clock::now() - t0).count();
  // Loads, verified against the corpus.
  std::vector<std::vector<double>> lat(f.threads);
  t0 = Clock::now();
  {
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
            } else if (std::memcmp(batch[k].out, pages.page(batch[k].page_no), kPageSize) != 0) {
              bad++;
            }
            lat[t].push_back(us);  // a page's latency is its batch's
          }
          batch.clear();
        };
        for (size_t i = size_t(t); i < n; i += size_t(f.threads)) {
          batch.push_back({i, bufs.data() + batch.size() * kPageSize});
          if (batch.size() == size_t(f.depth)) flush();
        }
        flush();
      });
    }
    for (auto& th : ts) th.join();
  }
  double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  ClientStats st = client->stats();
  uint64_t mem = 0;
  int live = 0;
  for (const NodeStats& ns : st.nodes) {
    if (ns.state != "up") continue;
    mem += NodeMemUsed(ns.address);
    live++;
  }
  Json j;
  j.Int("pages", n)
      .Int("nodes", addrs.size())
      .Int("live_nodes", live)
      .Int("replicas", client->replicas())
      .Str("codec", CodecName(f.codec))
      .Int("threads", f.threads)
      .Int("depth", f.depth)
      .Num("store_pages_per_s", n / store_s)
      .Num("load_pages_per_s", n / load_s)
      .Num("load_us_p50", Percentile(all, 50))
      .Num("load_us_p99", Percentile(all, 99))
      .Bool("verified", bad == 0 && lost == 0 && store_errors == 0)
      .Int("lost_pages", lost)
      .Int("store_errors", store_errors)
      .Int("node_mem_used_total", mem)
      .Num("bytes_per_page_byte", double(mem) / (double(n) * kPageSize * client->replicas()))
      .Int("bytes_after_compression", st.bytes_after_compression)
      .Int("same_pages", st.same_pages)
      .Int("raw_pages", st.raw_pages)
      .Int("checksum_failures", st.checksum_failures)
      .Int("failovers", st.failovers)
      .Int("rereplicated_slabs", st.rereplicated_slabs)
      .Int("under_replicated_slabs", st.under_replicated_slabs);
  if (f.kill_after >= 0) j.Num("killed_after_fraction", f.kill_after);
  if (!first_error.empty()) j.Str("first_error", first_error);
  client.reset();
  spawned.clear();
  if (f.compare_memcached) {
    FARSWAP_ASSIGN_OR_RETURN(Json mc, RunMemcached(pages, f.threads, f.depth));
    j.Obj("memcached", mc);
  }
  return j;
}

}  // namespace

int E2eMain(int argc, char** argv) {
  // stdout carries exactly one JSON object; the client's logs go to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("farswap-bench"));
  absl::StatusOr<E2eFlags> f = ParseE2e(argc, argv);
  if (!f.ok()) {
    std::cerr << "farswap-bench e2e: " << f.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<Json> j = RunE2e(*f);
  if (!j.ok()) {
    std::cerr << "farswap-bench e2e: " << j.status() << "\n";
    return 1;
  }
  std::cout << j->ToString() << std::endl;
  return 0;
}

}  // namespace farswap::bench
