#include "slab_table.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>

namespace farswap::client_internal {

void PageBits::ClearAll() { std::fill(words_.begin(), words_.end(), 0); }

bool PageBits::Any() const {
  return std::any_of(words_.begin(), words_.end(), [](uint64_t w) { return w != 0; });
}

uint32_t PageBits::Count() const {
  uint32_t n = 0;
  for (uint64_t w : words_) n += uint32_t(std::popcount(w));
  return n;
}

std::vector<uint32_t> PageBits::Indices() const {
  std::vector<uint32_t> out;
  for (size_t w = 0; w < words_.size(); ++w) {
    uint64_t bits = words_[w];
    while (bits != 0) {
      out.push_back(uint32_t(w * 64 + std::countr_zero(bits)));
      bits &= bits - 1;
    }
  }
  return out;
}

uint64_t NodeKey(const std::string& address) { return XXH3_64bits(address.data(), address.size()); }

std::vector<int> RendezvousRank(uint64_t slab, std::span<const Candidate> candidates) {
  std::vector<std::pair<uint64_t, int>> scored;
  scored.reserve(candidates.size());
  for (const Candidate& c : candidates) {
    scored.emplace_back(XXH3_64bits_withSeed(&slab, sizeof slab, c.key), c.node);
  }
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<int> out;
  out.reserve(scored.size());
  for (const auto& s : scored) out.push_back(s.second);
  return out;
}

SlabTable::SlabTable(uint32_t pages_per_slab) : pages_per_slab_(pages_per_slab) {}

Slab* SlabTable::Find(uint64_t slab) {
  auto it = slabs_.find(slab);
  return it == slabs_.end() ? nullptr : &it->second;
}

Slab& SlabTable::GetOrCreate(uint64_t slab) {
  auto [it, inserted] = slabs_.try_emplace(slab);
  if (inserted) {
    it->second.present = PageBits(pages_per_slab_);
    it->second.lost = PageBits(pages_per_slab_);
    it->second.dirty = PageBits(pages_per_slab_);
    it->second.checksums.assign(pages_per_slab_, 0);
    it->second.issued.assign(pages_per_slab_, 0);
  }
  return it->second;
}

size_t SlabTable::Place(uint64_t slab, int r, std::span<const Candidate> candidates) {
  Slab& s = GetOrCreate(slab);
  // A slab with no replica is (re)placed at once (its old pages, if any,
  // are already counted lost); one with data is topped up by re-replication.
  if (int(s.replicas.size()) >= r ||
      (!s.replicas.empty() && (s.present.Any() || s.writes_in_flight > 0 || s.filling >= 0))) {
    return s.replicas.size();
  }
  for (int node : RendezvousRank(slab, candidates)) {
    if (int(s.replicas.size()) >= r) break;
    if (std::find(s.replicas.begin(), s.replicas.end(), node) == s.replicas.end()) {
      s.replicas.push_back(node);
      s.epoch++;
    }
  }
  return s.replicas.size();
}

bool SlabTable::DropReplica(uint64_t slab, int node, bool* only_copy) {
  if (only_copy != nullptr) *only_copy = false;
  Slab* s = Find(slab);
  if (s == nullptr) return false;
  bool had = false;
  if (s->filling == node) {
    s->filling = -1;
    had = true;
  }
  auto it = std::find(s->replicas.begin(), s->replicas.end(), node);
  if (it != s->replicas.end()) {
    s->replicas.erase(it);
    s->epoch++;
    had = true;
    if (s->replicas.empty()) {
      if (only_copy != nullptr) *only_copy = s->present.Any();
      // Nobody holds a complete copy any more: what was present is lost.
      // (A node still filling holds only part of it, so it goes too.)
      for (uint32_t i : s->present.Indices()) s->lost.Set(i);
      s->present.ClearAll();
      s->dirty.ClearAll();
      s->filling = -1;
    }
  }
  return had;
}

std::vector<SlabTable::Dropped> SlabTable::DropNode(int node) {
  std::vector<Dropped> affected;
  for (auto& [id, s] : slabs_) {
    bool only_copy = false;
    if (DropReplica(id, node, &only_copy)) {
      affected.push_back({.slab = id, .epoch = s.epoch, .only_copy = only_copy});
    }
  }
  return affected;
}

uint64_t SlabTable::SlabsOn(int node) const {
  uint64_t n = 0;
  for (const auto& [id, s] : slabs_) {
    n += std::find(s.replicas.begin(), s.replicas.end(), node) != s.replicas.end();
  }
  return n;
}

uint64_t SlabTable::LostPages() const {
  uint64_t n = 0;
  for (const auto& [id, s] : slabs_) n += s.lost.Count();
  return n;
}

}  // namespace farswap::client_internal
