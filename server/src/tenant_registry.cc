#include "farswap/server/tenant_registry.h"

#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "constant_time.h"
#include "farswap/common/byte_size.h"

namespace farswap::server {
namespace {

std::string NewToken() {
  // std::random_device reads the kernel's CSPRNG (getrandom) on Linux.
  std::random_device rd;
  std::string hex;
  for (int i = 0; i < 4; ++i) absl::StrAppend(&hex, absl::Hex(uint32_t(rd()), absl::kZeroPad8));
  return hex;
}

}  // namespace

TenantRegistry::TenantRegistry(TenantRegistry&& other) noexcept
    : tenants_(std::move(other.tenants_)) {
  MutexLock l(&other.mu_);
  sessions_ = std::move(other.sessions_);
  idle_timeout_ = other.idle_timeout_;
}

absl::StatusOr<TenantRegistry> TenantRegistry::LoadFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("tenants file ", path, ": cannot open"));
  std::stringstream text;
  text << f.rdbuf();
  return Parse(text.str(), path);
}

absl::StatusOr<TenantRegistry> TenantRegistry::Parse(const std::string& text,
                                                     const std::string& origin) {
  TenantRegistry reg;
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
    for (const Tenant& t : reg.tenants_) {
      if (t.id == f[0]) return bad(absl::StrCat("duplicate tenant id '", f[0], "'"));
    }
    reg.tenants_.push_back(Tenant{f[0], f[1], *quota, uint32_t(reg.tenants_.size())});
  }
  if (reg.tenants_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": no tenants"));
  }
  return reg;
}

TenantRegistry TenantRegistry::Default() {
  TenantRegistry reg;
  reg.tenants_.push_back(Tenant{"default", "", 0, 0});
  return reg;
}

absl::StatusOr<Tenant> TenantRegistry::Find(const std::string& tenant_id) const {
  for (const Tenant& t : tenants_) {
    if (t.id == tenant_id) return t;
  }
  return absl::NotFoundError(absl::StrCat("unknown tenant '", tenant_id, "'"));
}

absl::StatusOr<Session> TenantRegistry::Attach(const std::string& tenant_id,
                                               const std::string& secret) {
  absl::StatusOr<Tenant> t = Find(tenant_id);
  if (!t.ok()) return t.status();
  if (!ConstantTimeEquals(secret, t->secret)) {
    return absl::UnauthenticatedError(absl::StrCat("wrong secret for tenant '", tenant_id, "'"));
  }
  Session s{NewToken(), t->index};
  MutexLock l(&mu_);
  sessions_[s.token] = SessionState{.session = s, .connections = 0, .idle_since = absl::Now()};
  return s;
}

absl::StatusOr<Session> TenantRegistry::LookupSession(const std::string& token) const {
  MutexLock l(&mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) return absl::UnauthenticatedError("unknown or closed session token");
  return it->second.session;
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
  return absl::OkStatus();
}

size_t TenantRegistry::session_count() const {
  MutexLock l(&mu_);
  return sessions_.size();
}

}  // namespace farswap::server
