// slab_table.h: where every page lives — the client-side slab table and
// rendezvous placement (gRPC-free; its tests run under TSan).
//
// Design. Pages are grouped into slabs of `pages_per_slab` consecutive page
// numbers. A slab is the unit of placement: it lives on R distinct nodes
// (its replicas), chosen when the slab is first written by rendezvous
// (highest-random-weight) hashing of (slab, node address) over the nodes
// that can take new slabs (up, not full, not draining). Rendezvous hashing
// means a node joining or leaving moves only the slabs that rank it highest,
// and every client computes the same ranking.
//
// The table, not the hash, is the truth: once a slab is placed its replica
// list only changes when a replica is lost (node down, full, draining) or a
// replacement is committed, so membership changes never strand data. A
// lost replica is replaced by re-replication: the replacement is first
// `filling` (it receives every new store of the slab but serves no loads)
// while a copier loads each present page from a surviving replica and
// stores it there; pages written meanwhile are marked dirty when their store
// completes and copied again, and the replacement is committed only when a
// pass ends with no dirty pages and no store in flight. So a copy can never
// leave an older version on the replacement.
//
// Per slab the table keeps three bitsets over its pages: present (stored and
// not invalidated), lost (present when the last replica was lost: loads of
// these are DATA_LOSS/UNAVAILABLE, counted) and dirty (see above).
//
// Thread safety: SlabTable is thread-compatible; the Client guards it with
// its mutex.
#ifndef FARSWAP_CLIENT_SRC_SLAB_TABLE_H_
#define FARSWAP_CLIENT_SRC_SLAB_TABLE_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace farswap::client_internal {

// PageBits is a bitset over the pages of one slab.
class PageBits {
 public:
  explicit PageBits(uint32_t n = 0) : words_((n + 63) / 64, 0) {}
  bool Get(uint32_t i) const { return (words_[i / 64] >> (i % 64)) & 1; }
  void Set(uint32_t i) { words_[i / 64] |= uint64_t{1} << (i % 64); }
  void Clear(uint32_t i) { words_[i / 64] &= ~(uint64_t{1} << (i % 64)); }
  void ClearAll();
  bool Any() const;
  uint32_t Count() const;
  // Indices lists the set bits in increasing order.
  std::vector<uint32_t> Indices() const;

 private:
  std::vector<uint64_t> words_;
};

struct Slab {
  std::vector<int> replicas;  // node ids holding a complete copy
  int filling = -1;           // node id being filled by re-replication, or -1
  PageBits present, lost, dirty;
  int writes_in_flight = 0;  // stores/invalidates issued and not yet completed
};

// Candidate is a node that may take new slabs: its id and the hash of its
// address (its rendezvous identity).
struct Candidate {
  int node = 0;
  uint64_t key = 0;
};

// NodeKey hashes a node's address into its rendezvous identity.
uint64_t NodeKey(const std::string& address);

// RendezvousRank orders candidates for `slab`, best first.
std::vector<int> RendezvousRank(uint64_t slab, std::span<const Candidate> candidates);

class SlabTable {
 public:
  explicit SlabTable(uint32_t pages_per_slab);

  uint32_t pages_per_slab() const { return pages_per_slab_; }
  uint64_t SlabOf(uint64_t page) const { return page / pages_per_slab_; }
  uint32_t IndexOf(uint64_t page) const { return uint32_t(page % pages_per_slab_); }
  uint64_t FirstPage(uint64_t slab) const { return slab * pages_per_slab_; }

  Slab* Find(uint64_t slab);
  // GetOrCreate returns the slab, creating it empty (no replicas).
  Slab& GetOrCreate(uint64_t slab);

  // Place gives `slab` up to `r` replicas, best candidates by rendezvous
  // first, when it has none or holds no data yet (no present page, no write
  // in flight, nobody filling); a slab with data keeps its list and is
  // topped up by re-replication instead. Returns its replica count.
  size_t Place(uint64_t slab, int r, std::span<const Candidate> candidates);

  // DropReplica removes `node` from the slab's replicas and filling. When
  // it held the last replica, present pages become lost. Returns true if
  // the node was a replica or filling there.
  bool DropReplica(uint64_t slab, int node);
  // DropNode does DropReplica for every slab and returns those affected.
  std::vector<uint64_t> DropNode(int node);

  // UnderReplicated lists slabs with at least one present page, fewer than
  // `r` replicas, at least one replica to copy from and nobody filling.
  std::vector<uint64_t> UnderReplicated(int r) const;

  // SlabsOn counts slabs with `node` as a replica.
  uint64_t SlabsOn(int node) const;
  uint64_t LostPages() const;
  size_t size() const { return slabs_.size(); }
  const absl::flat_hash_map<uint64_t, Slab>& slabs() const { return slabs_; }

 private:
  const uint32_t pages_per_slab_;
  absl::flat_hash_map<uint64_t, Slab> slabs_;
};

}  // namespace farswap::client_internal

#endif  // FARSWAP_CLIENT_SRC_SLAB_TABLE_H_
