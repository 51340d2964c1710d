#include "farswap/server/tenant_registry.h"

#include <fstream>
#include <random>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "constant_time.h"
#include "farswap/common/byte_size.h"
#include "farswap/common/sync_point.h"

namespace farswap::server {
namespace {

std::string NewToken() {
  // std::random_device reads the kernel's CSPRNG (getrandom) on Linux.
  std::random_device rd;
  std::string hex;
  for (int i = 0; i < 4; ++i) absl::StrAppend(&hex, absl::Hex(uint32_t(rd()), absl::kZeroPad8));
  return hex;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("tenants file ", path, ": cannot open"));
  std::stringstream text;
  text << f.rdbuf();
  return text.str();
}

}  // namespace

TenantDiff DiffTenants(const std::vector<Tenant>& before, const std::vector<Tenant>& after) {
  absl::flat_hash_map<std::string, const Tenant*> old_by_id;
  for (const Tenant& t : before) old_by_id[t.id] = &t;
  absl::flat_hash_set<std::string> still_listed;
  TenantDiff diff;
  for (const Tenant& t : after) {
    still_listed.insert(t.id);
    auto it = old_by_id.find(t.id);
    if (it == old_by_id.end()) {
      diff.added.push_back(t.id);
      continue;
    }
    if (it->second->secret != t.secret) diff.secret_changed.push_back(t.id);
    if (it->second->quota_bytes != t.quota_bytes) diff.quota_changed.push_back(t.id);
  }
  for (const Tenant& t : before) {
    if (!still_listed.contains(t.id)) diff.removed.push_back(t.id);
  }
  return diff;
}

TenantRegistry::TenantRegistry(TenantRegistry&& other) noexcept {
  MutexLock l(&other.mu_);
  tenants_ = std::move(other.tenants_);
  index_of_ = std::move(other.index_of_);
  id_of_index_ = std::move(other.id_of_index_);
  sessions_ = std::move(other.sessions_);
  idle_timeout_ = other.idle_timeout_;
  session_end_generation_.store(other.session_end_generation_.load());
  reloads_.store(other.reloads_.load());
  reload_failures_.store(other.reload_failures_.load());
}

absl::StatusOr<TenantRegistry> TenantRegistry::LoadFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return Parse(*text, path);
}

absl::StatusOr<std::vector<Tenant>> TenantRegistry::ParseTenants(const std::string& text,
                                                                 const std::string& origin) {
  std::vector<Tenant> tenants;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": ", why, " (expected id:secret:quota)"));
    };
    if (f.size() != 3) return bad("need three ':'-separated fields");
    if (f[0].empty()) return bad("empty tenant id");
    absl::StatusOr<uint64_t> quota = ParseBytes(f[2]);
    if (!quota.ok()) return bad(std::string(quota.status().message()));
    for (const Tenant& t : tenants) {
      if (t.id == f[0]) return bad(absl::StrCat("duplicate tenant id '", f[0], "'"));
    }
    tenants.push_back(Tenant{f[0], f[1], *quota, uint32_t(tenants.size())});
  }
  if (tenants.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": no tenants"));
  }
  return tenants;
}

absl::StatusOr<TenantRegistry> TenantRegistry::Parse(const std::string& text,
                                                     const std::string& origin) {
  absl::StatusOr<std::vector<Tenant>> tenants = ParseTenants(text, origin);
  if (!tenants.ok()) return tenants.status();
  TenantRegistry reg;
  {
    MutexLock l(&reg.mu_);  // released before the move out takes it again
    reg.InstallLocked(std::move(*tenants));
  }
  return reg;
}

TenantRegistry TenantRegistry::Default() {
  TenantRegistry reg;
  {
    MutexLock l(&reg.mu_);
    reg.InstallLocked({Tenant{"default", "", 0, 0}});
  }
  return reg;
}

TenantReload TenantRegistry::InstallLocked(std::vector<Tenant> tenants) {
  mu_.AssertHeld();
  TenantReload out;
  out.diff = DiffTenants(tenants_, tenants);
  for (Tenant& t : tenants) {
    auto [it, inserted] = index_of_.try_emplace(t.id, uint32_t(id_of_index_.size()));
    if (inserted) id_of_index_.push_back(t.id);
    t.index = it->second;
  }
  absl::flat_hash_set<uint32_t> ending;
  for (const std::vector<std::string>* ids : {&out.diff.removed, &out.diff.secret_changed}) {
    for (const std::string& id : *ids) ending.insert(index_of_.at(id));
  }
  if (!ending.empty()) {
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (ending.contains(it->second.session.tenant_index)) {
        sessions_.erase(it++);
        ++out.sessions_ended;
      } else {
        ++it;
      }
    }
    if (out.sessions_ended > 0) {
      session_end_generation_.fetch_add(1, std::memory_order_release);
    }
  }
  tenants_ = tenants;
  out.tenants = std::move(tenants);
  return out;
}

absl::StatusOr<TenantReload> TenantRegistry::Reload(const std::string& text,
                                                    const std::string& origin) {
  absl::StatusOr<std::vector<Tenant>> tenants = ParseTenants(text, origin);
  if (!tenants.ok()) {
    reload_failures_.fetch_add(1, std::memory_order_relaxed);
    return tenants.status();
  }
  // [none] Parsed, not yet installed: an Attach here still sees the old list.
  FARSWAP_SYNC_POINT("TenantRegistry::Reload:parsed");
  MutexLock l(&mu_);
  TenantReload out = InstallLocked(std::move(*tenants));
  reloads_.fetch_add(1, std::memory_order_relaxed);
  return out;
}

absl::StatusOr<TenantReload> TenantRegistry::ReloadFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    reload_failures_.fetch_add(1, std::memory_order_relaxed);
    return text.status();
  }
  return Reload(*text, path);
}

std::vector<Tenant> TenantRegistry::tenants() const {
  MutexLock l(&mu_);
  return tenants_;
}

std::vector<std::string> TenantRegistry::TenantIdsByIndex(std::vector<bool>* listed) const {
  MutexLock l(&mu_);
  if (listed != nullptr) {
    listed->assign(id_of_index_.size(), false);
    for (const Tenant& t : tenants_) (*listed)[t.index] = true;
  }
  return id_of_index_;
}

const Tenant* TenantRegistry::FindLocked(const std::string& tenant_id) const {
  mu_.AssertHeld();
  for (const Tenant& t : tenants_) {
    if (t.id == tenant_id) return &t;
  }
  return nullptr;
}

absl::StatusOr<Tenant> TenantRegistry::Find(const std::string& tenant_id) const {
  MutexLock l(&mu_);
  const Tenant* t = FindLocked(tenant_id);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("unknown tenant '", tenant_id, "'"));
  return *t;
}

absl::StatusOr<Session> TenantRegistry::Attach(const std::string& tenant_id,
                                               const std::string& secret) {
  std::string token = NewToken();
  // [mu_] The secret is checked and the session opened in one hold, so a
  // Reload that changes the secret either comes first (the old secret is
  // refused) or ends this session.
  MutexLock l(&mu_);
  const Tenant* t = FindLocked(tenant_id);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("unknown tenant '", tenant_id, "'"));
  if (!ConstantTimeEquals(secret, t->secret)) {
    return absl::UnauthenticatedError(absl::StrCat("wrong secret for tenant '", tenant_id, "'"));
  }
  Session s{std::move(token), t->index, t->id};
  sessions_[s.token] = SessionState{.session = s, .connections = 0, .idle_since = absl::Now()};
  return s;
}

absl::StatusOr<Session> TenantRegistry::LookupSession(const std::string& token) const {
  MutexLock l(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) return absl::UnauthenticatedError("unknown or closed session token");
  return it->second.session;
}

bool TenantRegistry::SessionIsOpen(const std::string& token) const {
  MutexLock l(&mu_);
  return sessions_.contains(token);
}

absl::StatusOr<Session> TenantRegistry::OpenConnection(const std::string& token) {
  MutexLock l(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) {
    return absl::UnauthenticatedError("unknown, closed or expired session token");
  }
  ++it->second.connections;
  return it->second.session;
}

void TenantRegistry::CloseConnection(const std::string& token) {
  MutexLock l(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end() || it->second.connections == 0) return;
  if (--it->second.connections == 0) it->second.idle_since = absl::Now();
}

void TenantRegistry::set_session_idle_timeout(absl::Duration timeout) {
  MutexLock l(&mu_);
  idle_timeout_ = timeout;
}

size_t TenantRegistry::ExpireIdleSessions(absl::Time now) {
  MutexLock l(&mu_);
  if (idle_timeout_ == absl::InfiniteDuration()) return 0;
  size_t expired = 0;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    const SessionState& s = it->second;
    if (s.connections == 0 && now - s.idle_since >= idle_timeout_) {
      sessions_.erase(it++);
      ++expired;
    } else {
      ++it;
    }
  }
  return expired;
}

absl::Status TenantRegistry::Detach(const std::string& token) {
  MutexLock l(&mu_);
  if (sessions_.erase(token) == 0) {
    return absl::UnauthenticatedError("unknown or closed session token");
  }
  session_end_generation_.fetch_add(1, std::memory_order_release);
  return absl::OkStatus();
}

size_t TenantRegistry::session_count() const {
  MutexLock l(&mu_);
  return sessions_.size();
}

}  // namespace farswap::server
