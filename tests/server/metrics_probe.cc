// metrics_probe: the client side of tests/server/node_metrics_test.py. It
// attaches a real farswap::Client (R = 1) to one node and runs commands
// read from stdin, one a line, answering each with one line of JSON on
// stdout, so the test can scrape the node between them:
//
//   store N          store corpus pages 0..N-1 (StoreBatch, 64 at a time)
//                    -> {"ok": true, "errors": 0}
//   load N           load them back and compare with the corpus
//                    -> {"ok": true, "errors": 0, "mismatches": 0}
//   client-metrics   one stats() snapshot: the Prometheus text exposition of
//                    ClientMetrics (live) and of CollectClientStats(snapshot),
//                    then the snapshot's figures ->
//                    lines of exposition, "# END LIVE", lines, "# END SNAPSHOT",
//                    then {"stores": ..., ...}
//   quit
//
//   metrics_probe --node GRPC_ADDR --corpus FILE
//
// Exit status 0 after quit, 1 when it cannot attach or read the corpus, 2
// for bad flags.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "farswap/client/client.h"
#include "farswap/client/client_metrics.h"
#include "farswap/common/metric_families.h"
#include "farswap/common/page_file.h"
#include "prometheus/text_serializer.h"

namespace farswap {
namespace {

constexpr size_t kBatch = 64;

std::string StatsJson(const ClientStats& s) {
  std::string nodes;
  for (const NodeStats& n : s.nodes) {
    uint64_t count = 0;
    for (uint64_t b : n.latency_us) count += b;
    absl::StrAppend(&nodes, nodes.empty() ? "" : ", ", "{\"address\": \"", n.address,
                    "\", \"state\": \"", n.state, "\", \"slabs\": ", n.slabs,
                    ", \"requests\": ", n.requests, ", \"errors\": ", n.errors,
                    ", \"latency_count\": ", count, ", \"latency_sum_ns\": ", n.latency_sum_ns,
                    ", \"quarantined\": ", n.quarantined ? "true" : "false",
                    ", \"bad_copies\": ", n.bad_copies, ", \"quarantines\": ", n.quarantines, "}");
  }
  return absl::StrCat(
      "{\"stores\": ", s.stores, ", \"loads\": ", s.loads, ", \"invalidates\": ", s.invalidates,
      ", \"store_errors\": ", s.store_errors, ", \"load_errors\": ", s.load_errors,
      ", \"bytes_before_compression\": ", s.bytes_before_compression,
      ", \"bytes_after_compression\": ", s.bytes_after_compression,
      ", \"same_pages\": ", s.same_pages, ", \"raw_pages\": ", s.raw_pages,
      ", \"slabs\": ", s.slabs, ", \"replicas\": ", s.replicas, ", \"lost_pages\": ", s.lost_pages,
      ", \"copies_repaired\": ", s.copies_repaired,
      ", \"copy_repairs_failed\": ", s.copy_repairs_failed,
      ", \"copy_repairs_skipped\": ", s.copy_repairs_skipped,
      ", \"scrubbed_copies\": ", s.scrubbed_copies, ", \"scrub_bad_copies\": ", s.scrub_bad_copies,
      ", \"scrub_unreadable_pages\": ", s.scrub_unreadable_pages,
      ", \"scrub_passes\": ", s.scrub_passes, ", \"nodes\": [", nodes, "]}");
}

int Run(int argc, char** argv) {
  // stdout carries the replies only; the client library logs to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("metrics_probe"));
  std::string node, corpus_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--node") {
      node = argv[i + 1];
    } else if (flag == "--corpus") {
      corpus_path = argv[i + 1];
    }
  }
  if (argc != 5 || node.empty() || corpus_path.empty()) {
    std::cerr << "usage: metrics_probe --node GRPC_ADDR --corpus FILE\n";
    return 2;
  }
  absl::StatusOr<PageFile> corpus = ReadPageFiles(corpus_path);
  if (!corpus.ok()) {
    std::cerr << "metrics_probe: " << corpus.status() << "\n";
    return 1;
  }
  ClientOptions o;
  o.nodes = {node};
  o.replicas = 1;
  o.client_name = "metrics_probe";
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(o);
  if (!client.ok()) {
    std::cerr << "metrics_probe: " << client.status() << "\n";
    return 1;
  }
  auto collectable = std::make_shared<ClientMetrics>(client->get());
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string command;
    size_t n = 0;
    in >> command >> n;
    n = std::min(n, corpus->page_count());
    if (command == "quit") return 0;
    if (command == "store" || command == "load") {
      uint64_t errors = 0, mismatches = 0;
      std::vector<uint8_t> out(kBatch * kPageSize);
      for (size_t first = 0; first < n; first += kBatch) {
        const size_t count = std::min(kBatch, n - first);
        std::vector<absl::Status> results;
        if (command == "store") {
          std::vector<PageWrite> writes;
          for (size_t i = 0; i < count; ++i) writes.push_back({first + i, corpus->page(first + i)});
          results = (*client)->StoreBatch(writes);
        } else {
          std::vector<PageRead> reads;
          for (size_t i = 0; i < count; ++i) reads.push_back({first + i, &out[i * kPageSize]});
          results = (*client)->LoadBatch(reads);
          for (size_t i = 0; i < count; ++i) {
            if (results[i].ok() &&
                std::memcmp(&out[i * kPageSize], corpus->page(first + i), kPageSize) != 0) {
              ++mismatches;
            }
          }
        }
        for (const absl::Status& s : results) errors += s.ok() ? 0 : 1;
      }
      std::cout << "{\"ok\": " << (errors + mismatches == 0 ? "true" : "false")
                << ", \"errors\": " << errors << ", \"mismatches\": " << mismatches << "}"
                << std::endl;
      continue;
    }
    if (command == "scrub") {
      absl::StatusOr<ScrubResult> r = (*client)->Scrub(0, n);
      std::cout << "{\"ok\": " << (r.ok() ? "true" : "false")
                << ", \"copies_checked\": " << (r.ok() ? r->copies_checked : 0) << "}" << std::endl;
      continue;
    }
    if (command == "client-metrics") {
      const ClientStats snapshot = (*client)->stats();
      std::cout << metrics::TextExposition(*collectable) << "# END LIVE\n";
      prometheus::TextSerializer().Serialize(std::cout, CollectClientStats(snapshot));
      std::cout << "# END SNAPSHOT\n" << StatsJson(snapshot) << std::endl;
      continue;
    }
    std::cout << "{\"ok\": false, \"error\": \"unknown command\"}" << std::endl;
  }
  return 0;
}

}  // namespace
}  // namespace farswap

int main(int argc, char** argv) { return farswap::Run(argc, argv); }
