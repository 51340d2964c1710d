// latency_histogram.h: a lock-free log2 latency histogram, shared by the
// client (per-node request latency) and the memory node (store, load and
// writeback latency), and exported to Prometheus from its snapshots
// (prometheus_families.h).
//
//   LatencyHistogram h;
//   absl::Time start = absl::Now();
//   ... the operation ...
//   h.Record(absl::Now() - start);
//   std::array<uint64_t, LatencyHistogram::kBuckets> b = h.Snapshot();
//
// Thread safety: Record, Snapshot and sum_ns may run concurrently from any
// threads (relaxed atomics: a snapshot taken during Records may be a few
// observations behind in its buckets or its sum, never torn).
#ifndef FARSWAP_COMMON_LATENCY_HISTOGRAM_H_
#define FARSWAP_COMMON_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace farswap {

// LatencyHistogram counts durations in power-of-two microsecond buckets:
// bucket i holds [2^i, 2^(i+1)) µs (bucket 0 also holds < 1 µs), and keeps
// the sum of every recorded duration in nanoseconds (a Prometheus
// histogram's _sum). Recording costs two relaxed atomic adds.
class LatencyHistogram {
 public:
  static constexpr int kBuckets = 32;  // up to 2^32 µs ≈ 71 minutes
  void Record(absl::Duration d);
  std::array<uint64_t, kBuckets> Snapshot() const;
  // sum_ns: the sum of every recorded duration, in nanoseconds.
  uint64_t sum_ns() const { return sum_ns_.load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
};

// LatencyBuckets is a snapshot of a LatencyHistogram: bucket counts and the
// sum, as stats structs carry it.
struct LatencyBuckets {
  std::array<uint64_t, LatencyHistogram::kBuckets> buckets{};
  uint64_t sum_ns = 0;
  uint64_t count() const {
    uint64_t n = 0;
    for (uint64_t b : buckets) n += b;
    return n;
  }
};

// SnapshotOf takes a LatencyBuckets snapshot of `h`.
inline LatencyBuckets SnapshotOf(const LatencyHistogram& h) {
  return LatencyBuckets{.buckets = h.Snapshot(), .sum_ns = h.sum_ns()};
}

// HistogramPercentileUs estimates the p-th percentile (0..100) in µs from
// bucket counts (the upper bound of the bucket it falls in).
double HistogramPercentileUs(const std::array<uint64_t, LatencyHistogram::kBuckets>& b, double p);

}  // namespace farswap

#endif  // FARSWAP_COMMON_LATENCY_HISTOGRAM_H_
