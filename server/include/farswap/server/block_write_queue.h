// block_write_queue.h: asynchronous writes (and reads) of block runs, many
// in flight.
//
//   std::unique_ptr<BlockWriteQueue> q = device->NewWriteQueue(32);
//   FARSWAP_RETURN_IF_ERROR(q->Submit(/*first=*/256, /*count=*/8, buf, /*tag=*/1));
//   FARSWAP_RETURN_IF_ERROR(q->Submit(264, 8, buf + 8 * kBlockSize, 2));
//   q->Start();  // optional: both are on their way before anything waits
//   while (q->in_flight() > 0) {
//     for (const BlockWriteQueue::Completion& c : q->Reap()) { ... c.tag, c.status ... }
//   }
//
// A BlockWriteQueue is what the page store writes segments through
// (writeback.cc): on a file or block device, an io_uring ring (liburing;
// uring_write_queue.cc), so a segment's blocks go to the device as several
// requests at once; elsewhere, or where io_uring_queue_init fails, the
// synchronous form, which writes at Submit with BlockDevice::WriteBlocks
// (so a FaultInjectingBlockDevice's faults reach the caller exactly as
// with WriteBlocks). Completions may come back in any order.
//
// The same queue reads (SubmitRead): the page store's loads of written-back
// pages submit every disk read of a run of loads at once (page_store.cc,
// LoadBatch). The synchronous form reads at SubmitRead with
// BlockDevice::ReadBlocks, so a FaultInjectingBlockDevice's read faults
// reach the caller as a completion with that error. Reads and writes share
// the depth.
//
// Not thread-safe: one thread at a time uses a queue (the page store keeps
// a pool of them). The device must outlive its queues.
#ifndef FARSWAP_SERVER_BLOCK_WRITE_QUEUE_H_
#define FARSWAP_SERVER_BLOCK_WRITE_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace farswap::server {

class BlockDevice;

class BlockWriteQueue {
 public:
  // Completion: one submitted write finished, with its tag and its result
  // (any part of the run may have been written on an error).
  struct Completion {
    uint64_t tag = 0;
    absl::Status status;
  };

  virtual ~BlockWriteQueue() = default;

  // Submit starts writing `count` blocks from `src` to first..first+count-1;
  // `src` must stay valid and unchanged until the write's completion has
  // been reaped. FAILED_PRECONDITION when depth() writes are in flight; an
  // error from Submit means the write was not started and no completion
  // will come for it.
  virtual absl::Status Submit(uint64_t first, uint64_t count, const void* src, uint64_t tag) = 0;
  // SubmitRead starts reading blocks first..first+count-1 into `dst`
  // (count x kBlockSize bytes, block-aligned for an O_DIRECT device), which
  // must stay valid and untouched until the read's completion has been
  // reaped. Errors as for Submit; a read that returns fewer bytes than
  // asked completes with DATA_LOSS.
  virtual absl::Status SubmitRead(uint64_t first, uint64_t count, void* dst, uint64_t tag) = 0;
  // Reap waits until at least one request in flight has completed and returns
  // every completion available, in whatever order they finished. Empty when
  // nothing is in flight.
  virtual std::vector<Completion> Reap() = 0;
  // Start hands every request submitted so far to the device without waiting
  // for any, so they run while the caller prepares more (writeback starts
  // a segment's full requests while it is still appending to it). Without
  // it, writes start at the next Reap. A failure to start is reported by
  // the next Reap. The synchronous form writes at Submit: nothing to do.
  virtual void Start() {}
  // ReapAll waits until every request in flight has completed — one wait,
  // not one per completion — and returns all their completions. Empty when
  // nothing is in flight.
  virtual std::vector<Completion> ReapAll() {
    std::vector<Completion> out;
    while (in_flight() > 0) {
      for (Completion& c : Reap()) out.push_back(std::move(c));
    }
    return out;
  }
  // in_flight: submitted requests whose completions have not been reaped.
  virtual size_t in_flight() const = 0;
  // depth: the most requests (reads and writes) that may be in flight.
  virtual size_t depth() const = 0;
  // engine: "io_uring" or "sync", for stats and logs.
  virtual const char* engine() const = 0;
  // UseRegisteredBuffer names memory that later writes come from (the
  // segment table's buffers, segment_table.h): io_uring registers it with
  // the ring at the first write from it, so such writes (IORING_OP_WRITE_FIXED)
  // no longer pin and unpin the buffer's pages at every request (the issue's
  // "registered buffers"). The region must stay mapped and writable while
  // the queue lives. Best effort: where registration fails (RLIMIT_MEMLOCK
  // without CAP_IPC_LOCK, a kernel without it) the queue logs why once and
  // writes as before. One region per queue; the synchronous form ignores it.
  virtual void UseRegisteredBuffer(const void* base, size_t bytes) {}
  // TakeRegisteredWrites: writes submitted from the registered buffer since
  // the last call (stats: PageStoreStats::registered_writes).
  virtual uint64_t TakeRegisteredWrites() { return 0; }
};

// NewSyncWriteQueue: the synchronous form over `device` (WriteBlocks at
// Submit, ReadBlocks at SubmitRead; completions in submission order).
std::unique_ptr<BlockWriteQueue> NewSyncWriteQueue(BlockDevice* device, size_t depth);

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_BLOCK_WRITE_QUEUE_H_
