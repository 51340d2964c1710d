// SegmentTable (server/src/segment_table.h) on its own: the parked segments
// that let each writeback thread keep filling a segment across passes.
#include "segment_table.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace farswap::server::internal {
namespace {

constexpr uint64_t kSegmentBytes = 64 << 10;

// Appended gives `open` one live 100-byte object and a block of fill, as a
// batch that wrote one page leaves it (partly filled).
void Appended(SegmentTable& table, OpenSegment& open, uint64_t page) {
  table.AddLive(open.segment,
                {.key = PageKey{1, page}, .gen = page + 1, .offset = 0, .length = 100});
  open.fill = open.flushed = 4096;
}

// Up to max_parked partly filled segments are parked (the last parked is
// checked out first); one more is sealed, and never handed out again while
// it holds live bytes. A parked segment whose last object is dropped is
// freed and leaves the parked ones.
TEST(SegmentTableTest, PartlyFilledSegmentsParkUpToMaxParked) {
  SegmentTable table(/*segment_count=*/8, kSegmentBytes, /*reserve_segments=*/0,
                     /*max_dead_fraction=*/1.0, /*max_parked=*/2);
  std::vector<std::unique_ptr<OpenSegment>> open;
  for (uint64_t i = 0; i < 3; ++i) {
    open.push_back(table.AcquireOpen(/*use_reserve=*/false));
    ASSERT_NE(open.back(), nullptr);
    Appended(table, *open.back(), i);
  }
  const uint64_t a = open[0]->segment, b = open[1]->segment, c = open[2]->segment;
  for (auto& o : open) table.Release(std::move(o));
  EXPECT_EQ(table.free_segments(), 5u);  // two parked and one sealed are not free

  // The parked ones come back, last first, with their fill; then free ones.
  std::unique_ptr<OpenSegment> first = table.AcquireOpen(false);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->segment, b);
  EXPECT_EQ(first->fill, 4096u);
  std::unique_ptr<OpenSegment> second = table.AcquireOpen(false);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->segment, a);
  std::unique_ptr<OpenSegment> third = table.AcquireOpen(false);
  ASSERT_NE(third, nullptr);
  EXPECT_NE(third->segment, c) << "a sealed segment was handed out";
  EXPECT_NE(third->segment, a);
  EXPECT_NE(third->segment, b);
  table.Release(std::move(third));  // empty: freed
  EXPECT_EQ(table.free_segments(), 5u);

  // Park both again; dropping b's only object frees it out of the parked
  // ones, and the next checkout is a.
  table.Release(std::move(first));
  table.Release(std::move(second));
  table.Drop(b, 100);
  EXPECT_EQ(table.free_segments(), 6u);
  std::unique_ptr<OpenSegment> next = table.AcquireOpen(false);
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->segment, a);
  table.Release(std::move(next));
}

// max_parked 1 (one writeback thread) keeps the one slot it always had: a
// second partly filled segment released while the slot is taken is sealed.
TEST(SegmentTableTest, OneParkedSegmentSealsTheSecond) {
  SegmentTable table(/*segment_count=*/4, kSegmentBytes, /*reserve_segments=*/0);
  std::unique_ptr<OpenSegment> x = table.AcquireOpen(false), y = table.AcquireOpen(false);
  ASSERT_NE(x, nullptr);
  ASSERT_NE(y, nullptr);
  Appended(table, *x, 0);
  Appended(table, *y, 1);
  const uint64_t xs = x->segment, ys = y->segment;
  table.Release(std::move(x));
  table.Release(std::move(y));
  std::unique_ptr<OpenSegment> back = table.AcquireOpen(false);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->segment, xs);
  std::unique_ptr<OpenSegment> fresh = table.AcquireOpen(false);
  ASSERT_NE(fresh, nullptr);
  EXPECT_NE(fresh->segment, ys) << "the second was parked, not sealed";
  table.Release(std::move(back));
  table.Release(std::move(fresh));
}

}  // namespace
}  // namespace farswap::server::internal
