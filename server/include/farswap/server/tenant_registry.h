// tenant_registry.h: who may attach to a memory node, and their sessions.
//
// Tenants come from a tenants file (farswap-server --tenants-file), one
// "id:secret:quota" a line; quota is a byte count with an optional K/M/G
// suffix (the page store rounds it up to whole pages), 0 for none; blank lines and lines starting
// with '#' are skipped. Default() is one tenant, "default", with an empty secret and no quota, for
// local use (farswap-server --allow-anonymous without --tenants-file).
//
// Attach checks a tenant's secret and opens a session: a random 128-bit
// token (hex) that data-plane connections present in HELLO. Each tenant has
// a small integer index the page store keys pages by.
//
// Session expiry. A data-plane connection counts itself against its session
// from HELLO (OpenConnection) until it closes (CloseConnection). A session
// with no connection for the idle timeout (set_session_idle_timeout;
// farswap-server --session-idle-timeout) is closed by the next
// ExpireIdleSessions, as if Detached: a client that went away without
// Detach does not leave its session open forever. A session counts as idle
// from Attach until its first connection. Expiry never touches pages.
//
//   FARSWAP_ASSIGN_OR_RETURN(TenantRegistry reg, TenantRegistry::LoadFile(path));
//   FARSWAP_ASSIGN_OR_RETURN(Session s, reg.Attach("alice", "s3cret"));
//   absl::StatusOr<Session> again = reg.LookupSession(s.token);
#ifndef FARSWAP_SERVER_TENANT_REGISTRY_H_
#define FARSWAP_SERVER_TENANT_REGISTRY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "farswap/common/mutex.h"

namespace farswap::server {

struct Tenant {
  std::string id;
  std::string secret;
  uint64_t quota_bytes = 0;  // 0: no quota
  uint32_t index = 0;        // position in the file; page-store key
};

struct Session {
  std::string token;
  uint32_t tenant_index = 0;
};

// TenantRegistry is safe for concurrent use. Tenants are fixed at load
// time (quotas can change); sessions come and go.
class TenantRegistry {
 public:
  // LoadFile parses a tenants file. INVALID_ARGUMENT names the line that is
  // wrong (missing fields, bad quota, duplicate id); NOT_FOUND if the file
  // cannot be read.
  static absl::StatusOr<TenantRegistry> LoadFile(const std::string& path);
  static absl::StatusOr<TenantRegistry> Parse(const std::string& text, const std::string& origin);
  // Default is the single "default" tenant with an empty secret.
  static TenantRegistry Default();

  TenantRegistry(TenantRegistry&& other) noexcept;
  TenantRegistry& operator=(TenantRegistry&& other) = delete;

  // Attach authenticates and opens a session. NOT_FOUND for an unknown
  // tenant, UNAUTHENTICATED for a wrong secret (compared in constant time).
  absl::StatusOr<Session> Attach(const std::string& tenant_id, const std::string& secret);
  // LookupSession: UNAUTHENTICATED for an unknown or closed token.
  absl::StatusOr<Session> LookupSession(const std::string& token) const;
  // Detach closes a session; UNAUTHENTICATED if it was not open.
  absl::Status Detach(const std::string& token);

  // OpenConnection is LookupSession for a data-plane HELLO that is being
  // accepted: it also counts one more connection on the session, so the
  // session does not expire while the connection lives. Each OK return must
  // be matched by one CloseConnection(token).
  absl::StatusOr<Session> OpenConnection(const std::string& token);
  // CloseConnection uncounts a connection; the session's idle time starts
  // when its last connection closes. A token closed meanwhile is ignored.
  void CloseConnection(const std::string& token);
  // set_session_idle_timeout: how long a session may have no connection
  // before ExpireIdleSessions closes it; absl::InfiniteDuration() (the
  // default) never expires sessions.
  void set_session_idle_timeout(absl::Duration timeout);
  // ExpireIdleSessions closes every session that has had no connection for
  // at least the idle timeout as of `now`, and returns how many it closed.
  size_t ExpireIdleSessions(absl::Time now);

  const std::vector<Tenant>& tenants() const { return tenants_; }
  absl::StatusOr<Tenant> Find(const std::string& tenant_id) const;
  size_t session_count() const;

 private:
  TenantRegistry() = default;
  struct SessionState {
    Session session;
    uint64_t connections = 0;  // open data-plane connections (OpenConnection)
    absl::Time idle_since;     // when `connections` last became 0 (or Attach)
  };

  std::vector<Tenant> tenants_;  // immutable after construction
  // mu_ is a leaf: nothing else is locked while it is held. The data plane
  // calls Open/CloseConnection holding its per-connection lock.
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, SessionState> sessions_ ABSL_GUARDED_BY(mu_);
  absl::Duration idle_timeout_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_TENANT_REGISTRY_H_
