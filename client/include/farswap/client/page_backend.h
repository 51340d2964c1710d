// page_backend.h: where a far-memory Region keeps the pages it evicts.
//
// PageBackend is the whole contract between the region (region.h) and the
// machinery that moves pages off the machine: store a 4 KiB page under a page
// number, load it back, forget it. The networked farswap::Client (placement,
// replicas, failover) implements it through an adapter; MemoryPageBackend
// below keeps pages in this process for tests and benchmarks, with
// fault-injection hooks.
//
//   MemoryPageBackend backend;
//   absl::StatusOr<size_t> sent = backend.Store(7, page);   // encoded bytes
//   absl::StatusOr<size_t> got = backend.Load(7, out);      // out == page
//
// Page numbers are the region's page indices (0 .. pages-1); a backend shared
// by several regions must be given disjoint numbers by its adapter.
#ifndef FARSWAP_CLIENT_PAGE_BACKEND_H_
#define FARSWAP_CLIENT_PAGE_BACKEND_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "farswap/client/page_codec.h"
#include "farswap/common/mutex.h"

namespace farswap {

// PageBackend stores and loads whole 4 KiB pages. Implementations must be
// safe for concurrent calls from several threads (the region calls it from
// its eviction, fault and prefetch threads at once), including concurrent
// calls for different pages; the region never issues two calls for the same
// page at the same time.
class PageBackend {
 public:
  virtual ~PageBackend() = default;

  // Store keeps a copy of the 4096 bytes at `page` (stable while the call
  // runs) under `page_no`, replacing any earlier copy. Once it returns OK a
  // Load of `page_no` returns exactly these bytes. Returns the bytes the
  // page cost on the wire (its encoded length; 0 for a same-filled page).
  // On error nothing is promised about the earlier copy except that a later
  // successful Load returns either it or this page, never a mix.
  virtual absl::StatusOr<size_t> Store(uint64_t page_no, const uint8_t* page) = 0;

  // Load writes the page stored under `page_no` into `out` (4096 bytes) and
  // returns the bytes received. NOT_FOUND if none is stored; DATA_LOSS if
  // the copy fails its checksum (nothing trustworthy is written to `out`);
  // UNAVAILABLE if no holder of the page can be reached (worth retrying).
  virtual absl::StatusOr<size_t> Load(uint64_t page_no, uint8_t* out) = 0;

  // Invalidate drops the copy of `page_no` (OK if there is none).
  virtual absl::Status Invalidate(uint64_t page_no) = 0;

  // StoreBatch stores pages[i] under page_nos[i] for every i, as Store
  // does, with every page in flight at once, and writes each page's result
  // to results[i]: a failure fails that page only. The spans have equal
  // sizes and name distinct pages. The default calls Store for each page in
  // turn; a networked backend sends them together (one round trip).
  virtual void StoreBatch(std::span<const uint64_t> page_nos, std::span<const uint8_t* const> pages,
                          std::span<absl::StatusOr<size_t>> results) {
    for (size_t i = 0; i < page_nos.size(); ++i) results[i] = Store(page_nos[i], pages[i]);
  }

  // LoadBatch loads page_nos[i] into outs[i] (4096 bytes each) for every i,
  // as Load does, with every page in flight at once; results[i] is that
  // page's result.
  virtual void LoadBatch(std::span<const uint64_t> page_nos, std::span<uint8_t* const> outs,
                         std::span<absl::StatusOr<size_t>> results) {
    for (size_t i = 0; i < page_nos.size(); ++i) results[i] = Load(page_nos[i], outs[i]);
  }
};

// MemoryPageBackend keeps encoded pages in a hash map in this process. Each
// page is encoded once with a PageCodec (lz4 by default) and an xxh3 checksum
// of the original page is kept beside it and checked after every decode
// (DATA_LOSS on mismatch). Thread-safe: one mutex guards the map; encoding
// and decoding run outside it with a codec taken from a small pool.
//
// Fault injection for tests: FailLoads makes loads of chosen pages fail with
// a given status; CorruptPage flips a stored byte (so the checksum check must
// catch it); set_load_hook / set_store_hook run a callback at the start of
// every call (to add latency or to block a call at a known point).
class MemoryPageBackend final : public PageBackend {
 public:
  explicit MemoryPageBackend(const PageCodecOptions& codec_options = {});
  ~MemoryPageBackend() override;

  absl::StatusOr<size_t> Store(uint64_t page_no, const uint8_t* page) override;
  absl::StatusOr<size_t> Load(uint64_t page_no, uint8_t* out) override;
  absl::Status Invalidate(uint64_t page_no) override;

  // FailLoads makes every Load of `page_no` return `status` (not OK) until
  // ClearFailures. `times` < 0 fails forever, otherwise that many loads.
  void FailLoads(uint64_t page_no, absl::Status status, int times = -1);
  void ClearFailures();
  // CorruptPage flips one byte of the stored copy of `page_no`; false if the
  // page is not stored or is same-filled (nothing to flip).
  bool CorruptPage(uint64_t page_no);
  // Hooks run on the calling thread before the operation; set them before
  // the backend is shared between threads (not synchronised with calls).
  void set_load_hook(std::function<void(uint64_t page_no)> hook) { load_hook_ = std::move(hook); }
  void set_store_hook(std::function<void(uint64_t page_no)> hook) { store_hook_ = std::move(hook); }

  struct Stats {
    uint64_t stores = 0, loads = 0, invalidates = 0;
    uint64_t load_failures = 0;    // injected or checksum failures
    uint64_t checksum_errors = 0;  // loads that failed the xxh3 check
    uint64_t pages = 0;            // pages held now
    uint64_t stored_bytes = 0;     // encoded bytes held now
  };
  Stats stats() const;

 private:
  struct Entry {
    EncodedPage encoding;
    uint64_t checksum = 0;  // xxh3 of the original 4096 bytes
    std::vector<uint8_t> bytes;
  };
  struct Failure {
    absl::Status status;
    int remaining;  // < 0: forever
  };
  std::unique_ptr<PageCodec> TakeCodec();
  void ReturnCodec(std::unique_ptr<PageCodec> codec);

  const PageCodecOptions codec_options_;
  std::function<void(uint64_t)> load_hook_, store_hook_;

  mutable Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> pages_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Failure> failures_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<PageCodec>> codecs_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_PAGE_BACKEND_H_
