// page_test_util.h: payloads and helpers shared by the page store tests.
#ifndef FARSWAP_TESTS_SERVER_PAGE_TEST_UTIL_H_
#define FARSWAP_TESTS_SERVER_PAGE_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/page_store.h"

namespace farswap::server::testing {

// Payload returns `len` deterministic bytes for `seed`: distinct seeds give
// distinct contents, so a load can tell versions apart.
inline std::vector<uint8_t> Payload(uint64_t seed, size_t len) {
  std::vector<uint8_t> out(len);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + len + 1;
  for (size_t i = 0; i < len; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    out[i] = uint8_t(x);
  }
  return out;
}

// StorePayload stores `bytes` with checksum `checksum` (the tests use the
// version number, so a load shows which version it got).
inline absl::Status StorePayload(PageStore& store, uint32_t tenant, uint64_t page,
                                 const std::vector<uint8_t>& bytes, uint64_t checksum) {
  return store.Store(tenant, page, {.payload = bytes, .codec = 1, .checksum = checksum});
}

// ExpectPage checks that the page loads as exactly `bytes` / `checksum`.
// `kind`: a scrub's load (PageStore::LoadKind::kScrub) or, by default, a use.
inline void ExpectPage(PageStore& store, uint32_t tenant, uint64_t page,
                       const std::vector<uint8_t>& bytes, uint64_t checksum,
                       PageStore::LoadKind kind = PageStore::LoadKind::kUse) {
  absl::StatusOr<LoadedPage> p = store.Load(tenant, page, kind);
  ASSERT_TRUE(p.ok()) << "tenant " << tenant << " page " << page << ": " << p.status();
  EXPECT_FALSE(p->same_filled);
  EXPECT_EQ(p->checksum, checksum) << "tenant " << tenant << " page " << page;
  EXPECT_EQ(p->codec, 1);
  EXPECT_TRUE(p->payload == bytes)
      << "tenant " << tenant << " page " << page << ": payload differs (" << p->payload.size()
      << " vs " << bytes.size() << " bytes)";
}

// ScopedSyncPoints clears every sync point when the test ends, pass or fail.
struct ScopedSyncPoints {
  ~ScopedSyncPoints() { SyncPoints::ClearAll(); }
};

}  // namespace farswap::server::testing

#endif  // FARSWAP_TESTS_SERVER_PAGE_TEST_UTIL_H_
