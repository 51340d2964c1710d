// PageIndex: Find, Replace and Erase by key over a set of entries (the key
// lives in the entry only), and its range walk: it lists only the asked
// tenant's keys, in bounded chunks, one shard lock at a time
// (INVALIDATE_RANGE used to walk every tenant's entries under each shard
// lock).
#include "page_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace farswap::server::internal {
namespace {

void Insert(PageIndex& index, uint32_t tenant, uint64_t page) {
  ASSERT_EQ(index.Replace(std::make_unique<Entry>(PageKey{tenant, page}, page + 1)), nullptr);
}

// Walk collects every key of the walk and the size of each chunk.
std::vector<PageKey> Walk(PageIndex& index, uint32_t tenant, uint64_t first, uint64_t last,
                          std::vector<size_t>* chunks) {
  RangeCursor cursor{.tenant = tenant, .first = first, .last = last};
  std::vector<PageKey> all, chunk;
  while (index.NextKeysInRange(&cursor, &chunk)) {
    chunks->push_back(chunk.size());
    all.insert(all.end(), chunk.begin(), chunk.end());
    chunk.clear();
  }
  EXPECT_TRUE(chunk.empty());
  return all;
}

// The same page number of two tenants is two keys; Replace hands back the
// version it replaced and Find sees the new one; Erase hands back the entry
// and the key is gone. Enough keys that every shard's table grows (and
// rehashes by reading its entries' keys) several times.
TEST(PageIndexTest, FindReplaceAndEraseByKey) {
  PageIndex index;
  constexpr uint64_t kPages = 20000;
  for (uint64_t p = 0; p < kPages; ++p) {
    Insert(index, 1, p);
    Insert(index, 2, p);
  }
  EXPECT_EQ(index.size(), 2 * kPages);
  for (uint64_t p = 0; p < kPages; ++p) {
    Entry* e = index.Find({1, p});
    ASSERT_NE(e, nullptr) << p;
    EXPECT_EQ(e->key, (PageKey{1, p}));
    EXPECT_EQ(e->gen, p + 1);
  }
  EXPECT_EQ(index.Find({3, 0}), nullptr);
  EXPECT_EQ(index.Find({1, kPages}), nullptr);

  // New versions of tenant 1's even pages: each Replace returns the old one.
  for (uint64_t p = 0; p < kPages; p += 2) {
    std::unique_ptr<Entry> old = index.Replace(std::make_unique<Entry>(PageKey{1, p}, 100000 + p));
    ASSERT_NE(old, nullptr) << p;
    EXPECT_EQ(old->gen, p + 1);
    EXPECT_EQ(old->key, (PageKey{1, p}));
  }
  EXPECT_EQ(index.size(), 2 * kPages);
  for (uint64_t p = 0; p < kPages; ++p) {
    EXPECT_EQ(index.Find({1, p})->gen, p % 2 == 0 ? 100000 + p : p + 1) << p;
    EXPECT_EQ(index.Find({2, p})->gen, p + 1) << "tenant 2's page " << p << " untouched";
  }

  // Erase tenant 2's keys: each comes back once, then is gone.
  for (uint64_t p = 0; p < kPages; ++p) {
    std::unique_ptr<Entry> gone = index.Erase({2, p});
    ASSERT_NE(gone, nullptr) << p;
    EXPECT_EQ(gone->key, (PageKey{2, p}));
    EXPECT_EQ(index.Erase({2, p}), nullptr);
    EXPECT_EQ(index.Find({2, p}), nullptr);
  }
  EXPECT_EQ(index.size(), kPages);
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_NE(index.Find({1, p}), nullptr) << p;
  index.Clear();
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(index.Find({1, 0}), nullptr);
}

// Lookups while another thread fills the same shards and empties them
// again, three times: an insert may grow a shard or rehash it in place (the
// erased slots' tombstones), and either reads the key of every entry in it,
// including the entries the reader is looking up and reading. Each thread
// touches only its own tenant's keys (callers hold a key's lock around its
// Find), as the page store does. Under TSan this checks that a rehash's
// reads of the entries' keys race with nothing the reader does.
TEST(PageIndexTest, LookupsWhileAnotherTenantFillsAndEmptiesTheShards) {
  PageIndex index;
  constexpr uint64_t kReaderPages = 2000;
  constexpr uint64_t kWriterPages = 20000;
  for (uint64_t p = 0; p < kReaderPages; ++p) Insert(index, 1, p);
  std::atomic<bool> go{false};
  std::atomic<bool> writer_done{false};
  uint64_t wrong = 0, rounds = 0;
  std::thread reader([&] {
    while (!go.load()) {
    }
    // At least one whole round after the writer finished, so every key is
    // looked up across all of its rehashes and after them.
    for (bool last = false; !last; ++rounds) {
      last = writer_done.load();
      for (uint64_t p = 0; p < kReaderPages; ++p) {
        const Entry* e = index.Find({1, p});
        wrong += e == nullptr || e->gen != p + 1 || !(e->key == PageKey{1, p});
      }
    }
  });
  std::thread writer([&] {
    go.store(true);
    for (int cycle = 0; cycle < 3; ++cycle) {
      for (uint64_t p = 0; p < kWriterPages; ++p) {
        index.Replace(std::make_unique<Entry>(PageKey{2, p}, p));
      }
      for (uint64_t p = 0; p < kWriterPages; ++p) EXPECT_NE(index.Erase({2, p}), nullptr);
    }
    writer_done.store(true);
  });
  writer.join();
  reader.join();
  EXPECT_EQ(wrong, 0u);
  EXPECT_GE(rounds, 1u);
  EXPECT_EQ(index.size(), kReaderPages);
  index.Clear();
}

TEST(PageIndexTest, RangeWalkListsOnlyItsTenantsKeysInBoundedChunks) {
  PageIndex index;
  constexpr uint64_t kPages = 40000;  // ~625 a shard: several chunks each
  for (uint64_t p = 0; p < kPages; ++p) Insert(index, 1, p);
  for (uint64_t p = 0; p < 10; ++p) Insert(index, 2, p * 1000);

  std::vector<size_t> chunks;
  std::vector<PageKey> keys = Walk(index, 1, 0, UINT64_MAX, &chunks);
  ASSERT_EQ(keys.size(), kPages);
  std::vector<uint64_t> pages;
  for (const PageKey& k : keys) {
    EXPECT_EQ(k.tenant, 1u);
    pages.push_back(k.page);
  }
  std::sort(pages.begin(), pages.end());
  EXPECT_TRUE(std::adjacent_find(pages.begin(), pages.end()) == pages.end()) << "a key twice";
  EXPECT_GT(chunks.size(), PageIndex::kShards);  // some shards took more than one hold
  for (size_t n : chunks) EXPECT_LE(n, PageIndex::kRangeChunk);

  // Tenant 2's walk sees its ten keys and nothing of tenant 1's 40000.
  chunks.clear();
  keys = Walk(index, 2, 0, UINT64_MAX, &chunks);
  EXPECT_EQ(keys.size(), 10u);
  for (const PageKey& k : keys) EXPECT_EQ(k.tenant, 2u);
  EXPECT_LE(chunks.size(), 10u);
  // A tenant with no keys: nothing, in no chunk.
  chunks.clear();
  EXPECT_TRUE(Walk(index, 3, 0, UINT64_MAX, &chunks).empty());
  EXPECT_TRUE(chunks.empty());
}

TEST(PageIndexTest, RangeWalkHonoursBoundsAndErasures) {
  PageIndex index;
  for (uint64_t p = 0; p < 2000; ++p) Insert(index, 1, p);
  std::vector<size_t> chunks;
  std::vector<PageKey> keys = Walk(index, 1, 100, 199, &chunks);
  ASSERT_EQ(keys.size(), 100u);
  for (const PageKey& k : keys) EXPECT_TRUE(k.page >= 100 && k.page <= 199) << k.page;
  for (uint64_t p = 100; p < 200; ++p) EXPECT_NE(index.Erase({1, p}), nullptr);
  chunks.clear();
  EXPECT_TRUE(Walk(index, 1, 100, 199, &chunks).empty());
  chunks.clear();
  EXPECT_EQ(Walk(index, 1, 0, UINT64_MAX, &chunks).size(), 1900u);
  index.Clear();
}

// Entry lifetime past the index (Entry::writeback_pins): an entry retired
// while writeback batches hold it stays live memory, marked retired, until
// the last of them lets go, which frees it (AddressSanitizer's leak and
// double-free checks see the rest); one retired with no pin is freed at once.
TEST(EntryPinTest, ARetiredEntryLivesUntilItsLastUnpin) {
  auto owned = std::make_unique<Entry>(PageKey{1, 2}, 3);
  Entry* e = owned.get();
  PinEntry(e);
  PinEntry(e);
  EXPECT_FALSE(EntryRetired(*e));
  RetireEntry(std::move(owned));
  EXPECT_TRUE(EntryRetired(*e));
  EXPECT_EQ(e->writeback_pins.load(), kEntryRetired | 2);
  EXPECT_EQ(e->gen, 3u) << "a pinned entry's fields survive its retirement";
  UnpinEntry(e);
  EXPECT_EQ(e->writeback_pins.load(), kEntryRetired | 1);
  UnpinEntry(e);  // the last pin: frees it

  // Pinned and unpinned before it left the index: freed by RetireEntry.
  auto unpinned = std::make_unique<Entry>(PageKey{1, 3}, 4);
  PinEntry(unpinned.get());
  UnpinEntry(unpinned.get());  // not retired: never frees
  EXPECT_EQ(unpinned->writeback_pins.load(), 0);
  RetireEntry(std::move(unpinned));
  RetireEntry(nullptr);  // nothing left the index
}

// The retiring thread (a store or invalidate, under the key lock) and the
// unpinning writeback batches run at once: whichever is last frees the
// entry, exactly once (ThreadSanitizer and AddressSanitizer check it).
TEST(EntryPinTest, RetireRacingUnpinsFreesTheEntryOnce) {
  for (int round = 0; round < 300; ++round) {
    auto owned = std::make_unique<Entry>(PageKey{1, uint64_t(round)}, uint64_t(round) + 1);
    Entry* e = owned.get();
    PinEntry(e);
    PinEntry(e);
    std::atomic<int> go{0};
    auto unpin = [&] {
      go.fetch_add(1);
      while (go.load() < 3) std::this_thread::yield();
      UnpinEntry(e);
    };
    std::thread a(unpin), b(unpin);
    go.fetch_add(1);
    while (go.load() < 3) std::this_thread::yield();
    RetireEntry(std::move(owned));
    a.join();
    b.join();
  }
}

}  // namespace
}  // namespace farswap::server::internal
