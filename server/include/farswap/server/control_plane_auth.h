// control_plane_auth.h: who may call which control-plane RPC of a memory
// node (README.md, "Roles").
//
// Two roles, told apart by the gRPC metadata `authorization: Bearer <token>`:
//   operator  the token is the node's admin token (farswap-server
//             --admin-token-file), compared in constant time. May call
//             everything: SetLimits, Drain, Compact, node-wide GetStats.
//   tenant    the token is an open session token (what Attach returned to
//             that tenant). May call GetStats with its own tenant_id only.
// A node with no admin token but --allow-anonymous treats a caller that
// sends no credential as an operator (local use, tests); without either,
// operator RPCs are refused. A token that is neither is refused, also then.
//
// Refusals: UNAUTHENTICATED (no credential where one is needed, a malformed
// header, a token that is not the admin token nor an open session) and
// PERMISSION_DENIED (a tenant asking for operator work or another tenant's
// stats). Each is logged with the caller's peer address and counted
// (refusals(); NodeStats.auth_refusals; farswap_auth_refusals_total).
//
// The admin token can be replaced while the node runs (ReloadAdminTokenFile:
// farswap-server does on SIGHUP and when --admin-token-file changes). A call
// is checked against the token in force when it arrives: the old one stops
// working the moment the new one is in.
//
//   ControlPlaneAuth auth(&tenants, {.admin_token = token, .allow_anonymous = false});
//   absl::Status s = auth.AuthorizeOperator(authorization_header, peer, "Drain");
//
// Thread safety: safe for concurrent use; the counters are relaxed atomics,
// the admin token is guarded by a mutex (token_mu_, taken before the tenant
// registry's lock, never after).
#ifndef FARSWAP_SERVER_CONTROL_PLANE_AUTH_H_
#define FARSWAP_SERVER_CONTROL_PLANE_AUTH_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "farswap/common/mutex.h"
#include "farswap/server/tenant_registry.h"

namespace farswap::server {

enum class AuthRefusal { kUnauthenticated = 0, kPermissionDenied = 1 };
inline constexpr int kAuthRefusalCount = 2;
// AuthRefusalName: "unauthenticated" / "permission_denied" (the `reason`
// label of farswap_auth_refusals_total).
const char* AuthRefusalName(AuthRefusal r);

struct ControlPlaneAuthOptions {
  // admin_token: the operator credential; nullopt: none configured.
  std::optional<std::string> admin_token;
  // allow_anonymous: without an admin token, a caller with no credential is
  // an operator (farswap-server --allow-anonymous).
  bool allow_anonymous = false;
};

// LoadAdminTokenFile reads an admin token file: the whole file, less
// trailing whitespace (a final newline). INVALID_ARGUMENT for a token
// shorter than kMinAdminTokenLength or holding whitespace or control
// characters, NOT_FOUND if the file cannot be read.
inline constexpr size_t kMinAdminTokenLength = 16;
absl::StatusOr<std::string> LoadAdminTokenFile(const std::string& path);

class ControlPlaneAuth {
 public:
  // tenants is not owned and must outlive this.
  ControlPlaneAuth(const TenantRegistry* tenants, ControlPlaneAuthOptions options);

  // AuthorizeOperator: OK if `authorization` (the metadata value, "" when
  // absent) grants the operator role. `peer` and `rpc` name the caller and
  // the call in the refusal's log line.
  absl::Status AuthorizeOperator(absl::string_view authorization, absl::string_view peer,
                                 absl::string_view rpc);
  // AuthorizeStats: GetStats for `tenant_id` ("" = node-wide). An operator
  // may read anything; a tenant's session only its own tenant_id. Returns
  // the caller's role (a tenant gets its own TenantStats and nothing of the
  // node's).
  enum class Role { kOperator, kTenant };
  absl::StatusOr<Role> AuthorizeStats(absl::string_view authorization, absl::string_view peer,
                                      absl::string_view tenant_id);

  // ReloadAdminTokenFile replaces the admin token with the one `path` holds
  // now (LoadAdminTokenFile's rules). Returns whether the token changed. On
  // an error the old token stays in force (an operator locked out of the
  // node by a bad edit could not even drain it): FAILED_PRECONDITION when
  // this node was started without an admin token (it cannot gain one while
  // running: anonymous operators may be relying on that), else
  // LoadAdminTokenFile's error. Each call is counted, as a reload or as a
  // failure.
  absl::StatusOr<bool> ReloadAdminTokenFile(const std::string& path);

  // refusals: counts by AuthRefusal since start.
  std::array<uint64_t, kAuthRefusalCount> refusals() const;
  // admin_token_reloads / _failures: ReloadAdminTokenFile calls that put a
  // token in force (changed or not) / that were refused.
  uint64_t admin_token_reloads() const {
    return admin_token_reloads_.load(std::memory_order_relaxed);
  }
  uint64_t admin_token_reload_failures() const {
    return admin_token_reload_failures_.load(std::memory_order_relaxed);
  }
  bool has_admin_token() const { return has_admin_token_; }

 private:
  struct Caller {
    bool is_operator = false;
    std::string tenant_id;  // when !is_operator
  };
  // Identify: who `authorization` says the caller is; UNAUTHENTICATED (not
  // yet counted) when it says nothing usable.
  absl::StatusOr<Caller> Identify(absl::string_view authorization) const;
  absl::Status Refuse(absl::Status why, absl::string_view peer, absl::string_view rpc);

  const TenantRegistry* const tenants_;
  const bool has_admin_token_;  // fixed at start: a reload replaces the token, never adds one
  const bool allow_anonymous_;
  mutable Mutex token_mu_;
  std::optional<std::string> admin_token_ ABSL_GUARDED_BY(token_mu_);
  std::array<std::atomic<uint64_t>, kAuthRefusalCount> refusals_{};
  std::atomic<uint64_t> admin_token_reloads_{0};
  std::atomic<uint64_t> admin_token_reload_failures_{0};
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_CONTROL_PLANE_AUTH_H_
