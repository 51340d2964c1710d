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
// these are DATA_LOSS/UNAVAILABLE, counted) and dirty (see above); and the
// xxh3-64 of what the client last stored for each page (`checksums`), so a
// load is verified end to end against what was stored, not only against
// the checksum the node sends back: an older copy that matches its own
// checksum is refused as stale.
//
// Every change of a slab's replica list bumps its `epoch`. A node dropped
// from a slab is told so when it returns (the client's orphan record holds
// the slab and the epoch of the drop): when another replica holds verified
// copies its pages there are stale and are invalidated; when it held the
// only copy and nothing has been placed on the slab since (same epoch), its
// pages are the only good ones and it becomes the slab's replica again.
//
// Thread safety: SlabTable is thread-compatible; the Client guards it with
// its mutex.
#ifndef FARSWAP_CLIENT_SRC_SLAB_TABLE_H_
#define FARSWAP_CLIENT_SRC_SLAB_TABLE_H_

#include <algorithm>
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
  uint64_t epoch = 0;        // bumped on every change of `replicas`
  // checksums[i]: xxh3-64 of the page last stored at index i (valid while
  // present or lost); issued[i]: of the last store sent for it, which a
  // node may serve before its acknowledgement arrives, or
  // kIssuedInvalidate when the last write sent for it was an invalidate.
  std::vector<uint64_t> checksums, issued;
};

// kIssuedInvalidate: Slab::issued's mark for an invalidate sent.
inline constexpr uint64_t kIssuedInvalidate = ~uint64_t{0};

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
  // the node was a replica or filling there; *only_copy (optional) tells
  // whether it was the last replica of a slab with pages.
  bool DropReplica(uint64_t slab, int node, bool* only_copy = nullptr);
  // Dropped is one slab a node was dropped from, for its orphan record.
  struct Dropped {
    uint64_t slab = 0;
    uint64_t epoch = 0;  // the slab's epoch after the drop
    bool only_copy = false;
  };
  // DropNode does DropReplica for every slab and returns those affected.
  std::vector<Dropped> DropNode(int node);

  // UnderReplicated lists slabs with fewer than `r` replicas that count
  // (counts(node) true), at least one replica to copy from (readable(node)
  // true: a draining node still serves loads) and nobody filling, that
  // either hold a present page or sit on a replica that is readable but
  // does not count (a draining node): an empty slab placed there must move
  // too, or every store to it is refused until it does.
  template <typename Counts, typename Readable>
  std::vector<uint64_t> UnderReplicated(int r, Counts counts, Readable readable) const {
    std::vector<uint64_t> out;
    for (const auto& [id, s] : slabs_) {
      int n = 0;
      bool source = false, leaving = false;
      for (int node : s.replicas) {
        const bool c = counts(node), rd = readable(node);
        n += c ? 1 : 0;
        source |= rd;
        leaving |= rd && !c;
      }
      if (source && n < r && s.filling < 0 && (s.present.Any() || leaving)) out.push_back(id);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  // UnderReplicated with every counting replica readable, none other.
  template <typename Live>
  std::vector<uint64_t> UnderReplicated(int r, Live live) const {
    return UnderReplicated(r, live, live);
  }

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
