// memcached_driver.h: the memcached side of `farswap-bench e2e --compare
// memcached` — a memcached process on a free loopback port and a pipelined
// client over the text protocol, so the same pages go through both systems
// with the same threads and depth.
#ifndef FARSWAP_BENCH_MEMCACHED_DRIVER_H_
#define FARSWAP_BENCH_MEMCACHED_DRIVER_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "bench_args.h"
#include "farswap/common/page_file.h"

namespace farswap::bench {

// MemcachedProcess runs `memcached` on 127.0.0.1 with `memory_mb` of cache;
// the destructor kills it. Not thread-safe (one owner).
class MemcachedProcess {
 public:
  static absl::StatusOr<std::unique_ptr<MemcachedProcess>> Start(uint64_t memory_mb, int threads);
  ~MemcachedProcess();
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  uint64_t RssBytes() const;  // VmRSS from /proc

 private:
  MemcachedProcess() = default;
  pid_t pid_ = -1;
  int port_ = 0;
};

// RunMemcached stores every page of `pages` as key "p<i>" (flags 0, 4096
// bytes) from `threads` connections with `depth` requests in flight each,
// then gets every page back and compares; returns the JSON figures.
absl::StatusOr<Json> RunMemcached(const PageFile& pages, int threads, int depth);

}  // namespace farswap::bench

#endif  // FARSWAP_BENCH_MEMCACHED_DRIVER_H_
