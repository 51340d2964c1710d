// client.h: farswap::Client, the C++ API for storing 4 KiB pages in far
// memory: compressed once from a stable snapshot, checksummed end to end,
// placed in slabs on R memory nodes, failed over and re-replicated when a
// node dies. This header and client_options.h are the public surface.
//
//   ClientOptions o;
//   o.nodes = {"10.0.0.5:7001", "10.0.0.6:7001", "10.0.0.7:7001"};  // gRPC addresses
//   o.tenant_id = "batch-jobs";  o.secret = "...";                      // R defaults to 2
//   std::unique_ptr<Client> c = Client::Connect(o).value();
//   FARSWAP_RETURN_IF_ERROR(c->Store(page_no, page));   // copies the page first
//   FARSWAP_RETURN_IF_ERROR(c->Load(page_no, buf));     // verified, or DATA_LOSS
//   c->StoreAsync(page_no, page, [](absl::Status s) { ... });
//
// Semantics.
//  - Store returns once every live replica of the page's slab has
//    acknowledged it. The page is copied first unless the caller passes
//    SnapshotMode::kStable; either way the caller's buffer is no longer read
//    once Store/StoreAsync returns (the async completion only reports).
//  - Load decodes and verifies the xxh3-64 checksum stored with the page. A
//    bad or unreachable replica is skipped for the next; if none answers
//    with a valid copy it returns DATA_LOSS (some copy failed verification or
//    every copy was lost) or UNAVAILABLE (replicas unreachable), naming the
//    page. NOT_FOUND for a page never stored (or invalidated). Never wrong
//    data.
//  - Errors name the page: "page 4711: ...". Counters are in stats().
//  - Concurrent Store/Load/Invalidate of *different* pages are independent.
//    Concurrent operations on the *same* page have no defined order (the
//    region serialises them per page); each still completes. A Load racing
//    Stores or an Invalidate of its page returns the version last stored
//    when it began, one of the racing Stores' versions, or NOT_FOUND after
//    the Invalidate: never DATA_LOSS because of the race.
//
// Waiting. The synchronous calls spin for ClientOptions::spin_wait on their
// completion before they sleep, so a reply that comes within a round trip
// costs no wake-up of the caller.
//
// Thread safety: a Client is safe for concurrent use from any number of
// threads, with any number of asynchronous operations in flight.
// Completion callbacks run on transport I/O threads (or inline, when an
// operation fails before anything was sent): they must not block, and must
// not call the synchronous API. Destroying the Client completes operations
// still in flight with CANCELLED; it must not run in a callback.
#ifndef FARSWAP_CLIENT_CLIENT_H_
#define FARSWAP_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "farswap/client/client_options.h"
#include "farswap/client/node_attacher.h"

namespace farswap {

// DoneCallback receives an asynchronous operation's result, exactly once.
using DoneCallback = std::function<void(absl::Status)>;

// PageWrite / PageRead name one page of a batch.
struct PageWrite {
  uint64_t page_no = 0;
  const void* page = nullptr;  // 4096 bytes
};
struct PageRead {
  uint64_t page_no = 0;
  void* out = nullptr;  // 4096 bytes
};

// ScrubResult: what one Client::Scrub found.
struct ScrubResult {
  uint64_t pages = 0;  // stored pages whose copies were read
  // copies_checked: copies read (a replica that failed over counts too; a
  // request that timed out or met a closed connection read nothing and
  // does not, though it is retried).
  uint64_t copies_checked = 0;
  uint64_t bad_copies = 0;        // corrupt, stale or missing copies found
  uint64_t copies_repaired = 0;   // of those, rewritten from a verified copy (acknowledged)
  uint64_t repairs_failed = 0;    // refused or unanswered (ABORTED: a newer store won)
  uint64_t repairs_skipped = 0;   // not tried: the page or its slab changed meanwhile
  uint64_t unreadable_pages = 0;  // no intact copy anywhere (their loads would be DATA_LOSS)
};

class Client {
 public:
  // Connect attaches (gRPC Attach, then a data-plane connection and HELLO)
  // to every node in options.nodes and options.dns_name, in parallel. It
  // succeeds when at least one node attached; the others are retried in the
  // background. INVALID_ARGUMENT for bad options, NOT_FOUND for a TLS file
  // (tls_ca_file...) that cannot be read, UNAVAILABLE (with every node's
  // error, e.g. a failed TLS handshake) when no node could be attached.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  // Connect with a given attacher (tests; farswap_client_core users).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options,
                                                         std::unique_ptr<NodeAttacher> attacher);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // wire_bytes (optional) receives the page's encoded length: what one
  // replica's STORE carried, or what the verified LOAD reply carried.
  absl::Status Store(uint64_t page_no, const void* page, SnapshotMode mode = SnapshotMode::kCopy,
                     size_t* wire_bytes = nullptr);
  absl::Status Load(uint64_t page_no, void* out, size_t* wire_bytes = nullptr);
  // Invalidate drops a page; OK whether or not it was stored.
  absl::Status Invalidate(uint64_t page_no);
  // InvalidateRange drops pages [first, first + count).
  absl::Status InvalidateRange(uint64_t first, uint64_t count);

  // Asynchronous variants: `done` runs exactly once. StoreAsync has read the
  // page by the time it returns. LoadAsync writes `out` (which must stay
  // valid until `done` runs) only with verified contents.
  void StoreAsync(uint64_t page_no, const void* page, DoneCallback done,
                  SnapshotMode mode = SnapshotMode::kCopy);
  void LoadAsync(uint64_t page_no, void* out, DoneCallback done);
  void InvalidateAsync(uint64_t page_no, DoneCallback done);

  // Batched variants: every page in flight at once, the pages bound for one
  // node packed into BATCH frames (up to 256 pages a frame), so a batch
  // costs about one round trip per node. Returns one status per entry, in
  // order; a failure of one page fails that entry only. `wire_bytes`, when
  // given, points to pages.size() counters that receive each page's encoded
  // length (as for Store/Load).
  std::vector<absl::Status> StoreBatch(std::span<const PageWrite> pages,
                                       SnapshotMode mode = SnapshotMode::kCopy,
                                       size_t* wire_bytes = nullptr);
  std::vector<absl::Status> LoadBatch(std::span<const PageRead> pages,
                                      size_t* wire_bytes = nullptr);

  // Scrub reads every up replica's copy of each stored page in [first,
  // first + count) once, verifying each end to end, and rewrites every bad,
  // stale or missing copy it finds from a verified one (read repair, see
  // client/README.md): copies that loads never read (the second replica of
  // a page whose first is good) are checked too, so a bad copy does not wait
  // unseen until the good one is lost. Returns once every copy was read and
  // every repair answered. Pages never stored are skipped; a page with no
  // intact copy is counted (unreadable_pages), not an error. It reads about
  // R pages per stored page, 256 pages at a time, beside the caller's own
  // traffic. INVALID_ARGUMENT when the range overflows; CANCELLED once the
  // client is shutting down. ClientOptions::scrub_pages_per_second runs it
  // in the background.
  absl::StatusOr<ScrubResult> Scrub(uint64_t first, uint64_t count);

  // SetNodes replaces the dynamic part of the membership (what DNS
  // re-resolution does): new addresses are attached in the background;
  // addresses no longer listed (and not in options.nodes) are removed like
  // failed nodes, their slabs re-replicated.
  void SetNodes(const std::vector<std::string>& addresses);

  // WaitUntilReplicated blocks until every slab holding pages has R
  // replicas on up nodes (as far as the nodes allow: R, or fewer where fewer
  // nodes are up or suspect, not draining and not quarantined; a suspect node
  // is waited for until it is up again or declared down), or `timeout` passes
  // (DEADLINE_EXCEEDED with how many slabs are short).
  absl::Status WaitUntilReplicated(absl::Duration timeout);
  // WaitUntilNodeUp blocks until the node at `address` is attached and up.
  absl::Status WaitUntilNodeUp(const std::string& address, absl::Duration timeout);

  ClientStats stats() const;
  int replicas() const;

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_CLIENT_H_
