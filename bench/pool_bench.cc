// farswap-bench pool: a page corpus through one in-process zspool.
//
// Each page is encoded once (same-filled pages stored as nothing, pages that
// don't compress below the pool's huge threshold stored raw), stored, read
// back and checked; then optionally FRACTION of the pages are freed at random
// (seeded) and the pool compacted. Prints one JSON object (see README.md).
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "bench_args.h"
#include "farswap/alloc/zspool.h"
#include "farswap/client/page_codec.h"
#include "farswap/common/page_file.h"
#include "farswap/common/status_macros.h"

namespace farswap::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct StoredPage {
  EncodedPage encoding;
  alloc::ZsHandle handle;
  bool live = true;
};

bool VerifyPage(const alloc::ZsPool& pool, PageCodec& codec, const StoredPage& s,
                const uint8_t* original, uint8_t* scratch) {
  if (s.encoding.kind == EncodedPage::Kind::kSameFilled) {
    PageCodec::DecodeSameFilled(s.encoding.fill, scratch);
  } else {
    absl::StatusOr<alloc::ZsPool::ReadGuard> g = pool.Read(s.handle);
    if (!g.ok() || g->size() != s.encoding.length) return false;
    if (!codec.Decode(s.encoding.codec, g->data(), g->size(), scratch).ok()) return false;
  }
  return std::memcmp(scratch, original, kPageSize) == 0;
}

Json PoolFigures(const alloc::ZsPoolStats& s) {
  Json j;
  j.Int("compr_data_size", s.compr_data_size)
      .Int("mem_used_total", s.mem_used_total)
      .Num("overhead", s.compr_data_size ? double(s.mem_used_total) / s.compr_data_size : 0)
      .Int("metadata_bytes", s.metadata_bytes);
  return j;
}

std::vector<Json> ClassTable(const alloc::ZsPool& pool) {
  std::vector<Json> rows;
  for (const alloc::ZsClassStats& c : pool.GetClassStats()) {
    if (c.zspages == 0) continue;
    Json row;
    row.Int("size", c.size)
        .Int("pages_per_zspage", c.pages_per_zspage)
        .Int("objs_per_zspage", c.objs_per_zspage)
        .Int("zspages", c.zspages)
        .Int("obj_allocated", c.obj_allocated)
        .Int("obj_used", c.obj_used)
        .Int("pages_used", c.pages_used)
        .Int("freeable", c.freeable);
    rows.push_back(row);
  }
  return rows;
}

struct PoolFlags {
  std::string corpus;
  std::string codec = "lz4";
  double churn = 0;
  uint64_t seed = 1;
  uint64_t max_pages_per_zspage = 8;
  int zstd_level = 1;
  bool classes = false;
  std::string victims_out;
  bool json = false;
};

absl::Status Run(const PoolFlags& f) {
  FARSWAP_ASSIGN_OR_RETURN(Codec codec_kind, ParseCodec(f.codec));
  const double churn = f.churn;
  const uint64_t seed = f.seed, chain = f.max_pages_per_zspage;
  FARSWAP_ASSIGN_OR_RETURN(PageFile pages, ReadPageFiles(f.corpus));

  FARSWAP_ASSIGN_OR_RETURN(std::unique_ptr<alloc::ZsPool> pool,
                           alloc::ZsPool::Create({.max_pages_per_zspage = uint32_t(chain)}));
  PageCodec codec(
      {.codec = codec_kind, .zstd_level = f.zstd_level, .raw_threshold = pool->huge_class_size()});

  const size_t n = pages.page_count();
  std::vector<StoredPage> stored(n);
  std::vector<double> malloc_ns;
  malloc_ns.reserve(n);
  std::vector<uint8_t> buf(kPageSize), scratch(kPageSize);
  for (size_t i = 0; i < n; ++i) {
    StoredPage& s = stored[i];
    s.encoding = codec.Encode(pages.page(i), buf.data());
    if (s.encoding.kind == EncodedPage::Kind::kSameFilled) {
      pool->AddCallerCounters(kPageSize, 1);
      continue;
    }
    auto t0 = Clock::now();
    absl::StatusOr<alloc::ZsHandle> h = pool->Malloc(s.encoding.length);
    auto t1 = Clock::now();
    if (!h.ok()) return h.status();
    malloc_ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    s.handle = *h;
    FARSWAP_RETURN_IF_ERROR(pool->Write(s.handle, buf.data(), s.encoding.length));
    pool->AddCallerCounters(kPageSize, 0);
  }
  bool verified = true;
  for (size_t i = 0; i < n; ++i) {
    verified &= VerifyPage(*pool, codec, stored[i], pages.page(i), scratch.data());
  }
  alloc::ZsPoolStats fill = pool->GetStats();

  Json out;
  out.Int("pages", n)
      .Str("codec", CodecName(codec_kind))
      .Int("max_pages_per_zspage", chain)
      .Int("orig_data_size", fill.orig_data_size)
      .Int("compr_data_size", fill.compr_data_size)
      .Int("mem_used_total", fill.mem_used_total)
      .Int("same_pages", fill.same_pages)
      .Int("huge_pages", fill.huge_pages)
      .Num("overhead",
           fill.compr_data_size ? double(fill.mem_used_total) / fill.compr_data_size : 0)
      .Int("metadata_bytes", fill.metadata_bytes)
      .Num("overhead_with_metadata",
           fill.compr_data_size
               ? double(fill.mem_used_total + fill.metadata_bytes) / fill.compr_data_size
               : 0)
      .Num("ratio", fill.mem_used_total ? double(fill.orig_data_size) / fill.mem_used_total : 0)
      .Num("malloc_ns_p50", Percentile(malloc_ns, 50));

  std::vector<double> free_ns;
  if (churn > 0) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    size_t victims = size_t(double(n) * churn);
    if (!f.victims_out.empty()) {
      // The freed page indices, one a line, so bench/compare-zram can
      // discard exactly these pages from a zram device.
      std::FILE* victims_file = std::fopen(f.victims_out.c_str(), "w");
      if (victims_file == nullptr) return absl::NotFoundError("cannot write --victims-out file");
      for (size_t k = 0; k < victims; ++k) std::fprintf(victims_file, "%zu\n", order[k]);
      std::fclose(victims_file);
    }
    for (size_t k = 0; k < victims; ++k) {
      StoredPage& s = stored[order[k]];
      s.live = false;
      if (s.encoding.kind == EncodedPage::Kind::kSameFilled) {
        pool->AddCallerCounters(-int64_t(kPageSize), -1);
        continue;
      }
      auto t0 = Clock::now();
      pool->Free(s.handle);
      auto t1 = Clock::now();
      free_ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
      pool->AddCallerCounters(-int64_t(kPageSize), 0);
    }
    alloc::ZsPoolStats before = pool->GetStats();
    pool->Compact();
    alloc::ZsPoolStats after = pool->GetStats();
    for (size_t i = 0; i < n; ++i) {
      if (stored[i].live) {
        verified &= VerifyPage(*pool, codec, stored[i], pages.page(i), scratch.data());
      }
    }
    Json ac = PoolFigures(after);
    ac.Num("churn", churn)
        .Int("pages", n - victims)
        .Int("mem_used_before_compact", before.mem_used_total)
        .Num("overhead_before_compact",
             before.compr_data_size ? double(before.mem_used_total) / before.compr_data_size : 0)
        .Int("pages_compacted", after.pages_compacted);
    out.Obj("after_churn", ac);
  }
  out.Num("free_ns_p50", Percentile(free_ns, 50)).Bool("verified", verified);
  if (f.classes) out.ObjList("classes", ClassTable(*pool));
  std::cout << out.ToString() << std::endl;
  if (!verified) return absl::DataLossError("a page did not read back equal");
  return absl::OkStatus();
}

}  // namespace

CommandRunner AddPoolCommand(CLI::App& app) {
  auto f = std::make_shared<PoolFlags>();
  CLI::App* cmd = app.add_subcommand("pool", "a page corpus through an in-process zspool");
  cmd->add_option("--corpus", f->corpus, "page corpora (*.pages.zst)")
      ->type_name("FILE[,FILE...]")
      ->required();
  cmd->add_option("--codec", f->codec, "page codec")
      ->check(CLI::IsMember({"lz4", "zstd", "none"}))
      ->capture_default_str();
  cmd->add_option("--churn", f->churn, "free this fraction of the pages (seeded), then compact")
      ->type_name("FRACTION")
      ->check(cli::Fraction())
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "seed of the churn's choice")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--max-pages-per-zspage", f->max_pages_per_zspage, "longest zspage chain")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd->add_option("--zstd-level", f->zstd_level, "zstd compression level")
      ->check(CLI::Range(1, 22))
      ->capture_default_str();
  cmd->add_flag("--classes", f->classes, "add the per-size-class table (\"classes\")");
  cmd->add_option("--victims-out", f->victims_out, "write the freed page indices here, one a line")
      ->type_name("FILE");
  cmd->add_flag("--json", f->json, "accepted for compatibility (the output is always JSON)");
  return [f] {
    absl::Status s = Run(*f);
    return s.ok() ? 0 : ExitStatusFor("pool", s);
  };
}

}  // namespace farswap::bench
