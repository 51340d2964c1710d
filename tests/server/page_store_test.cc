// PageStore: store / load / invalidate, tenants, quotas, limits, drain,
// stats. Writeback is driven directly (no worker) unless a test says
// otherwise.
#include "farswap/server/page_store.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "farswap/common/sync_point.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using testing::ExpectPage;
using testing::Payload;
using testing::StorePayload;

std::unique_ptr<PageStore> NewStore(PageStoreOptions options) {
  absl::StatusOr<std::unique_ptr<PageStore>> s = PageStore::Create(options);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

TEST(PageStoreTest, StoreLoadReplaceInvalidate) {
  auto store = NewStore({});
  std::vector<uint8_t> v1 = Payload(1, 1000), v2 = Payload(2, 37);
  ASSERT_TRUE(StorePayload(*store, 1, 42, v1, 111).ok());
  ExpectPage(*store, 1, 42, v1, 111);
  ASSERT_TRUE(StorePayload(*store, 1, 42, v2, 222).ok());
  ExpectPage(*store, 1, 42, v2, 222);
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.stored_pages, 1u);
  EXPECT_EQ(st.pool.objects, 1u);
  EXPECT_EQ(st.pool.compr_data_size, 37u);
  EXPECT_EQ(st.pool.orig_data_size, 4096u);

  ASSERT_TRUE(store->Invalidate(1, 42).ok());
  EXPECT_EQ(store->Load(1, 42).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Invalidate(1, 42).ok());  // idempotent
  st = store->GetStats();
  EXPECT_EQ(st.stored_pages, 0u);
  EXPECT_EQ(st.pool.objects, 0u);
  EXPECT_EQ(st.invalidates, 1u);
  EXPECT_EQ(st.load_misses, 1u);
}

TEST(PageStoreTest, RejectsBadPayloadLengthAndLeavesNoOlderVersion) {
  auto store = NewStore({});
  ASSERT_TRUE(StorePayload(*store, 1, 1, Payload(1, 100), 1).ok());
  absl::Status s = StorePayload(*store, 1, 1, Payload(2, 4097), 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(store->Load(1, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(StorePayload(*store, 1, 2, {}, 3).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageStoreTest, SameFilledPagesCostNoPoolMemoryAndAreNeverWrittenBack) {
  MemoryBlockDevice ssd(16);
  auto store = NewStore({.backing = &ssd, .start_writeback_worker = false});
  ASSERT_TRUE(store->Store(3, 9, {.checksum = 77, .same_filled = true, .fill = 0xABAB}).ok());
  absl::StatusOr<LoadedPage> p = store->Load(3, 9);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->same_filled);
  EXPECT_EQ(p->fill, 0xABABu);
  EXPECT_EQ(p->checksum, 77u);
  EXPECT_TRUE(p->payload.empty());
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.same_filled_pages, 1u);
  EXPECT_EQ(st.pool.same_pages, 1u);
  EXPECT_EQ(st.pool.objects, 0u);
  EXPECT_EQ(store->RunWritebackOnce(), WritebackOutcome::kNothingToWrite);
  // Replacing a same-filled page with a real one and back.
  ASSERT_TRUE(StorePayload(*store, 3, 9, Payload(5, 300), 5).ok());
  ExpectPage(*store, 3, 9, Payload(5, 300), 5);
  EXPECT_EQ(store->GetStats().same_filled_pages, 0u);
}

TEST(PageStoreTest, TenantsCannotSeeEachOthersPages) {
  auto store = NewStore({});
  ASSERT_TRUE(StorePayload(*store, 1, 5, Payload(1, 500), 1).ok());
  ASSERT_TRUE(StorePayload(*store, 2, 5, Payload(2, 600), 2).ok());
  ExpectPage(*store, 1, 5, Payload(1, 500), 1);
  ExpectPage(*store, 2, 5, Payload(2, 600), 2);
  EXPECT_EQ(store->Load(3, 5).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store->Invalidate(1, 5).ok());
  ExpectPage(*store, 2, 5, Payload(2, 600), 2);
  ASSERT_TRUE(StorePayload(*store, 1, 6, Payload(3, 10), 3).ok());
  absl::StatusOr<uint64_t> n = store->InvalidateRange(1, 0, 100);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  ExpectPage(*store, 2, 5, Payload(2, 600), 2);
  PageStoreStats st = store->GetStats();
  ASSERT_EQ(st.tenants.size(), 2u);
  EXPECT_EQ(st.tenants[0].stored_pages, 0u);
  EXPECT_EQ(st.tenants[1].stored_pages, 1u);
  EXPECT_EQ(st.tenants[1].stored_bytes, 600u);
}

TEST(PageStoreTest, InvalidateRangeSmallLargeAndWrapping) {
  auto store = NewStore({});
  for (uint64_t p : {10u, 11u, 12u, 5000u, 1000000u}) {
    ASSERT_TRUE(StorePayload(*store, 1, p, Payload(p, 64), p).ok());
  }
  absl::StatusOr<uint64_t> n = store->InvalidateRange(1, 11, 2);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  ExpectPage(*store, 1, 10, Payload(10, 64), 10);
  n = store->InvalidateRange(1, 4000, uint64_t{1} << 40);  // uses the index, not a loop
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  ExpectPage(*store, 1, 10, Payload(10, 64), 10);
  EXPECT_EQ(store->InvalidateRange(1, UINT64_MAX, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->GetStats().stored_pages, 1u);
}

// A small range ending at page UINT64_MAX used to wrap to page 0 and go on
// forever, erasing every page of the tenant (and holding the data plane's
// I/O thread). Found by data_plane_differential_test.
TEST(PageStoreTest, InvalidateRangeEndingAtTheLastPageStopsThere) {
  auto store = NewStore({});
  for (uint64_t p : {uint64_t{0}, uint64_t{1}, UINT64_MAX - 1, UINT64_MAX}) {
    ASSERT_TRUE(StorePayload(*store, 1, p, Payload(p, 64), p).ok());
  }
  absl::StatusOr<uint64_t> n = store->InvalidateRange(1, UINT64_MAX, 1);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1u);
  n = store->InvalidateRange(1, UINT64_MAX - 2, 3);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1u);
  ExpectPage(*store, 1, 0, Payload(0, 64), 0);
  ExpectPage(*store, 1, 1, Payload(1, 64), 1);
  EXPECT_EQ(store->GetStats().stored_pages, 2u);
}

// A large INVALIDATE_RANGE walks only its tenant's pages, a chunk per index
// lock hold, with no lock held between chunks (it used to hold each index
// shard lock over every tenant's entries: one client stalled the node).
TEST(PageStoreTest, LargeInvalidateRangeWorksInChunksAndSparesOtherTenants) {
  testing::ScopedSyncPoints cleanup;
  auto store = NewStore({});
  constexpr uint64_t kPages = 40000;  // same-filled: no pool memory
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(store->Store(1, p, {.same_filled = true, .fill = p}).ok());
  }
  ASSERT_TRUE(StorePayload(*store, 2, 7, Payload(7, 100), 7).ok());
  // Between chunks another tenant stores and loads: it would deadlock if
  // the walk still held an index or key lock here.
  uint64_t chunks = 0;
  SyncPoints::Set("PageStore::InvalidateRange:between-chunks", [&] {
    ++chunks;
    ASSERT_TRUE(StorePayload(*store, 2, 8, Payload(8, 100), 8).ok());
    ExpectPage(*store, 2, 7, Payload(7, 100), 7);
  });
  absl::StatusOr<uint64_t> n = store->InvalidateRange(1, 0, UINT64_MAX);
  SyncPoints::ClearAll();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, kPages);
  EXPECT_GE(chunks, kPages / 256);
  EXPECT_EQ(store->GetStats().stored_pages, 2u);
  ExpectPage(*store, 2, 7, Payload(7, 100), 7);
  ExpectPage(*store, 2, 8, Payload(8, 100), 8);
}

// Quotas are set in bytes and enforced in pages; a partial page rounds up
// (1..4095 bytes used to become 0 pages: unlimited).
TEST(PageStoreTest, QuotaBytesRoundUpToPages) {
  EXPECT_EQ(QuotaPagesForBytes(0), 0u);
  EXPECT_EQ(QuotaPagesForBytes(1), 1u);
  EXPECT_EQ(QuotaPagesForBytes(4095), 1u);
  EXPECT_EQ(QuotaPagesForBytes(4096), 1u);
  EXPECT_EQ(QuotaPagesForBytes(4097), 2u);
  EXPECT_EQ(QuotaPagesForBytes(UINT64_MAX), UINT64_MAX / 4096 + 1);
  auto store = NewStore({});
  store->SetTenantQuota(3, QuotaPagesForBytes(100));
  ASSERT_TRUE(StorePayload(*store, 3, 0, Payload(0, 200), 0).ok());
  EXPECT_EQ(StorePayload(*store, 3, 1, Payload(1, 200), 1).code(),
            absl::StatusCode::kResourceExhausted);
}

// The pool's address space was reserved once, for 8x the start-up limit:
// raising the limit further made stores fail as pool_full while the pool
// was far under its limit. 4 KiB pages that do not compress are the worst
// case (one zspage slot each).
TEST(PageStoreTest, PoolLimitRaisedSixteenFoldIsUsable) {
  constexpr uint64_t kStartLimit = 1 << 20;
  auto store = NewStore({.limits = {.pool_limit_bytes = kStartLimit},
                         .pool_arena_bytes = 8 * kStartLimit});  // what the default picks
  PageStoreLimits raised = store->limits();
  raised.pool_limit_bytes = 16 * kStartLimit;
  ASSERT_TRUE(store->SetLimits(raised).ok());
  // Up to just under the high watermark (no backing store, no writeback).
  const uint64_t pages = uint64_t(0.85 * double(raised.pool_limit_bytes)) / 4096;
  for (uint64_t p = 0; p < pages; ++p) {
    absl::Status s = StorePayload(*store, 1, p, Payload(p, 4096), p);
    ASSERT_TRUE(s.ok()) << "page " << p << " of " << pages << " with pool at "
                        << store->GetStats().pool.mem_used_total << " of "
                        << raised.pool_limit_bytes << " bytes: " << s;
  }
  EXPECT_GT(store->GetStats().pool.mem_used_total, 8 * kStartLimit);
  for (uint64_t p = 0; p < pages; p += 97) ExpectPage(*store, 1, p, Payload(p, 4096), p);
}

TEST(PageStoreTest, QuotaIsPerTenantAndCountsPages) {
  auto store = NewStore({.limits = {.default_tenant_quota_pages = 100}});
  store->SetTenantQuota(7, 3);
  for (uint64_t p = 0; p < 3; ++p) {
    ASSERT_TRUE(StorePayload(*store, 7, p, Payload(p, 200), p).ok());
  }
  absl::Status s = StorePayload(*store, 7, 3, Payload(3, 200), 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("quota"), std::string::npos) << s;
  // Replacing a stored page adds no page; another tenant is not affected.
  ASSERT_TRUE(StorePayload(*store, 7, 0, Payload(10, 300), 10).ok());
  ASSERT_TRUE(StorePayload(*store, 8, 3, Payload(3, 200), 3).ok());
  ASSERT_TRUE(store->Invalidate(7, 1).ok());
  ASSERT_TRUE(StorePayload(*store, 7, 3, Payload(3, 200), 3).ok());
  ExpectPage(*store, 7, 0, Payload(10, 300), 10);
  ExpectPage(*store, 7, 2, Payload(2, 200), 2);
  ExpectPage(*store, 7, 3, Payload(3, 200), 3);

  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.rejects[int(RejectReason::kQuota)], 1u);
  ASSERT_EQ(st.tenants.size(), 2u);
  EXPECT_EQ(st.tenants[0].tenant, 7u);
  EXPECT_EQ(st.tenants[0].quota_pages, 3u);
  EXPECT_EQ(st.tenants[0].stored_pages, 3u);
  EXPECT_EQ(st.tenants[0].rejects[int(RejectReason::kQuota)], 1u);
  EXPECT_EQ(st.tenants[1].quota_pages, 100u);
}

TEST(PageStoreTest, DrainingRefusesStoresAndServesLoads) {
  auto store = NewStore({});
  ASSERT_TRUE(StorePayload(*store, 1, 1, Payload(1, 100), 1).ok());
  store->SetDraining(true);
  absl::Status s = StorePayload(*store, 1, 2, Payload(2, 100), 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("draining"), std::string::npos) << s;
  ExpectPage(*store, 1, 1, Payload(1, 100), 1);
  PageStoreStats st = store->GetStats();
  EXPECT_TRUE(st.draining);
  EXPECT_EQ(st.rejects[int(RejectReason::kDraining)], 1u);
  store->SetDraining(false);
  EXPECT_TRUE(StorePayload(*store, 1, 2, Payload(2, 100), 2).ok());
}

TEST(PageStoreTest, SetLimitsValidatesWatermarks) {
  auto store = NewStore({});
  EXPECT_EQ(store->SetLimits({.high_watermark = 0.5, .low_watermark = 0.6}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->SetLimits({.high_watermark = 1.5, .low_watermark = 0.6}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store->SetLimits({.pool_limit_bytes = 1 << 20}).ok());
  EXPECT_EQ(store->GetStats().pool.mem_limit, uint64_t{1} << 20);
  EXPECT_EQ(PageStore::Create({.limits = {.low_watermark = 0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Fills a small pool whose writeback target is also small: every store up
// to the point where both are full is acknowledged and loads back intact;
// then stores are refused and counted as backing_full. The backing store
// (8 blocks, so one segment) packs pages: 2000-byte pages take 2000 bytes,
// not a block each.
TEST(PageStoreLimitsTest, PoolAndBackingFullRejectsAndKeepsAcknowledgedPages) {
  MemoryBlockDevice ssd(8);
  auto store = NewStore(
      {.limits = {.pool_limit_bytes = 64 << 10}, .backing = &ssd, .start_writeback_worker = false});
  std::vector<uint64_t> acked;
  absl::Status refused;
  for (uint64_t p = 0; p < 200; ++p) {
    absl::Status s = StorePayload(*store, 1, p, Payload(p, 2000), p);
    if (!s.ok()) {
      refused = s;
      break;
    }
    acked.push_back(p);
  }
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("backing_full"), std::string::npos) << refused;
  PageStoreStats st = store->GetStats();
  EXPECT_EQ(st.rejects[int(RejectReason::kBackingFull)], 1u);
  EXPECT_EQ(st.segments, 1u);
  EXPECT_EQ(st.free_segments, 0u);
  // 32 KiB of disk holds 16 pages of 2000 bytes; the last one or two may
  // not fit beside the batch padding.
  EXPECT_GE(st.pages_on_disk, 14u);
  EXPECT_LE(st.pages_on_disk, 16u);
  EXPECT_EQ(st.written_back_pages, st.pages_on_disk);
  EXPECT_EQ(st.disk_live_bytes, st.pages_on_disk * 2000);
  EXPECT_LE(st.backing_used_blocks, 8u);
  EXPECT_EQ(st.stored_pages, acked.size());
  EXPECT_LE(st.pool.mem_used_total, 64u << 10);
  for (uint64_t p : acked) ExpectPage(*store, 1, p, Payload(p, 2000), p);

  // Freeing one disk page frees no segment (the log has no holes to fill):
  // still full. Freeing every page of the segment frees it for reuse, and
  // the pages written into it anew read back as themselves, never as the
  // old bytes that were there.
  const uint64_t next = acked.back() + 1;
  ASSERT_TRUE(store->Invalidate(1, acked.front()).ok());
  EXPECT_EQ(StorePayload(*store, 1, next, Payload(next, 2000), next).code(),
            absl::StatusCode::kResourceExhausted);
  std::vector<uint64_t> kept;
  for (size_t i = 1; i < acked.size(); ++i) {
    if (store->GetStats().pages_on_disk > 0) {
      ASSERT_TRUE(store->Invalidate(1, acked[i]).ok());
    } else {
      kept.push_back(acked[i]);
    }
  }
  st = store->GetStats();
  EXPECT_EQ(st.free_segments, 1u);
  EXPECT_EQ(st.disk_live_bytes, 0u);
  EXPECT_EQ(st.backing_used_blocks, 0u);
  for (uint64_t p = next; p < next + 10; ++p) {
    ASSERT_TRUE(StorePayload(*store, 1, p, Payload(p, 2000), p).ok()) << p;
  }
  EXPECT_GT(store->GetStats().pages_on_disk, 0u);
  for (uint64_t p = next; p < next + 10; ++p) ExpectPage(*store, 1, p, Payload(p, 2000), p);
  for (uint64_t p : kept) ExpectPage(*store, 1, p, Payload(p, 2000), p);
}

TEST(PageStoreLimitsTest, PoolFullWithoutBackingStoreIsPoolFull) {
  auto store = NewStore({.limits = {.pool_limit_bytes = 32 << 10}});
  absl::Status refused;
  uint64_t p = 0;
  for (; p < 100 && refused.ok(); ++p) refused = StorePayload(*store, 1, p, Payload(p, 3000), p);
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("pool_full"), std::string::npos) << refused;
  EXPECT_EQ(store->GetStats().rejects[int(RejectReason::kPoolFull)], 1u);
  for (uint64_t q = 0; q + 1 < p; ++q) ExpectPage(*store, 1, q, Payload(q, 3000), q);
}

// zswap's check_old: a refused store of a page that had an older version
// leaves the page absent, never the older version.
TEST(PageStoreLimitsTest, FailedStoreErasesTheOlderVersion) {
  auto store = NewStore({.limits = {.pool_limit_bytes = 32 << 10}});
  ASSERT_TRUE(StorePayload(*store, 1, 0, Payload(0, 100), 100).ok());
  absl::Status refused;
  for (uint64_t p = 1; p < 100 && refused.ok(); ++p) {
    refused = StorePayload(*store, 1, p, Payload(p, 3000), p);
  }
  ASSERT_FALSE(refused.ok());
  // The pool is full: a bigger version of page 0 cannot be stored either.
  absl::Status s = StorePayload(*store, 1, 0, Payload(1000, 4000), 101);
  ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(store->Load(1, 0).status().code(), absl::StatusCode::kNotFound);
}

// TryStore where Store would wait for writeback: "would block", and no
// trace of the attempt — the older version stays (a failed Store would have
// erased it), nothing is counted — until Store, allowed to wait, succeeds.
TEST(PageStoreTryTest, TryStoreThatWouldWaitForWritebackHasNoEffect) {
  MemoryBlockDevice ssd(64);
  auto store = NewStore(
      {.limits = {.pool_limit_bytes = 32 << 10}, .backing = &ssd, .start_writeback_worker = false});
  ASSERT_TRUE(StorePayload(*store, 1, 0, Payload(0, 100), 100).ok());
  uint64_t p = 1;
  for (;; ++p) {
    ASSERT_LT(p, 100u) << "the pool never filled";
    std::optional<absl::Status> s =
        store->TryStore(1, p, {.payload = Payload(p, 3000), .checksum = p});
    if (!s.has_value()) break;
    ASSERT_TRUE(s->ok()) << *s;
  }
  const PageStoreStats before = store->GetStats();
  // Neither a new page nor a bigger version of page 0 fits without writeback.
  EXPECT_FALSE(store->TryStore(1, p, {.payload = Payload(p, 3000), .checksum = p}).has_value());
  EXPECT_FALSE(store->TryStore(1, 0, {.payload = Payload(1000, 4000), .codec = 1, .checksum = 101})
                   .has_value());
  const PageStoreStats after = store->GetStats();
  EXPECT_EQ(after.stores, before.stores);
  EXPECT_EQ(after.rejects, before.rejects);
  EXPECT_EQ(after.stored_pages, before.stored_pages);
  EXPECT_EQ(after.pool.objects, before.pool.objects);
  EXPECT_EQ(after.written_back_pages, 0u);
  ExpectPage(*store, 1, 0, Payload(0, 100), 100);  // the older version is still there

  // The blocking form runs writeback (direct reclaim here) and succeeds.
  ASSERT_TRUE(StorePayload(*store, 1, 0, Payload(1000, 4000), 101).ok());
  ExpectPage(*store, 1, 0, Payload(1000, 4000), 101);
  EXPECT_GT(store->GetStats().written_back_pages, 0u);
  EXPECT_EQ(store->GetStats().stores, before.stores + 1);
}

// Where Store would not wait, TryStore is Store: a refusal is a refusal,
// with Store's effects (the older version erased).
TEST(PageStoreTryTest, TryStoreThatCannotWaitAnywayIsAnAnswer) {
  auto store = NewStore({.limits = {.pool_limit_bytes = 32 << 10}});  // no backing store
  ASSERT_TRUE(StorePayload(*store, 1, 0, Payload(0, 100), 100).ok());
  std::optional<absl::Status> s;
  for (uint64_t p = 1; p < 100; ++p) {
    s = store->TryStore(1, p, {.payload = Payload(p, 3000), .checksum = p});
    ASSERT_TRUE(s.has_value()) << "nothing to wait for without a backing store";
    if (!s->ok()) break;
  }
  ASSERT_EQ(s->code(), absl::StatusCode::kResourceExhausted) << *s;
  s = store->TryStore(1, 0, {.payload = Payload(1000, 4000), .checksum = 101});
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->code(), absl::StatusCode::kResourceExhausted) << *s;
  EXPECT_EQ(store->Load(1, 0).status().code(), absl::StatusCode::kNotFound);
  // Bad lengths and same-filled pages never wait.
  s = store->TryStore(1, 1, {.payload = Payload(1, 4097), .checksum = 1});
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->code(), absl::StatusCode::kInvalidArgument);
  s = store->TryStore(1, 2, {.same_filled = true, .fill = 7});
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->ok()) << *s;
}

// TryLoad answers from the pool (and NOT_FOUND) and says "would block" for
// a written-back page, without counting it; Load then reads it.
TEST(PageStoreTryTest, TryLoadOfAWrittenBackPageWouldBlock) {
  MemoryBlockDevice ssd(64);
  auto store = NewStore({.backing = &ssd, .start_writeback_worker = false});
  ASSERT_TRUE(StorePayload(*store, 1, 0, Payload(0, 500), 10).ok());
  ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
  ASSERT_TRUE(StorePayload(*store, 1, 1, Payload(1, 600), 11).ok());

  std::optional<absl::StatusOr<LoadedPage>> in_pool = store->TryLoad(1, 1);
  ASSERT_TRUE(in_pool.has_value());
  ASSERT_TRUE(in_pool->ok()) << in_pool->status();
  EXPECT_EQ((*in_pool)->payload, Payload(1, 600));
  EXPECT_EQ((*in_pool)->checksum, 11u);
  std::optional<absl::StatusOr<LoadedPage>> missing = store->TryLoad(1, 2);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status().code(), absl::StatusCode::kNotFound);

  const PageStoreStats before = store->GetStats();
  EXPECT_FALSE(store->TryLoad(1, 0).has_value());
  const PageStoreStats after = store->GetStats();
  EXPECT_EQ(after.loads, before.loads);
  EXPECT_EQ(after.backing_reads, before.backing_reads);
  ExpectPage(*store, 1, 0, Payload(0, 500), 10);
  EXPECT_EQ(store->GetStats().backing_reads, before.backing_reads + 1);
}

// CurrentThreadName: the calling thread's name (the writeback thread is
// "fs-writeback", its helpers "fs-writeback-N").
std::string CurrentThreadName() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof(name));
  return name;
}

// writeback_threads 2: a pass runs batches on a helper thread beside the
// writeback thread, each with a segment and a round in flight of its own.
// Forced with sync points: the helper's first batch starts only once the
// writeback thread has isolated a round, and the writeback thread's second
// round waits for the helper to isolate one — so both have rounds isolated
// and in flight at once. Every page loads back as stored, every byte is in
// the pool or live on disk exactly once, and each thread wrote rounds.
TEST(PageStoreWorkerTest, WritebackHelpersWriteBesideThePass) {
  testing::ScopedSyncPoints cleanup;
  MemoryBlockDevice ssd(4096);  // 16 MiB
  auto store = NewStore({.backing = &ssd,
                         .segment_bytes = 256 << 10,
                         .writeback_batch_pages = 16,
                         .writeback_threads = 2});
  EXPECT_EQ(store->GetStats().writeback_threads, 2u);
  constexpr uint64_t kPages = 600;
  uint64_t payload_bytes = 0;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, 3, p, Payload(p, 900 + p * 13 % 2000), p).ok()) << p;
    payload_bytes += 900 + p * 13 % 2000;
  }
  absl::Notification main_isolated, helper_isolated;
  std::atomic<int> main_rounds{0}, helper_rounds{0}, other_rounds{0};
  SyncPoints::Set("PageStore::Writeback:pending-unlocked", [&] {
    const std::string name = CurrentThreadName();
    if (name == "fs-writeback") {
      const int n = ++main_rounds;
      if (n == 1) main_isolated.Notify();
      if (n == 2) {
        EXPECT_TRUE(helper_isolated.WaitForNotificationWithTimeout(absl::Seconds(60)))
            << "the helper never isolated a round";
      }
    } else if (name == "fs-writeback-1") {
      if (++helper_rounds == 1) helper_isolated.Notify();
    } else {
      ++other_rounds;
    }
  });
  SyncPoints::SetOnce("PageStore::Writeback:helper-batch", [&] {
    EXPECT_TRUE(main_isolated.WaitForNotificationWithTimeout(absl::Seconds(60)))
        << "the writeback thread never isolated a round";
  });
  // A quarter of what the objects hold: the pass writes most of them back.
  const uint64_t in_use = store->GetStats().pool.mem_used_total;
  ASSERT_TRUE(
      store
          ->SetLimits({.pool_limit_bytes = in_use / 4, .high_watermark = 0.6, .low_watermark = 0.5})
          .ok());
  store->QuiesceWriteback();
  SyncPoints::ClearAll();
  EXPECT_GE(main_rounds.load(), 2);
  EXPECT_GE(helper_rounds.load(), 1);
  EXPECT_EQ(other_rounds.load(), 0) << "writeback ran on a thread that is neither";
  const PageStoreStats st = store->GetStats();
  EXPECT_GT(st.written_back_pages, kPages / 2);
  EXPECT_EQ(st.pool.compr_data_size + st.disk_live_bytes, payload_bytes);
  EXPECT_TRUE(store->Health().ok()) << store->Health();
  for (uint64_t p = 0; p < kPages; ++p) {
    ExpectPage(*store, 3, p, Payload(p, 900 + p * 13 % 2000), p, PageStore::LoadKind::kScrub);
  }
}

// With the worker running, stores far beyond the pool limit all succeed:
// a store that finds the pool full waits for writeback to make room.
TEST(PageStoreWorkerTest, StoresBeyondThePoolWaitForWriteback) {
  MemoryBlockDevice ssd(1024);
  auto store = NewStore({.limits = {.pool_limit_bytes = 128 << 10}, .backing = &ssd});
  constexpr uint64_t kPages = 400;  // ~800 KiB of payload through a 128 KiB pool
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, 2, p, Payload(p, 1000 + p * 7 % 3000), p).ok()) << p;
  }
  for (uint64_t p = 0; p < kPages; ++p)
    ExpectPage(*store, 2, p, Payload(p, 1000 + p * 7 % 3000), p);
  store->QuiesceWriteback();  // a pass in flight holds bytes not yet counted
  PageStoreStats st = store->GetStats();
  EXPECT_GT(st.written_back_pages, 0u);
  // Every byte stored is in the pool or live on disk, exactly once.
  uint64_t payload_bytes = 0;
  for (uint64_t p = 0; p < kPages; ++p) payload_bytes += 1000 + p * 7 % 3000;
  EXPECT_EQ(st.pool.compr_data_size + st.disk_live_bytes, payload_bytes);
  // Packed: fewer blocks than pages, and little beside the live bytes.
  EXPECT_LT(st.backing_used_blocks, st.pages_on_disk);
  EXPECT_LE(st.disk_held_bytes, st.disk_live_bytes * 11 / 10 + 64 * kBlockSize);
  EXPECT_EQ(st.stored_pages, kPages);
  EXPECT_LE(st.pool.mem_used_total, 128u << 10);
  EXPECT_TRUE(store->Health().ok());
  // Compaction after writeback moves pooled objects: it must account for
  // exactly the pages it says it freed, and every page must still load.
  const uint64_t freed = store->Compact();
  EXPECT_EQ(store->GetStats().pool.pages_compacted, st.pool.pages_compacted + freed);
  for (uint64_t p = 0; p < kPages; ++p)
    ExpectPage(*store, 2, p, Payload(p, 1000 + p * 7 % 3000), p);
}

// Invalidating every other page leaves each zspage half empty; compaction
// must gather the survivors and give pages back.
TEST(PageStoreTest, CompactFreesPagesLeftHalfEmptyByInvalidates) {
  auto store = NewStore({});
  constexpr uint64_t kPages = 512;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_TRUE(StorePayload(*store, 1, p, Payload(p, 1000), p).ok());
  }
  for (uint64_t p = 0; p < kPages; p += 2) ASSERT_TRUE(store->Invalidate(1, p).ok());
  const uint64_t before = store->GetStats().pool.mem_used_total;
  const uint64_t freed = store->Compact();
  EXPECT_GT(freed, 0u);
  EXPECT_LT(store->GetStats().pool.mem_used_total, before);
  for (uint64_t p = 1; p < kPages; p += 2) ExpectPage(*store, 1, p, Payload(p, 1000), p);
}

// The same path with a real file as the backing store (O_DIRECT where the
// filesystem allows it).
TEST(PageStoreFileTest, WrittenBackPagesReadBackFromAFile) {
  const std::string path = absl::StrCat(FARSWAP_BINARY_DIR, "/page_store_test.", getpid());
  absl::StatusOr<std::unique_ptr<FileBlockDevice>> file =
      FileBlockDevice::Open({.path = path, .size_bytes = 256 * kBlockSize});
  ASSERT_TRUE(file.ok()) << file.status();
  {
    auto store = NewStore({.backing = file->get(),
                           .start_writeback_worker = false,
                           .disk_read_cache_bytes = 4 << 20});
    for (uint64_t p = 0; p < 20; ++p) {
      ASSERT_TRUE(StorePayload(*store, 1, p, Payload(p, 100 + p * 200), p).ok());
    }
    for (int i = 0; i < 20; ++i)
      ASSERT_EQ(store->RunWritebackOnce(), WritebackOutcome::kWrittenBack);
    EXPECT_EQ(store->GetStats().pages_on_disk, 20u);
    EXPECT_EQ(store->GetStats().pool.objects, 0u);
    // Through io_uring every segment write went from the segment buffer
    // registered with the ring (the backing store is one segment, so its
    // buffer is the arena's).
    const PageStoreStats st = store->GetStats();
    if (st.write_engine == "io_uring") {
      EXPECT_GT(st.backing_writes, 0u);
      EXPECT_EQ(st.registered_writes, st.backing_writes);
    }
    for (uint64_t p = 0; p < 20; ++p) ExpectPage(*store, 1, p, Payload(p, 100 + p * 200), p);
    // The first load reads a readahead span (128 KiB: half the starting
    // 256 KiB, no hits yet) through the file's io_uring, which holds all 20
    // objects (about 40 KB, side by side); the other 19 are read-cache hits.
    EXPECT_EQ(store->GetStats().backing_reads, 1u);
    EXPECT_EQ(store->GetStats().read_cache_hits, 19u);
    EXPECT_EQ(store->GetStats().read_cache_mismatches, 0u);
  }
  file->reset();
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace farswap::server
