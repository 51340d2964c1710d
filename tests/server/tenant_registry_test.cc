#include "farswap/server/tenant_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/common/sync_point.h"

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

// --- rotation (Reload) -----------------------------------------------------------

std::vector<std::string> Ids(std::initializer_list<const char*> ids) {
  return std::vector<std::string>(ids.begin(), ids.end());
}

TEST(TenantDiffTest, SortsTenantsIntoAddedRemovedAndChanged) {
  std::vector<Tenant> before = {
      {"a", "sa", 0, 0}, {"b", "sb", 1024, 1}, {"c", "sc", 0, 2}, {"d", "sd", 0, 3}};
  std::vector<Tenant> after = {{"e", "se", 0, 0},      // new
                               {"b", "sb", 2048, 1},   // quota only
                               {"c", "sc2", 4096, 2},  // secret and quota
                               {"a", "sa", 0, 3}};     // moved in the file: unchanged
  TenantDiff d = DiffTenants(before, after);
  EXPECT_EQ(d.added, Ids({"e"}));
  EXPECT_EQ(d.removed, Ids({"d"}));
  EXPECT_EQ(d.secret_changed, Ids({"c"}));
  EXPECT_EQ(d.quota_changed, Ids({"b", "c"}));
  EXPECT_FALSE(d.empty());
  EXPECT_TRUE(DiffTenants(after, after).empty());
}

TEST(TenantRegistryTest, ReloadEndsOnlyTheSessionsOfChangedSecrets) {
  auto reg = TenantRegistry::Parse("a:sa:0\nb:sb:0\n", "t");
  ASSERT_TRUE(reg.ok());
  absl::StatusOr<Session> a = reg->Attach("a", "sa");
  absl::StatusOr<Session> b = reg->Attach("b", "sb");
  ASSERT_TRUE(a.ok() && b.ok());
  const uint64_t generation = reg->session_end_generation();

  // b's secret changes, c is new, a moves down the file with a new quota.
  absl::StatusOr<TenantReload> r = reg->Reload("b:sb2:0\nc:sc:0\na:sa:1M\n", "t2");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->diff.added, Ids({"c"}));
  EXPECT_EQ(r->diff.secret_changed, Ids({"b"}));
  EXPECT_EQ(r->diff.quota_changed, Ids({"a"}));
  EXPECT_EQ(r->sessions_ended, 1u);
  EXPECT_EQ(reg->reloads(), 1u);
  EXPECT_NE(reg->session_end_generation(), generation);

  EXPECT_TRUE(reg->SessionIsOpen(a->token));
  EXPECT_EQ(reg->LookupSession(a->token)->tenant_index, 0u) << "a keeps its index";
  EXPECT_FALSE(reg->SessionIsOpen(b->token));
  EXPECT_EQ(reg->OpenConnection(b->token).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(reg->Attach("b", "sb").status().code(), absl::StatusCode::kUnauthenticated);
  absl::StatusOr<Session> b2 = reg->Attach("b", "sb2");
  ASSERT_TRUE(b2.ok());
  EXPECT_EQ(b2->tenant_index, 1u) << "b keeps its index, so its pages";
  absl::StatusOr<Session> c = reg->Attach("c", "sc");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->tenant_index, 2u) << "a new tenant gets a fresh index";
  EXPECT_EQ(reg->Find("a")->quota_bytes, uint64_t{1} << 20);
}

TEST(TenantRegistryTest, RemovedTenantIsRefusedAndGetsItsIndexBackWhenListedAgain) {
  auto reg = TenantRegistry::Parse("a:sa:0\nb:sb:0\n", "t");
  ASSERT_TRUE(reg.ok());
  absl::StatusOr<Session> b = reg->Attach("b", "sb");
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(reg->OpenConnection(b->token).ok());  // a connection does not keep it open

  absl::StatusOr<TenantReload> r = reg->Reload("a:sa:0\n", "t2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->diff.removed, Ids({"b"}));
  EXPECT_EQ(r->sessions_ended, 1u);
  EXPECT_FALSE(reg->SessionIsOpen(b->token));
  EXPECT_EQ(reg->Attach("b", "sb").status().code(), absl::StatusCode::kNotFound);
  std::vector<bool> listed;
  EXPECT_EQ(reg->TenantIdsByIndex(&listed), Ids({"a", "b"})) << "b's pages keep its name";
  EXPECT_EQ(listed, std::vector<bool>({true, false}));

  // c must not take b's index; b listed again gets it back.
  ASSERT_TRUE(reg->Reload("c:sc:0\na:sa:0\n", "t3").ok());
  EXPECT_EQ(reg->Find("c")->index, 2u);
  ASSERT_TRUE(reg->Reload("b:new:0\na:sa:0\n", "t4").ok());
  absl::StatusOr<Session> again = reg->Attach("b", "new");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tenant_index, 1u);
  EXPECT_EQ(reg->TenantIdsByIndex(&listed), Ids({"a", "b", "c"}));
  EXPECT_EQ(listed, std::vector<bool>({true, true, false}));
}

TEST(TenantRegistryTest, MalformedReloadChangesNothing) {
  auto reg = TenantRegistry::Parse("a:sa:0\nb:sb:0\n", "t");
  ASSERT_TRUE(reg.ok());
  absl::StatusOr<Session> a = reg->Attach("a", "sa");
  ASSERT_TRUE(a.ok());
  const uint64_t generation = reg->session_end_generation();
  // The first line is fine; the second is not: nothing of the file applies.
  absl::StatusOr<TenantReload> r = reg->Reload("c:sc:0\nb-without-fields\n", "bad.txt");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("bad.txt:2"), std::string::npos) << r.status();
  EXPECT_EQ(reg->ReloadFile("/nonexistent/tenants").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg->reload_failures(), 2u);
  EXPECT_EQ(reg->reloads(), 0u);
  EXPECT_EQ(reg->session_end_generation(), generation);
  EXPECT_TRUE(reg->SessionIsOpen(a->token));
  EXPECT_TRUE(reg->Attach("b", "sb").ok());
  EXPECT_EQ(reg->Find("c").status().code(), absl::StatusCode::kNotFound);
}

TEST(TenantRegistryTest, DetachChangesTheSessionEndGeneration) {
  TenantRegistry reg = TenantRegistry::Default();
  absl::StatusOr<Session> s = reg.Attach("default", "");
  ASSERT_TRUE(s.ok());
  const uint64_t generation = reg.session_end_generation();
  ASSERT_TRUE(reg.Detach(s->token).ok());
  EXPECT_NE(reg.session_end_generation(), generation);
}

struct ClearSyncPoints {
  ~ClearSyncPoints() { SyncPoints::ClearAll(); }
};

// An Attach with the old secret that lands after the new file is parsed but
// before it is installed must not survive the reload: the reload ends it.
TEST(TenantRegistryTest, AttachWithTheOldSecretDuringAReloadIsEnded) {
  ClearSyncPoints cleanup;
  auto reg = TenantRegistry::Parse("a:old:0\n", "t");
  ASSERT_TRUE(reg.ok());
  absl::StatusOr<Session> racing;
  SyncPoints::SetOnce("TenantRegistry::Reload:parsed", [&] {
    racing = reg->Attach("a", "old");  // on another thread, as a gRPC Attach would be
  });
  std::thread reload([&] { ASSERT_TRUE(reg->Reload("a:new:0\n", "t2").ok()); });
  reload.join();
  ASSERT_TRUE(racing.ok()) << "the old list was still in force when it attached";
  EXPECT_FALSE(reg->SessionIsOpen(racing->token));
  EXPECT_EQ(reg->Attach("a", "old").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(reg->Attach("a", "new").ok());
}

// Reloads racing Attach, LookupSession and the connection calls (run under
// TSan): every session of the unchanged tenant stays open throughout, and
// every one of the rotated tenant opened under a secret that changed is
// ended.
TEST(TenantRegistryTest, ReloadsRacingSessionCallsKeepUnchangedSessions) {
  auto reg = TenantRegistry::Parse("keep:k:0\nrot:r0:0\n", "t");
  ASSERT_TRUE(reg.ok());
  constexpr int kReloads = 200;
  std::atomic<bool> done{false};
  std::atomic<int> lost{0};
  std::thread keeper([&] {
    while (!done.load()) {
      absl::StatusOr<Session> s = reg->Attach("keep", "k");
      if (!s.ok() || !reg->OpenConnection(s->token).ok() || !reg->LookupSession(s->token).ok()) {
        lost++;
        continue;
      }
      reg->CloseConnection(s->token);
      if (!reg->Detach(s->token).ok()) lost++;
    }
  });
  std::vector<std::string> rotated_tokens;
  std::thread rotator_client([&] {
    for (int i = 0; !done.load(); i = (i + 1) % kReloads) {
      absl::StatusOr<Session> s = reg->Attach("rot", absl::StrCat("r", i));
      if (s.ok()) rotated_tokens.push_back(s->token);
      (void)reg->tenants();
      (void)reg->TenantIdsByIndex();
    }
  });
  for (int i = 1; i <= kReloads; ++i) {
    ASSERT_TRUE(reg->Reload(absl::StrCat("keep:k:0\nrot:r", i, ":0\n"), "t").ok());
  }
  done.store(true);
  keeper.join();
  rotator_client.join();
  EXPECT_EQ(lost.load(), 0);
  EXPECT_EQ(reg->reloads(), uint64_t{kReloads});
  // The client never tries the last secret (r<kReloads>), so each session
  // it opened was opened under a secret that a later reload changed.
  for (const std::string& token : rotated_tokens) EXPECT_FALSE(reg->SessionIsOpen(token));
  EXPECT_EQ(reg->Attach("rot", absl::StrCat("r", kReloads - 1)).status().code(),
            absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace farswap::server
