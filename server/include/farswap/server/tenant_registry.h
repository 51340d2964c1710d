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
// Rotation (Reload / ReloadFile). The tenant list can be replaced while the
// node runs (farswap-server reloads --tenants-file on SIGHUP and when the
// file changes). The new list is compared with the old one by tenant id
// (DiffTenants):
//   - added: may attach from then on;
//   - removed: its sessions end, and it can no longer attach;
//   - secret changed: its sessions end; it attaches again with the new
//     secret;
//   - quota changed only, or unchanged: its sessions are untouched.
// A session that ends this way (or by Detach) is refused on its open
// data-plane connections at their next frame: the data plane compares
// session_end_generation() with the value it saw when it last checked the
// session, and on a change looks the token up again (SessionIsOpen) before
// it runs the frame. A file that does not parse is rejected as a whole: the
// old tenants and their sessions stay, and reload_failures() counts it.
//
// Tenant indexes are stable across reloads: a tenant keeps its index while
// it is listed, a removed tenant's index is never given to another id, and
// a tenant that is removed and listed again gets its old index back. So the
// pages of a removed tenant stay in the page store, counted in the node's
// stats (and listed per tenant, with TenantStats.removed set), until the
// tenant is listed again, which gives it its pages back, or the node
// restarts. Nothing is freed by a reload: a
// tenant removed by mistake loses nothing when it is put back.
//
//   FARSWAP_ASSIGN_OR_RETURN(TenantRegistry reg, TenantRegistry::LoadFile(path));
//   FARSWAP_ASSIGN_OR_RETURN(Session s, reg.Attach("alice", "s3cret"));
//   absl::StatusOr<Session> again = reg.LookupSession(s.token);
#ifndef FARSWAP_SERVER_TENANT_REGISTRY_H_
#define FARSWAP_SERVER_TENANT_REGISTRY_H_

#include <atomic>
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
  uint32_t index = 0;        // page-store key; stable across reloads (file comment)
};

struct Session {
  std::string token;
  uint32_t tenant_index = 0;
  std::string tenant_id;
};

// TenantDiff: what a reload changes, by tenant id, each list in the order
// of the file it comes from (removed: the old file).
struct TenantDiff {
  std::vector<std::string> added;
  std::vector<std::string> removed;
  std::vector<std::string> secret_changed;  // their sessions end
  std::vector<std::string> quota_changed;   // secret unchanged; sessions stay
  bool empty() const {
    return added.empty() && removed.empty() && secret_changed.empty() && quota_changed.empty();
  }
};

// DiffTenants compares two tenant lists by id (indexes are ignored). A
// tenant whose secret and quota both changed is in secret_changed and
// quota_changed.
TenantDiff DiffTenants(const std::vector<Tenant>& before, const std::vector<Tenant>& after);

// TenantReload: the outcome of one successful Reload.
struct TenantReload {
  TenantDiff diff;
  size_t sessions_ended = 0;  // of removed tenants and of tenants whose secret changed
  // tenants: the new list, with their (stable) indexes.
  std::vector<Tenant> tenants;
};

// TenantRegistry is safe for concurrent use: Attach, the session calls and
// Reload may run on any threads at once. Reload is atomic: every other call
// sees the old tenants or the new ones, never a mix.
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

  // session_end_generation changes (grows) whenever a session that may have
  // connections ends: by Detach or by a Reload that removes its tenant or
  // changes its secret (expiry only ends sessions without connections). A
  // data-plane connection that saw generation g when it last found its
  // session open need not look again while the generation is still g; the
  // load is acquire, so a caller that sees the new value also sees the
  // session gone.
  uint64_t session_end_generation() const {
    return session_end_generation_.load(std::memory_order_acquire);
  }
  // SessionIsOpen: whether `token` names an open session (LookupSession
  // without the copy).
  bool SessionIsOpen(const std::string& token) const;

  // Reload replaces the tenant list with `text` (a tenants file's contents;
  // `origin` names it in errors): see "Rotation" in the file comment. On a
  // parse error nothing changes, the error is returned (as Parse's) and
  // reload_failures() counts it; on success reloads() counts it.
  absl::StatusOr<TenantReload> Reload(const std::string& text, const std::string& origin);
  // ReloadFile is Reload of a file's contents; a file that cannot be read
  // is a failed reload (NOT_FOUND).
  absl::StatusOr<TenantReload> ReloadFile(const std::string& path);
  uint64_t reloads() const { return reloads_.load(std::memory_order_relaxed); }
  uint64_t reload_failures() const { return reload_failures_.load(std::memory_order_relaxed); }

  // tenants: a copy of the current list, in file order.
  std::vector<Tenant> tenants() const;
  // TenantIdsByIndex: the id of every tenant ever listed, by index,
  // removed ones included (their pages may still be stored); `listed`, if
  // given, says which are listed now.
  std::vector<std::string> TenantIdsByIndex(std::vector<bool>* listed = nullptr) const;
  absl::StatusOr<Tenant> Find(const std::string& tenant_id) const;
  size_t session_count() const;

 private:
  TenantRegistry() = default;
  struct SessionState {
    Session session;
    uint64_t connections = 0;  // open data-plane connections (OpenConnection)
    absl::Time idle_since;     // when `connections` last became 0 (or Attach)
  };
  // ParseTenants: the tenants of a file's text, indexed by position.
  static absl::StatusOr<std::vector<Tenant>> ParseTenants(const std::string& text,
                                                          const std::string& origin);
  // InstallLocked makes `tenants` the list, giving each its stable index,
  // and ends the sessions of removed tenants and of tenants whose secret
  // changed.
  TenantReload InstallLocked(std::vector<Tenant> tenants) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const Tenant* FindLocked(const std::string& tenant_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // mu_ is a leaf: nothing else is locked while it is held. The data plane
  // calls Open/CloseConnection holding its per-connection lock.
  mutable Mutex mu_;
  std::vector<Tenant> tenants_ ABSL_GUARDED_BY(mu_);  // listed now, in file order
  // index_of_ / id_of_index_: every id ever listed and its index; they only
  // grow, so an index is never reused for another id.
  absl::flat_hash_map<std::string, uint32_t> index_of_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> id_of_index_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, SessionState> sessions_ ABSL_GUARDED_BY(mu_);
  absl::Duration idle_timeout_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
  // Bumped (release) after sessions that may have connections are erased,
  // under mu_.
  std::atomic<uint64_t> session_end_generation_{0};
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> reload_failures_{0};
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_TENANT_REGISTRY_H_
