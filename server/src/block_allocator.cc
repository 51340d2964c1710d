#include "farswap/server/block_allocator.h"

#include <bit>
#include <cassert>

#include "absl/strings/str_cat.h"

namespace farswap::server {

BlockAllocator::BlockAllocator(uint64_t block_count)
    : block_count_(block_count), bitmap_((block_count + 63) / 64, 0) {
  // Bits past the end are marked used so the search never returns them.
  if (block_count % 64 != 0) bitmap_.back() = ~uint64_t{0} << (block_count % 64);
}

absl::StatusOr<uint64_t> BlockAllocator::Allocate() {
  MutexLock l(&mu_);
  const uint64_t words = bitmap_.size();
  for (uint64_t i = 0; i < words; ++i) {
    uint64_t w = (cursor_ + i) % words;
    if (bitmap_[w] == ~uint64_t{0}) continue;
    int bit = std::countr_one(bitmap_[w]);
    bitmap_[w] |= uint64_t{1} << bit;
    cursor_ = w;
    used_.fetch_add(1, std::memory_order_relaxed);
    return w * 64 + uint64_t(bit);
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("backing store full: all ", block_count_, " blocks in use"));
}

void BlockAllocator::Free(uint64_t block) {
  MutexLock l(&mu_);
  assert(block < block_count_ && "BlockAllocator::Free of a block past the end");
  if (block >= block_count_) return;
  uint64_t mask = uint64_t{1} << (block % 64);
  assert((bitmap_[block / 64] & mask) && "BlockAllocator::Free of a free block");
  if (!(bitmap_[block / 64] & mask)) return;
  bitmap_[block / 64] &= ~mask;
  used_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace farswap::server
