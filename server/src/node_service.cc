#include "farswap/server/node_service.h"

#include <spdlog/spdlog.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "farswap/common/build_info.h"
#include "farswap/common/cpu_idle.h"

namespace farswap::server {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(s));
  return r;
}

void FillRejects(const std::array<uint64_t, kRejectReasonCount>& r, v1::RejectStats* out) {
  out->set_pool_full(r[int(RejectReason::kPoolFull)]);
  out->set_quota(r[int(RejectReason::kQuota)]);
  out->set_backing_full(r[int(RejectReason::kBackingFull)]);
  out->set_draining(r[int(RejectReason::kDraining)]);
  out->set_io_error(r[int(RejectReason::kIoError)]);
}

// Authorization: the `authorization` metadata value, "" when absent.
absl::string_view Authorization(const grpc::CallbackServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return "";
  return absl::string_view(it->second.data(), it->second.size());
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode(int(s.code())), std::string(s.message()));
}

MemoryNodeService::MemoryNodeService(PageStore* store, TenantRegistry* tenants,
                                     const NodeServiceOptions& options)
    : store_(store),
      tenants_(tenants),
      node_id_(options.node_id),
      incarnation_(absl::Uniform<uint64_t>(absl::BitGen(), 1, UINT64_MAX)),
      data_addr_(options.data_addr),
      data_addrs_([&] {
        std::vector<std::string> all{options.data_addr};
        all.insert(all.end(), options.more_data_addrs.begin(), options.more_data_addrs.end());
        return all;
      }()),
      data_tls_(options.data_tls),
      data_plane_(options.data_plane),
      rdma_(transport::ProbeRdmaDevices()),
      on_drain_changed_(options.on_drain_changed),
      auth_(options.auth),
      limits_(options.limits) {}

grpc::ServerUnaryReactor* MemoryNodeService::Attach(grpc::CallbackServerContext* ctx,
                                                    const v1::AttachRequest* req,
                                                    v1::AttachResponse* resp) {
  if (store_->draining()) {
    return Finish(ctx, absl::FailedPreconditionError(
                           absl::StrCat("node ", node_id_, " is draining: attach elsewhere")));
  }
  absl::StatusOr<Session> s = tenants_->Attach(req->tenant_id(), req->secret());
  if (!s.ok()) {
    spdlog::warn("attach refused for tenant '{}' ({}): {}", req->tenant_id(), req->client_name(),
                 s.status().ToString());
    return Finish(ctx, s.status());
  }
  // The tenant as listed now (a reload may have changed its quota since).
  absl::StatusOr<Tenant> t = tenants_->Find(s->tenant_id);
  resp->set_session_token(s->token);
  resp->set_quota_bytes(t.ok() ? t->quota_bytes : 0);
  resp->set_data_addr(data_addr_);
  resp->set_node_id(node_id_);
  resp->set_incarnation(incarnation_);
  resp->set_conditional_invalidate(true);
  resp->set_scrub_loads(true);
  resp->set_data_tls(data_tls_);
  for (const std::string& a : data_addrs_) resp->add_data_addrs(a);
  for (const std::string& d : rdma_.devices) resp->add_rdma_devices(d);
  spdlog::info("session opened: tenant '{}' client '{}' ({} sessions)", s->tenant_id,
               req->client_name(), tenants_->session_count());
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* MemoryNodeService::Detach(grpc::CallbackServerContext* ctx,
                                                    const v1::DetachRequest* req,
                                                    v1::DetachResponse*) {
  absl::Status s = tenants_->Detach(req->session_token());
  if (s.ok()) spdlog::info("session closed ({} sessions)", tenants_->session_count());
  return Finish(ctx, s);
}

absl::Status MemoryNodeService::FillStats(const std::string& tenant_filter,
                                          v1::GetStatsResponse* resp) const {
  // Removed tenants' pages stay until the tenant is listed again: their
  // rows stay too, marked removed (TenantRegistry, "Rotation").
  std::vector<bool> listed;
  const std::vector<std::string> ids = tenants_->TenantIdsByIndex(&listed);
  if (!tenant_filter.empty() && std::find(ids.begin(), ids.end(), tenant_filter) == ids.end()) {
    return absl::NotFoundError(absl::StrCat("unknown tenant '", tenant_filter, "'"));
  }
  PageStoreStats s = store_->GetStats();
  resp->set_node_id(node_id_);
  v1::NodeStats* n = resp->mutable_node();
  v1::PoolStats* p = n->mutable_pool();
  p->set_orig_data_size(s.pool.orig_data_size);
  p->set_compr_data_size(s.pool.compr_data_size);
  p->set_mem_used_total(s.pool.mem_used_total);
  p->set_mem_limit(s.pool.mem_limit);
  p->set_mem_used_max(s.pool.mem_used_max);
  p->set_same_pages(s.pool.same_pages);
  p->set_pages_compacted(s.pool.pages_compacted);
  p->set_huge_pages(s.pool.huge_pages);
  p->set_metadata_bytes(s.pool.metadata_bytes);
  p->set_mem_cached(s.pool.mem_cached);
  p->set_page_release(s.pool.page_release);
  v1::BackingStats* b = n->mutable_backing();
  b->set_size_bytes(s.backing_total_blocks * kBlockSize);
  b->set_used_bytes(s.backing_used_blocks * kBlockSize);
  b->set_reads(s.backing_reads);
  b->set_writes(s.backing_writes);
  b->set_segments(s.segments);
  b->set_free_segments(s.free_segments);
  b->set_segment_bytes(s.segment_bytes);
  b->set_live_bytes(s.disk_live_bytes);
  b->set_bytes_written(s.backing_bytes_written);
  b->set_written_back_bytes(s.written_back_bytes);
  b->set_cleaner_moves(s.cleaner_moves);
  b->set_cleaner_segments(s.cleaner_segments);
  b->set_cleaner_space_segments(s.cleaner_space_segments);
  b->set_write_engine(s.write_engine);
  b->set_write_queue_depth(s.write_queue_depth);
  b->set_max_writes_in_flight(s.max_writes_in_flight);
  b->set_registered_writes(s.registered_writes);
  b->set_writeback_threads(s.writeback_threads);
  b->set_disk_read_requests(s.disk_read_requests);
  b->set_disk_reads_coalesced(s.disk_reads_coalesced);
  b->set_disk_reads_in_flight(s.disk_reads_in_flight);
  b->set_promotions(s.promotions);
  b->set_read_cache_hits(s.read_cache_hits);
  b->set_read_cache_misses(s.read_cache_misses);
  b->set_read_cache_bytes(s.read_cache_bytes);
  b->set_read_cache_limit_bytes(s.read_cache_limit_bytes);
  b->set_readahead_bytes(s.readahead_bytes);
  b->set_read_cache_mismatches(s.read_cache_mismatches);
  if (!s.health.ok()) b->set_io_error(s.health.ToString());
  FillRejects(s.rejects, n->mutable_rejects());
  n->set_stored_pages(s.stored_pages);
  n->set_same_pages(s.same_filled_pages);
  n->set_huge_pages(s.huge_pages);
  n->set_written_back_pages(s.written_back_pages);
  n->set_pages_on_backing(s.pages_on_disk);
  n->set_stores(s.stores);
  n->set_loads(s.loads);
  n->set_load_misses(s.load_misses);
  n->set_invalidates(s.invalidates);
  n->set_draining(s.draining);
  n->set_sessions(uint32_t(tenants_->session_count()));
  n->set_uptime_seconds(uint64_t(absl::ToInt64Seconds(absl::Now() - ProcessStartTime())));
  n->set_version(FarswapVersion());
  const std::array<uint64_t, kAuthRefusalCount> refusals = auth_->refusals();
  n->mutable_auth_refusals()->set_unauthenticated(refusals[int(AuthRefusal::kUnauthenticated)]);
  n->mutable_auth_refusals()->set_permission_denied(refusals[int(AuthRefusal::kPermissionDenied)]);
  if (data_plane_ != nullptr) {
    const DataPlaneStats d = data_plane_->stats();
    n->set_connections(uint32_t(d.connections_open));
    n->set_connections_accepted(d.connections_accepted);
    n->set_bytes_received(d.bytes_received);
    n->set_bytes_sent(d.bytes_sent);
    n->set_data_tls(d.tls);
    n->set_tls_handshake_failures(d.tls_handshake_failures);
    n->set_ktls_connections(d.ktls_connections);
    v1::DataTransportStats* t = n->mutable_data_transport();
    t->set_backend(d.backend);
    for (const auto& [carrier, count] : d.connections_by_carrier) {
      (*t->mutable_connections_by_carrier())[carrier] = count;
    }
  }
  n->mutable_data_transport()->set_data_addr(data_addr_);
  for (const std::string& a : data_addrs_) n->mutable_data_transport()->add_data_addrs(a);
  for (const std::string& dev : rdma_.devices) n->mutable_data_transport()->add_rdma_devices(dev);
  n->mutable_data_transport()->set_rdma_missing(rdma_.missing);
  n->set_tenant_reloads(tenants_->reloads());
  n->set_tenant_reload_failures(tenants_->reload_failures());
  {
    const CpuIdleState idle = ReadCpuIdleState();
    v1::CpuIdleStats* c = n->mutable_cpuidle();
    c->set_driver(idle.driver);
    c->set_governor(idle.governor);
    if (idle.guest_halt_poll_ns.has_value()) c->set_guest_halt_poll_ns(*idle.guest_halt_poll_ns);
    c->set_halt_polling_off(idle.halt_polling_off());
  }
  n->set_admin_token_reloads(auth_->admin_token_reloads());
  n->set_admin_token_reload_failures(auth_->admin_token_reload_failures());
  v1::ColdTierStats* cold = n->mutable_cold();
  cold->set_passes(s.cold_passes);
  cold->set_recompressed_pages(s.cold_recompressed_pages);
  cold->set_bytes_saved(s.cold_bytes_saved);
  cold->set_kept_pages(s.cold_kept_pages);
  cold->set_aborted(s.cold_aborted);
  cold->set_loads(s.cold_loads);
  for (const TenantStats& ts : s.tenants) {
    if (ts.tenant >= ids.size()) continue;
    const std::string& id = ids[ts.tenant];
    if (!tenant_filter.empty() && id != tenant_filter) continue;
    v1::TenantStats* out = resp->add_tenants();
    out->set_tenant_id(id);
    out->set_removed(!listed[ts.tenant]);
    out->set_stored_pages(ts.stored_pages);
    out->set_stored_bytes(ts.stored_bytes);
    out->set_quota_bytes(ts.quota_pages * kBlockSize);
    FillRejects(ts.rejects, out->mutable_rejects());
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* MemoryNodeService::GetStats(grpc::CallbackServerContext* ctx,
                                                      const v1::GetStatsRequest* req,
                                                      v1::GetStatsResponse* resp) {
  absl::StatusOr<ControlPlaneAuth::Role> role =
      auth_->AuthorizeStats(Authorization(ctx), ctx->peer(), req->tenant_id());
  if (!role.ok()) return Finish(ctx, role.status());
  absl::Status s = FillStats(req->tenant_id(), resp);
  // A tenant reads its own TenantStats; the node's figures are operator's.
  if (s.ok() && *role == ControlPlaneAuth::Role::kTenant) resp->clear_node();
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* MemoryNodeService::SetLimits(grpc::CallbackServerContext* ctx,
                                                       const v1::SetLimitsRequest* req,
                                                       v1::SetLimitsResponse*) {
  if (absl::Status a = auth_->AuthorizeOperator(Authorization(ctx), ctx->peer(), "SetLimits");
      !a.ok()) {
    return Finish(ctx, a);
  }
  if (req->has_tenant_quota_bytes()) {
    absl::StatusOr<Tenant> t = tenants_->Find(req->tenant_id());
    if (!t.ok()) return Finish(ctx, t.status());
  } else if (!req->tenant_id().empty()) {
    return Finish(ctx, absl::InvalidArgumentError("tenant_id given without tenant_quota_bytes"));
  }
  // One hold of mu_ across read, change and write: two concurrent callers
  // changing different fields both take effect, and the store ends with the
  // limits limits_ says it has.
  MutexLock l(&mu_);
  PageStoreLimits next = limits_;
  if (req->has_pool_limit_bytes()) next.pool_limit_bytes = req->pool_limit_bytes();
  if (req->has_high_watermark()) next.high_watermark = req->high_watermark();
  if (req->has_low_watermark()) next.low_watermark = req->low_watermark();
  absl::Status s = store_->SetLimits(next);
  if (!s.ok()) return Finish(ctx, s);
  limits_ = next;
  if (req->has_tenant_quota_bytes()) {
    uint32_t index = tenants_->Find(req->tenant_id())->index;
    const uint64_t pages = QuotaPagesForBytes(req->tenant_quota_bytes());
    store_->SetTenantQuota(index, pages);
    spdlog::info("tenant '{}' quota set to {} bytes ({} pages)", req->tenant_id(),
                 req->tenant_quota_bytes(), pages);
  }
  spdlog::info("limits set: pool {} bytes, watermarks {:.2f}/{:.2f}", next.pool_limit_bytes,
               next.high_watermark, next.low_watermark);
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* MemoryNodeService::Compact(grpc::CallbackServerContext* ctx,
                                                     const v1::CompactRequest*,
                                                     v1::CompactResponse* resp) {
  if (absl::Status a = auth_->AuthorizeOperator(Authorization(ctx), ctx->peer(), "Compact");
      !a.ok()) {
    return Finish(ctx, a);
  }
  resp->set_pages_freed(store_->Compact());
  spdlog::info("compaction freed {} pages", resp->pages_freed());
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* MemoryNodeService::Drain(grpc::CallbackServerContext* ctx,
                                                   const v1::DrainRequest* req,
                                                   v1::DrainResponse* resp) {
  if (absl::Status a = auth_->AuthorizeOperator(Authorization(ctx), ctx->peer(), "Drain");
      !a.ok()) {
    return Finish(ctx, a);
  }
  store_->SetDraining(req->drain());
  if (on_drain_changed_) on_drain_changed_();
  spdlog::info(req->drain() ? "draining: new stores refused, loads served"
                            : "drain ended: accepting stores");
  resp->set_draining(store_->draining());
  resp->set_stored_pages(store_->GetStats().stored_pages);
  return Finish(ctx, absl::OkStatus());
}

}  // namespace farswap::server
