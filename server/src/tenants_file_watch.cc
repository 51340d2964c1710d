#include "tenants_file_watch.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_join.h"

namespace farswap::server {
namespace {

bool SameTime(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

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

bool TenantsFileWatch::FileIdentity::operator==(const FileIdentity& o) const {
  return device == o.device && inode == o.inode && size == o.size &&
         SameTime(modified, o.modified) && SameTime(changed, o.changed);
}

TenantsFileWatch::TenantsFileWatch(std::string path, TenantRegistry* tenants, PageStore* store)
    : path_(std::move(path)), tenants_(tenants), store_(store) {
  MutexLock l(&mu_);
  Identify(&last_);
}

bool TenantsFileWatch::Identify(FileIdentity* out) const {
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) return false;  // follows symlinks
  *out = FileIdentity{.device = st.st_dev,
                      .inode = st.st_ino,
                      .size = st.st_size,
                      .modified = st.st_mtim,
                      .changed = st.st_ctim};
  return true;
}

void TenantsFileWatch::Reload(absl::string_view why) {
  MutexLock l(&mu_);
  Identify(&last_);  // what is read now: Poll need not read it again
  ReloadLocked(why);
}

void TenantsFileWatch::Poll() {
  MutexLock l(&mu_);
  FileIdentity now;
  if (!Identify(&now) || now == last_) return;
  last_ = now;
  ReloadLocked("file changed");
}

void TenantsFileWatch::ReloadLocked(absl::string_view why) {
  mu_.AssertHeld();
  absl::StatusOr<TenantReload> r = tenants_->ReloadFile(path_);
  if (!r.ok()) {
    spdlog::error(
        "tenants file {} ({}): RELOAD REJECTED, the node keeps its {} tenants as they were: {}",
        path_, std::string(why), tenants_->tenants().size(), r.status().ToString());
    return;
  }
  const TenantDiff& d = r->diff;
  for (const Tenant& t : r->tenants) {
    const bool added = std::find(d.added.begin(), d.added.end(), t.id) != d.added.end();
    const bool quota =
        std::find(d.quota_changed.begin(), d.quota_changed.end(), t.id) != d.quota_changed.end();
    if (added || quota) ApplyFileQuota(*store_, t);
  }
  spdlog::info(
      "tenants file {} reloaded ({}): {} tenants; {} added{}, {} removed{}, {} secret changed{}, "
      "{} quota changed{}; {} sessions ended",
      path_, std::string(why), r->tenants.size(), d.added.size(), Listed(d.added), d.removed.size(),
      Listed(d.removed), d.secret_changed.size(), Listed(d.secret_changed), d.quota_changed.size(),
      Listed(d.quota_changed), r->sessions_ended);
}

}  // namespace farswap::server
