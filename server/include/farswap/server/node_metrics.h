// node_metrics.h: the memory node's Prometheus metrics — a collectable
// that turns the node's stats into metric families when scraped, and the
// HTTP endpoint (`farswap-server --metrics-addr`) that serves it on
// /metrics.
//
//   auto collector = std::make_shared<NodeMetricsCollector>(NodeMetricsSources{
//       .store = store.get(), .tenants = &tenants, .data_plane = &data_plane,
//       .node_id = "node-a"});
//   auto endpoint = MetricsEndpoint::Start("127.0.0.1:0", collector).value();
//   endpoint->address();   // "127.0.0.1:38211"; GET /metrics
//
// Nothing is counted for the sake of the metrics: a scrape reads the
// snapshots the node keeps anyway (PageStore::GetStats, the zspool's
// mm_stat figures, DataPlaneServer::stats with its relaxed-atomic counters
// and log2 latency histograms, the tenant registry). README.md ("Metrics")
// lists every family.
//
// Thread safety: Collect may run on any thread, concurrently with the node's
// operations and with other Collects. MetricsEndpoint is not copyable;
// destroying it stops the HTTP server (no scrape runs afterwards).
#ifndef FARSWAP_SERVER_NODE_METRICS_H_
#define FARSWAP_SERVER_NODE_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "farswap/server/control_plane_auth.h"
#include "farswap/server/data_plane.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace prometheus {
class Exposer;
}

namespace farswap::server {

// NodeMetricsSources: what a scrape reads. Not owned; each must outlive the
// collector (data_plane may be null: no data-plane families then; auth
// may be null: no farswap_auth_refusals_total then).
struct NodeMetricsSources {
  const PageStore* store = nullptr;
  const TenantRegistry* tenants = nullptr;
  const DataPlaneServer* data_plane = nullptr;
  const ControlPlaneAuth* auth = nullptr;
  std::string node_id;
};

// NodeMetricsCollector is the node's prometheus::Collectable.
class NodeMetricsCollector final : public prometheus::Collectable {
 public:
  explicit NodeMetricsCollector(const NodeMetricsSources& sources) : sources_(sources) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const NodeMetricsSources sources_;
};

// MetricsEndpoint serves a collectable in the Prometheus text format on
// http://ADDRESS/metrics (prometheus-cpp's Exposer: civetweb, two threads).
class MetricsEndpoint {
 public:
  // Start binds `address` ("HOST:PORT"; port 0 picks a free one).
  // INVALID_ARGUMENT for an address without a port, UNAVAILABLE when it
  // cannot be bound (in use, no such interface).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& address, std::shared_ptr<prometheus::Collectable> collectable);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // address: the bound address, "HOST:PORT" with the real port.
  const std::string& address() const { return address_; }

 private:
  MetricsEndpoint() = default;
  std::shared_ptr<prometheus::Collectable> collectable_;  // the exposer holds it weakly
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

// StartNodeMetrics serves a NodeMetricsCollector of `sources` on `address`
// (farswap-server --metrics-addr); an empty address serves nothing and
// returns nullptr. Errors as MetricsEndpoint::Start.
absl::StatusOr<std::unique_ptr<MetricsEndpoint>> StartNodeMetrics(
    const std::string& address, const NodeMetricsSources& sources);

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_NODE_METRICS_H_
