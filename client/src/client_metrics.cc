// client_metrics.cc: the client's and region's metric families
// (client_metrics.h). Names, types and labels are the contract
// client/README.md ("Metrics") documents and tests/server/node_metrics_test.py
// checks: change them together.
#include "farswap/client/client_metrics.h"

#include <cassert>

#include "farswap/common/metric_families.h"

namespace farswap {
namespace {

using metrics::AddCounter;
using metrics::AddFamily;
using metrics::AddGauge;
using metrics::AddSample;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr const char* kNodeStates[] = {"up", "suspect", "down", "removed"};

}  // namespace

std::vector<MetricFamily> CollectClientStats(const ClientStats& s) {
  std::vector<MetricFamily> out;
  MetricFamily& ops = AddFamily(out, "farswap_client_ops_total",
                                "Page operations by kind and result (per page, not per replica).",
                                MetricType::Counter);
  AddSample(ops, double(s.stores), {{"op", "store"}, {"result", "ok"}});
  AddSample(ops, double(s.store_errors), {{"op", "store"}, {"result", "error"}});
  AddSample(ops, double(s.loads), {{"op", "load"}, {"result", "ok"}});
  AddSample(ops, double(s.load_errors), {{"op", "load"}, {"result", "error"}});
  AddSample(ops, double(s.invalidates), {{"op", "invalidate"}, {"result", "ok"}});
  AddCounter(out, "farswap_client_stored_bytes_total",
             "Uncompressed bytes of the pages stored (4096 a page).",
             double(s.bytes_before_compression));
  AddCounter(out, "farswap_client_stored_compressed_bytes_total",
             "Encoded bytes of the pages stored (once a page, not per replica).",
             double(s.bytes_after_compression));
  AddCounter(out, "farswap_client_same_pages_total", "Pages stored as one repeated 8-byte value.",
             double(s.same_pages));
  AddCounter(out, "farswap_client_raw_pages_total",
             "Pages stored uncompressed (they did not compress below the raw threshold).",
             double(s.raw_pages));
  AddCounter(out, "farswap_client_checksum_failures_total",
             "Replica copies that failed end-to-end verification.", double(s.checksum_failures));
  AddCounter(out, "farswap_client_stale_copies_total",
             "Intact copies refused because they were not the version last stored.",
             double(s.stale_copies));
  MetricFamily& repairs =
      AddFamily(out, "farswap_client_copy_repairs_total",
                "Read repairs: a verified copy stored back to a replica whose copy was bad, stale "
                "or missing.",
                MetricType::Counter);
  AddSample(repairs, double(s.copies_repaired), {{"result", "ok"}});
  AddSample(repairs, double(s.copy_repairs_failed), {{"result", "failed"}});
  AddSample(repairs, double(s.copy_repairs_skipped), {{"result", "skipped"}});
  MetricFamily& scrubbed = AddFamily(
      out, "farswap_client_scrubbed_copies_total",
      "Replica copies read by scrubs (Client::Scrub, scrub_pages_per_second): intact, or bad "
      "(corrupt, stale or missing; repaired where possible, see "
      "farswap_client_copy_repairs_total).",
      MetricType::Counter);
  AddSample(scrubbed, double(s.scrubbed_copies - s.scrub_bad_copies), {{"result", "ok"}});
  AddSample(scrubbed, double(s.scrub_bad_copies), {{"result", "bad"}});
  AddCounter(out, "farswap_client_scrub_unreadable_pages_total",
             "Pages a scrub found no intact copy of.", double(s.scrub_unreadable_pages));
  AddCounter(out, "farswap_client_scrub_passes_total",
             "Background scrub passes completed over every stored page.", double(s.scrub_passes));
  AddCounter(out, "farswap_client_parked_retries_total",
             "Operations that waited for a suspect node or back-pressure, then were sent again.",
             double(s.parked_retries));
  AddCounter(out, "farswap_client_recovered_pages_total",
             "Pages given back by a node that returned after being declared dead.",
             double(s.recovered_pages));
  AddCounter(out, "farswap_client_failovers_total",
             "Loads answered by a replica other than the first tried.", double(s.failovers));
  AddCounter(out, "farswap_client_rereplicated_slabs_total",
             "Slabs copied to a new replica after losing one.", double(s.rereplicated_slabs));
  AddCounter(out, "farswap_client_rereplicated_pages_total", "Pages copied by re-replication.",
             double(s.rereplicated_pages));
  AddGauge(out, "farswap_client_lost_pages", "Pages whose every replica is lost (now).",
           double(s.lost_pages));
  AddCounter(out, "farswap_client_unavailable_loads_total",
             "Loads refused because no replica survived.", double(s.unavailable_loads));
  AddGauge(out, "farswap_client_slabs", "Slabs holding pages.", double(s.slabs));
  AddGauge(out, "farswap_client_under_replicated_slabs", "Slabs with fewer than R complete copies.",
           double(s.under_replicated_slabs));
  AddGauge(out, "farswap_client_replicas", "Copies kept of each slab (R).", double(s.replicas));
  AddCounter(out, "farswap_client_load_network_seconds_total",
             "Sum over verified loads of request sent to reply read.",
             double(s.load_network_ns) * 1e-9);
  AddCounter(out, "farswap_client_load_decode_seconds_total",
             "Sum over verified loads of decoding and verifying.", double(s.load_decode_ns) * 1e-9);

  // The thirteen per-node families below are filled together: room for
  // them first, so adding one does not move the others (AddFamily's
  // reference lives only until `out` grows). Without it the families added
  // above decided by chance whether the vector moved under these
  // references. kPerNodeFamilies must count them.
  constexpr size_t kPerNodeFamilies = 13;
  out.reserve(out.size() + kPerNodeFamilies);
  const size_t families_before = out.size();
  MetricFamily& state =
      AddFamily(out, "farswap_client_node_state",
                "1 for the node's current state (up, suspect, down, removed), 0 for the others.",
                MetricType::Gauge);
  MetricFamily& info =
      AddFamily(out, "farswap_client_node_info",
                "Constant 1, labelled with the node's id, data-plane address and incarnation.",
                MetricType::Gauge);
  MetricFamily& slabs = AddFamily(out, "farswap_client_node_slabs",
                                  "Slabs with a complete copy on the node.", MetricType::Gauge);
  MetricFamily& full =
      AddFamily(out, "farswap_client_node_full",
                "1 while the node answers RESOURCE_EXHAUSTED (no new slabs).", MetricType::Gauge);
  MetricFamily& draining =
      AddFamily(out, "farswap_client_node_draining", "1 while the node is draining (no new slabs).",
                MetricType::Gauge);
  MetricFamily& quarantined = AddFamily(
      out, "farswap_client_node_quarantined",
      "1 while the node is quarantined for serving corrupt copies (no new slabs; its slabs move "
      "off).",
      MetricType::Gauge);
  MetricFamily& bad_copies =
      AddFamily(out, "farswap_client_node_bad_copies_total",
                "Corrupt copies the node served to loads and scrubs.", MetricType::Counter);
  MetricFamily& quarantines = AddFamily(out, "farswap_client_node_quarantines_total",
                                        "Times the node was quarantined.", MetricType::Counter);
  MetricFamily& requests = AddFamily(out, "farswap_client_node_requests_total",
                                     "Data-plane requests sent to the node.", MetricType::Counter);
  MetricFamily& errors =
      AddFamily(out, "farswap_client_node_errors_total",
                "Data-plane requests to the node that failed.", MetricType::Counter);
  MetricFamily& suspect = AddFamily(out, "farswap_client_node_times_suspect_total",
                                    "Times the node stopped answering.", MetricType::Counter);
  MetricFamily& down = AddFamily(out, "farswap_client_node_times_down_total",
                                 "Times the node was declared dead.", MetricType::Counter);
  MetricFamily& latency = AddFamily(out, "farswap_client_node_request_duration_seconds",
                                    "Data-plane request latency to the node, sent to completed.",
                                    MetricType::Histogram);
  assert(out.size() - families_before == kPerNodeFamilies);
  (void)families_before;
  for (const NodeStats& n : s.nodes) {
    const metrics::Labels node = {{"node", n.address}};
    for (const char* st : kNodeStates) {
      AddSample(state, n.state == st ? 1 : 0, {{"node", n.address}, {"state", st}});
    }
    AddSample(info, 1,
              {{"node", n.address},
               {"node_id", n.node_id},
               {"data_addr", n.data_addr},
               {"carrier", n.carrier},
               {"incarnation", std::to_string(n.incarnation)}});
    AddSample(slabs, double(n.slabs), node);
    AddSample(full, n.full ? 1 : 0, node);
    AddSample(draining, n.draining ? 1 : 0, node);
    AddSample(quarantined, n.quarantined ? 1 : 0, node);
    AddSample(bad_copies, double(n.bad_copies), node);
    AddSample(quarantines, double(n.quarantines), node);
    AddSample(requests, double(n.requests), node);
    AddSample(errors, double(n.errors), node);
    AddSample(suspect, double(n.times_suspect), node);
    AddSample(down, double(n.times_down), node);
    metrics::AddHistogramSample(latency, {.buckets = n.latency_us, .sum_ns = n.latency_sum_ns},
                                node);
  }
  return out;
}

std::vector<MetricFamily> CollectRegionStats(const RegionStats& s) {
  std::vector<MetricFamily> out;
  MetricFamily& faults = AddFamily(out, "farswap_region_faults_total",
                                   "Page faults served, by kind (missing: the page was not "
                                   "resident; wp: first write to a write-protected page).",
                                   MetricType::Counter);
  AddSample(faults, double(s.missing_faults), {{"kind", "missing"}});
  AddSample(faults, double(s.wp_faults), {{"kind", "wp"}});
  AddCounter(out, "farswap_region_zero_fills_total",
             "Missing faults on never-written pages, filled locally.", double(s.zero_fills));
  AddCounter(out, "farswap_region_evictions_total", "Pages dropped from local memory.",
             double(s.evictions));
  AddCounter(out, "farswap_region_clean_evictions_total",
             "Evictions with no transfer: write-protected pages unchanged since loaded.",
             double(s.clean_evictions));
  AddCounter(out, "farswap_region_unchanged_evictions_total",
             "Evicted pages whose snapshot matched the backend's copy by hash (not sent).",
             double(s.unchanged_evictions));
  AddCounter(out, "farswap_region_moved_evictions_total",
             "Evicted pages that left by UFFDIO_MOVE, raising no userfaultfd event.",
             double(s.moved_evictions));
  AddCounter(out, "farswap_region_unreported_moves_total",
             "Pages an eviction's UFFDIO_MOVE moved without counting them (a kernel miscount), "
             "found and taken as moved.",
             double(s.unreported_moves));
  AddCounter(out, "farswap_region_urgent_evictions_total",
             "Evictions made at the program's priority while faults were parked for room.",
             double(s.urgent_evictions));
  AddCounter(out, "farswap_region_evictions_cancelled_total",
             "Evictions cancelled by a write during the snapshot.", double(s.evictions_cancelled));
  AddCounter(out, "farswap_region_pages_stored_total", "Pages stored through the backend.",
             double(s.pages_stored));
  AddCounter(out, "farswap_region_pages_loaded_total", "Pages loaded through the backend.",
             double(s.pages_loaded));
  AddCounter(out, "farswap_region_sent_bytes_total", "Encoded bytes stored through the backend.",
             double(s.bytes_sent));
  AddCounter(out, "farswap_region_received_bytes_total",
             "Encoded bytes loaded through the backend.", double(s.bytes_received));
  MetricFamily& prefetch = AddFamily(out, "farswap_region_prefetch_pages_total",
                                     "Prefetched pages, by outcome (issued, hit: used, waste: "
                                     "evicted unused).",
                                     MetricType::Counter);
  AddSample(prefetch, double(s.prefetch_issued), {{"outcome", "issued"}});
  AddSample(prefetch, double(s.prefetch_hits), {{"outcome", "hit"}});
  AddSample(prefetch, double(s.prefetch_waste), {{"outcome", "waste"}});
  AddCounter(out, "farswap_region_load_retries_total", "Backend loads retried.",
             double(s.load_retries));
  AddCounter(out, "farswap_region_sigbus_total", "Faults answered with SIGBUS.",
             double(s.sigbus_delivered));
  AddCounter(out, "farswap_region_store_errors_total", "Failed stores (the page stayed resident).",
             double(s.store_errors));
  AddCounter(out, "farswap_region_parked_faults_total",
             "Missing faults held while the region was over its budget.", double(s.parked_faults));
  AddGauge(out, "farswap_region_resident_pages", "Pages resident in local memory now.",
           double(s.resident_pages));
  AddGauge(out, "farswap_region_max_resident_pages", "Most pages resident at once.",
           double(s.max_resident_pages));
  AddGauge(out, "farswap_region_budget_pages", "The local-memory budget in pages.",
           double(s.budget_pages));
  AddCounter(out, "farswap_region_remote_faults_total", "Missing faults served by a backend load.",
             double(s.remote_faults));
  AddCounter(out, "farswap_region_remote_fault_seconds_total",
             "Sum over remote faults of the fault handler's time (message read to installed).",
             double(s.remote_fault_ns) * 1e-9);
  return out;
}

std::vector<MetricFamily> ClientMetrics::Collect() const {
  return CollectClientStats(client_->stats());
}

std::vector<MetricFamily> RegionMetrics::Collect() const {
  return CollectRegionStats(region_->stats());
}

}  // namespace farswap
