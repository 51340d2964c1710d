// farswap-bench writeback: the node's writeback on its own, in process. A
// page store on a backing file (io_uring, O_DIRECT where the file system
// allows it) is filled with --copies of a corpus, lz4-encoded as a client
// would, and a random share of the pages is stored again (--churn); then
// its pool limit drops to a quarter of what the objects hold (watermarks
// 0.6 / 0.5, as `farswap-bench node`'s drain phase sets) and the store's
// writeback thread (with --writeback-threads - 1 helpers) runs a pass down
// to the low watermark. No client, no network, no store competes: what it
// reports is the writeback path's own cost per page, the figure the
// drain's bandwidth is made of (`cpu_ns_per_page`: the process's CPU time
// over the pass, every writeback thread's together, per page written back).
// Each of --rounds builds a fresh store and file. Every 16th stored page of
// the last round (most of them written back) is loaded back (a scrub read:
// no promotion) and compared with the corpus page. README.md documents the
// fields.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench_args.h"
#include "farswap/client/page_codec.h"
#include "farswap/common/page_file.h"
#include "farswap/common/status_macros.h"
#include "farswap/server/block_device.h"
#include "farswap/server/page_store.h"

namespace farswap::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct WritebackFlags {
  std::string corpus;
  uint32_t copies = 4;
  int rounds = 3;
  std::string backing_file;  // empty: a temporary file in $TMPDIR (or /var/tmp)
  uint64_t backing_bytes = uint64_t{4} << 30;
  uint64_t segment_bytes = 1 << 20;
  uint32_t batch_pages = server::kDefaultWritebackBatchPages;
  uint32_t write_request_bytes = server::kDefaultWriteRequestBytes;
  uint32_t threads = 1;
  double churn = 0.5;
  uint64_t seed = 1;
};

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// Encoded: the corpus pages as a client sends them, encoded once.
struct Encoded {
  std::vector<uint8_t> bytes;  // the pages' payloads, back to back
  std::vector<size_t> offset;  // where page i's payload starts
  std::vector<EncodedPage> page;
};

Encoded EncodeCorpus(const PageFile& pages) {
  Encoded out;
  PageCodec codec({.codec = Codec::kLz4});
  std::vector<uint8_t> buf(kPageSize);
  for (size_t i = 0; i < pages.page_count(); ++i) {
    const EncodedPage e = codec.Encode(pages.page(i), buf.data());
    out.offset.push_back(out.bytes.size());
    out.page.push_back(e);
    out.bytes.insert(out.bytes.end(), buf.begin(), buf.begin() + e.length);
  }
  return out;
}

struct RoundResult {
  uint64_t pages = 0;  // written back by the pass
  uint64_t bytes = 0;  // backing-store bytes the pass wrote
  double seconds = 0;
  double cpu_seconds = 0;
  bool verified = true;
  uint64_t checked = 0;  // pages loaded back and compared
};

absl::StatusOr<RoundResult> RunRound(const WritebackFlags& f, const PageFile& pages,
                                     const Encoded& enc, const std::string& path, int round,
                                     bool verify) {
  FARSWAP_ASSIGN_OR_RETURN(std::unique_ptr<server::FileBlockDevice> device,
                           server::FileBlockDevice::Open({
                               .path = path,
                               .size_bytes = f.backing_bytes,
                           }));
  FARSWAP_ASSIGN_OR_RETURN(std::unique_ptr<server::PageStore> store,
                           server::PageStore::Create({
                               .backing = device.get(),
                               .segment_bytes = f.segment_bytes,
                               .write_request_bytes = f.write_request_bytes,
                               .writeback_batch_pages = f.batch_pages,
                               .writeback_threads = f.threads,
                               .start_cold_worker = false,
                           }));
  const size_t n = pages.page_count();
  auto request = [&](size_t i, uint64_t version) {
    const EncodedPage& e = enc.page[i];
    return server::StoreRequest{
        .payload = absl::MakeConstSpan(enc.bytes.data() + enc.offset[i], e.length),
        .codec = uint8_t(e.codec),
        .same_filled = e.kind == EncodedPage::Kind::kSameFilled,
        .fill = e.fill,
        .version = version,
    };
  };
  for (uint32_t copy = 0; copy < f.copies; ++copy) {  // copy c is tenant c + 1
    for (size_t i = 0; i < n; ++i) {
      FARSWAP_RETURN_IF_ERROR(store->Store(copy + 1, i, request(i, /*version=*/1)));
    }
  }
  // Churn: a random `churn` share of the pages is stored again (version 2),
  // in random order. A node that has run a while holds its entries in
  // that order: the LRU's order (store order) is no longer the order they
  // lie in memory, and the walk's reads are cache misses, as on a node.
  std::vector<std::pair<uint32_t, uint32_t>> again;  // (copy, page)
  for (uint32_t copy = 0; copy < f.copies; ++copy) {
    for (size_t i = 0; i < n; ++i) again.emplace_back(copy, uint32_t(i));
  }
  std::mt19937_64 rng(f.seed + round);
  std::shuffle(again.begin(), again.end(), rng);
  again.resize(size_t(double(again.size()) * f.churn));
  for (const auto& [copy, i] : again) {
    FARSWAP_RETURN_IF_ERROR(store->Store(copy + 1, i, request(i, /*version=*/2)));
  }
  const server::PageStoreStats before = store->GetStats();
  const uint64_t in_use = before.pool.mem_used_total;
  // The node's writeback thread (and its helpers) run the pass: the new
  // limit kicks it, and QuiesceWriteback returns once a pass that started
  // after it has finished — the one the limit started, and a second that
  // finds nothing left to do. This thread waits meanwhile, so the
  // process's CPU time over that span is the pass's.
  const Clock::time_point t0 = Clock::now();
  const double cpu0 = ProcessCpuSeconds();
  FARSWAP_RETURN_IF_ERROR(store->SetLimits(
      {.pool_limit_bytes = in_use / 4, .high_watermark = 0.6, .low_watermark = 0.5}));
  store->QuiesceWriteback();
  const double cpu1 = ProcessCpuSeconds();
  const Clock::time_point t1 = Clock::now();
  const server::PageStoreStats after = store->GetStats();
  RoundResult r{
      .pages = after.written_back_pages - before.written_back_pages,
      .bytes = after.backing_bytes_written - before.backing_bytes_written,
      .seconds = std::chrono::duration<double>(t1 - t0).count(),
      .cpu_seconds = cpu1 - cpu0,
  };
  if (!verify) return r;
  PageCodec codec({.codec = Codec::kLz4});
  std::vector<uint8_t> page(kPageSize);
  for (uint32_t copy = 0; copy < f.copies; ++copy) {
    for (size_t i = 0; i < n; i += 16) {
      absl::StatusOr<server::LoadedPage> p =
          store->Load(copy + 1, i, server::PageStore::LoadKind::kScrub);
      bool decoded = p.ok();
      if (decoded && p->same_filled) {
        PageCodec::DecodeSameFilled(p->fill, page.data());
      } else if (decoded) {
        decoded =
            codec.Decode(Codec(p->codec), p->payload.data(), p->payload.size(), page.data()).ok();
      }
      const bool same = decoded && std::equal(page.begin(), page.end(), pages.page(i));
      r.verified &= same;
      ++r.checked;
    }
  }
  return r;
}

absl::Status Run(const WritebackFlags& f) {
  FARSWAP_ASSIGN_OR_RETURN(PageFile pages, ReadPageFiles(f.corpus));
  const Encoded enc = EncodeCorpus(pages);
  std::string path = f.backing_file;
  if (path.empty()) {
    const char* tmp = getenv("TMPDIR");
    path = absl::StrCat(tmp != nullptr ? tmp : "/var/tmp", "/farswap-writeback-bench.", getpid());
  }
  std::vector<double> cpu_ns, bytes_per_s, pages_per_s;
  RoundResult last;
  for (int round = 0; round < f.rounds; ++round) {
    absl::StatusOr<RoundResult> r = RunRound(f, pages, enc, path, round, round + 1 == f.rounds);
    unlink(path.c_str());
    if (!r.ok()) return r.status();
    if (r->pages == 0) return absl::InternalError("the pass wrote nothing back");
    cpu_ns.push_back(r->cpu_seconds * 1e9 / double(r->pages));
    bytes_per_s.push_back(double(r->bytes) / r->seconds);
    pages_per_s.push_back(double(r->pages) / r->seconds);
    last = *r;
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  Json out;
  out.Int("pages", pages.page_count() * f.copies)
      .Int("rounds", f.rounds)
      .Int("segment_bytes", f.segment_bytes)
      .Int("batch_pages", f.batch_pages)
      .Int("write_request_bytes", f.write_request_bytes)
      .Int("writeback_threads", f.threads)
      .Num("churn", f.churn)
      .Int("written_back_pages", last.pages)
      .Int("backing_bytes", last.bytes)
      .Num("cpu_ns_per_page", median(cpu_ns))
      .NumList("cpu_ns_per_page_by_round", cpu_ns)
      .Num("bytes_per_s", median(bytes_per_s))
      .NumList("bytes_per_s_by_round", bytes_per_s)
      .Num("pages_per_s", median(pages_per_s))
      .Int("checked_pages", last.checked)
      .Bool("verified", last.verified && last.checked > 0);
  std::cout << out.ToString() << "\n";
  if (!last.verified) {
    return absl::DataLossError(
        absl::StrCat("a page did not read back as stored (", last.checked, " checked)"));
  }
  return absl::OkStatus();
}

}  // namespace

CommandRunner AddWritebackCommand(CLI::App& app) {
  auto f = std::make_shared<WritebackFlags>();
  CLI::App* cmd =
      app.add_subcommand("writeback", "the node's writeback alone, in process: CPU per page");
  cmd->add_option("--corpus", f->corpus, "page corpora (*.pages.zst)")->required();
  cmd->add_option("--copies", f->copies, "times the corpus is stored (as so many tenants)")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  cmd->add_option("--rounds", f->rounds, "fresh stores filled and written back")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--backing-file", f->backing_file,
                  "the backing file (removed after each round; default: one in $TMPDIR, else "
                  "/var/tmp)");
  cmd->add_option("--backing-size", f->backing_bytes, "the backing file's size (preallocated)")
      ->transform(cli::Bytes())
      ->check(CLI::Range(uint64_t{16} << 20, uint64_t{1} << 40))
      ->capture_default_str();
  cmd->add_option("--segment-size", f->segment_bytes, "segment bytes")
      ->transform(cli::Bytes())
      ->check(CLI::Range(uint64_t{64} << 10, uint64_t{64} << 20))
      ->capture_default_str();
  cmd->add_option("--batch-pages", f->batch_pages, "pages a writeback batch isolates")
      ->check(CLI::Range(1u, server::kMaxWritebackBatchPages))
      ->capture_default_str();
  cmd->add_option("--write-request-size", f->write_request_bytes,
                  "bytes a segment flush is cut into (a multiple of 4096)")
      ->transform(cli::Bytes())
      ->check(CLI::Range(uint32_t{4096}, uint32_t{16} << 20))
      ->capture_default_str();
  cmd->add_option("--writeback-threads", f->threads,
                  "threads the pass runs on (the node's --writeback-threads)")
      ->check(CLI::Range(1u, server::kMaxWritebackThreads))
      ->capture_default_str();
  cmd->add_option("--churn", f->churn,
                  "share of the pages stored again, in random order, before the pass")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "seed of the churn's order (round r uses seed + r)")
      ->capture_default_str();
  return [f] {
    absl::Status s = Run(*f);
    return s.ok() ? 0 : ExitStatusFor("writeback", s);
  };
}

}  // namespace farswap::bench
