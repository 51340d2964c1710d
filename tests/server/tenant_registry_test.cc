#include "farswap/server/tenant_registry.h"

#include <gtest/gtest.h>

namespace farswap::server {
namespace {

TEST(TenantRegistryTest, ParsesTenantsAndAuthenticates) {
  auto reg = TenantRegistry::Parse("# comment\nalice:s3cret:64M\n\nbob:hunter2:0\n", "t");
  ASSERT_TRUE(reg.ok()) << reg.status();
  ASSERT_EQ(reg->tenants().size(), 2u);
  EXPECT_EQ(reg->tenants()[0].quota_bytes, uint64_t{64} << 20);
  EXPECT_EQ(reg->tenants()[1].index, 1u);
  absl::StatusOr<Session> s = reg->Attach("alice", "s3cret");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->token.size(), 32u);
  EXPECT_EQ(reg->LookupSession(s->token)->tenant_index, 0u);
  absl::StatusOr<Session> s2 = reg->Attach("alice", "s3cret");
  EXPECT_NE(s2->token, s->token);
  EXPECT_EQ(reg->Attach("alice", "wrong").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(reg->Attach("alice", "").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(reg->Attach("carol", "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg->LookupSession("nope").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(reg->session_count(), 2u);
  EXPECT_TRUE(reg->Detach(s->token).ok());
  EXPECT_EQ(reg->LookupSession(s->token).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(reg->Detach(s->token).code(), absl::StatusCode::kUnauthenticated);
}

TEST(TenantRegistryTest, MissingOrExtraFieldsAreRejected) {
  EXPECT_EQ(TenantRegistry::Parse("a:b", "t").status().code(), absl::StatusCode::kInvalidArgument);
  // The quota is the third field: a fourth ':' makes it unparsable.
  EXPECT_EQ(TenantRegistry::Parse("a:x:y:1K", "t").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TenantRegistryTest, BadLinesNameTheLine) {
  for (const char* text : {"alice:s:12Q", ":s:0", "a:s:0\na:t:0", "justone", ""}) {
    auto reg = TenantRegistry::Parse(text, "tenants.txt");
    ASSERT_FALSE(reg.ok()) << text;
    EXPECT_EQ(reg.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(reg.status().message()).find("tenants.txt"), std::string::npos);
  }
  EXPECT_EQ(TenantRegistry::LoadFile("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

TEST(TenantRegistryTest, DefaultTenantHasAnEmptySecret) {
  TenantRegistry reg = TenantRegistry::Default();
  EXPECT_TRUE(reg.Attach("default", "").ok());
  EXPECT_FALSE(reg.Attach("default", "x").ok());
}

TEST(TenantRegistryTest, SessionWithNoConnectionExpiresAfterTheIdleTimeout) {
  TenantRegistry reg = TenantRegistry::Default();
  reg.set_session_idle_timeout(absl::Seconds(60));
  const absl::Time start = absl::Now();
  auto s = reg.Attach("default", "");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(reg.ExpireIdleSessions(start + absl::Seconds(30)), 0u);
  EXPECT_TRUE(reg.LookupSession(s->token).ok());
  EXPECT_EQ(reg.ExpireIdleSessions(absl::Now() + absl::Seconds(61)), 1u);
  EXPECT_EQ(reg.LookupSession(s->token).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(reg.OpenConnection(s->token).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(reg.session_count(), 0u);
}

TEST(TenantRegistryTest, OpenConnectionKeepsItsSessionAlive) {
  TenantRegistry reg = TenantRegistry::Default();
  reg.set_session_idle_timeout(absl::Seconds(60));
  auto s = reg.Attach("default", "");
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(reg.OpenConnection(s->token).ok());
  ASSERT_TRUE(reg.OpenConnection(s->token).ok());
  const absl::Time much_later = absl::Now() + absl::Hours(24);
  EXPECT_EQ(reg.ExpireIdleSessions(much_later), 0u);
  reg.CloseConnection(s->token);
  EXPECT_EQ(reg.ExpireIdleSessions(much_later), 0u);  // one connection left
  reg.CloseConnection(s->token);
  // Idle from the last close, not from Attach.
  EXPECT_EQ(reg.ExpireIdleSessions(absl::Now() + absl::Seconds(30)), 0u);
  EXPECT_EQ(reg.ExpireIdleSessions(absl::Now() + absl::Seconds(61)), 1u);
  reg.CloseConnection(s->token);  // a late close of an expired session is ignored
  EXPECT_EQ(reg.session_count(), 0u);
}

TEST(TenantRegistryTest, SessionsNeverExpireWithoutATimeout) {
  TenantRegistry reg = TenantRegistry::Default();
  auto s = reg.Attach("default", "");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(reg.ExpireIdleSessions(absl::Now() + absl::Hours(24 * 365)), 0u);
  EXPECT_TRUE(reg.LookupSession(s->token).ok());
}

}  // namespace
}  // namespace farswap::server
