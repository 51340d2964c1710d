#include "farswap/common/metric_families.h"

#include <limits>
#include <sstream>

#include "prometheus/text_serializer.h"

namespace farswap::metrics {
namespace {

std::vector<prometheus::ClientMetric::Label> ToLabels(const Labels& labels) {
  std::vector<prometheus::ClientMetric::Label> out;
  out.reserve(labels.size());
  for (const auto& [name, value] : labels) out.push_back({name, value});
  return out;
}

}  // namespace

prometheus::MetricFamily& AddFamily(std::vector<prometheus::MetricFamily>& out, std::string name,
                                    std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  out.push_back(std::move(f));
  return out.back();
}

void AddSample(prometheus::MetricFamily& family, double value, const Labels& labels) {
  prometheus::ClientMetric m;
  m.label = ToLabels(labels);
  switch (family.type) {
    case prometheus::MetricType::Counter:
      m.counter.value = value;
      break;
    case prometheus::MetricType::Gauge:
      m.gauge.value = value;
      break;
    default:
      m.untyped.value = value;
      break;
  }
  family.metric.push_back(std::move(m));
}

void AddCounter(std::vector<prometheus::MetricFamily>& out, std::string name, std::string help,
                double value) {
  AddSample(AddFamily(out, std::move(name), std::move(help), prometheus::MetricType::Counter),
            value);
}

void AddGauge(std::vector<prometheus::MetricFamily>& out, std::string name, std::string help,
              double value) {
  AddSample(AddFamily(out, std::move(name), std::move(help), prometheus::MetricType::Gauge), value);
}

void AddHistogramSample(prometheus::MetricFamily& family, const LatencyBuckets& buckets,
                        const Labels& labels) {
  prometheus::ClientMetric m;
  m.label = ToLabels(labels);
  uint64_t cumulative = 0;
  for (int i = 0; i < LatencyHistogram::kBuckets; ++i) {
    cumulative += buckets.buckets[i];
    const bool last = i == LatencyHistogram::kBuckets - 1;
    // Bucket i holds durations below 2^(i+1) µs; the last one holds the rest.
    const double upper =
        last ? std::numeric_limits<double>::infinity() : double(uint64_t{2} << i) * 1e-6;
    m.histogram.bucket.push_back({.cumulative_count = cumulative, .upper_bound = upper});
  }
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = double(buckets.sum_ns) * 1e-9;
  family.metric.push_back(std::move(m));
}

void AddLatencyHistogram(std::vector<prometheus::MetricFamily>& out, std::string name,
                         std::string help, const LatencyBuckets& buckets, const Labels& labels) {
  AddHistogramSample(
      AddFamily(out, std::move(name), std::move(help), prometheus::MetricType::Histogram), buckets,
      labels);
}

std::string TextExposition(const prometheus::Collectable& collectable) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, collectable.Collect());
  return out.str();
}

}  // namespace farswap::metrics
