// Heap allocations on the client's data path, counted. Issue "the remote
// path at network speed" asks for pooled operation objects and no heap
// allocation per page in steady state: this binary replaces the global
// operator new (every allocation of the test process: the caller's
// threads, the transport's I/O threads, gRPC's) and counts what a warmed-up
// client makes while it stores and loads pages in batches against real
// farswap-server processes (they allocate in their own processes, not
// counted here).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <new>
#include <vector>

#include "farswap/client/client.h"
#include "farswap/common/page_file.h"
#include "farswap/common/sanitizers.h"
#include "server_process.h"

// Under ASan the test skips (the client's pools keep nothing there) and
// operator new is left to ASan, which pairs every new with its delete
// (FARSWAP_UNDER_ASAN: farswap/common/sanitizers.h).

namespace {

std::atomic<bool> counting{false};
std::atomic<uint64_t> allocations{0};

#if !defined(FARSWAP_UNDER_ASAN)
// CountedAllocationOrNull counts (while counting) and allocates; nullptr
// when out of memory.
void* CountedAllocationOrNull(size_t n) noexcept {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  return std::malloc(n == 0 ? 1 : n);
}

void* CountedAllocation(size_t n) {
  if (void* p = CountedAllocationOrNull(n)) return p;
  throw std::bad_alloc();
}
#endif

}  // namespace

#if !defined(FARSWAP_UNDER_ASAN)
// The replaceable global allocation functions, all through malloc/free so
// any new pairs with any delete (the aligned ones are left to the library:
// nothing on the data path over-aligns).
void* operator new(size_t n) { return CountedAllocation(n); }
void* operator new[](size_t n) { return CountedAllocation(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return CountedAllocationOrNull(n); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return CountedAllocationOrNull(n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#endif

namespace farswap {
namespace {

using testing::ServerProcess;

// StoreAndLoad stores pages [0, pages) from the corpus and loads them back
// (verified), `batch` pages per StoreBatch and per LoadBatch call.
void StoreAndLoad(Client& c, const PageFile& corpus, size_t batch, size_t pages) {
  std::vector<uint8_t> out(batch * kPageSize);
  std::vector<PageWrite> writes;
  std::vector<PageRead> reads;
  writes.reserve(batch);
  reads.reserve(batch);
  for (size_t at = 0; at < pages; at += batch) {
    writes.clear();
    reads.clear();
    for (size_t i = at; i < at + batch && i < pages; ++i) {
      writes.push_back({i, corpus.page(i % corpus.page_count())});
      reads.push_back({i, out.data() + (i - at) * kPageSize});
    }
    for (const absl::Status& s : c.StoreBatch(writes)) ASSERT_TRUE(s.ok()) << s;
    for (const absl::Status& s : c.LoadBatch(reads)) ASSERT_TRUE(s.ok()) << s;
    for (size_t k = 0; k < reads.size(); ++k) {
      ASSERT_EQ(std::memcmp(out.data() + k * kPageSize, writes[k].page, kPageSize), 0)
          << "page " << writes[k].page_no;
    }
  }
}

TEST(ClientAllocationTest, SteadyStateStoresAndLoadsMakeNoHeapAllocationPerPage) {
#if defined(FARSWAP_UNDER_ASAN)
  GTEST_SKIP() << "under ASan the client's pools hand every block back to the heap "
                  "(client/src/recycled_blocks.h), so ASan sees each operation's lifetime";
#endif
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  ClientOptions o;
  for (int i = 0; i < 2; ++i) {
    auto node = ServerProcess::Start({.pool_limit = "64M", .backing_size = ""});
    ASSERT_TRUE(node.ok()) << node.status();
    o.nodes.push_back((*node)->grpc_addr());
    nodes.push_back(std::move(*node));
  }
  o.replicas = 2;  // every store goes to both nodes and waits for both
  o.pages_per_slab = 64;
  o.health_interval = absl::Seconds(60);  // no pings in the counted window
  auto c = Client::Connect(o);
  ASSERT_TRUE(c.ok()) << c.status();
  auto corpus = ReadPageFile(FARSWAP_CORPUS_DIR "/node.pages.zst");
  ASSERT_TRUE(corpus.ok()) << corpus.status();

  // Warm-up: slabs placed, connections made, the op pools' blocks made
  // (for the larger batch: the most operations in flight).
  constexpr size_t kSmall = 8, kLarge = 64, kPages = 2048;
  StoreAndLoad(**c, *corpus, kLarge, kPages);
  StoreAndLoad(**c, *corpus, kSmall, kPages);

  // Allocations per call pair (a StoreBatch and a LoadBatch of the same
  // pages) at two batch sizes. What a call allocates once (its waiter, the
  // BATCH frame, its encoder, the channel's bookkeeping) is the same at
  // both; anything made per page shows as the difference.
  auto per_call_pair = [&](size_t batch) {
    allocations = 0;
    counting = true;
    StoreAndLoad(**c, *corpus, batch, kPages);
    counting = false;
    return double(allocations.load()) / double(kPages / batch);
  };
  // Reported, not bounded: what one-page batch calls cost, all of it per
  // call.
  std::cerr << "one-page batch calls: " << per_call_pair(1) << " allocations per pair\n";

  // A region's fault is one Client::Load. What is left per load is the
  // transport's: the reply frame's payload, owned by its IncomingMessage.
  std::vector<uint8_t> page(kPageSize);
  allocations = 0;
  counting = true;
  for (size_t i = 0; i < kPages; ++i) {
    ASSERT_TRUE((*c)->Load(i, page.data()).ok());
    ASSERT_EQ(std::memcmp(page.data(), corpus->page(i % corpus->page_count()), kPageSize), 0);
  }
  counting = false;
  const double per_load = double(allocations.load()) / double(kPages);
  std::cerr << "Client::Load: " << per_load << " allocations per call\n";
  // It made 10 before the load path kept its operation in flight itself
  // (no callback wrapped in a callback), planned one-page calls inline and
  // the transport reused its per-read buffers.
  EXPECT_LT(per_load, 2.0);
  const double small = per_call_pair(kSmall);
  const double large = per_call_pair(kLarge);
  const double per_page = (large - small) / double(kLarge - kSmall);
  std::cerr << "allocations per StoreBatch+LoadBatch pair (R=2, 2 nodes): " << small << " with "
            << kSmall << " pages, " << large << " with " << kLarge << " pages: " << per_page
            << " per page\n";
  // Before pooling, each page stored and loaded at R=2 cost about 15
  // allocations (its StoreOp and LoadOp, their reply tallies, replica and
  // target lists, frame payload lists grown entry by entry). Slack for gRPC's own
  // threads, which may allocate while the test counts.
  EXPECT_LT(per_page, 0.1);
  EXPECT_GT(small, 0) << "nothing counted: is operator new replaced?";
}

}  // namespace
}  // namespace farswap
