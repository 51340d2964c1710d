// Several threads store, replace, load and invalidate random keys while the
// writeback worker and Compact() run against a pool small enough to keep
// writeback busy. Every load is checked against the thread's own model of
// its keys (threads own disjoint keys; the stores they make are the only
// ones to those keys). Runs under ThreadSanitizer in CI.
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "farswap/common/page_file.h"
#include "farswap/common/sanitizers.h"
#include "farswap/server/page_store.h"
#include "page_test_util.h"

namespace farswap::server {
namespace {

using testing::Payload;

#ifdef FARSWAP_UNDER_TSAN
constexpr int kOpsPerThread = 20000;  // TSan is ~10x slower
#else
constexpr int kOpsPerThread = 60000;
#endif
constexpr int kThreads = 4;
constexpr uint64_t kKeysPerThread = 300;

// Payloads: real pages from the corpus, cut to a pseudo-random length (a
// stand-in for what one compression of them would produce), or synthetic
// bytes when the corpus is not there.
class PayloadSource {
 public:
  PayloadSource() {
    absl::StatusOr<PageFile> f =
        ReadPageFile(std::string(FARSWAP_CORPUS_DIR) + "/python.pages.zst");
    if (f.ok()) corpus_ = std::move(*f);
  }
  std::vector<uint8_t> Make(uint64_t version, std::mt19937_64& rng) const {
    size_t len = rng() % 8 == 0 ? 4096 : 1 + rng() % 3500;
    if (corpus_.page_count() == 0) return Payload(version, len);
    const uint8_t* page = corpus_.page(version % corpus_.page_count());
    std::vector<uint8_t> out(page, page + len);
    out[0] ^= uint8_t(version);  // distinct versions of one page differ
    return out;
  }

 private:
  PageFile corpus_;
};

struct ModelPage {
  uint64_t version = 0;  // also the checksum stored with it
  bool same_filled = false;
  uint64_t fill = 0;
  std::vector<uint8_t> bytes;
};

// The parameter is writeback_threads: the writeback thread alone, and with
// two helpers writing back beside it.
class PageStoreStressTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(PageStoreStressTest, ConcurrentOpsWithWritebackAndCompactionMatchTheModel) {
  // A block per key and some: the backing store never fills, but with
  // small segments dead bytes run free segments low, so the cleaner runs
  // concurrently with everything else.
  MemoryBlockDevice ssd(kThreads * kKeysPerThread + 64);
  absl::StatusOr<std::unique_ptr<PageStore>> created = PageStore::Create({
      .limits = {.pool_limit_bytes = 256 << 10, .high_watermark = 0.9, .low_watermark = 0.6},
      .backing = &ssd,
      .store_retries = 16,
      .segment_bytes = 8 * kBlockSize,
      // With helpers, batches small enough that the pool's 40-80 entries
      // are enough for them to join a pass (writeback.cc,
      // kHelperMinBatchesPerThread).
      .writeback_batch_pages = GetParam() > 1 ? 4u : kDefaultWritebackBatchPages,
      .writeback_threads = GetParam(),
  });
  ASSERT_TRUE(created.ok()) << created.status();
  PageStore& store = **created;
  const PayloadSource payloads;

  // How many batches helper threads ran (none with one writeback thread).
  std::atomic<uint64_t> helper_batches{0};
  testing::ScopedSyncPoints clear_sync_points;
  SyncPoints::Set("PageStore::Writeback:helper-batch", [&] { helper_batches++; });
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> mismatches{0}, loads_checked{0}, refused{0};

  auto worker = [&](int t) {
    std::mt19937_64 rng(1234 + t);
    std::vector<std::optional<ModelPage>> model(kKeysPerThread);
    const uint32_t tenant = 1 + t % 2;  // two threads per tenant, disjoint pages
    const uint64_t base = uint64_t(t) * kKeysPerThread;
    uint64_t version = uint64_t(t) << 40;
    for (int op = 0; op < kOpsPerThread; ++op) {
      const uint64_t k = rng() % kKeysPerThread;
      const uint64_t page = base + k;
      const int r = int(rng() % 100);
      if (r < 45) {  // store or replace
        ModelPage m;
        m.version = ++version;
        m.same_filled = rng() % 10 == 0;
        StoreRequest req{.codec = 1, .checksum = m.version};
        if (m.same_filled) {
          m.fill = rng();
          req.same_filled = true;
          req.fill = m.fill;
        } else {
          m.bytes = payloads.Make(m.version, rng);
          req.payload = m.bytes;
        }
        absl::Status s = store.Store(tenant, page, req);
        if (s.ok()) {
          model[k] = std::move(m);
        } else {
          // A refused store leaves the key empty (never the older version).
          ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
          refused++;
          model[k].reset();
        }
      } else if (r < 90) {  // load and check
        absl::StatusOr<LoadedPage> p = store.Load(tenant, page);
        loads_checked++;
        if (!model[k].has_value()) {
          if (p.status().code() != absl::StatusCode::kNotFound) mismatches++;
          continue;
        }
        const ModelPage& m = *model[k];
        if (!p.ok() || p->checksum != m.version || p->same_filled != m.same_filled ||
            (m.same_filled ? p->fill != m.fill : p->payload != m.bytes)) {
          mismatches++;
          ADD_FAILURE() << "thread " << t << " page " << page << " version " << m.version << ": "
                        << (p.ok() ? "wrong data" : p.status().ToString());
        }
      } else if (r < 97) {
        ASSERT_TRUE(store.Invalidate(tenant, page).ok());
        model[k].reset();
      } else {
        const uint64_t n = 1 + rng() % 8;
        ASSERT_TRUE(store.InvalidateRange(tenant, page, n).ok());
        for (uint64_t i = k; i < kKeysPerThread && i < k + n; ++i) model[i].reset();
      }
    }
    // Final sweep: every key matches the model.
    for (uint64_t i = 0; i < kKeysPerThread; ++i) {
      absl::StatusOr<LoadedPage> p = store.Load(tenant, base + i);
      if (!model[i].has_value()) {
        EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound) << "page " << base + i;
      } else {
        ASSERT_TRUE(p.ok()) << p.status();
        EXPECT_EQ(p->checksum, model[i]->version);
        if (!model[i]->same_filled) {
          EXPECT_TRUE(p->payload == model[i]->bytes);
        }
      }
    }
  };

  std::thread compactor([&] {
    while (!stop.load()) {
      store.Compact();
      PageStoreStats st = store.GetStats();
      EXPECT_TRUE(st.health.ok()) << st.health;
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (std::thread& th : threads) th.join();
  stop = true;
  compactor.join();
  // The worker may be mid-pass, holding appended bytes it has not yet
  // counted as a page on disk; compare only once it is idle.
  store.QuiesceWriteback();

  PageStoreStats st = store.GetStats();
  EXPECT_EQ(mismatches.load(), 0u);
  if (GetParam() > 1) {
    EXPECT_GT(helper_batches.load(), 0u) << "the helpers never wrote back";
  } else {
    EXPECT_EQ(helper_batches.load(), 0u);
  }
  EXPECT_GT(st.written_back_pages, 0u) << "the pool limit did not make writeback run";
  EXPECT_GT(st.backing_reads, 0u);
  // Every stored byte is in the pool or live on disk, exactly once: an
  // object counted live twice, or not released, shows here.
  uint64_t stored_bytes = 0;
  for (const TenantStats& t : st.tenants) stored_bytes += t.stored_bytes;
  EXPECT_EQ(st.pool.compr_data_size + st.disk_live_bytes, stored_bytes)
      << "disk bytes leaked or were released twice";
  EXPECT_LE(st.disk_live_bytes, st.disk_held_bytes);
  EXPECT_EQ(st.pages_on_disk == 0, st.disk_live_bytes == 0);
  EXPECT_LE(st.pool.mem_used_total, st.pool.mem_limit);
  EXPECT_LT(refused.load(), uint64_t(kThreads * kOpsPerThread / 100))
      << "stores should wait for writeback, not fail";
  std::printf("stress: cleaner moved %llu pages, freed %llu segments\n",
              (unsigned long long)st.cleaner_moves, (unsigned long long)st.cleaner_segments);
  std::printf("stress: pool_full %llu backing_full %llu io_error %llu\n",
              (unsigned long long)st.rejects[0], (unsigned long long)st.rejects[2],
              (unsigned long long)st.rejects[4]);
  std::printf("stress: %llu helper batches\n", (unsigned long long)helper_batches.load());
  std::printf("stress: %llu loads checked, %llu written back, %llu aborted, %llu refused\n",
              (unsigned long long)loads_checked.load(), (unsigned long long)st.written_back_pages,
              (unsigned long long)st.writeback_aborted, (unsigned long long)refused.load());
}

INSTANTIATE_TEST_SUITE_P(WritebackThreads, PageStoreStressTest, ::testing::Values(1u, 3u),
                         [](const ::testing::TestParamInfo<uint32_t>& param) {
                           return "WritebackThreads" + std::to_string(param.param);
                         });

}  // namespace
}  // namespace farswap::server
