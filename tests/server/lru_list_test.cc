// LruList::PickColdest: the scan holds the LRU lock for a bounded number of
// entries at a time (a Store waits for that lock holding a key stripe), yet
// still gives every referenced entry its second chance. LruList::ScanCold:
// the cold tier's walk, chunk by chunk, in the same order-keeping way.
#include "lru_list.h"

#include <gtest/gtest.h>

#include <algorithm>
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

// LinkUnreferenced links pages 0..n-1 of tenant 1, oldest (coldest) first,
// none referenced.
std::vector<std::unique_ptr<Entry>> LinkUnreferenced(LruList& lru, uint64_t n) {
  std::vector<std::unique_ptr<Entry>> entries;
  for (uint64_t i = 0; i < n; ++i) {
    entries.push_back(std::make_unique<Entry>(PageKey{1, i}, i + 1));
    entries.back()->referenced = false;
    lru.Link(entries.back().get());
  }
  return entries;
}

// A batch larger than one hold: the scan goes on over several holds of the
// lock (64 entries each, the lock dropped between them, where a store
// links a page) until it has `max` picks, coldest first, each once.
TEST(LruListTest, PickColdestGathersALargeBatchOverSeveralHolds) {
  ScopedSyncPoints cleanup;
  LruList lru;
  std::vector<std::unique_ptr<Entry>> entries = LinkUnreferenced(lru, 500);
  std::vector<std::unique_ptr<Entry>> linked_meanwhile;
  SyncPoints::Set("LruList::PickColdest:between-chunks", [&] {
    linked_meanwhile.push_back(std::make_unique<Entry>(PageKey{2, linked_meanwhile.size()}, 0));
    lru.Link(linked_meanwhile.back().get());
  });
  uint64_t second_chances = 0;
  std::vector<WritebackCandidate> c = lru.PickColdest(200, &second_chances);
  SyncPoints::ClearAll();
  ASSERT_EQ(c.size(), 200u);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i].entry, entries[i].get()) << i;
  // 200 picks in holds of 64: the lock was dropped three times.
  EXPECT_EQ(linked_meanwhile.size(), (200 - 1) / LruList::kMaxScanPerHold);
  EXPECT_EQ(second_chances, 0u);
  for (auto& e : entries) lru.Unlink(e.get());
  for (auto& e : linked_meanwhile) lru.Unlink(e.get());
}

// The batch asks for more than the list holds, and between holds pages are
// freed, the first pick among them: the scan comes round to its own picks
// (the rest of the first hold's) and stops there. Every entry still linked
// is picked exactly once; without the picks' mark the scan, not finding its
// first pick at the cold end, would pick the first hold's entries again.
TEST(LruListTest, PickColdestStopsAtItsOwnPicksWhenTheFirstPickIsFreed) {
  ScopedSyncPoints cleanup;
  LruList lru;
  std::vector<std::unique_ptr<Entry>> entries = LinkUnreferenced(lru, 100);
  int holds_ended = 0;
  SyncPoints::Set("LruList::PickColdest:between-chunks", [&] {
    if (++holds_ended != 1) return;
    lru.Unlink(entries[0].get());                                     // the first pick
    for (uint64_t i = 70; i < 80; ++i) lru.Unlink(entries[i].get());  // not looked at yet
  });
  uint64_t second_chances = 0;
  std::vector<WritebackCandidate> c = lru.PickColdest(256, &second_chances);
  SyncPoints::ClearAll();
  EXPECT_EQ(holds_ended, 1);
  std::vector<const Entry*> picked;
  for (const WritebackCandidate& w : c) picked.push_back(w.entry);
  std::vector<const Entry*> want;
  for (uint64_t i = 0; i < 100; ++i) {
    if (i < 70 || i >= 80) want.push_back(entries[i].get());
  }
  EXPECT_EQ(picked, want);
  EXPECT_EQ(lru.size(), 89u);
  for (auto& e : entries) lru.Unlink(e.get());
}

// Writeback takes recompressed entries first (PreferRecompressedLocked):
// among the picks of a batch and up to kPreferLookahead entries past them,
// unreferenced kRecompressed entries replace the warmest lz4 picks, which
// go back to the cold end; referenced ones and ones past the lookahead are
// left alone, bits untouched.
TEST(LruListTest, PickColdestTakesRecompressedEntriesFirst) {
  LruList lru;
  std::vector<std::unique_ptr<Entry>> entries;
  for (uint64_t i = 0; i < 100; ++i) {
    entries.push_back(std::make_unique<Entry>(PageKey{1, i}, i + 1));
    Entry* e = entries.back().get();
    e->referenced = i == 20;  // 20 was loaded: not taken early
    if ((i >= 10 && i < 20) || i == 20 || i == 90) {
      e->cold_state = uint8_t(ColdState::kRecompressed);
    }
    lru.Link(e);
  }
  lru.NoteRecompressed();  // as the cold tier does after each recompression
  uint64_t second_chances = 0;
  auto pick = [&] {
    std::vector<WritebackCandidate> c = lru.PickColdest(4, &second_chances);
    std::vector<uint64_t> pages;
    for (const WritebackCandidate& w : c) {
      EXPECT_EQ(w.entry, entries[w.key.page].get());
      EXPECT_EQ(w.gen, w.key.page + 1);
      pages.push_back(w.key.page);
    }
    std::sort(pages.begin(), pages.end());
    return pages;
  };
  EXPECT_EQ(pick(), (std::vector<uint64_t>{10, 11, 12, 13}));
  EXPECT_EQ(pick(), (std::vector<uint64_t>{14, 15, 16, 17}));
  // Two recompressed left within reach (20 is referenced, 90 too far):
  // they replace the two warmer picks.
  EXPECT_EQ(pick(), (std::vector<uint64_t>{0, 1, 18, 19}));
  // The replaced picks (2, 3) are back at the cold end, coldest first.
  EXPECT_EQ(pick(), (std::vector<uint64_t>{2, 3, 4, 5}));
  EXPECT_EQ(second_chances, 0u);
  EXPECT_TRUE(entries[20]->referenced.load()) << "the lookahead cleared a bit";
  EXPECT_EQ(lru.size(), 100u);
  for (auto& e : entries) lru.Unlink(e.get());
}

// Until the cold tier has noted a recompression, PickColdest does not look
// past its picks for recompressed entries (a node without the cold tier
// would pay that look for nothing): the picks are the coldest, in order.
TEST(LruListTest, PickColdestLooksForRecompressedEntriesOnlyOnceTheColdTierNotedOne) {
  LruList lru;
  std::vector<std::unique_ptr<Entry>> entries = LinkUnreferenced(lru, 100);
  for (uint64_t i = 10; i < 20; ++i) entries[i]->cold_state = uint8_t(ColdState::kRecompressed);
  uint64_t second_chances = 0;
  auto pick = [&] {
    std::vector<uint64_t> pages;
    for (const WritebackCandidate& w : lru.PickColdest(4, &second_chances)) {
      pages.push_back(w.key.page);
    }
    std::sort(pages.begin(), pages.end());
    return pages;
  };
  EXPECT_EQ(pick(), (std::vector<uint64_t>{0, 1, 2, 3}));
  lru.NoteRecompressed();
  EXPECT_EQ(pick(), (std::vector<uint64_t>{10, 11, 12, 13}));
  for (auto& e : entries) lru.Unlink(e.get());
}

// ScanCold (the cold tier's walk): a walk of size() entries, chunk by
// chunk, visits each entry once, leaves the order writeback sees as it was,
// clears set cold bits, and hands out only the hot-state entries whose bit
// was already clear — never touching the writeback `referenced` bit.
TEST(LruListTest, ScanColdWalksEveryEntryOnceAndKeepsTheOrder) {
  LruList lru;
  constexpr uint64_t kEntries = 200;  // several chunks of kMaxScanPerHold
  std::vector<std::unique_ptr<Entry>> entries;
  for (uint64_t i = 0; i < kEntries; ++i) {
    entries.push_back(std::make_unique<Entry>(PageKey{1, i}, i + 1));
    Entry* e = entries.back().get();
    e->cold_referenced = i % 2 == 0;  // odd pages: not loaded since the last walk
    if (i % 10 == 9) e->cold_state = uint8_t(ColdState::kRecompressed);
    lru.Link(e);
  }
  auto walk = [&] {
    std::vector<WritebackCandidate> out;
    uint64_t left = lru.size();
    int holds = 0;
    while (left > 0) {
      lru.ScanCold(&left, &out);
      ++holds;
    }
    EXPECT_EQ(holds, int((kEntries + LruList::kMaxScanPerHold - 1) / LruList::kMaxScanPerHold));
    return out;
  };
  std::vector<WritebackCandidate> first = walk();
  // Odd pages that are not already recompressed (i % 10 != 9), coldest first.
  std::vector<uint64_t> want;
  for (uint64_t i = 0; i < kEntries; ++i) {
    if (i % 2 == 1 && i % 10 != 9) want.push_back(i);
  }
  ASSERT_EQ(first.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(first[k].key.page, want[k]);
    EXPECT_EQ(first[k].entry, entries[want[k]].get());
    EXPECT_EQ(first[k].gen, want[k] + 1);
  }
  for (auto& e : entries) {
    EXPECT_FALSE(e->cold_referenced.load()) << "page " << e->key.page;
    EXPECT_TRUE(e->referenced.load()) << "the writeback bit was touched";
  }
  // The walk rotated the list by its own length: writeback still picks the
  // first-linked entry first (all are referenced: a second chance each).
  uint64_t second_chances = 0;
  std::vector<WritebackCandidate> c = lru.PickColdest(1, &second_chances);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].entry, entries.front().get());
  // Now every hot-state entry's bit is clear: the next walk hands them all out.
  EXPECT_EQ(walk().size(), kEntries - kEntries / 10);
  for (auto& e : entries) lru.Unlink(e.get());
  uint64_t left = 5;
  std::vector<WritebackCandidate> none;
  lru.ScanCold(&left, &none);
  EXPECT_EQ(left, 0u) << "an empty list ends the walk";
  EXPECT_TRUE(none.empty());
}

}  // namespace
}  // namespace farswap::server::internal
