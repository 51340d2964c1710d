// client_metrics.h: a Client's and a Region's statistics as Prometheus
// metrics, for the application to serve next to its own.
//
//   std::unique_ptr<farswap::Client> client = farswap::Client::Connect(o).value();
//   auto metrics = std::make_shared<farswap::ClientMetrics>(client.get());
//   prometheus::Exposer exposer("0.0.0.0:9100");
//   exposer.RegisterCollectable(metrics);        // GET /metrics
//   // or: a Registry of your own, and metrics->Collect() merged by your exporter
//
// Each scrape calls Client::stats() / Region::stats() and turns the snapshot
// into metric families; the client's data path pays nothing for it.
// client/README.md ("Metrics") lists every family. Target
// farswap_client_metrics (links prometheus-cpp::core; the application picks
// its own exposer, e.g. prometheus-cpp::pull).
//
// Thread safety: Collect may run on any thread, concurrently with the
// client's or region's operations. The Client / Region must outlive the
// collectable (unregister it from the exposer before destroying them).
#ifndef FARSWAP_CLIENT_CLIENT_METRICS_H_
#define FARSWAP_CLIENT_CLIENT_METRICS_H_

#include <vector>

#include "farswap/client/client.h"
#include "farswap/client/region.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace farswap {

// ClientMetrics exports ClientStats: farswap_client_* families, per-node
// ones labelled node="<gRPC address>".
class ClientMetrics final : public prometheus::Collectable {
 public:
  explicit ClientMetrics(const Client* client) : client_(client) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Client* const client_;
};

// RegionMetrics exports RegionStats: farswap_region_* families.
class RegionMetrics final : public prometheus::Collectable {
 public:
  explicit RegionMetrics(const Region* region) : region_(region) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Region* const region_;
};

// CollectClientStats / CollectRegionStats build the families from a stats
// snapshot (what Collect does after taking one); for tests and for
// applications that keep their own snapshots.
std::vector<prometheus::MetricFamily> CollectClientStats(const ClientStats& stats);
std::vector<prometheus::MetricFamily> CollectRegionStats(const RegionStats& stats);

}  // namespace farswap

#endif  // FARSWAP_CLIENT_CLIENT_METRICS_H_
