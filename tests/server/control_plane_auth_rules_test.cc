// ControlPlaneAuth's rules in-process (control_plane_auth.h): which
// credential gets which role, what is refused with which code, what is
// counted, and what an admin token file must hold. control_plane_auth_test
// checks the same through a real node.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "farswap/server/control_plane_auth.h"

namespace farswap::server {
namespace {

constexpr char kToken[] = "0123456789abcdef0123";

TenantRegistry Tenants() { return *TenantRegistry::Parse("alice:a:0\nbob:b:0\n", "t"); }

TEST(ControlPlaneAuthRulesTest, AdminTokenIsOperatorSessionIsItsTenant) {
  TenantRegistry tenants = Tenants();
  ControlPlaneAuth auth(&tenants, {.admin_token = kToken, .allow_anonymous = false});
  const std::string admin = std::string("Bearer ") + kToken;
  EXPECT_TRUE(auth.AuthorizeOperator(admin, "peer", "Drain").ok());
  EXPECT_EQ(*auth.AuthorizeStats(admin, "peer", ""), ControlPlaneAuth::Role::kOperator);
  EXPECT_EQ(*auth.AuthorizeStats(admin, "peer", "bob"), ControlPlaneAuth::Role::kOperator);

  const std::string alice = "Bearer " + tenants.Attach("alice", "a")->token;
  EXPECT_EQ(*auth.AuthorizeStats(alice, "peer", "alice"), ControlPlaneAuth::Role::kTenant);
  EXPECT_EQ(auth.AuthorizeStats(alice, "peer", "bob").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.AuthorizeStats(alice, "peer", "").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.AuthorizeOperator(alice, "peer", "Compact").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.refusals()[int(AuthRefusal::kPermissionDenied)], 3u);
  EXPECT_EQ(auth.refusals()[int(AuthRefusal::kUnauthenticated)], 0u);
}

TEST(ControlPlaneAuthRulesTest, MissingMalformedOrUnknownCredentialsAreUnauthenticated) {
  TenantRegistry tenants = Tenants();
  ControlPlaneAuth auth(&tenants, {.admin_token = kToken, .allow_anonymous = true});
  // With an admin token, --allow-anonymous opens nothing of the operator's.
  for (const std::string& bad : {std::string(""), std::string(kToken), std::string("Bearer "),
                                 std::string("bearer ") + kToken, std::string("Bearer x") + kToken,
                                 std::string("Bearer ") + kToken + "x",
                                 std::string("Bearer ") + std::string(kToken).substr(1)}) {
    EXPECT_EQ(auth.AuthorizeOperator(bad, "peer", "SetLimits").code(),
              absl::StatusCode::kUnauthenticated)
        << "'" << bad << "'";
  }
  EXPECT_EQ(auth.refusals()[int(AuthRefusal::kUnauthenticated)], 7u);
}

TEST(ControlPlaneAuthRulesTest, WithoutAdminTokenOnlyAnonymousModeOpensOperatorWork) {
  TenantRegistry tenants = TenantRegistry::Default();
  ControlPlaneAuth closed(&tenants, {.admin_token = std::nullopt, .allow_anonymous = false});
  EXPECT_EQ(closed.AuthorizeOperator("", "peer", "Drain").code(),
            absl::StatusCode::kUnauthenticated);
  ControlPlaneAuth open(&tenants, {.admin_token = std::nullopt, .allow_anonymous = true});
  EXPECT_TRUE(open.AuthorizeOperator("", "peer", "Drain").ok());
  EXPECT_EQ(*open.AuthorizeStats("", "peer", ""), ControlPlaneAuth::Role::kOperator);
  // A credential that is sent must be valid, also here.
  EXPECT_EQ(open.AuthorizeOperator("Bearer nonsense", "peer", "Drain").code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(ControlPlaneAuthRulesTest, AdminTokenFileMustHoldOneLongEnoughToken) {
  const std::string path =
      ::testing::TempDir() + "/farswap-admin-token-" + std::to_string(getpid());
  auto load = [&](const std::string& text) {
    std::ofstream(path, std::ios::trunc) << text;
    return LoadAdminTokenFile(path);
  };
  EXPECT_EQ(*load(std::string(kToken) + "\n"), kToken);  // the final newline is not the token's
  EXPECT_EQ(load("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(load("short\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(load("0123456789 abcdef0123\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(load("0123456789abcdef\n0123\n").status().code(), absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
  EXPECT_EQ(LoadAdminTokenFile(path).status().code(), absl::StatusCode::kNotFound);
}

// TokenFile: a file under the test's temporary directory holding `text`.
std::string TokenFile(const std::string& name, const std::string& text) {
  const std::string path =
      ::testing::TempDir() + "/farswap-" + name + "-" + std::to_string(getpid());
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

constexpr char kRotated[] = "fedcba9876543210-rotated";

TEST(ControlPlaneAuthRulesTest, ReloadPutsTheFilesTokenInForceAndRefusesTheOld) {
  TenantRegistry tenants = Tenants();
  ControlPlaneAuth auth(&tenants, {.admin_token = kToken, .allow_anonymous = false});
  const std::string path = TokenFile("rotated-token", std::string(kRotated) + "\n");
  absl::StatusOr<bool> changed = auth.ReloadAdminTokenFile(path);
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_TRUE(*changed);
  EXPECT_TRUE(auth.AuthorizeOperator(std::string("Bearer ") + kRotated, "peer", "Drain").ok());
  EXPECT_EQ(auth.AuthorizeOperator(std::string("Bearer ") + kToken, "peer", "Drain").code(),
            absl::StatusCode::kUnauthenticated);
  // The same file again: in force, unchanged; both counted as reloads.
  changed = auth.ReloadAdminTokenFile(path);
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_FALSE(*changed);
  EXPECT_EQ(auth.admin_token_reloads(), 2u);
  EXPECT_EQ(auth.admin_token_reload_failures(), 0u);
  EXPECT_TRUE(auth.has_admin_token());
  std::remove(path.c_str());
}

TEST(ControlPlaneAuthRulesTest, ReloadOfABadOrMissingFileKeepsTheTokenInForce) {
  TenantRegistry tenants = Tenants();
  ControlPlaneAuth auth(&tenants, {.admin_token = kToken, .allow_anonymous = false});
  const std::string path = TokenFile("short-token", "short\n");
  EXPECT_EQ(auth.ReloadAdminTokenFile(path).status().code(), absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
  EXPECT_EQ(auth.ReloadAdminTokenFile(path).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(auth.AuthorizeOperator(std::string("Bearer ") + kToken, "peer", "Drain").ok());
  EXPECT_EQ(auth.AuthorizeOperator("Bearer short", "peer", "Drain").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.admin_token_reloads(), 0u);
  EXPECT_EQ(auth.admin_token_reload_failures(), 2u);
}

TEST(ControlPlaneAuthRulesTest, ANodeStartedWithoutAdminTokenCannotGainOneByReload) {
  TenantRegistry tenants = TenantRegistry::Default();
  ControlPlaneAuth open(&tenants, {.admin_token = std::nullopt, .allow_anonymous = true});
  const std::string path = TokenFile("new-token", std::string(kRotated) + "\n");
  EXPECT_EQ(open.ReloadAdminTokenFile(path).status().code(), absl::StatusCode::kFailedPrecondition);
  // Still what it was started as: anonymous operators, and no token.
  EXPECT_TRUE(open.AuthorizeOperator("", "peer", "Drain").ok());
  EXPECT_EQ(open.AuthorizeOperator(std::string("Bearer ") + kRotated, "peer", "Drain").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(open.has_admin_token());
  EXPECT_EQ(open.admin_token_reload_failures(), 1u);
  std::remove(path.c_str());
}

// Operator calls on two threads while a third rotates the token back and
// forth (under TSan: the token is read and replaced under token_mu_). Each
// call is either accepted or refused as UNAUTHENTICATED, never anything
// else; once the rotations stop, exactly the last file's token works.
TEST(ControlPlaneAuthRulesTest, OperatorCallsWhileTheTokenRotates) {
  TenantRegistry tenants = Tenants();
  ControlPlaneAuth auth(&tenants, {.admin_token = kToken, .allow_anonymous = false});
  const std::string original = TokenFile("original-token", std::string(kToken) + "\n");
  const std::string rotated = TokenFile("rotated-token-2", std::string(kRotated) + "\n");
  constexpr int kRotations = 200;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> accepted{0}, unexpected{0};
  auto caller = [&](const char* token) {
    const std::string header = std::string("Bearer ") + token;
    while (!done.load(std::memory_order_acquire)) {
      const absl::Status s = auth.AuthorizeOperator(header, "peer", "Drain");
      if (s.ok()) {
        accepted.fetch_add(1, std::memory_order_relaxed);
      } else if (s.code() != absl::StatusCode::kUnauthenticated) {
        unexpected.fetch_add(1, std::memory_order_relaxed);
      }
    }
  };
  std::thread a(caller, kToken), b(caller, kRotated);
  for (int i = 0; i < kRotations; ++i) {
    ASSERT_TRUE(auth.ReloadAdminTokenFile(i % 2 == 0 ? rotated : original).ok());
  }
  done.store(true, std::memory_order_release);
  a.join();
  b.join();
  EXPECT_EQ(unexpected.load(), 0u);
  EXPECT_EQ(auth.admin_token_reloads(), uint64_t(kRotations));
  // kRotations is even: the last reload was the original file's.
  EXPECT_TRUE(auth.AuthorizeOperator(std::string("Bearer ") + kToken, "peer", "Drain").ok());
  EXPECT_EQ(auth.AuthorizeOperator(std::string("Bearer ") + kRotated, "peer", "Drain").code(),
            absl::StatusCode::kUnauthenticated);
  std::remove(original.c_str());
  std::remove(rotated.c_str());
}

}  // namespace
}  // namespace farswap::server
