#include "credential_reloads.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_join.h"

namespace farswap::server {
namespace {

// Listed: " (a, b)" for a non-empty list, "" for an empty one.
std::string Listed(const std::vector<std::string>& ids) {
  return ids.empty() ? std::string() : " (" + absl::StrJoin(ids, ", ") + ")";
}

}  // namespace

void ApplyFileQuota(PageStore& store, const Tenant& tenant) {
  if (tenant.quota_bytes == 0) {
    store.ClearTenantQuota(tenant.index);
  } else {
    store.SetTenantQuota(tenant.index, QuotaPagesForBytes(tenant.quota_bytes));
  }
}

void ReloadTenantsFile(const std::string& path, absl::string_view why, TenantRegistry* tenants,
                       PageStore* store) {
  absl::StatusOr<TenantReload> r = tenants->ReloadFile(path);
  if (!r.ok()) {
    spdlog::error(
        "tenants file {} ({}): RELOAD REJECTED, the node keeps its {} tenants as they were: {}",
        path, std::string(why), tenants->tenants().size(), r.status().ToString());
    return;
  }
  const TenantDiff& d = r->diff;
  for (const Tenant& t : r->tenants) {
    const bool added = std::find(d.added.begin(), d.added.end(), t.id) != d.added.end();
    const bool quota =
        std::find(d.quota_changed.begin(), d.quota_changed.end(), t.id) != d.quota_changed.end();
    if (added || quota) ApplyFileQuota(*store, t);
  }
  spdlog::info(
      "tenants file {} reloaded ({}): {} tenants; {} added{}, {} removed{}, {} secret changed{}, "
      "{} quota changed{}; {} sessions ended",
      path, std::string(why), r->tenants.size(), d.added.size(), Listed(d.added), d.removed.size(),
      Listed(d.removed), d.secret_changed.size(), Listed(d.secret_changed), d.quota_changed.size(),
      Listed(d.quota_changed), r->sessions_ended);
}

void ReloadAdminToken(const std::string& path, absl::string_view why, ControlPlaneAuth* auth) {
  absl::StatusOr<bool> changed = auth->ReloadAdminTokenFile(path);
  if (!changed.ok()) {
    spdlog::error(
        "admin token file {} ({}): RELOAD REJECTED, the node keeps the admin token it had: {}",
        path, std::string(why), changed.status().ToString());
    return;
  }
  spdlog::info("admin token file {} reloaded ({}): {}", path, std::string(why),
               *changed ? "a new token is in force, the old one is refused from now on"
                        : "the token is unchanged");
}

}  // namespace farswap::server
