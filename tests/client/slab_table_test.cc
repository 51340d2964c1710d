// Placement and the slab table: rendezvous ranking is stable and moves only
// what it must, replicas are distinct, losing the last replica marks pages
// lost, and under-replicated slabs are found.
#include "slab_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace farswap::client_internal {
namespace {

std::vector<Candidate> Nodes(int n) {
  std::vector<Candidate> c;
  for (int i = 0; i < n; ++i) c.push_back({i, NodeKey("10.0.0." + std::to_string(i) + ":7001")});
  return c;
}

TEST(SlabTableTest, PlacesEverySlabOnRDistinctNodesSpreadEvenly) {
  SlabTable t(1024);
  std::vector<Candidate> nodes = Nodes(4);
  std::map<int, int> per_node;
  for (uint64_t slab = 0; slab < 4000; ++slab) {
    ASSERT_EQ(t.Place(slab, 2, nodes), 2u);
    const Slab& s = *t.Find(slab);
    ASSERT_NE(s.replicas[0], s.replicas[1]);
    for (int r : s.replicas) per_node[r]++;
  }
  for (auto& [node, n] : per_node) EXPECT_NEAR(n, 2000, 200) << node;  // 8000 copies / 4
}

TEST(SlabTableTest, RemovingANodeMovesOnlyTheSlabsThatRankedItFirst) {
  std::vector<Candidate> four = Nodes(4);
  std::vector<Candidate> three(four.begin(), four.begin() + 3);  // node 3 leaves
  int moved = 0;
  for (uint64_t slab = 0; slab < 2000; ++slab) {
    int before = RendezvousRank(slab, four)[0];
    int after = RendezvousRank(slab, three)[0];
    if (before != 3) {
      EXPECT_EQ(before, after) << slab;
    } else {
      moved++;
    }
    EXPECT_EQ(RendezvousRank(slab, four), RendezvousRank(slab, four));  // deterministic
  }
  EXPECT_NEAR(moved, 500, 100);
}

TEST(SlabTableTest, LosingTheLastReplicaMarksPresentPagesLost) {
  SlabTable t(8);
  std::vector<Candidate> nodes = Nodes(3);
  t.Place(0, 2, nodes);
  Slab& s = *t.Find(0);
  s.present.Set(1);
  s.present.Set(5);
  int a = s.replicas[0], b = s.replicas[1];
  const uint64_t placed_epoch = s.epoch;
  std::vector<SlabTable::Dropped> dropped = t.DropNode(a);
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0].slab, 0u);
  EXPECT_FALSE(dropped[0].only_copy);  // b still holds the slab
  EXPECT_GT(dropped[0].epoch, placed_epoch);
  auto all_live = [](int) { return true; };
  EXPECT_EQ(t.UnderReplicated(2, all_live), std::vector<uint64_t>{0});
  // A replica that is not live (suspect) is not a source to copy from.
  EXPECT_TRUE(t.UnderReplicated(2, [&](int n) { return n != b; }).empty());
  // A draining replica does not count towards R but is still copied from:
  // with R=1 and its only replica draining, the slab must move.
  auto not_b = [&](int n) { return n != b; };
  EXPECT_EQ(t.UnderReplicated(1, not_b, all_live), std::vector<uint64_t>{0});
  EXPECT_TRUE(t.UnderReplicated(1, all_live, all_live).empty());  // b counts: R=1 is met
  EXPECT_EQ(t.LostPages(), 0u);
  bool only_copy = false;
  EXPECT_TRUE(t.DropReplica(0, b, &only_copy));
  EXPECT_TRUE(only_copy);
  EXPECT_TRUE(s.replicas.empty());
  EXPECT_EQ(t.LostPages(), 2u);
  EXPECT_TRUE(s.lost.Get(1) && s.lost.Get(5) && !s.present.Any());
  EXPECT_TRUE(t.UnderReplicated(2, all_live).empty());  // nothing left to copy from
  // A slab with no replica is placed afresh on the next store.
  EXPECT_EQ(t.Place(0, 2, nodes), 2u);
}

// An empty slab on a draining node (readable, not counting towards R)
// moves too: every store to it is refused there until it does. An empty
// slab on a suspect node (not readable) waits; nor does an empty slab on a
// counting replica need anything.
TEST(SlabTableTest, EmptySlabOnADrainingNodeIsMovedToo) {
  SlabTable t(8);
  std::vector<Candidate> nodes = Nodes(3);
  t.Place(7, 1, nodes);
  const int on = t.Find(7)->replicas[0];
  auto all = [](int) { return true; };
  auto not_on = [&](int n) { return n != on; };
  EXPECT_EQ(t.UnderReplicated(1, not_on, all), std::vector<uint64_t>{7});
  EXPECT_TRUE(t.UnderReplicated(1, not_on, not_on).empty());
  EXPECT_TRUE(t.UnderReplicated(1, all, all).empty());
}

TEST(SlabTableTest, ASlabWithDataIsNotReplacedByPlace) {
  SlabTable t(8);
  std::vector<Candidate> nodes = Nodes(3);
  t.Place(0, 2, nodes);
  Slab& s = *t.Find(0);
  s.present.Set(0);
  t.DropReplica(0, s.replicas[0]);
  EXPECT_EQ(t.Place(0, 2, nodes), 1u);  // re-replication's job, with a copy
  s.present.ClearAll();
  EXPECT_EQ(t.Place(0, 2, nodes), 2u);  // empty: topped up at once
  std::set<int> distinct(s.replicas.begin(), s.replicas.end());
  EXPECT_EQ(distinct.size(), 2u);
}

TEST(PageBitsTest, IndicesAndCounts) {
  PageBits b(130);
  for (uint32_t i : {0u, 63u, 64u, 129u}) b.Set(i);
  EXPECT_EQ(b.Indices(), (std::vector<uint32_t>{0, 63, 64, 129}));
  EXPECT_EQ(b.Count(), 4u);
  b.Clear(63);
  EXPECT_FALSE(b.Get(63));
  b.ClearAll();
  EXPECT_FALSE(b.Any());
}

}  // namespace
}  // namespace farswap::client_internal
