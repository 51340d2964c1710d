// block_allocator.h: which blocks of the backing store are in use.
//
// A free-block bitmap, as zram keeps for its backing device
// (zram_reserve_bdev_block / zram_release_bdev_block): one bit per 4 KiB
// block, a next-fit cursor so consecutive writebacks land on consecutive
// blocks, and a count of used blocks.
//
//   BlockAllocator blocks(device->block_count());
//   absl::StatusOr<uint64_t> b = blocks.Allocate();   // RESOURCE_EXHAUSTED when full
//   blocks.Free(*b);
#ifndef FARSWAP_SERVER_BLOCK_ALLOCATOR_H_
#define FARSWAP_SERVER_BLOCK_ALLOCATOR_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "farswap/common/mutex.h"

namespace farswap::server {

// BlockAllocator is safe for concurrent use from any number of threads.
class BlockAllocator {
 public:
  explicit BlockAllocator(uint64_t block_count);

  // Allocate reserves a free block. RESOURCE_EXHAUSTED when every block is
  // in use.
  absl::StatusOr<uint64_t> Allocate();
  // Free releases a block. Freeing a free or out-of-range block asserts in
  // debug builds and is ignored in release builds.
  void Free(uint64_t block);

  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t capacity() const { return block_count_; }

 private:
  const uint64_t block_count_;
  Mutex mu_;
  std::vector<uint64_t> bitmap_ ABSL_GUARDED_BY(mu_);  // bit set = block in use
  uint64_t cursor_ ABSL_GUARDED_BY(mu_) = 0;           // word index to search from
  std::atomic<uint64_t> used_{0};
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_BLOCK_ALLOCATOR_H_
