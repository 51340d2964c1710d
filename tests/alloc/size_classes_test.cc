#include "farswap/alloc/size_classes.h"

#include <gtest/gtest.h>

namespace farswap::alloc {
namespace {

TEST(SizeClassTableTest, MatchesKernelWatermarksWithKernelHeader) {
  // zsmalloc.rst: chain 4 -> 69 classes, watermark 3264; chain 8 -> 3632;
  // chain 16 -> 3840. The kernel adds an 8-byte handle header before the
  // lookup, so its huge_class_size is watermark - 7.
  SizeClassTable t4 = SizeClassTable::Build({.max_pages_per_zspage = 4, .object_header_bytes = 8});
  EXPECT_EQ(t4.classes().size(), 69u);
  EXPECT_EQ(t4.huge_class_size(), 3264u - 7);
  SizeClassTable t8 = SizeClassTable::Build({.max_pages_per_zspage = 8, .object_header_bytes = 8});
  EXPECT_EQ(t8.huge_class_size(), 3632u - 7);
  SizeClassTable t16 =
      SizeClassTable::Build({.max_pages_per_zspage = 16, .object_header_bytes = 8});
  EXPECT_EQ(t16.huge_class_size(), 3840u - 7);
}

TEST(SizeClassTableTest, ZsPoolGeometryHasNoHeader) {
  SizeClassTable t = SizeClassTable::Build({});
  // Without the 8-byte header, a 3632-byte object still fits the largest
  // non-huge class and 3633 is huge.
  EXPECT_EQ(t.huge_class_size(), 3633u);
  EXPECT_FALSE(t.ForSize(3632).huge);
  EXPECT_TRUE(t.ForSize(3633).huge);
  EXPECT_TRUE(t.ForSize(4096).huge);
  EXPECT_EQ(t.ForSize(4096).size, 4096u);
}

TEST(SizeClassTableTest, EverySizeFitsItsClassAndMergedClassesShareGeometry) {
  for (uint32_t chain : {1u, 4u, 8u, 16u}) {
    SizeClassTable t = SizeClassTable::Build({.max_pages_per_zspage = chain});
    for (uint32_t len = 1; len <= kMaxObjectSize; ++len) {
      const SizeClass& c = t.ForSize(len);
      ASSERT_GE(c.size, len) << "chain " << chain;
      ASSERT_LE(c.objs_per_zspage * c.size, c.pages_per_zspage * kZsPageBytes);
      ASSERT_GE(c.objs_per_zspage, 1u);
      ASSERT_LE(c.pages_per_zspage, chain);
      // The class the slot would have on its own spends the same memory
      // per object as the class it is merged into.
      uint32_t slot_size =
          std::min(kMinObjectSize + SizeClassTable::SlotForSize(len) * kClassDelta, kMaxObjectSize);
      uint32_t pages = SizeClassTable::ChainPages(slot_size, chain);
      EXPECT_EQ(pages, c.pages_per_zspage);
      EXPECT_EQ(pages * kZsPageBytes / slot_size, c.objs_per_zspage);
    }
    // Real classes are listed largest first with distinct geometry.
    for (size_t i = 1; i < t.classes().size(); ++i) {
      EXPECT_LT(t.classes()[i].size, t.classes()[i - 1].size);
      EXPECT_FALSE(t.classes()[i].pages_per_zspage == t.classes()[i - 1].pages_per_zspage &&
                   t.classes()[i].objs_per_zspage == t.classes()[i - 1].objs_per_zspage);
    }
  }
}

TEST(SizeClassTableTest, ChainMinimisesTailWaste) {
  // zsmalloc.rst's worked example: a 1568-byte class wastes 96 bytes in a
  // 5-page chain and holds 13 objects.
  EXPECT_EQ(SizeClassTable::ChainPages(1568, 8), 5u);
  EXPECT_EQ(5 * kZsPageBytes / 1568, 13u);
  EXPECT_EQ(SizeClassTable::ChainPages(2048, 8), 1u);  // power of two
  EXPECT_EQ(SizeClassTable::ChainPages(32, 8), 1u);
  for (uint32_t size = 48; size <= 4096; size += 16) {
    uint32_t best = SizeClassTable::ChainPages(size, 8);
    for (uint32_t i = 1; i <= 8; ++i) {
      if ((size & (size - 1)) == 0) break;
      EXPECT_LE((best * kZsPageBytes) % size, (i * kZsPageBytes) % size) << size;
    }
  }
}

TEST(SizeClassTableTest, SlotLookupFollowsKernel) {
  EXPECT_EQ(SizeClassTable::SlotForSize(1), 0u);
  EXPECT_EQ(SizeClassTable::SlotForSize(32), 0u);
  EXPECT_EQ(SizeClassTable::SlotForSize(33), 1u);
  EXPECT_EQ(SizeClassTable::SlotForSize(48), 1u);
  EXPECT_EQ(SizeClassTable::SlotForSize(49), 2u);
  EXPECT_EQ(SizeClassTable::SlotForSize(4096), kClassSlots - 1);
}

}  // namespace
}  // namespace farswap::alloc
