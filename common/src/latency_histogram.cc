#include "farswap/common/latency_histogram.h"

#include <algorithm>
#include <bit>

namespace farswap {

void LatencyHistogram::Record(absl::Duration d) {
  int64_t us = absl::ToInt64Microseconds(d);
  int b = us <= 1 ? 0 : std::min(kBuckets - 1, int(std::bit_width(uint64_t(us))) - 1);
  buckets_[b].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(uint64_t(std::max<int64_t>(0, absl::ToInt64Nanoseconds(d))),
                    std::memory_order_relaxed);
}

std::array<uint64_t, LatencyHistogram::kBuckets> LatencyHistogram::Snapshot() const {
  std::array<uint64_t, kBuckets> out;
  for (int i = 0; i < kBuckets; ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

double HistogramPercentileUs(const std::array<uint64_t, LatencyHistogram::kBuckets>& b, double p) {
  uint64_t total = 0;
  for (uint64_t n : b) total += n;
  if (total == 0) return 0;
  const double rank = p / 100.0 * double(total);
  uint64_t seen = 0;
  for (int i = 0; i < LatencyHistogram::kBuckets; ++i) {
    seen += b[i];
    if (double(seen) >= rank && b[i] != 0) return double(uint64_t{2} << i);  // bucket's upper bound
  }
  return double(uint64_t{2} << (LatencyHistogram::kBuckets - 1));
}

}  // namespace farswap
