#include "farswap/alloc/size_classes.h"

#include <algorithm>
#include <cassert>

namespace farswap::alloc {

uint32_t SizeClassTable::ChainPages(uint32_t size, uint32_t max_pages) {
  if ((size & (size - 1)) == 0) return 1;  // powers of two tile one page exactly
  // calculate_zspage_chain_size(): smallest tail waste, first minimum wins.
  uint32_t best = 1, best_waste = UINT32_MAX;
  for (uint32_t i = 1; i <= max_pages; ++i) {
    uint32_t waste = (i * kZsPageBytes) % size;
    if (waste < best_waste) {
      best_waste = waste;
      best = i;
    }
  }
  return best;
}

uint32_t SizeClassTable::SlotForSize(uint32_t len) {
  if (len <= kMinObjectSize) return 0;
  uint32_t slot = (len - kMinObjectSize + kClassDelta - 1) / kClassDelta;
  return std::min(slot, kClassSlots - 1);
}

SizeClassTable SizeClassTable::Build(const SizeClassOptions& options) {
  assert(options.max_pages_per_zspage >= 1 && options.max_pages_per_zspage <= kMaxChainPages);
  SizeClassTable t;
  t.header_ = options.object_header_bytes;
  t.slot_to_class_.assign(kClassSlots, 0);
  // Walk from the largest slot down, as zs_create_pool() does, merging a
  // slot into the previous (larger) real class when the geometry matches.
  for (int slot = kClassSlots - 1; slot >= 0; --slot) {
    uint32_t size = std::min(kMinObjectSize + uint32_t(slot) * kClassDelta, kMaxObjectSize);
    uint32_t pages = ChainPages(size, options.max_pages_per_zspage);
    uint32_t objs = pages * kZsPageBytes / size;
    bool huge = pages == 1 && objs == 1;
    if (!t.classes_.empty()) {
      const SizeClass& prev = t.classes_.back();
      if (prev.pages_per_zspage == pages && prev.objs_per_zspage == objs) {
        t.slot_to_class_[slot] = uint32_t(t.classes_.size() - 1);
        continue;
      }
      if (prev.huge && !huge) {
        // The first non-huge class: anything larger than it is huge
        // (zs_create_pool: huge_class_size = size - (ZS_HANDLE_SIZE - 1)).
        t.huge_class_size_ = size + 1 - t.header_;
      }
    }
    t.classes_.push_back(SizeClass{uint32_t(slot), size, pages, objs, huge});
    t.slot_to_class_[slot] = uint32_t(t.classes_.size() - 1);
  }
  return t;
}

const SizeClass& SizeClassTable::ForSize(uint32_t len) const {
  return ForSlot(SlotForSize(len + header_));
}

}  // namespace farswap::alloc
