// node_metrics.cc: the node's metric families (node_metrics.h). The names,
// types and labels here are the contract README.md ("Metrics") documents and
// tests/server/node_metrics_test.py checks: change all three together.
#include "farswap/server/node_metrics.h"

#include <exception>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "farswap/common/build_info.h"
#include "farswap/common/cpu_idle.h"
#include "farswap/common/metric_families.h"
#include "prometheus/exposer.h"

namespace farswap::server {
namespace {

using metrics::AddCounter;
using metrics::AddFamily;
using metrics::AddGauge;
using metrics::AddHistogramSample;
using metrics::AddSample;
using prometheus::MetricFamily;
using prometheus::MetricType;
using transport::Opcode;

// kOpLabels: the `op` label of farswap_node_ops_total and
// farswap_node_op_duration_seconds, by opcode.
struct OpLabel {
  Opcode op;
  const char* name;
};
constexpr OpLabel kOpLabels[] = {
    {Opcode::kHello, "hello"},
    {Opcode::kStore, "store"},
    {Opcode::kLoad, "load"},
    {Opcode::kInvalidate, "invalidate"},
    {Opcode::kInvalidateRange, "invalidate_range"},
    {Opcode::kPing, "ping"},
};

void AddRejects(MetricFamily& family, const std::array<uint64_t, kRejectReasonCount>& rejects,
                metrics::Labels labels) {
  labels.emplace_back("reason", "");
  for (int r = 0; r < kRejectReasonCount; ++r) {
    labels.back().second = RejectReasonName(RejectReason(r));
    AddSample(family, double(rejects[r]), labels);
  }
}

void AddPool(std::vector<MetricFamily>& out, const alloc::ZsPoolStats& p) {
  // zram's mm_stat names (Documentation/admin-guide/blockdev/zram.rst).
  AddGauge(out, "farswap_pool_orig_data_size_bytes",
           "Uncompressed bytes of the pages stored in the pool (zram mm_stat orig_data_size).",
           double(p.orig_data_size));
  AddGauge(out, "farswap_pool_compr_data_size_bytes",
           "Compressed bytes stored in the pool (zram mm_stat compr_data_size).",
           double(p.compr_data_size));
  AddGauge(out, "farswap_pool_mem_used_total_bytes",
           "Memory the pool holds from the OS (zram mm_stat mem_used_total).",
           double(p.mem_used_total));
  AddGauge(out, "farswap_pool_mem_cached_bytes",
           "Part of mem_used_total in emptied zspages kept for reuse (no page lives there).",
           double(p.mem_cached));
  AddGauge(out, "farswap_pool_mem_limit_bytes",
           "Pool memory limit, 0 for none (zram mm_stat mem_limit).", double(p.mem_limit));
  AddGauge(out, "farswap_pool_mem_used_max_bytes",
           "Most memory the pool has held (zram mm_stat mem_used_max).", double(p.mem_used_max));
  AddGauge(out, "farswap_pool_same_pages",
           "Pages stored as one repeated 8-byte value, costing no pool memory (zram mm_stat "
           "same_pages).",
           double(p.same_pages));
  AddCounter(out, "farswap_pool_pages_compacted_total",
             "Pool pages freed by compaction (zram mm_stat pages_compacted).",
             double(p.pages_compacted));
  AddGauge(out, "farswap_pool_huge_pages",
           "Pages stored uncompressed in the pool's huge class (zram mm_stat huge_pages).",
           double(p.huge_pages));
  AddGauge(out, "farswap_pool_metadata_bytes",
           "Pool bookkeeping outside mem_used_total (handle table, zspage descriptors).",
           double(p.metadata_bytes));
}

void AddStore(std::vector<MetricFamily>& out, const PageStoreStats& s) {
  AddGauge(out, "farswap_node_stored_pages",
           "Pages the node holds: in the pool, same-filled or on the backing store.",
           double(s.stored_pages));
  AddGauge(out, "farswap_node_pages_on_backing", "Stored pages written back to the backing store.",
           double(s.pages_on_disk));
  AddGauge(out, "farswap_node_draining", "1 while the node is draining (refusing stores).",
           s.draining ? 1 : 0);
  AddCounter(out, "farswap_store_load_misses_total", "Loads of pages that are not stored.",
             double(s.load_misses));
  AddCounter(out, "farswap_store_stale_stores_total",
             "Stores refused because the node holds a newer version of the page.",
             double(s.stale_stores));
  AddRejects(AddFamily(out, "farswap_store_rejects_total",
                       "Stores refused for lack of room, by reason.", MetricType::Counter),
             s.rejects, {});

  AddCounter(out, "farswap_backing_written_back_pages_total",
             "Pages written back from the pool to the backing store.",
             double(s.written_back_pages));
  AddCounter(out, "farswap_backing_written_back_bytes_total",
             "Compressed bytes of the pages writeback moved to the backing store.",
             double(s.written_back_bytes));
  AddCounter(out, "farswap_backing_bytes_written_total",
             "Bytes written to the backing store by writeback and the cleaner, padding included.",
             double(s.backing_bytes_written));
  AddGauge(out, "farswap_backing_segments", "Segments of the backing store's log.",
           double(s.segments));
  AddGauge(out, "farswap_backing_free_segments", "Segments of the backing store that are free.",
           double(s.free_segments));
  AddGauge(out, "farswap_backing_live_bytes",
           "Compressed bytes of the pages on the backing store now.", double(s.disk_live_bytes));
  AddGauge(out, "farswap_backing_used_bytes",
           "Bytes held by segments that are not free (live, dead and padding).",
           double(s.disk_held_bytes));
  AddCounter(out, "farswap_cleaner_moves_total",
             "Pages the segment cleaner relocated out of mostly dead segments.",
             double(s.cleaner_moves));
  AddCounter(out, "farswap_cleaner_segments_total", "Segments the segment cleaner freed.",
             double(s.cleaner_segments));
  AddCounter(out, "farswap_cleaner_space_segments_total",
             "Segments the cleaner freed because dead bytes exceeded --cleaner-max-dead "
             "(included in farswap_cleaner_segments_total).",
             double(s.cleaner_space_segments));
  AddCounter(out, "farswap_backing_reads_total",
             "Reads from the backing store: pages loaded (coalesced reads count each page) and "
             "cleaner segment reads.",
             double(s.backing_reads));
  AddCounter(out, "farswap_backing_read_requests_total",
             "Read requests for loads from the backing store (one per run of touching blocks of "
             "a batch of loads).",
             double(s.disk_read_requests));
  AddCounter(out, "farswap_backing_reads_coalesced_total",
             "Pages loaded from the backing store by a read request another page started.",
             double(s.disk_reads_coalesced));
  AddGauge(out, "farswap_backing_reads_in_flight",
           "Read requests for loads submitted to the backing store and not yet completed.",
           double(s.disk_reads_in_flight));
  AddCounter(out, "farswap_backing_promotions_total",
             "Pages moved from the backing store back into the pool on their second load.",
             double(s.promotions));
  AddCounter(out, "farswap_read_cache_hits_total",
             "Loads of written-back pages answered from the read cache (--disk-read-cache).",
             double(s.read_cache_hits));
  AddCounter(out, "farswap_read_cache_misses_total",
             "Loads of written-back pages that read the backing store.",
             double(s.read_cache_misses));
  AddGauge(out, "farswap_read_cache_bytes", "Bytes the read cache holds now.",
           double(s.read_cache_bytes));
  AddGauge(out, "farswap_read_cache_limit_bytes", "The read cache's limit (--disk-read-cache).",
           double(s.read_cache_limit_bytes));
  AddGauge(out, "farswap_readahead_bytes",
           "The readahead span the read cache chose last (0: a page's own blocks only).",
           double(s.readahead_bytes));
  AddCounter(out, "farswap_read_cache_mismatches_total",
             "Cached objects that failed their disk checksum (read from the disk instead; never "
             "expected).",
             double(s.read_cache_mismatches));
  AddCounter(out, "farswap_backing_writes_total",
             "Write requests to the backing store (128 KiB pieces of a segment flush, many pages "
             "each).",
             double(s.backing_writes));
  AddCounter(out, "farswap_backing_registered_writes_total",
             "Backing-store write requests from the segment buffers registered with io_uring "
             "(the rest pinned their pages per request).",
             double(s.registered_writes));
  MetricFamily& errors = AddFamily(out, "farswap_backing_errors_total",
                                   "Backing-store I/O errors, by operation.", MetricType::Counter);
  AddSample(errors, double(s.backing_read_errors), {{"op", "read"}});
  AddSample(errors, double(s.backing_write_errors), {{"op", "write"}});
  AddGauge(out, "farswap_backing_size_bytes", "Size of the backing store, 0 without one.",
           double(s.backing_total_blocks * kBlockSize));
  AddGauge(out, "farswap_backing_free_bytes", "Unused bytes of the backing store.",
           double((s.backing_total_blocks - s.backing_used_blocks) * kBlockSize));
  AddGauge(out, "farswap_backing_io_error",
           "1 after a backing-store I/O error (sticky; writeback stops, health NOT_SERVING).",
           s.health.ok() ? 0 : 1);
  AddCounter(out, "farswap_writeback_aborted_total",
             "Writebacks abandoned because the page changed meanwhile.",
             double(s.writeback_aborted));
  AddCounter(out, "farswap_writeback_second_chances_total",
             "Referenced pages passed over by writeback once (second chance).",
             double(s.writeback_second_chances));
  metrics::AddLatencyHistogram(out, "farswap_writeback_duration_seconds",
                               "Backing-store write of one page in a writeback.",
                               s.writeback_latency);

  AddCounter(out, "farswap_cold_passes_total", "Cold-tier passes over the pool's LRU.",
             double(s.cold_passes));
  AddCounter(out, "farswap_cold_recompressed_pages_total",
             "Pool pages recompressed from lz4 (or raw) into a smaller zstd object.",
             double(s.cold_recompressed_pages));
  AddCounter(out, "farswap_cold_saved_bytes_total",
             "Payload bytes saved by cold recompression (old length minus zstd length).",
             double(s.cold_bytes_saved));
  AddCounter(out, "farswap_cold_kept_pages_total",
             "Cold pages left as they were (zstd not smaller, or not lz4/raw).",
             double(s.cold_kept_pages));
  AddCounter(out, "farswap_cold_aborted_total",
             "Cold recompressions abandoned because the page changed meanwhile or the pool was "
             "full.",
             double(s.cold_aborted));
  AddCounter(out, "farswap_cold_loads_total", "Loads answered with a recompressed (zstd) page.",
             double(s.cold_loads));
}

void AddDataPlane(std::vector<MetricFamily>& out, const DataPlaneStats& d) {
  AddGauge(out, "farswap_node_connections", "Data-plane connections open now.",
           double(d.connections_open));
  {
    MetricFamily& by_carrier = AddFamily(
        out, "farswap_node_connections_by_carrier",
        "Data-plane connections open now, by the transport backend and what carries their frames "
        "(\"tcp\"; UCX's transport/device, e.g. tcp/lo.0, sysv/memory.0, rc_mlx5/mlx5_0:1).",
        MetricType::Gauge);
    for (const auto& [carrier, count] : d.connections_by_carrier) {
      AddSample(by_carrier, double(count), {{"backend", d.backend}, {"carrier", carrier}});
    }
  }
  AddCounter(out, "farswap_node_connections_accepted_total",
             "Data-plane connections accepted since the node started.",
             double(d.connections_accepted));
  AddGauge(out, "farswap_node_data_tls", "1 when the data plane speaks only TLS (--data-tls).",
           d.tls ? 1.0 : 0.0);
  AddCounter(out, "farswap_node_tls_handshake_failures_total",
             "Data-plane connections closed because their TLS handshake failed.",
             double(d.tls_handshake_failures));
  AddCounter(out, "farswap_node_ktls_connections_total",
             "Data-plane TLS connections whose records the kernel encrypts (kTLS).",
             double(d.ktls_connections));
  AddCounter(out, "farswap_node_hello_refused_total",
             "Data-plane connections or frames refused for a bad, missing or second HELLO.",
             double(d.hello_refused));
  AddCounter(out, "farswap_node_received_bytes_total",
             "Data-plane bytes read from clients (frame headers and payloads).",
             double(d.bytes_received));
  AddCounter(out, "farswap_node_sent_bytes_total",
             "Data-plane bytes replied to clients (frame headers and payloads).",
             double(d.bytes_sent));
  AddCounter(out, "farswap_node_requests_to_workers_total",
             "Requests that went to the worker threads (a store waiting for writeback room, a "
             "load from the backing store, and the requests queued behind them).",
             double(d.requests_to_workers));
  AddGauge(out, "farswap_node_queued_requests", "Requests waiting for a worker now.",
           double(d.queued_requests));
  AddCounter(out, "farswap_node_read_pauses_total",
             "Times a connection stopped being read because its queue was full.",
             double(d.read_pauses));

  MetricFamily& ops =
      AddFamily(out, "farswap_node_ops_total",
                "Data-plane requests answered, by operation and reply status (BATCH entries "
                "count one by one).",
                MetricType::Counter);
  for (const OpLabel& o : kOpLabels) {
    const auto& by_code = d.ops[size_t(o.op)];
    for (size_t c = 0; c < kStatusCodeSlots; ++c) {
      // Every operation's OK is always there; other statuses once they occur.
      if (c != 0 && by_code[c] == 0) continue;
      AddSample(ops, double(by_code[c]),
                {{"op", o.name}, {"status", absl::StatusCodeToString(absl::StatusCode(c))}});
    }
  }
  MetricFamily& latency =
      AddFamily(out, "farswap_node_op_duration_seconds",
                "Service time of a STORE or LOAD on the node (the page-store call, on the I/O "
                "thread or a worker; queueing for a worker excluded).",
                MetricType::Histogram);
  AddHistogramSample(latency, d.store_latency, {{"op", "store"}});
  AddHistogramSample(latency, d.load_latency, {{"op", "load"}});
}

void AddTenants(std::vector<MetricFamily>& out, const PageStoreStats& s,
                const TenantRegistry& registry) {
  AddGauge(out, "farswap_node_sessions", "Open sessions (attached, not detached or expired).",
           double(registry.session_count()));
  MetricFamily& reloads = AddFamily(
      out, "farswap_tenant_reloads_total",
      "Tenants-file reloads (SIGHUP or the file changing), by result (ok: applied; failed: "
      "unreadable or malformed file, the old tenants stayed).",
      MetricType::Counter);
  AddSample(reloads, double(registry.reloads()), {{"result", "ok"}});
  AddSample(reloads, double(registry.reload_failures()), {{"result", "failed"}});
  // The four families below are filled together: room for them first, so
  // adding one does not move the others (AddFamily's reference lives only
  // until `out` grows).
  out.reserve(out.size() + 4);
  MetricFamily& pages = AddFamily(out, "farswap_tenant_stored_pages",
                                  "Pages a tenant keeps on the node.", MetricType::Gauge);
  MetricFamily& bytes = AddFamily(out, "farswap_tenant_stored_bytes",
                                  "Compressed bytes of a tenant's pages (0 for same-filled ones).",
                                  MetricType::Gauge);
  MetricFamily& quota =
      AddFamily(out, "farswap_tenant_quota_bytes",
                "A tenant's quota in bytes of page slots, 0 for none.", MetricType::Gauge);
  MetricFamily& rejects =
      AddFamily(out, "farswap_tenant_rejects_total",
                "A tenant's stores refused for lack of room, by reason.", MetricType::Counter);
  // Every tenant of the registry appears, with zeros before its first page;
  // so does a removed tenant whose pages the store still keeps
  // (TenantRegistry, "Rotation").
  const std::vector<Tenant> tenants = registry.tenants();
  std::vector<bool> listed;
  const std::vector<std::string> ids = registry.TenantIdsByIndex(&listed);
  std::vector<const TenantStats*> by_index(ids.size(), nullptr);
  for (const TenantStats& t : s.tenants) {
    if (t.tenant < by_index.size()) by_index[t.tenant] = &t;
  }
  for (uint32_t i = 0; i < ids.size(); ++i) {
    if (listed[i] || by_index[i] == nullptr) continue;
    const metrics::Labels labels = {{"tenant", ids[i]}};
    AddSample(pages, double(by_index[i]->stored_pages), labels);
    AddSample(bytes, double(by_index[i]->stored_bytes), labels);
    AddSample(quota, double(by_index[i]->quota_pages * kBlockSize), labels);
    AddRejects(rejects, by_index[i]->rejects, labels);
  }
  const TenantStats none;
  for (const Tenant& t : tenants) {
    const TenantStats& ts = by_index[t.index] != nullptr ? *by_index[t.index] : none;
    const metrics::Labels labels = {{"tenant", t.id}};
    AddSample(pages, double(ts.stored_pages), labels);
    AddSample(bytes, double(ts.stored_bytes), labels);
    const uint64_t quota_pages =
        by_index[t.index] != nullptr ? ts.quota_pages : QuotaPagesForBytes(t.quota_bytes);
    AddSample(quota, double(quota_pages * kBlockSize), labels);
    AddRejects(rejects, ts.rejects, labels);
  }
}

}  // namespace

std::vector<MetricFamily> NodeMetricsCollector::Collect() const {
  std::vector<MetricFamily> out;
  MetricFamily& info =
      AddFamily(out, "farswap_node_info", "Constant 1, labelled with the node's id and version.",
                MetricType::Gauge);
  AddSample(info, 1, {{"node_id", sources_.node_id}, {"version", FarswapVersion()}});
  AddGauge(out, "farswap_node_uptime_seconds", "Seconds since the node process started.",
           absl::ToDoubleSeconds(absl::Now() - ProcessStartTime()));
  AddGauge(out, "farswap_node_halt_polling_off",
           "1 where the host is a KVM guest whose idle vCPUs halt at once (cpuidle driver "
           "haltpoll, guest_halt_poll_ns 0), else 0.",
           ReadCpuIdleState().halt_polling_off() ? 1 : 0);
  const PageStoreStats s = sources_.store->GetStats();
  AddPool(out, s.pool);
  AddStore(out, s);
  if (sources_.data_plane != nullptr) AddDataPlane(out, sources_.data_plane->stats());
  if (sources_.tenants != nullptr) AddTenants(out, s, *sources_.tenants);
  if (sources_.auth != nullptr) {
    MetricFamily& refusals = AddFamily(
        out, "farswap_auth_refusals_total",
        "Control-plane calls refused by the node's roles, by reason (unauthenticated: no or bad "
        "credential; permission_denied: a tenant asking for operator work or another tenant's "
        "stats).",
        MetricType::Counter);
    const std::array<uint64_t, kAuthRefusalCount> r = sources_.auth->refusals();
    for (int i = 0; i < kAuthRefusalCount; ++i) {
      AddSample(refusals, double(r[i]), {{"reason", AuthRefusalName(AuthRefusal(i))}});
    }
    MetricFamily& reloads = AddFamily(
        out, "farswap_admin_token_reloads_total",
        "Admin-token-file reloads (SIGHUP or the file changing), by result (ok: a token in "
        "force; failed: unreadable or invalid file, the old token stayed).",
        MetricType::Counter);
    AddSample(reloads, double(sources_.auth->admin_token_reloads()), {{"result", "ok"}});
    AddSample(reloads, double(sources_.auth->admin_token_reload_failures()),
              {{"result", "failed"}});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address, std::shared_ptr<prometheus::Collectable> collectable) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "': want HOST:PORT (port 0 picks one)"));
  }
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  try {
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics address '", address, "': cannot listen: ", e.what()));
  }
  std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("metrics address '", address, "': not listening"));
  }
  endpoint->collectable_ = std::move(collectable);
  endpoint->exposer_->RegisterCollectable(endpoint->collectable_);
  endpoint->address_ = absl::StrCat(address.substr(0, colon), ":", ports.front());
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() = default;

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> StartNodeMetrics(
    const std::string& address, const NodeMetricsSources& sources) {
  if (address.empty()) return std::unique_ptr<MetricsEndpoint>();
  return MetricsEndpoint::Start(address, std::make_shared<NodeMetricsCollector>(sources));
}

}  // namespace farswap::server
