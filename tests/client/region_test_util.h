// region_test_util.h: a checksummed page pattern for region tests, and a
// region made for a test.
#ifndef FARSWAP_TESTS_CLIENT_REGION_TEST_UTIL_H_
#define FARSWAP_TESTS_CLIENT_REGION_TEST_UTIL_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include "farswap/client/page_backend.h"
#include "farswap/client/region.h"

namespace farswap::testing {

// Word `w` of page `page` at version `v`: distinct per page, word and
// version, and compressible only in part (so codecs do real work).
inline uint64_t PatternWord(uint64_t page, uint64_t w, uint64_t v) {
  uint64_t x = (page * 0x9e3779b97f4a7c15ull) ^ (v * 0xbf58476d1ce4e5b9ull) ^ (w >> 3);
  x ^= x >> 31;
  x *= 0x94d049bb133111ebull;
  return (w & 7) < 4 ? x : (page << 20) + w;  // half random, half counting
}

inline void FillPage(uint8_t* p, uint64_t page, uint64_t v) {
  auto* w = reinterpret_cast<uint64_t*>(p);
  for (uint64_t i = 0; i < 512; ++i) w[i] = PatternWord(page, i, v);
}

// PageMatches reads every word (so a missing page faults in) and compares.
inline bool PageMatches(const uint8_t* p, uint64_t page, uint64_t v) {
  auto* w = reinterpret_cast<const uint64_t*>(p);
  for (uint64_t i = 0; i < 512; ++i) {
    if (w[i] != PatternWord(page, i, v)) return false;
  }
  return true;
}

// DescribePage says what a page that failed PageMatches holds, for the
// failure message: zeros, one version in 1..max_version, or from which
// word on it differs from max_version.
inline std::string DescribePage(const uint8_t* p, uint64_t page, uint64_t max_version) {
  auto* w = reinterpret_cast<const uint64_t*>(p);
  bool zeros = true;
  for (uint64_t i = 0; i < 512 && zeros; ++i) zeros = w[i] == 0;
  if (zeros) return "zeros";
  for (uint64_t v = 1; v <= max_version; ++v) {
    if (PageMatches(p, page, v)) return "version " + std::to_string(v);
  }
  uint64_t i = 0;
  while (i < 512 && w[i] == PatternWord(page, i, max_version)) ++i;
  return "no version (words 0.." + std::to_string(i) + " of version " +
         std::to_string(max_version) + ")";
}

// KernelHasUffdMove: this kernel offers UFFDIO_MOVE (Linux 6.8), with
// which the region drops evicted pages (RegionOptions::drop_by_move).
inline bool KernelHasUffdMove() {
  constexpr uint64_t kFeatureMove = uint64_t{1} << 16;  // UFFD_FEATURE_MOVE
  const int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
  if (fd < 0) return false;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kFeatureMove;
  const bool has = ioctl(fd, UFFDIO_API, &api) == 0 && (api.features & kFeatureMove);
  close(fd);
  return has;
}

// MakeRegion: a region of `pages` pages over `backend` whose local budget
// is `budget_pages`; nullptr (and a test failure) if Create fails.
inline std::unique_ptr<Region> MakeRegion(PageBackend* backend, uint64_t pages,
                                          uint64_t budget_pages, RegionOptions options) {
  options.local_budget = budget_pages * 4096;
  absl::StatusOr<std::unique_ptr<Region>> r = Region::Create(backend, pages * 4096, options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_CLIENT_REGION_TEST_UTIL_H_
