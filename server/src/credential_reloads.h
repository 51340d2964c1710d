// credential_reloads.h: what farswap-server does when it re-reads its
// credential files (file_watch.h says when: SIGHUP, or the file changing).
//
// --tenants-file (ReloadTenantsFile): TenantRegistry::ReloadFile (what it
// keeps and ends: TenantRegistry, "Rotation"), then the page-store quotas
// of added tenants and of tenants whose quota changed are set, and one line
// logs what changed. A file that cannot be read or parsed is rejected whole
// and logged as an error; the old tenants stay.
//
// --admin-token-file (ReloadAdminToken): ControlPlaneAuth::
// ReloadAdminTokenFile; a bad file is logged as an error and the old token
// stays in force.
//
//   FileWatch tenants(path, [&](absl::string_view why) {
//     ReloadTenantsFile(path, why, &registry, store);
//   });
#ifndef FARSWAP_SERVER_CREDENTIAL_RELOADS_H_
#define FARSWAP_SERVER_CREDENTIAL_RELOADS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "farswap/server/control_plane_auth.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"

namespace farswap::server {

// ApplyFileQuota gives `tenant` the page-store quota its tenants-file line
// sets: its quota_bytes rounded up to pages, or, for 0 ("none"), the
// store's default tenant quota.
void ApplyFileQuota(PageStore& store, const Tenant& tenant);

// ReloadTenantsFile re-reads the tenants file at `path` into `tenants` and
// applies the quotas it changed to `store`; `why` names what asked, in the
// log. Thread-safe (the registry and the store are); one reload at a time is
// the caller's (FileWatch's) job.
void ReloadTenantsFile(const std::string& path, absl::string_view why, TenantRegistry* tenants,
                       PageStore* store);

// ReloadAdminToken re-reads the admin token file at `path` into `auth` and
// logs the outcome (never the token). Thread-safe.
void ReloadAdminToken(const std::string& path, absl::string_view why, ControlPlaneAuth* auth);

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_CREDENTIAL_RELOADS_H_
