// tenant_registry.h: who may attach to a memory node, and their sessions.
//
// Tenants come from a tenants file (farswap-server --tenants-file), one
// "id:secret:quota" a line; quota is a byte count with an optional K/M/G
// suffix, 0 for none; blank lines and lines starting with '#' are skipped.
// Without a file there is one tenant, "default", with an empty secret and
// no quota, for local use.
//
// Attach checks a tenant's secret and opens a session: a random 128-bit
// token (hex) that data-plane connections present in HELLO. Each tenant has
// a small integer index the page store keys pages by.
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

  const std::vector<Tenant>& tenants() const { return tenants_; }
  absl::StatusOr<Tenant> Find(const std::string& tenant_id) const;
  size_t session_count() const;

 private:
  TenantRegistry() = default;
  std::vector<Tenant> tenants_;  // immutable after construction
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_TENANT_REGISTRY_H_
