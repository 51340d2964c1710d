#include "farswap/alloc/zspool.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "farswap/common/sync_point.h"

namespace farswap::alloc {
namespace {

std::unique_ptr<ZsPool> NewPool(ZsPoolOptions options = {}) {
  if (options.arena_bytes == 0) options.arena_bytes = size_t{256} << 20;
  auto pool = ZsPool::Create(options);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return std::move(pool).value();
}

// Content of object `id`: a pattern no other object shares.
std::vector<uint8_t> Pattern(uint64_t id, size_t len) {
  std::vector<uint8_t> v(len);
  uint64_t x = id * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v[i] = uint8_t(x);
  }
  return v;
}

ZsHandle Put(ZsPool& pool, const std::vector<uint8_t>& data) {
  absl::StatusOr<ZsHandle> h = pool.Malloc(data.size());
  EXPECT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(pool.Write(*h, data.data(), data.size()).ok());
  return *h;
}

std::vector<uint8_t> Get(const ZsPool& pool, ZsHandle h) {
  absl::StatusOr<ZsPool::ReadGuard> g = pool.Read(h);
  EXPECT_TRUE(g.ok()) << g.status();
  if (!g.ok()) return {};
  return std::vector<uint8_t>(g->data(), g->data() + g->size());
}

// ResidentArenaPages counts the arena's pages the kernel has resident.
uint64_t ResidentArenaPages(const ZsPool& pool) {
  std::vector<unsigned char> vec(pool.arena_size() / 4096);
  EXPECT_EQ(mincore(const_cast<void*>(pool.arena_base()), pool.arena_size(), vec.data()), 0);
  uint64_t n = 0;
  for (unsigned char c : vec) n += c & 1;
  return n;
}

// The arena used to be reserved once, for 8x the start-up limit: a limit
// raised past that failed allocations while the pool was under its limit.
// Page-sized objects are the worst case: one zspage slot (8 pages of
// address space) per page of memory.
TEST(ZsPoolTest, LimitRaisedSixteenFoldGrowsTheArena) {
  constexpr size_t kStartLimit = 1 << 20;
  auto pool = NewPool({.mem_limit = kStartLimit, .arena_bytes = 8 * kStartLimit});
  EXPECT_EQ(pool->arena_segments(), 1u);
  pool->SetMemLimit(16 * kStartLimit);
  std::vector<ZsHandle> handles;
  for (uint64_t i = 0;; ++i) {
    absl::StatusOr<ZsHandle> h = pool->Malloc(4096);
    if (!h.ok()) {
      ASSERT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted);
      // Only the limit stops it: the pool is full.
      EXPECT_EQ(pool->GetStats().mem_used_total, 16 * kStartLimit) << h.status();
      break;
    }
    std::vector<uint8_t> data = Pattern(i, 4096);
    ASSERT_TRUE(pool->Write(*h, data.data(), data.size()).ok());
    handles.push_back(*h);
  }
  EXPECT_EQ(handles.size(), 16 * kStartLimit / 4096);
  EXPECT_GT(pool->arena_segments(), 1u);
  for (uint64_t i = 0; i < handles.size(); i += 41)
    EXPECT_EQ(Get(*pool, handles[i]), Pattern(i, 4096));
  for (ZsHandle h : handles) pool->Free(h);
  EXPECT_EQ(pool->GetStats().objects, 0u);
}

TEST(ZsPoolTest, EveryLengthRoundTrips) {
  auto pool = NewPool();
  std::vector<std::pair<ZsHandle, std::vector<uint8_t>>> objs;
  for (size_t len = 1; len <= 4096; len += 7) objs.emplace_back(ZsHandle{}, Pattern(len, len));
  objs.emplace_back(ZsHandle{}, Pattern(4096, 4096));
  for (auto& [h, data] : objs) h = Put(*pool, data);
  for (auto& [h, data] : objs) EXPECT_EQ(Get(*pool, h), data);
  ZsPoolStats s = pool->GetStats();
  uint64_t total = 0;
  for (auto& [h, data] : objs) total += data.size();
  EXPECT_EQ(s.compr_data_size, total);
  EXPECT_EQ(s.objects, objs.size());
  EXPECT_GE(s.mem_used_total, total);
  for (auto& [h, data] : objs) pool->Free(h);
  s = pool->GetStats();
  EXPECT_EQ(s.compr_data_size, 0u);
  EXPECT_EQ(s.objects, 0u);
  EXPECT_EQ(s.mem_used_total, 0u);
  EXPECT_EQ(s.zspages, 0u);
}

TEST(ZsPoolTest, BadLengthsAreInvalidArgument) {
  auto pool = NewPool();
  EXPECT_EQ(pool->Malloc(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->Malloc(4097).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ZsPoolTest, WriteLongerThanTheAllocationIsRefusedAndOverrunsNothing) {
  // The 2017 zram crash: a page re-compressed after it changed was written
  // into a slot sized by the first compression, overrunning the next slot.
  auto pool = NewPool();
  std::vector<uint8_t> a = Pattern(1, 100), b = Pattern(2, 100);
  ZsHandle ha = Put(*pool, a);
  ZsHandle hb = Put(*pool, b);  // the neighbouring slot of the same class
  std::vector<uint8_t> longer = Pattern(3, 120);
  absl::Status s = pool->Write(ha, longer.data(), longer.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(Get(*pool, ha), a);
  EXPECT_EQ(Get(*pool, hb), b);
}

TEST(ZsPoolTest, DeadHandlesAreNotFound) {
  auto pool = NewPool();
  ZsHandle h = Put(*pool, Pattern(1, 500));
  pool->Free(h);
  EXPECT_EQ(pool->Read(h).status().code(), absl::StatusCode::kNotFound);
  uint8_t byte = 0;
  EXPECT_EQ(pool->Write(h, &byte, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pool->Read(ZsHandle{123456789}).status().code(), absl::StatusCode::kNotFound);
}

TEST(ZsPoolTest, MemoryLimitGivesResourceExhaustedAndKeepsEverything) {
  auto pool = NewPool({.mem_limit = 64 * 4096});
  std::vector<std::pair<ZsHandle, std::vector<uint8_t>>> objs;
  absl::Status last;
  for (uint64_t i = 0; i < 10000; ++i) {
    std::vector<uint8_t> d = Pattern(i, 1000 + i % 2000);
    absl::StatusOr<ZsHandle> h = pool->Malloc(d.size());
    if (!h.ok()) {
      last = h.status();
      break;
    }
    ASSERT_TRUE(pool->Write(*h, d.data(), d.size()).ok());
    objs.emplace_back(*h, std::move(d));
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  EXPECT_LE(pool->GetStats().mem_used_total, 64u * 4096);
  EXPECT_GT(objs.size(), 64u);
  for (auto& [h, d] : objs) EXPECT_EQ(Get(*pool, h), d);  // nothing lost
  // Freeing makes room again; raising the limit does too.
  for (size_t i = 0; i < objs.size() / 2; ++i) pool->Free(objs[i].first);
  pool->Compact();
  EXPECT_TRUE(pool->Malloc(3000).ok());
  pool->SetMemLimit(0);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(pool->Malloc(2000).ok());
}

TEST(ZsPoolTest, HandlesSurviveCompactionAndPagesGoBackToTheOs) {
  auto pool = NewPool();
  std::mt19937_64 rng(42);
  std::map<uint64_t, std::pair<ZsHandle, std::vector<uint8_t>>> live;
  for (uint64_t i = 0; i < 20000; ++i) {
    auto d = Pattern(i, 64 + rng() % 3000);
    live[i] = {Put(*pool, d), d};
  }
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, pool->GetStats().mem_used_total);
  for (auto it = live.begin(); it != live.end();) {
    if (rng() % 2) {
      pool->Free(it->second.first);
      it = live.erase(it);
    } else {
      ++it;
    }
  }
  ZsPoolStats before = pool->GetStats();
  uint64_t freed = pool->Compact();
  ZsPoolStats after = pool->GetStats();
  EXPECT_GT(freed, 0u);
  EXPECT_EQ(after.pages_compacted, freed);
  EXPECT_LT(after.mem_used_total, before.mem_used_total);
  // Half freed + compacted: close to the live bytes again.
  EXPECT_LT(double(after.mem_used_total) / after.compr_data_size, 1.10);
  // mem_used_total is what the OS really gave: the kernel's residency of
  // the arena agrees page for page.
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, after.mem_used_total);
  for (auto& [id, hd] : live) ASSERT_EQ(Get(*pool, hd.first), hd.second) << id;
}

TEST(ZsPoolTest, HugeObjectsTakeOnePageEach) {
  auto pool = NewPool();
  ZsHandle h = Put(*pool, Pattern(9, 4096));
  ZsHandle g = Put(*pool, Pattern(10, pool->huge_class_size()));
  ZsPoolStats s = pool->GetStats();
  EXPECT_EQ(s.huge_pages, 2u);
  EXPECT_EQ(s.mem_used_total, 2u * 4096);
  pool->Free(h);
  pool->Free(g);
  EXPECT_EQ(pool->GetStats().huge_pages, 0u);
}

// Fills two zspages of one class, then leaves `keep` alone in the first and
// half of the second, so that Compact() must move `keep`.
struct MovableSetup {
  ZsHandle keep;
  std::vector<uint8_t> keep_data;
  std::vector<std::pair<ZsHandle, std::vector<uint8_t>>> others;
};
MovableSetup MakeMovable(ZsPool& pool, size_t len) {
  MovableSetup m;
  uint32_t objs = pool.classes().ForSize(uint32_t(len)).objs_per_zspage;
  std::vector<std::pair<ZsHandle, std::vector<uint8_t>>> all;
  for (uint32_t i = 0; i < 2 * objs; ++i) {
    auto d = Pattern(1000 + i, len);
    all.emplace_back(Put(pool, d), d);
  }
  m.keep = all[0].first;
  m.keep_data = all[0].second;
  for (uint32_t i = 1; i < objs; ++i) pool.Free(all[i].first);
  for (uint32_t i = objs; i < 2 * objs; ++i) {
    if (i % 2) {
      pool.Free(all[i].first);
    } else {
      m.others.push_back(all[i]);
    }
  }
  return m;
}

TEST(ZsPoolTest, CompactionBacksOffFromAPinnedZspage) {
  auto pool = NewPool();
  MovableSetup m = MakeMovable(*pool, 1000);
  {
    auto guard = pool->Read(m.keep);
    ASSERT_TRUE(guard.ok());
    const uint8_t* where = guard->data();
    pool->Compact();  // must not move the pinned object
    EXPECT_EQ(guard->data(), where);
    EXPECT_EQ(std::vector<uint8_t>(guard->data(), guard->data() + guard->size()), m.keep_data);
  }
  uint64_t zspages = pool->GetStats().zspages;
  EXPECT_GT(pool->Compact(), 0u);  // unpinned: now it moves and a zspage is freed
  EXPECT_EQ(pool->GetStats().zspages, zspages - 1);
  EXPECT_EQ(Get(*pool, m.keep), m.keep_data);
}

class ZsPoolSyncPointTest : public ::testing::Test {
 protected:
  void TearDown() override { SyncPoints::ClearAll(); }
};

TEST_F(ZsPoolSyncPointTest, ReaderThatResolvedBeforeRelocationReadsTheMovedObject) {
  auto pool = NewPool();
  MovableSetup m = MakeMovable(*pool, 1000);
  uint64_t freed = 0;
  // The reader has resolved the handle to the old zspage; relocation moves
  // the object and frees that zspage before the reader pins it.
  SyncPoints::SetOnce("ZsPool::PinObject:resolved", [&] { freed = pool->Compact(); });
  EXPECT_EQ(Get(*pool, m.keep), m.keep_data);
  EXPECT_GT(freed, 0u);
  for (auto& [h, d] : m.others) EXPECT_EQ(Get(*pool, h), d);
}

TEST_F(ZsPoolSyncPointTest, FreeRacingRelocationFreesTheMovedObject) {
  auto pool = NewPool();
  MovableSetup m = MakeMovable(*pool, 1000);
  uint64_t objects = pool->GetStats().objects;
  // Free resolved the handle (old location); relocation moves the object
  // before Free takes the class lock. Free must release the new slot.
  SyncPoints::SetOnce("ZsPool::Free:resolved", [&] { EXPECT_GT(pool->Compact(), 0u); });
  pool->Free(m.keep);
  ZsPoolStats s = pool->GetStats();
  EXPECT_EQ(s.objects, objects - 1);
  EXPECT_EQ(s.compr_data_size, m.others.size() * 1000);
  for (auto& [h, d] : m.others) EXPECT_EQ(Get(*pool, h), d);
  EXPECT_EQ(pool->Read(m.keep).status().code(), absl::StatusCode::kNotFound);
  for (auto& [h, d] : m.others) pool->Free(h);
  EXPECT_EQ(pool->GetStats().mem_used_total, 0u);
}

TEST_F(ZsPoolSyncPointTest, FreeManyRacingRelocationFreesTheMovedObject) {
  auto pool = NewPool();
  MovableSetup m = MakeMovable(*pool, 1000);
  const uint64_t objects = pool->GetStats().objects;
  // FreeMany resolved the handles' classes; relocation moves `keep` before
  // it takes the class lock. It must release the new slot, once.
  SyncPoints::SetOnce("ZsPool::Free:resolved", [&] { EXPECT_GT(pool->Compact(), 0u); });
  const std::vector<ZsHandle> batch = {m.keep, m.others[0].first};
  pool->FreeMany(batch);
  ZsPoolStats s = pool->GetStats();
  EXPECT_EQ(s.objects, objects - 2);
  EXPECT_EQ(s.compr_data_size, (m.others.size() - 1) * 1000);
  EXPECT_EQ(pool->Read(m.keep).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pool->Read(m.others[0].first).status().code(), absl::StatusCode::kNotFound);
  for (size_t i = 1; i < m.others.size(); ++i)
    EXPECT_EQ(Get(*pool, m.others[i].first), m.others[i].second);
  for (size_t i = 1; i < m.others.size(); ++i) pool->Free(m.others[i].first);
  EXPECT_EQ(pool->GetStats().mem_used_total, 0u);
}

TEST(ZsPoolTest, FreeManyFreesEachObjectOnce) {
  auto pool = NewPool();
  // Objects of many classes, huge ones among them, in no class order.
  std::vector<std::pair<ZsHandle, std::vector<uint8_t>>> all;
  for (uint64_t i = 0; i < 600; ++i) {
    const size_t len = i % 7 == 0 ? 4096 : 32 + (i * 37) % 3000;
    auto d = Pattern(i, len);
    all.emplace_back(Put(*pool, d), d);
  }
  std::vector<ZsHandle> batch;
  uint64_t kept_bytes = 0, kept_huge = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (i % 3 != 1) {
      batch.push_back(all[i].first);
    } else {
      kept_bytes += all[i].second.size();
      kept_huge += all[i].second.size() == 4096;
    }
  }
  pool->FreeMany(batch);
  ZsPoolStats s = pool->GetStats();
  EXPECT_EQ(s.objects, all.size() - batch.size());
  EXPECT_EQ(s.compr_data_size, kept_bytes);
  EXPECT_EQ(s.huge_pages, kept_huge);
  for (size_t i = 0; i < all.size(); ++i) {
    if (i % 3 == 1) {
      EXPECT_EQ(Get(*pool, all[i].first), all[i].second) << i;
    } else {
      EXPECT_EQ(pool->Read(all[i].first).status().code(), absl::StatusCode::kNotFound) << i;
    }
  }
  // Every freed handle slot went back exactly once: as many new objects
  // as were freed get handles, all distinct from the live ones and from
  // each other, and every object keeps its own bytes.
  std::set<uint64_t> handles;
  for (size_t i = 1; i < all.size(); i += 3) handles.insert(all[i].first.value);
  std::vector<std::pair<ZsHandle, std::vector<uint8_t>>> again;
  for (size_t i = 0; i < batch.size(); ++i) {
    auto d = Pattern(10000 + i, 100 + i % 900);
    again.emplace_back(Put(*pool, d), d);
    EXPECT_TRUE(handles.insert(again.back().first.value).second) << "handle handed out twice";
  }
  for (auto& [h, d] : again) EXPECT_EQ(Get(*pool, h), d);
  for (size_t i = 1; i < all.size(); i += 3) EXPECT_EQ(Get(*pool, all[i].first), all[i].second);
  pool->FreeMany({});  // nothing to free: changes nothing
  EXPECT_EQ(pool->GetStats().objects, all.size() - batch.size() + again.size());
}

// FreeMany gives back the pages it empties in every class that reaches
// release_batch_pages, with one system call for many classes (at most 16
// class locks at a time): here 24 classes, so the call is split, and a class
// past the 16th must not be left holding its emptied pages.
TEST(ZsPoolTest, FreeManyReleasesTheEmptiedPagesOfEveryClass) {
  constexpr uint32_t kReleaseBatchPages = 4;
  auto pool = NewPool({.release_batch_pages = kReleaseBatchPages});
  // One full zspage in each of 24 classes whose zspages have at least 6
  // pages, so that keeping only slot 0 leaves 4 or more pages pending.
  std::vector<uint32_t> sizes;
  for (const ZsClassStats& c : pool->GetClassStats()) {
    if (c.pages_per_zspage >= 6 && c.size <= 3000 && sizes.size() < 24) sizes.push_back(c.size);
  }
  ASSERT_EQ(sizes.size(), 24u);
  std::vector<ZsHandle> kept, batch;
  std::vector<std::vector<uint8_t>> kept_data;
  for (uint32_t size : sizes) {
    uint32_t objs = 0;
    for (const ZsClassStats& c : pool->GetClassStats()) {
      if (c.size == size) objs = c.objs_per_zspage;
    }
    for (uint32_t i = 0; i < objs; ++i) {
      auto d = Pattern(uint64_t{size} * 1000 + i, size);
      const ZsHandle h = Put(*pool, d);
      if (i == 0) {
        kept.push_back(h);
        kept_data.push_back(std::move(d));
      } else {
        batch.push_back(h);
      }
    }
  }
  std::map<uint32_t, uint64_t> pages_before;
  for (const ZsClassStats& c : pool->GetClassStats()) pages_before[c.size] = c.pages_used;
  const uint64_t used_before = pool->GetStats().mem_used_total;
  std::reverse(batch.begin(), batch.end());  // not in class order: FreeMany sorts them
  pool->FreeMany(batch);
  uint64_t released = 0;
  for (const ZsClassStats& c : pool->GetClassStats()) {
    if (std::find(sizes.begin(), sizes.end(), c.size) == sizes.end()) continue;
    SCOPED_TRACE(c.size);
    EXPECT_EQ(c.obj_used, 1u);
    // Slot 0 (at most 3000 bytes from the zspage's start) keeps the first
    // page; the 5 or more others were emptied and given back together.
    EXPECT_EQ(c.pages_used, 1u) << "a class's emptied pages were left pending";
    released += pages_before[c.size] - c.pages_used;
  }
  EXPECT_EQ(pool->GetStats().mem_used_total, used_before - released * 4096);
  for (size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(Get(*pool, kept[i]), kept_data[i]) << i;
}

// The model test: random malloc / write / free / compact / read against a
// std::map, seeded so a failure reproduces.
TEST(ZsPoolModelTest, MatchesAMapThroughRandomOperations) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    auto pool = NewPool({.mem_limit = 2 << 20});
    std::mt19937_64 rng(seed);
    std::map<uint64_t, std::pair<ZsHandle, std::vector<uint8_t>>> model;
    uint64_t next_id = 0, sum = 0;
    for (int step = 0; step < 60000; ++step) {
      uint64_t op = rng() % 100;
      if (op < 50) {
        size_t len = rng() % 8 == 0 ? 4096 : 1 + rng() % 3800;
        auto d = Pattern(next_id, len);
        absl::StatusOr<ZsHandle> h = pool->Malloc(len);
        if (!h.ok()) {
          ASSERT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted);
          continue;
        }
        ASSERT_TRUE(pool->Write(*h, d.data(), len).ok());
        model[next_id++] = {*h, d};
        sum += len;
      } else if (op < 85 && !model.empty()) {
        auto it = model.lower_bound(rng() % next_id);
        if (it == model.end()) it = model.begin();
        if (op < 72) {
          pool->Free(it->second.first);
          sum -= it->second.second.size();
          model.erase(it);
        } else if (op < 75) {  // several at once, from wherever `it` stands
          std::vector<ZsHandle> batch;
          for (uint64_t k = 1 + rng() % 24; k > 0 && it != model.end(); --k) {
            batch.push_back(it->second.first);
            sum -= it->second.second.size();
            it = model.erase(it);
          }
          pool->FreeMany(batch);
        } else {  // rewrite in place with a shorter-or-equal new content
          auto d = Pattern(next_id++, it->second.second.size());
          ASSERT_TRUE(pool->Write(it->second.first, d.data(), d.size()).ok());
          it->second.second = d;
        }
      } else if (op < 87) {
        pool->Compact();
      } else if (!model.empty()) {
        auto it = model.lower_bound(rng() % next_id);
        if (it == model.end()) it = model.begin();
        ASSERT_EQ(Get(*pool, it->second.first), it->second.second);
      }
    }
    ZsPoolStats s = pool->GetStats();
    EXPECT_EQ(s.objects, model.size());
    EXPECT_EQ(s.compr_data_size, sum);
    EXPECT_LE(s.mem_used_max, 2u << 20);
    for (auto& [id, hd] : model) ASSERT_EQ(Get(*pool, hd.first), hd.second);
    pool->Compact();
    EXPECT_EQ(ResidentArenaPages(*pool) * 4096, pool->GetStats().mem_used_total);
    for (auto& [id, hd] : model) pool->Free(hd.first);
    EXPECT_EQ(pool->GetStats().mem_used_total, 0u);
  }
}

// --- the empty-zspage cache ------------------------------------------------------

// Puts n objects of `len` bytes with ids from `first`; returns the handles.
std::vector<ZsHandle> PutMany(ZsPool& pool, uint64_t first, int n, size_t len) {
  std::vector<ZsHandle> hs;
  for (int i = 0; i < n; ++i) hs.push_back(Put(pool, Pattern(first + i, len)));
  return hs;
}

void ExpectContents(const ZsPool& pool, const std::vector<ZsHandle>& hs, uint64_t first,
                    size_t len) {
  for (size_t i = 0; i < hs.size(); ++i) ASSERT_EQ(Get(pool, hs[i]), Pattern(first + i, len)) << i;
}

TEST(ZsPoolEmptyCacheTest, EmptiedZspagesStayCommittedAndTheNextMallocsReuseThem) {
  auto pool = NewPool({.empty_cache_pages = 1024});
  std::vector<ZsHandle> hs = PutMany(*pool, 0, 200, 2000);
  const uint64_t used = pool->GetStats().mem_used_total;
  for (ZsHandle h : hs) pool->Free(h);
  ZsPoolStats s = pool->GetStats();
  EXPECT_EQ(s.objects, 0u);
  EXPECT_EQ(s.mem_used_total, used);  // nothing went back to the OS...
  EXPECT_EQ(s.mem_cached, used);      // ...it is all cache
  EXPECT_EQ(pool->mem_in_use_bytes(), 0u);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, used);
  // The same objects again fit in the cached pages exactly: no page more.
  hs = PutMany(*pool, 1000, 200, 2000);
  s = pool->GetStats();
  EXPECT_EQ(s.mem_used_total, used);
  EXPECT_EQ(s.mem_cached, 0u);
  EXPECT_EQ(pool->mem_in_use_bytes(), used);
  ExpectContents(*pool, hs, 1000, 2000);
  // Another class takes the cached zspages of this one.
  for (ZsHandle h : hs) pool->Free(h);
  std::vector<ZsHandle> small = PutMany(*pool, 2000, 300, 700);
  s = pool->GetStats();
  // Its chains are of another length, so each new zspage inherits part of
  // one cached zspage: some pages are reused, fewer are new than it holds.
  EXPECT_LT(s.mem_cached, used);
  EXPECT_EQ(s.mem_used_total, s.mem_cached + pool->mem_in_use_bytes());
  EXPECT_LT(s.mem_used_total - used, pool->mem_in_use_bytes());
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, s.mem_used_total);
  ExpectContents(*pool, small, 2000, 700);
}

TEST(ZsPoolEmptyCacheTest, CompactKeepsOrDrainsTheCacheAsAsked) {
  auto pool = NewPool({.empty_cache_pages = 1024});
  std::vector<ZsHandle> hs = PutMany(*pool, 0, 100, 3000);
  ZsHandle keep = Put(*pool, Pattern(7, 3000));
  for (ZsHandle h : hs) pool->Free(h);
  const uint64_t cached = pool->GetStats().mem_cached;
  ASSERT_GT(cached, 0u);
  pool->Compact(ZsPool::CompactMode::kKeepEmptyCache);
  EXPECT_GE(pool->GetStats().mem_cached, cached);
  pool->Compact();  // kReleaseAll
  ZsPoolStats s = pool->GetStats();
  EXPECT_EQ(s.mem_cached, 0u);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, s.mem_used_total);
  EXPECT_LE(s.mem_used_total, 2u * 4096);  // what `keep` needs
  EXPECT_EQ(Get(*pool, keep), Pattern(7, 3000));
  // Turning the cache off drains it too.
  hs = PutMany(*pool, 500, 100, 3000);
  for (ZsHandle h : hs) pool->Free(h);
  ASSERT_GT(pool->GetStats().mem_cached, 0u);
  pool->SetEmptyCacheLimit(0);
  EXPECT_EQ(pool->GetStats().mem_cached, 0u);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, pool->GetStats().mem_used_total);
}

TEST(ZsPoolEmptyCacheTest, TheCacheStaysWithinItsBound) {
  auto pool = NewPool({.empty_cache_pages = 8});
  std::vector<ZsHandle> hs = PutMany(*pool, 0, 200, 2000);
  for (ZsHandle h : hs) pool->Free(h);
  ZsPoolStats s = pool->GetStats();
  EXPECT_GT(s.mem_cached, 0u);
  EXPECT_LE(s.mem_cached, 8u * 4096);
  EXPECT_EQ(s.mem_used_total, s.mem_cached);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, s.mem_used_total);
}

// The cache is memory within the limit: a Malloc that would pass the limit
// gives it back to the OS first and succeeds, whatever class it is for.
TEST(ZsPoolEmptyCacheTest, AMallocAtTheLimitDrainsTheCacheInsteadOfFailing) {
  constexpr uint64_t kLimitPages = 64;
  auto pool = NewPool({.mem_limit = kLimitPages * 4096, .empty_cache_pages = kLimitPages});
  std::vector<ZsHandle> big;
  for (uint64_t i = 0;; ++i) {
    absl::StatusOr<ZsHandle> h = pool->Malloc(3000);
    if (!h.ok()) {
      ASSERT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted);
      break;
    }
    big.push_back(*h);
  }
  for (ZsHandle h : big) pool->Free(h);
  ASSERT_EQ(pool->GetStats().mem_cached, pool->GetStats().mem_used_total);
  // Now fill with objects of a class whose chains differ: most of the limit
  // is usable again.
  std::vector<std::pair<ZsHandle, std::vector<uint8_t>>> small;
  for (uint64_t i = 0;; ++i) {
    std::vector<uint8_t> d = Pattern(i, 500);
    absl::StatusOr<ZsHandle> h = pool->Malloc(d.size());
    if (!h.ok()) {
      ASSERT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted);
      break;
    }
    ASSERT_TRUE(pool->Write(*h, d.data(), d.size()).ok());
    small.emplace_back(*h, std::move(d));
  }
  EXPECT_GT(small.size(), kLimitPages * 4096 / 512 * 9 / 10);
  EXPECT_LE(pool->GetStats().mem_used_max, kLimitPages * 4096);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, pool->GetStats().mem_used_total);
  for (auto& [h, d] : small) ASSERT_EQ(Get(*pool, h), d);
}

// ReleaseBatch: zspages emptied inside one stay charged, and their ids
// unused, until the batch releases them. A zspage handed out again before
// its release would have its new objects zeroed by it: the new objects'
// contents below are that check.
TEST(ZsPoolReleaseBatchTest, EmptiedZspagesStayUnusedUntilReleasedAndThenLeave) {
  auto pool = NewPool();
  // Page-sized objects: one zspage each, so every Free empties one (smaller
  // objects empty pages inside zspages first, which go back to the OS under
  // their class lock, batch or not).
  constexpr int kObjects = 40;
  static_assert(kObjects < ZsPool::kReleaseBatchZspages);
  std::vector<ZsHandle> hs = PutMany(*pool, 0, kObjects, 4096);
  const uint64_t used = pool->GetStats().mem_used_total;
  ASSERT_EQ(used, uint64_t{kObjects} * 4096);
  std::vector<ZsHandle> fresh;
  {
    ZsPool::ReleaseBatch batch(*pool);
    ZsPool::ReleaseBatch nested(*pool);  // a no-op: the outer one batches
    for (ZsHandle h : hs) pool->Free(h);
    // Fewer zspages than a batch holds: none released yet, none in use.
    EXPECT_EQ(pool->GetStats().mem_used_total, used);
    EXPECT_EQ(pool->mem_in_use_bytes(), 0u);
    EXPECT_EQ(ResidentArenaPages(*pool) * 4096, used);
    // New objects go to new zspages, not to those.
    fresh = PutMany(*pool, 1000, kObjects, 4096);
    EXPECT_EQ(pool->GetStats().mem_used_total, 2 * used);
    EXPECT_EQ(pool->mem_in_use_bytes(), used);
  }
  EXPECT_EQ(pool->GetStats().mem_used_total, used);
  EXPECT_EQ(pool->mem_in_use_bytes(), used);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, used);
  ExpectContents(*pool, fresh, 1000, 4096);
  // The released ids are handed out again now.
  std::vector<ZsHandle> again = PutMany(*pool, 5000, kObjects, 4096);
  EXPECT_EQ(pool->GetStats().mem_used_total, 2 * used);
  EXPECT_EQ(pool->GetStats().zspages, 2u * kObjects);
  ExpectContents(*pool, fresh, 1000, 4096);
  ExpectContents(*pool, again, 5000, 4096);
}

// A full batch releases at once; Compact() releases an outer batch before it
// returns (writeback reads the watermarks after it), and so does a Malloc
// that meets the limit (the batch's pages count against it), and
// draining the empty-page cache, also when it is empty.
TEST(ZsPoolReleaseBatchTest, AFullBatchCompactAndTheLimitReleaseWhatIsPending) {
  auto pool = NewPool();
  // Page-sized objects: one zspage each, so every Free empties one.
  std::vector<ZsHandle> hs = PutMany(*pool, 0, 300, 4096);
  const uint64_t used = pool->GetStats().mem_used_total;
  ASSERT_EQ(used, 300u * 4096);
  ZsPool::ReleaseBatch batch(*pool);
  for (size_t i = 0; i < ZsPool::kReleaseBatchZspages - 1; ++i) pool->Free(hs[i]);
  EXPECT_EQ(pool->GetStats().mem_used_total, used);
  pool->Free(hs[ZsPool::kReleaseBatchZspages - 1]);  // the batch is full now
  EXPECT_EQ(pool->GetStats().mem_used_total, used - ZsPool::kReleaseBatchZspages * 4096);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, pool->GetStats().mem_used_total);

  for (size_t i = ZsPool::kReleaseBatchZspages; i < 100; ++i) pool->Free(hs[i]);
  EXPECT_EQ(pool->GetStats().mem_used_total, used - ZsPool::kReleaseBatchZspages * 4096);
  pool->Compact(ZsPool::CompactMode::kKeepEmptyCache);
  EXPECT_EQ(pool->GetStats().mem_used_total, 200u * 4096);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, 200u * 4096);

  // Draining an empty cache (SetEmptyCacheLimit(0) drains) still releases
  // the thread's batch.
  ASSERT_EQ(pool->GetStats().mem_cached, 0u);
  for (size_t i = 100; i < 105; ++i) pool->Free(hs[i]);
  EXPECT_EQ(pool->GetStats().mem_used_total, 200u * 4096);
  pool->SetEmptyCacheLimit(0);
  EXPECT_EQ(pool->GetStats().mem_used_total, 195u * 4096);
  EXPECT_EQ(ResidentArenaPages(*pool) * 4096, 195u * 4096);

  // At the limit: 5 pending pages, and a Malloc that needs one of them.
  for (size_t i = 105; i < 110; ++i) pool->Free(hs[i]);
  pool->SetMemLimit(195 * 4096);
  absl::StatusOr<ZsHandle> h = pool->Malloc(4096);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(pool->GetStats().mem_used_total, 191u * 4096);
  ExpectContents(*pool, std::vector<ZsHandle>(hs.begin() + 110, hs.end()), 110, 4096);
}

}  // namespace
}  // namespace farswap::alloc
