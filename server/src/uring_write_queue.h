// uring_write_queue.h: a BlockWriteQueue on an io_uring ring (liburing).
// Private to server/.
#ifndef FARSWAP_SERVER_URING_WRITE_QUEUE_H_
#define FARSWAP_SERVER_URING_WRITE_QUEUE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "farswap/server/block_write_queue.h"

namespace farswap::server::internal {

// NewUringWriteQueue sets up a ring of `depth` entries writing to `fd`
// (block_count blocks long). The io_uring_queue_init error (UNAVAILABLE,
// with the errno text) where the kernel or a seccomp filter refuses it.
absl::StatusOr<std::unique_ptr<BlockWriteQueue>> NewUringWriteQueue(int fd, uint64_t block_count,
                                                                    size_t depth, std::string path);

}  // namespace farswap::server::internal

#endif  // FARSWAP_SERVER_URING_WRITE_QUEUE_H_
