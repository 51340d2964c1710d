// Concurrent malloc / free / read / write / compact on one pool, every read
// verified. Runs under ThreadSanitizer in CI.
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "farswap/alloc/zspool.h"

namespace farswap::alloc {
namespace {

// Each object's bytes are derived from (owner thread, sequence number,
// length), and its first 8 bytes hold the sequence number, so a reader can
// check an object without shared state.
void Fill(uint8_t* p, size_t len, uint64_t tag) {
  uint64_t x = tag * 0x9E3779B97F4A7C15ull + len;
  for (size_t i = 0; i < len; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[i] = uint8_t(x);
  }
}

// RunChurn: kThreads threads malloc, write, read back and free against one
// pool at its limit while another compacts; `empty_cache_pages` as in
// ZsPoolOptions (the compactor then alternates keeping and draining it).
// With `release_batches`, every other worker frees inside a
// ZsPool::ReleaseBatch, as writeback does, so zspages wait in batches while
// the other threads allocate, and its Mallocs at the limit flush its batch.
void RunChurn(uint32_t empty_cache_pages, bool release_batches = false) {
  auto created = ZsPool::Create({.mem_limit = 8 << 20,
                                 .arena_bytes = size_t{1} << 30,
                                 .empty_cache_pages = empty_cache_pages});
  ASSERT_TRUE(created.ok());
  ZsPool& pool = **created;
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 40000;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> verified{0}, bad{0}, exhausted{0};

  auto worker = [&](int t) {
    std::optional<ZsPool::ReleaseBatch> batch;
    if (release_batches && t % 2 == 0) batch.emplace(pool);
    std::mt19937_64 rng(t + 1);
    struct Obj {
      ZsHandle h;
      uint64_t tag;
      size_t len;
    };
    std::vector<Obj> mine;
    std::vector<uint8_t> buf(4096), expect(4096);
    for (int op = 0; op < kOpsPerThread; ++op) {
      uint64_t r = rng() % 10;
      if (r < 4 || mine.empty()) {
        size_t len = rng() % 16 == 0 ? 4096 : 1 + rng() % 3700;
        absl::StatusOr<ZsHandle> h = pool.Malloc(len);
        if (!h.ok()) {
          exhausted++;
          if (!mine.empty()) {  // make room
            pool.Free(mine.back().h);
            mine.pop_back();
          }
          continue;
        }
        uint64_t tag = (uint64_t(t) << 48) | uint64_t(op);
        Fill(buf.data(), len, tag);
        ASSERT_TRUE(pool.Write(*h, buf.data(), len).ok());
        mine.push_back({*h, tag, len});
      } else if (r < 7 && t % 2 == 1 && mine.size() > 8) {
        // Odd threads free several at once (as writeback publishes a
        // round), beside the others' single Frees and Compact.
        std::vector<ZsHandle> several;
        for (size_t k = 1 + rng() % 8; k > 0; --k) {
          size_t i = rng() % mine.size();
          several.push_back(mine[i].h);
          mine[i] = mine.back();
          mine.pop_back();
        }
        pool.FreeMany(several);
      } else if (r < 7) {
        size_t i = rng() % mine.size();
        pool.Free(mine[i].h);
        mine[i] = mine.back();
        mine.pop_back();
      } else {
        const Obj& o = mine[rng() % mine.size()];
        Fill(expect.data(), o.len, o.tag);
        absl::StatusOr<ZsPool::ReadGuard> g = pool.Read(o.h);
        ASSERT_TRUE(g.ok());
        bool same = g->size() == o.len && std::memcmp(g->data(), expect.data(), o.len) == 0;
        (same ? verified : bad)++;
      }
    }
    for (const Obj& o : mine) {
      Fill(expect.data(), o.len, o.tag);
      auto g = pool.Read(o.h);
      ASSERT_TRUE(g.ok());
      (std::memcmp(g->data(), expect.data(), o.len) == 0 ? verified : bad)++;
    }
    for (const Obj& o : mine) pool.Free(o.h);
  };
  std::thread compactor([&] {
    for (uint64_t n = 0; !stop.load(); ++n) {
      pool.Compact(n % 2 == 0 ? ZsPool::CompactMode::kKeepEmptyCache
                              : ZsPool::CompactMode::kReleaseAll);
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  stop = true;
  compactor.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(verified.load(), uint64_t{kThreads} * kOpsPerThread / 5);
  ZsPoolStats s = pool.GetStats();
  EXPECT_EQ(s.objects, 0u);
  EXPECT_EQ(s.compr_data_size, 0u);
  pool.Compact();
  EXPECT_EQ(pool.GetStats().mem_used_total, 0u);
  EXPECT_EQ(pool.GetStats().mem_cached, 0u);
  EXPECT_LE(s.mem_used_max, uint64_t{8} << 20);  // the cache counts against the limit
  std::printf("verified %llu reads, %llu mallocs hit the limit, %llu pages compacted\n",
              (unsigned long long)verified.load(), (unsigned long long)exhausted.load(),
              (unsigned long long)s.pages_compacted);
}

TEST(ZsPoolConcurrencyTest, MallocFreeReadCompactFromManyThreads) { RunChurn(0); }

// The empty-zspage cache adds a path between classes (a zspage emptied by
// one class's Free is taken by another's Malloc) and a drain from Malloc
// at the limit: same churn, same checks.
TEST(ZsPoolConcurrencyTest, MallocFreeReadCompactFromManyThreadsWithEmptyZspageCache) {
  RunChurn(256);
}

// ReleaseBatches add zspages that are empty but not yet handed out again,
// and compaction that holds several class locks to release pages: same
// churn, same checks (a zspage reused before its release would lose the
// objects written into it, and a read would find zeros).
TEST(ZsPoolConcurrencyTest, MallocFreeReadCompactFromManyThreadsWithReleaseBatches) {
  RunChurn(0, /*release_batches=*/true);
  RunChurn(256, /*release_batches=*/true);
}

}  // namespace
}  // namespace farswap::alloc
