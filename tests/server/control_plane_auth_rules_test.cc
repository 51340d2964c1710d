// ControlPlaneAuth's rules in-process (control_plane_auth.h): which
// credential gets which role, what is refused with which code, what is
// counted, and what an admin token file must hold. control_plane_auth_test
// checks the same through a real node.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

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

}  // namespace
}  // namespace farswap::server
