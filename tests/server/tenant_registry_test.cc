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

}  // namespace
}  // namespace farswap::server
