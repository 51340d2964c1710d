#include "farswap/server/control_plane_auth.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "constant_time.h"

namespace farswap::server {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

}  // namespace

const char* AuthRefusalName(AuthRefusal r) {
  switch (r) {
    case AuthRefusal::kUnauthenticated:
      return "unauthenticated";
    case AuthRefusal::kPermissionDenied:
      return "permission_denied";
  }
  return "unknown";
}

absl::StatusOr<std::string> LoadAdminTokenFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("admin token file ", path, ": cannot open"));
  std::stringstream text;
  text << f.rdbuf();
  std::string token(absl::StripTrailingAsciiWhitespace(text.str()));
  for (char c : token) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) ||
        absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("admin token file ", path,
                       ": the token holds whitespace or control "
                       "characters (want one line, e.g. `openssl rand -hex 32`)"));
    }
  }
  if (token.size() < kMinAdminTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "admin token file ", path, ": the token has ", token.size(), " characters, want at least ",
        kMinAdminTokenLength, " (e.g. `openssl rand -hex 32`)"));
  }
  return token;
}

ControlPlaneAuth::ControlPlaneAuth(const TenantRegistry* tenants, ControlPlaneAuthOptions options)
    : tenants_(tenants),
      has_admin_token_(options.admin_token.has_value()),
      allow_anonymous_(options.allow_anonymous),
      admin_token_(std::move(options.admin_token)) {}

absl::StatusOr<bool> ControlPlaneAuth::ReloadAdminTokenFile(const std::string& path) {
  if (!has_admin_token_) {
    admin_token_reload_failures_.fetch_add(1, std::memory_order_relaxed);
    return absl::FailedPreconditionError(
        "this node was started without --admin-token-file: a reload cannot add one (restart "
        "with it)");
  }
  absl::StatusOr<std::string> token = LoadAdminTokenFile(path);
  if (!token.ok()) {
    admin_token_reload_failures_.fetch_add(1, std::memory_order_relaxed);
    return token.status();
  }
  bool changed;
  {
    MutexLock l(&token_mu_);
    changed = !ConstantTimeEquals(*token, *admin_token_);
    admin_token_ = std::move(*token);
  }
  admin_token_reloads_.fetch_add(1, std::memory_order_relaxed);
  return changed;
}

absl::StatusOr<ControlPlaneAuth::Caller> ControlPlaneAuth::Identify(
    absl::string_view authorization) const {
  if (authorization.empty()) {
    if (!has_admin_token_ && allow_anonymous_) return Caller{.is_operator = true};
    return absl::UnauthenticatedError(
        has_admin_token_
            ? "no credential: send `authorization: Bearer <admin token or session token>`"
            : "no credential, and this node has no --admin-token-file (operator RPCs need "
              "--admin-token-file, or --allow-anonymous)");
  }
  if (!absl::StartsWith(authorization, kBearer)) {
    return absl::UnauthenticatedError("malformed authorization metadata: want `Bearer <token>`");
  }
  const absl::string_view token = authorization.substr(kBearer.size());
  if (has_admin_token_) {
    MutexLock l(&token_mu_);
    if (ConstantTimeEquals(token, *admin_token_)) return Caller{.is_operator = true};
  }
  absl::StatusOr<Session> session = tenants_->LookupSession(std::string(token));
  if (session.ok()) return Caller{.is_operator = false, .tenant_id = session->tenant_id};
  return absl::UnauthenticatedError("bad credential: neither the admin token nor an open session");
}

absl::Status ControlPlaneAuth::Refuse(absl::Status why, absl::string_view peer,
                                      absl::string_view rpc) {
  const AuthRefusal r = why.code() == absl::StatusCode::kPermissionDenied
                            ? AuthRefusal::kPermissionDenied
                            : AuthRefusal::kUnauthenticated;
  refusals_[int(r)].fetch_add(1, std::memory_order_relaxed);
  // absl::string_view is not std::string_view in Debian's Abseil: fmt
  // formats std::string.
  spdlog::warn("{} refused ({}) for peer {}: {}", std::string(rpc), AuthRefusalName(r),
               std::string(peer), std::string(why.message()));
  return why;
}

absl::Status ControlPlaneAuth::AuthorizeOperator(absl::string_view authorization,
                                                 absl::string_view peer, absl::string_view rpc) {
  absl::StatusOr<Caller> caller = Identify(authorization);
  if (!caller.ok()) return Refuse(caller.status(), peer, rpc);
  if (!caller->is_operator) {
    return Refuse(absl::PermissionDeniedError(absl::StrCat(
                      rpc, " is operator work: a tenant's session token may not call it")),
                  peer, rpc);
  }
  return absl::OkStatus();
}

absl::StatusOr<ControlPlaneAuth::Role> ControlPlaneAuth::AuthorizeStats(
    absl::string_view authorization, absl::string_view peer, absl::string_view tenant_id) {
  constexpr absl::string_view kRpc = "GetStats";
  absl::StatusOr<Caller> caller = Identify(authorization);
  if (!caller.ok()) return Refuse(caller.status(), peer, kRpc);
  if (caller->is_operator) return Role::kOperator;
  const std::string& own = caller->tenant_id;
  if (tenant_id.empty()) {
    return Refuse(absl::PermissionDeniedError(absl::StrCat(
                      "node-wide stats are operator work: tenant '", own,
                      "' may read its own (GetStatsRequest.tenant_id = \"", own, "\")")),
                  peer, kRpc);
  }
  if (tenant_id != own) {
    return Refuse(absl::PermissionDeniedError(absl::StrCat(
                      "tenant '", own, "' may not read the stats of tenant '", tenant_id, "'")),
                  peer, kRpc);
  }
  return Role::kTenant;
}

std::array<uint64_t, kAuthRefusalCount> ControlPlaneAuth::refusals() const {
  std::array<uint64_t, kAuthRefusalCount> out;
  for (int i = 0; i < kAuthRefusalCount; ++i) {
    out[i] = refusals_[i].load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace farswap::server
