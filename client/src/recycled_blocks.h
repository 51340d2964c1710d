// recycled_blocks.h: per-operation objects without a heap allocation per
// page (issue "the remote path at network speed": pooled operation objects).
//
// The client makes one StoreOp and one LoadOp per page and shares each
// between the caller's thread, the transport's reply callbacks and the
// retry thread, so they are std::shared_ptr. make_shared puts the object
// and its reference counts in one heap block; RecycledBlocks keeps those
// blocks when the last reference drops and hands them to the next
// allocate_shared of the same type, so in steady state an operation costs
// a lock hold instead of a malloc/free pair (a StoreOp is ~4.3 KiB, past
// glibc's per-thread cache, and is freed on another thread than the one
// that made it).
//
//   auto blocks = std::make_shared<RecycledBlocks>();
//   std::shared_ptr<StoreOp> op = MakeRecycled<StoreOp>(blocks);
//
// The object is still constructed and destroyed each time; only its memory
// is reused. Blocks of another size than the first one seen go to the heap
// as usual, and at most `max_cached` blocks are kept (the rest are freed),
// so a burst of operations does not pin its peak forever. Under
// AddressSanitizer nothing is kept (kRecycleBlocks): every block goes back
// to the heap, so ASan still sees each operation's lifetime — a use after
// the last reference would otherwise read a recycled object unnoticed.
#ifndef FARSWAP_CLIENT_SRC_RECYCLED_BLOCKS_H_
#define FARSWAP_CLIENT_SRC_RECYCLED_BLOCKS_H_

#include <cstddef>
#include <memory>
#include <new>
#include <vector>

#include "farswap/common/mutex.h"
#include "farswap/common/sanitizers.h"

namespace farswap::client_internal {

#if defined(FARSWAP_UNDER_ASAN)
inline constexpr bool kRecycleBlocks = false;
#else
inline constexpr bool kRecycleBlocks = true;
#endif

// RecycledBlocks is a free list of equally sized heap blocks. Thread-safe:
// blocks are taken on one thread and given back on any other.
class RecycledBlocks {
 public:
  // kDefaultMaxCached: 1024 StoreOps are ~4.4 MiB, more than the operations
  // a client keeps in flight at its default depths (client/README.md, "No heap allocation per
  // page").
  static constexpr size_t kDefaultMaxCached = 1024;

  explicit RecycledBlocks(size_t max_cached = kDefaultMaxCached) : max_cached_(max_cached) {}
  RecycledBlocks(const RecycledBlocks&) = delete;
  RecycledBlocks& operator=(const RecycledBlocks&) = delete;
  ~RecycledBlocks() {
    for (void* b : free_) ::operator delete(b);
  }

  // Take returns a block of `bytes`: a recycled one when `bytes` is the
  // size this list holds (fixed by the first call) and one is free.
  void* Take(size_t bytes) {
    {
      MutexLock l(&mu_);
      if (block_size_ == 0) block_size_ = bytes;
      if (bytes == block_size_ && !free_.empty()) {
        void* b = free_.back();
        free_.pop_back();
        return b;
      }
    }
    return ::operator new(bytes);
  }

  // Give returns a block Take handed out (with the same `bytes`).
  void Give(void* block, size_t bytes) {
    {
      MutexLock l(&mu_);
      if (kRecycleBlocks && bytes == block_size_ && free_.size() < max_cached_) {
        free_.push_back(block);
        return;
      }
    }
    ::operator delete(block);
  }

  size_t cached() const {
    MutexLock l(&mu_);
    return free_.size();
  }

 private:
  const size_t max_cached_;
  mutable Mutex mu_;
  size_t block_size_ ABSL_GUARDED_BY(mu_) = 0;  // 0 until the first Take
  std::vector<void*> free_ ABSL_GUARDED_BY(mu_);
};

// RecyclingAllocator is the allocator MakeRecycled gives allocate_shared:
// single objects come from (and go back to) a RecycledBlocks, arrays from
// the heap. Copies share the list, which lives as long as any copy (the
// control block of every live object holds one).
template <typename T>
class RecyclingAllocator {
 public:
  using value_type = T;

  explicit RecyclingAllocator(std::shared_ptr<RecycledBlocks> blocks)
      : blocks_(std::move(blocks)) {}
  template <typename U>
  RecyclingAllocator(const RecyclingAllocator<U>& other)  // NOLINT: rebinding
      : blocks_(other.blocks()) {}

  T* allocate(size_t n) {
    if (n != 1) return static_cast<T*>(::operator new(n * sizeof(T)));
    return static_cast<T*>(blocks_->Take(sizeof(T)));
  }
  void deallocate(T* p, size_t n) {
    if (n != 1) {
      ::operator delete(p);
      return;
    }
    blocks_->Give(p, sizeof(T));
  }

  const std::shared_ptr<RecycledBlocks>& blocks() const { return blocks_; }
  template <typename U>
  bool operator==(const RecyclingAllocator<U>& other) const {
    return blocks_ == other.blocks();
  }

 private:
  std::shared_ptr<RecycledBlocks> blocks_;
};

// MakeRecycled is make_shared<T>() with its block from `blocks`.
template <typename T>
std::shared_ptr<T> MakeRecycled(const std::shared_ptr<RecycledBlocks>& blocks) {
  return std::allocate_shared<T>(RecyclingAllocator<T>(blocks));
}

}  // namespace farswap::client_internal

#endif  // FARSWAP_CLIENT_SRC_RECYCLED_BLOCKS_H_
