// LruList::PickColdest: the scan holds the LRU lock for a bounded number of
// entries at a time (a Store waits for that lock holding a key stripe), yet
// still gives every referenced entry its second chance.
#include "lru_list.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "farswap/common/sync_point.h"

namespace farswap::server::internal {
namespace {

struct ScopedSyncPoints {
  ~ScopedSyncPoints() { SyncPoints::ClearAll(); }
};

TEST(LruListTest, PickColdestDropsTheLockBetweenBoundedChunks) {
  ScopedSyncPoints cleanup;
  LruList lru;
  constexpr uint64_t kEntries = 1000;  // all referenced, as a fresh store leaves them
  std::vector<std::unique_ptr<Entry>> entries;
  for (uint64_t i = 0; i < kEntries; ++i) {
    entries.push_back(std::make_unique<Entry>(PageKey{1, i}, i + 1));
    lru.Link(entries.back().get());
  }
  // Between chunks a store links a page. Were the LRU lock still held, the
  // Link would deadlock here.
  std::vector<std::unique_ptr<Entry>> linked_meanwhile;
  SyncPoints::Set("LruList::PickColdest:between-chunks", [&] {
    linked_meanwhile.push_back(std::make_unique<Entry>(PageKey{2, linked_meanwhile.size()}, 0));
    lru.Link(linked_meanwhile.back().get());
  });
  uint64_t second_chances = 0;
  std::vector<WritebackCandidate> c = lru.PickColdest(1, &second_chances);
  SyncPoints::ClearAll();
  // Every original entry got its second chance, then the coldest one (the
  // first linked, back at the cold end) is picked.
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].entry, entries.front().get());
  EXPECT_EQ(second_chances, kEntries);
  EXPECT_GE(linked_meanwhile.size(), kEntries / LruList::kMaxScanPerHold);
  EXPECT_EQ(lru.size(), kEntries + linked_meanwhile.size());
  for (auto& e : entries) lru.Unlink(e.get());
  for (auto& e : linked_meanwhile) lru.Unlink(e.get());
  EXPECT_EQ(lru.size(), 0u);
}

TEST(LruListTest, PickColdestGivesUpAfterOneFullRotation) {
  LruList lru;
  uint64_t second_chances = 0;
  EXPECT_TRUE(lru.PickColdest(1, &second_chances).empty());
  Entry e(PageKey{1, 1}, 1);
  lru.Link(&e);
  // Referenced: a second chance, then picked on the same call's second look.
  std::vector<WritebackCandidate> c = lru.PickColdest(1, &second_chances);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(second_chances, 1u);
  lru.Unlink(&e);
}

// A batch: up to `max` unreferenced entries, coldest first, from one hold
// of the lock (no between-chunks point is reached).
TEST(LruListTest, PickColdestTakesABatchInOneHold) {
  ScopedSyncPoints cleanup;
  LruList lru;
  std::vector<std::unique_ptr<Entry>> entries;
  for (uint64_t i = 0; i < 100; ++i) {
    entries.push_back(std::make_unique<Entry>(PageKey{1, i}, i + 1));
    entries.back()->referenced = (i % 2 == 1);  // every odd one was loaded
    lru.Link(entries.back().get());
  }
  int chunks = 0;
  SyncPoints::Set("LruList::PickColdest:between-chunks", [&] { ++chunks; });
  uint64_t second_chances = 0;
  std::vector<WritebackCandidate> c = lru.PickColdest(20, &second_chances);
  EXPECT_EQ(chunks, 0);
  ASSERT_EQ(c.size(), 20u);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i].key.page, 2 * i) << i;
  EXPECT_EQ(second_chances, 19u);  // the odd ones between the picks
  for (auto& e : entries) lru.Unlink(e.get());
}

}  // namespace
}  // namespace farswap::server::internal
