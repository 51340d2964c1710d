#include "region_workload.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace farswap::bench {
namespace {

constexpr uint64_t kPage = 4096;

// ZipfTable draws ranks 0..n-1 with P(k) ∝ 1/(k+1)^theta by binary search
// in the cumulative distribution (n doubles: 2 MiB for a 1 GiB region).
class ZipfTable {
 public:
  ZipfTable(uint64_t n, double theta) : cdf_(n) {
    double sum = 0;
    for (uint64_t k = 0; k < n; ++k) {
      sum += 1.0 / std::pow(static_cast<double>(k + 1), theta);
      cdf_[k] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }
  uint64_t Draw(double u) const {
    return std::min<uint64_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin(),
                              cdf_.size() - 1);
  }

 private:
  std::vector<double> cdf_;
};

// Scramble maps a rank to a page: multiplication by an odd constant and a
// modulus is a bijection when pages is a power of two, close to one
// otherwise (collisions only merge two ranks' weights).
uint64_t Scramble(uint64_t rank, uint64_t pages) {
  return (rank * 0x9e3779b97f4a7c15ull + (rank >> 7)) % pages;
}

}  // namespace

absl::Status ValidateWorkload(const WorkloadSpec& spec) {
  if (spec.fill != nullptr && spec.fill->page_count() == 0) {
    return absl::InvalidArgumentError("the fill corpus has no pages");
  }
  if (spec.kind != "seq" && spec.kind != "random" && spec.kind != "zipf") {
    return absl::InvalidArgumentError(
        absl::StrCat("--workload: '", spec.kind, "' (use seq, random or zipf)"));
  }
  if (spec.pages < 16) return absl::InvalidArgumentError("--size: at least 64K");
  if (spec.threads < 1 || spec.threads > 64) {
    return absl::InvalidArgumentError("--threads: 1..64");
  }
  if (spec.write_fraction < 0 || spec.write_fraction > 1) {
    return absl::InvalidArgumentError("--write-fraction: 0..1");
  }
  return absl::OkStatus();
}

WorkloadResult RunWorkload(uint8_t* mem, const WorkloadSpec& spec) {
  const uint64_t pages = spec.pages;
  const uint64_t ops = spec.ops ? spec.ops : 4 * pages;
  const int threads = spec.threads;
  ZipfTable* zipf = spec.kind == "zipf" ? new ZipfTable(pages, spec.zipf_theta) : nullptr;
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      // Init: each thread writes its slice of pages.
      const uint64_t lo = pages * t / threads, hi = pages * (t + 1) / threads;
      for (uint64_t p = lo; p < hi; ++p) {
        if (spec.fill != nullptr) {
          std::memcpy(mem + p * kPage, spec.fill->page(p % spec.fill->page_count()), kPage);
          continue;
        }
        auto* w = reinterpret_cast<uint64_t*>(mem + p * kPage);
        for (uint64_t i = 0; i < kPage / 8; ++i) w[i] = p * 0x100000001b3ull + i;
      }
    });
  }
  for (auto& th : ts) th.join();
  ts.clear();
  std::vector<std::vector<uint32_t>> slow(threads);  // per thread: faulted accesses, ns
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<uint32_t>& my_slow = slow[t];
      std::mt19937_64 rng(spec.seed * 1000003 + t);
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      const uint64_t my_ops = ops / threads + (static_cast<uint64_t>(t) < ops % threads);
      const uint64_t lo = pages * t / threads, hi = pages * (t + 1) / threads;
      uint64_t sink = 0;
      for (uint64_t i = 0; i < my_ops; ++i) {
        uint64_t p;
        if (spec.kind == "seq") {
          p = lo + i % (hi - lo);
        } else if (spec.kind == "random") {
          p = rng() % pages;
        } else {
          p = Scramble(zipf->Draw(unit(rng)), pages);
        }
        const uint64_t line = rng() % (kPage / 64);
        auto* w = reinterpret_cast<uint64_t*>(mem + p * kPage + line * 64);
        const bool write = unit(rng) < spec.write_fraction;
        const auto t0 = std::chrono::steady_clock::now();
        for (int k = 0; k < 8; ++k) sink += __atomic_load_n(&w[k], __ATOMIC_RELAXED);
        if (write) __atomic_fetch_add(&w[i & 7], 1, __ATOMIC_RELAXED);
        const uint64_t ns =
            static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::steady_clock::now() - t0)
                                      .count());
        if (ns >= kFaultedAccessNs)
          my_slow.push_back(static_cast<uint32_t>(std::min<uint64_t>(ns, UINT32_MAX)));
      }
      if (sink == 42) std::abort();  // keep the reads
    });
  }
  for (auto& th : ts) th.join();
  WorkloadResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  delete zipf;
  std::vector<uint32_t> all;
  for (const auto& v : slow) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  r.faulted_accesses = all.size();
  if (!all.empty()) {
    auto pct = [&](double q) {
      return all[std::min(all.size() - 1,
                          static_cast<size_t>(q * static_cast<double>(all.size())))] /
             1000.0;
    };
    r.faulted_us_p50 = pct(0.5);
    r.faulted_us_p90 = pct(0.9);
    r.faulted_us_p99 = pct(0.99);
    r.faulted_us_max = all.back() / 1000.0;
  }
  return r;
}

uint64_t Checksum(const uint8_t* mem, uint64_t pages) { return XXH3_64bits(mem, pages * kPage); }

void AddWorkloadFlags(CLI::App& cmd, WorkloadFlags& f) {
  cmd.add_option("--size", f.size_bytes, "workload memory, K/M/G suffixes (default 64M)")
      ->transform(cli::Bytes());
  cmd.add_option("--workload", f.spec.kind, "access pattern")
      ->check(CLI::IsMember({"seq", "random", "zipf"}))
      ->capture_default_str();
  cmd.add_option("--ops", f.spec.ops, "accesses (default 0: 4 per page)")
      ->check(cli::NonNegative());
  cmd.add_option("--threads", f.spec.threads, "workload threads")
      ->type_name("T")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd.add_option("--seed", f.spec.seed, "seed of the access sequence")
      ->check(cli::NonNegative())
      ->capture_default_str();
  cmd.add_option("--theta", f.spec.zipf_theta, "Zipf skew")
      ->type_name("F")
      ->check(cli::Finite())
      ->capture_default_str();
  cmd.add_option("--write-fraction", f.spec.write_fraction, "share of accesses that write")
      ->type_name("F")
      ->check(cli::Fraction())
      ->capture_default_str();
}

absl::StatusOr<WorkloadSpec> WorkloadFromFlags(const WorkloadFlags& f) {
  WorkloadSpec w = f.spec;
  w.pages = f.size_bytes / kPage;
  absl::Status s = ValidateWorkload(w);
  if (!s.ok()) return s;
  return w;
}

}  // namespace farswap::bench
