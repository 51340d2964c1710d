// metric_families.h: building Prometheus metric families from stats
// snapshots, for the prometheus::Collectable implementations of the memory
// node (server/node_metrics.h) and the client library
// (client/client_metrics.h). They read counters the code keeps anyway at
// scrape time, so the data path pays nothing for being exported.
//
//   std::vector<prometheus::MetricFamily> out;
//   AddGauge(out, "farswap_pool_mem_used_total_bytes", "help ...", stats.mem_used_total);
//   prometheus::MetricFamily& ops = AddFamily(out, "farswap_node_ops_total", "help ...",
//                                             prometheus::MetricType::Counter);
//   AddSample(ops, 42, {{"op", "store"}, {"status", "OK"}});
//   AddLatencyHistogram(out, "farswap_node_op_duration_seconds", "help", buckets, {{"op",
//   "load"}});
//
// Naming follows Prometheus' conventions: a `farswap_` prefix, base units
// (seconds, bytes), counters end in `_total`.
//
// Thread safety: free functions on caller-owned values.
#ifndef FARSWAP_COMMON_METRIC_FAMILIES_H_
#define FARSWAP_COMMON_METRIC_FAMILIES_H_

#include <string>
#include <utility>
#include <vector>

#include "farswap/common/latency_histogram.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace farswap::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

// AddFamily appends an empty family to `out` and returns it (valid until
// `out` grows again).
prometheus::MetricFamily& AddFamily(std::vector<prometheus::MetricFamily>& out, std::string name,
                                    std::string help, prometheus::MetricType type);

// AddSample adds one sample with `labels` to a counter, gauge or untyped
// family.
void AddSample(prometheus::MetricFamily& family, double value, const Labels& labels = {});

// AddCounter / AddGauge append a family with one unlabelled sample.
void AddCounter(std::vector<prometheus::MetricFamily>& out, std::string name, std::string help,
                double value);
void AddGauge(std::vector<prometheus::MetricFamily>& out, std::string name, std::string help,
              double value);

// AddHistogramSample adds a LatencyHistogram snapshot to a histogram family
// as one labelled histogram in seconds: bucket i of the snapshot ([2^i,
// 2^(i+1)) µs) becomes the cumulative bucket le = 2^(i+1) µs; the last one
// is +Inf.
void AddHistogramSample(prometheus::MetricFamily& family, const LatencyBuckets& buckets,
                        const Labels& labels = {});

// AddLatencyHistogram appends a histogram family with one sample.
void AddLatencyHistogram(std::vector<prometheus::MetricFamily>& out, std::string name,
                         std::string help, const LatencyBuckets& buckets,
                         const Labels& labels = {});

// TextExposition renders a collectable in the Prometheus text format
// (version 0.0.4), as an exposer would serve it.
std::string TextExposition(const prometheus::Collectable& collectable);

}  // namespace farswap::metrics

#endif  // FARSWAP_COMMON_METRIC_FAMILIES_H_
