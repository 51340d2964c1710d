// farswap-bench index: the node's page index (server/src/page_index.h) on
// its own, single-threaded: --entries keys of --tenants tenants are
// inserted, found in a random order (--rounds times over), replaced by new
// versions and erased. Prints the time per operation and the heap bytes an
// entry costs with its Entry (glibc's mallinfo2 before and after the
// inserts: the entries' chunks, the shards' tables and page sets). The
// index's own cost per page, apart from the network and the pool; README.md
// documents the fields.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench_args.h"
#include "page_index.h"

namespace farswap::bench {
namespace {

using Clock = std::chrono::steady_clock;
using server::internal::Entry;
using server::internal::PageIndex;
using server::internal::PageKey;

struct IndexFlags {
  uint64_t entries = 1'000'000;
  uint32_t tenants = 4;
  int rounds = 3;
  uint64_t seed = 1;
  bool json = false;
};

double NsPer(Clock::time_point start, Clock::time_point end, uint64_t ops) {
  return std::chrono::duration<double, std::nano>(end - start).count() / double(ops);
}

// HeapBytes: glibc's count of heap in use. A sanitizer's allocator (the
// ASan build) replaces malloc, glibc's counts stay where they were, and
// heap_bytes_per_entry is reported as null.
uint64_t HeapBytes() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;  // in use from the arenas, and mmap'd chunks
}

absl::Status Run(const IndexFlags& f) {
  // Page p of tenant t: the keys a node holds for a few clients' regions.
  std::vector<PageKey> keys(f.entries);
  for (uint64_t i = 0; i < f.entries; ++i) {
    keys[i] = PageKey{uint32_t(i % f.tenants), i / f.tenants};
  }
  auto index = std::make_unique<PageIndex>();
  const uint64_t heap_before = HeapBytes();
  const Clock::time_point insert_start = Clock::now();
  for (uint64_t i = 0; i < f.entries; ++i) index->Replace(std::make_unique<Entry>(keys[i], i + 1));
  const Clock::time_point insert_end = Clock::now();
  const uint64_t heap_after = HeapBytes();

  std::mt19937_64 rng(f.seed);
  std::shuffle(keys.begin(), keys.end(), rng);
  uint64_t found = 0;
  const Clock::time_point find_start = Clock::now();
  for (int r = 0; r < f.rounds; ++r) {
    for (const PageKey& k : keys) {
      const Entry* e = index->Find(k);
      found += e != nullptr && e->key == k;  // read the entry, as the store does
    }
  }
  const Clock::time_point find_end = Clock::now();

  uint64_t replaced = 0;
  const Clock::time_point replace_start = Clock::now();
  for (uint64_t i = 0; i < f.entries; ++i) {
    replaced += index->Replace(std::make_unique<Entry>(keys[i], f.entries + i + 1)) != nullptr;
  }
  const Clock::time_point replace_end = Clock::now();

  std::shuffle(keys.begin(), keys.end(), rng);
  uint64_t erased = 0;
  const Clock::time_point erase_start = Clock::now();
  for (const PageKey& k : keys) erased += index->Erase(k) != nullptr;
  const Clock::time_point erase_end = Clock::now();

  // The entries alone take entries x sizeof(Entry): a smaller growth means
  // glibc's counts did not see them (HeapBytes).
  const bool heap_counted = heap_after >= heap_before + f.entries * sizeof(Entry);
  const bool verified = found == uint64_t(f.rounds) * f.entries && replaced == f.entries &&
                        erased == f.entries && index->size() == 0;
  Json out;
  out.Int("entries", f.entries)
      .Int("tenants", f.tenants)
      .Int("rounds", f.rounds)
      .Int("shards", PageIndex::kShards)
      .Int("entry_bytes", sizeof(Entry))
      .Num("heap_bytes_per_entry", heap_counted
                                       ? double(heap_after - heap_before) / double(f.entries)
                                       : std::nan(""))  // null
      .Num("insert_ns", NsPer(insert_start, insert_end, f.entries))
      .Num("find_ns", NsPer(find_start, find_end, uint64_t(f.rounds) * f.entries))
      .Num("replace_ns", NsPer(replace_start, replace_end, f.entries))
      .Num("erase_ns", NsPer(erase_start, erase_end, f.entries))
      .Bool("verified", verified);
  std::cout << out.ToString() << "\n";
  if (!verified) {
    return absl::DataLossError(absl::StrCat("the index lost keys: found ", found, ", replaced ",
                                            replaced, ", erased ", erased, " of ", f.entries));
  }
  return absl::OkStatus();
}

}  // namespace

CommandRunner AddIndexCommand(CLI::App& app) {
  auto f = std::make_shared<IndexFlags>();
  CLI::App* cmd = app.add_subcommand("index", "the node's page index alone: time and heap per key");
  // At most 100M keys: ~175 bytes each with the key list, ~17 GiB.
  cmd->add_option("--entries", f->entries, "keys to insert, find, replace and erase")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}))
      ->capture_default_str();
  cmd->add_option("--tenants", f->tenants, "tenants the keys are spread over (round-robin)")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  cmd->add_option("--rounds", f->rounds, "times every key is found")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "seed of the random order")->capture_default_str();
  cmd->add_flag("--json", f->json, "accepted for compatibility (the output is always JSON)");
  return [f] {
    absl::Status s = Run(*f);
    return s.ok() ? 0 : ExitStatusFor("index", s);
  };
}

}  // namespace farswap::bench
