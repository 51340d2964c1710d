// RecycledBlocks and MakeRecycled (client/src/recycled_blocks.h): blocks
// come back for the next object of the same type, the list keeps no more
// than it may, other sizes go to the heap, and objects made on one thread
// and released on another (as the client's reply callbacks do) are safe —
// TSan runs this.
#include "recycled_blocks.h"

#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <thread>
#include <vector>

namespace farswap::client_internal {
namespace {

struct Op {
  Op() {}  // leaves payload as it is, like StoreOp
  int id = 0;
  std::array<unsigned char, 4096> payload;
};

TEST(RecycledBlocksTest, TheNextObjectReusesTheBlockTheLastOneLeft) {
  auto blocks = std::make_shared<RecycledBlocks>();
  std::shared_ptr<Op> a = MakeRecycled<Op>(blocks);
  a->id = 7;
  const void* where = a.get();
  a.reset();
  EXPECT_EQ(blocks->cached(), kRecycleBlocks ? 1u : 0u);
  std::shared_ptr<Op> b = MakeRecycled<Op>(blocks);
  EXPECT_EQ(b->id, 0) << "constructed afresh";
  if (kRecycleBlocks) {
    EXPECT_EQ(b.get(), where);
  }
  EXPECT_EQ(blocks->cached(), 0u);
}

TEST(RecycledBlocksTest, KeepsAtMostMaxCachedAndOnlyItsOwnSize) {
  if (!kRecycleBlocks) GTEST_SKIP() << "ASan build: nothing is kept";
  auto blocks = std::make_shared<RecycledBlocks>(/*max_cached=*/2);
  std::vector<std::shared_ptr<Op>> ops;
  for (int i = 0; i < 5; ++i) ops.push_back(MakeRecycled<Op>(blocks));
  ops.clear();
  EXPECT_EQ(blocks->cached(), 2u);
  // Another size than the first one seen: heap in, heap out.
  void* other = blocks->Take(64);
  blocks->Give(other, 64);
  EXPECT_EQ(blocks->cached(), 2u);
}

TEST(RecycledBlocksTest, ObjectsOutliveTheirMakerAndCrossThreads) {
  std::vector<std::shared_ptr<Op>> made;
  {
    auto blocks = std::make_shared<RecycledBlocks>();
    for (int i = 0; i < 64; ++i) {
      made.push_back(MakeRecycled<Op>(blocks));
      made.back()->id = i;
    }
  }  // the list lives on in the objects' control blocks
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&made, t] {
      // Each thread releases its share: the blocks go back to a list
      // whose maker is gone.
      for (int i = t; i < 64; i += 4) {
        EXPECT_EQ(made[i]->id, i);
        made[i].reset();
      }
    });
  }
  for (auto& th : threads) th.join();
}

TEST(RecycledBlocksTest, ManyThreadsTakeAndGiveConcurrently) {
  auto blocks = std::make_shared<RecycledBlocks>(/*max_cached=*/16);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&blocks, t] {
      for (int i = 0; i < 2000; ++i) {
        std::shared_ptr<Op> op = MakeRecycled<Op>(blocks);
        op->id = t * 10000 + i;
        op->payload[0] = static_cast<unsigned char>(i);
        std::shared_ptr<Op> other = op;  // handed to "another owner"
        op.reset();
        ASSERT_EQ(other->id, t * 10000 + i);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(blocks->cached(), 16u);
}

}  // namespace
}  // namespace farswap::client_internal
