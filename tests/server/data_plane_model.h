// data_plane_model.h: a stateful differential driver for the memory node's
// data plane, shared by data_plane_differential_test and data_plane_fuzzer.
//
//   absl::StatusOr<std::unique_ptr<DataPlaneHarness>> h = DataPlaneHarness::Start();
//   absl::Status s = (*h)->Run(bytes);   // OK, or INTERNAL naming the first divergence
//
// Three pieces:
//  - OpReader turns any byte stream into choices (as libFuzzer's
//    FuzzedDataProvider does; an exhausted stream reads as zeros), and
//    GenerateOps turns those choices into operations: STORE (1..4096 bytes
//    under any codec, or same-filled; a version lower than, equal to or
//    higher than the page's last, or 0), LOAD, INVALIDATE, INVALIDATE_RANGE
//    (1..100 pages, or a huge count that takes the store's ordered-walk
//    path), PING and BATCH (1..20 of those), each from one of two tenants.
//    Pages are mostly 0..63, so operations collide, plus a few far pages
//    (up to UINT64_MAX). Page payloads are expanded from a 64-bit seed, so
//    a short input still stores whole pages.
//  - DataPlaneModel is what the node must answer: a map (tenant, page) ->
//    page with the node's rules (transport/README.md "Page versions",
//    page_store.h): a STORE below the stored version is ABORTED and changes
//    nothing, an equal or higher one replaces; a new page past the tenant's
//    page quota is RESOURCE_EXHAUSTED; LOAD of a missing page is NOT_FOUND;
//    INVALIDATE and INVALIDATE_RANGE drop pages (missing ones are no error).
//  - DataPlaneHarness is a real node in this process (page store with a
//    small pool and a backing device, so pages are written back and loads
//    go to the workers; tenant registry; TCP data plane on 127.0.0.1:0) and
//    one client connection per tenant. Run sends each operation over TCP
//    and compares each reply — status, and for an OK LOAD the payload,
//    codec, checksum, version and SAME_FILLED flag; every entry of a BATCH
//    — with the model's prediction. Operations are pipelined in windows of
//    up to kMaxInFlight per connection: the node promises that requests on
//    one connection take effect in order, and the two tenants' pages are
//    disjoint, so the model is exact whatever the interleaving. After the
//    operations, Run loads every page the model holds and compares the
//    node's per-tenant page counts with the model's (so the node holds
//    exactly the model's pages), then invalidates everything, so runs are
//    independent.
//
// Thread safety: a DataPlaneHarness is used by one thread at a time.
#ifndef FARSWAP_TESTS_SERVER_DATA_PLANE_MODEL_H_
#define FARSWAP_TESTS_SERVER_DATA_PLANE_MODEL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "farswap/server/block_device.h"
#include "farswap/server/data_plane.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "farswap/transport/frame.h"
#include "farswap/transport/rpc_channel.h"

namespace farswap::server::testing {

// kTenants: the two tenants, 0 ("alpha", no quota) and 1 ("beta", a quota
// of kBetaQuotaPages pages).
inline constexpr int kTenants = 2;
// kNearPages: the page space most operations use; small, so that stores,
// loads and invalidates of one page meet often.
inline constexpr uint64_t kNearPages = 64;
// kFarPages: the other pages an operation may name (edges of the page
// number space).
inline constexpr std::array<uint64_t, 4> kFarPages = {1000, uint64_t{1} << 32, UINT64_MAX - 1,
                                                      UINT64_MAX};
// kBetaQuotaPages: tenant 1's page quota; below kNearPages + kFarPages so
// that runs reach it.
inline constexpr uint64_t kBetaQuotaPages = 24;
static_assert(kBetaQuotaPages < kNearPages);
// kMaxBatchOps: sub-operations per generated BATCH.
inline constexpr size_t kMaxBatchOps = 20;
// kMaxInFlight: requests a connection may have outstanding in one window.
inline constexpr size_t kMaxInFlight = 16;

// OpReader hands out choices from a byte stream, front to back; once the
// bytes run out every choice is its lowest value and exhausted() is true.
class OpReader {
 public:
  explicit OpReader(std::span<const uint8_t> data) : data_(data) {}
  bool exhausted() const { return pos_ >= data_.size(); }
  uint8_t Byte();
  uint64_t U64();
  // InRange returns a value in [lo, hi], uniform for random bytes.
  uint64_t InRange(uint64_t lo, uint64_t hi);
  bool OneIn(uint8_t n) { return Byte() % n == 0; }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

enum class OpKind { kStore, kLoad, kInvalidate, kInvalidateRange, kPing, kBatch };

// Op is one request (a BATCH holds its entries in `batch`).
struct Op {
  OpKind kind = OpKind::kPing;
  int tenant = 0;
  uint64_t page = 0;
  // STORE
  std::vector<uint8_t> payload;  // also PING's
  transport::Codec codec = transport::Codec::kNone;
  uint64_t checksum = 0;
  uint64_t version = 0;  // also a conditional INVALIDATE's
  bool same_filled = false;
  uint64_t fill = 0;
  // INVALIDATE_RANGE
  uint64_t count = 0;
  // BATCH
  std::vector<Op> batch;
  // wait: the sender collects every outstanding reply after this one.
  bool wait = true;

  // Header is the request frame's header (payload_length is set on send).
  transport::FrameHeader Header() const;
  // RequestPayload is the bytes after the header (for a BATCH, its entries).
  std::vector<uint8_t> RequestPayload() const;
  std::string Describe() const;
};

// GenerateOps reads up to max_ops operations from `reader`, stopping early
// when it is exhausted.
std::vector<Op> GenerateOps(OpReader& reader, size_t max_ops);

// ModelPage is a stored page as the model keeps it.
struct ModelPage {
  std::vector<uint8_t> payload;  // empty for a same-filled page
  transport::Codec codec = transport::Codec::kNone;
  uint64_t checksum = 0;
  uint64_t version = 0;
  bool same_filled = false;
  uint64_t fill = 0;
};

// Expected is the reply the node must send to one (non-BATCH) request.
struct Expected {
  absl::StatusCode code = absl::StatusCode::kOk;
  // For an OK LOAD: the page. For an OK PING: its payload.
  ModelPage page;
};

// DataPlaneModel predicts the node's replies; it is not thread-safe.
class DataPlaneModel {
 public:
  // Apply runs one non-BATCH op against the model and returns the reply
  // the node must send.
  Expected Apply(const Op& op);
  const ModelPage* Find(int tenant, uint64_t page) const;
  uint64_t PageCount(int tenant) const;
  const std::map<std::pair<int, uint64_t>, ModelPage>& Pages() const { return pages_; }
  void Clear() { pages_.clear(); }

 private:
  std::map<std::pair<int, uint64_t>, ModelPage> pages_;
};

// DataPlaneHarness is an in-process node with one connection per tenant.
class DataPlaneHarness {
 public:
  // Start starts the node and connects. corrupt_loads starts it with
  // DataPlaneOptions::test_corrupt_loads, to show that divergence is seen.
  static absl::StatusOr<std::unique_ptr<DataPlaneHarness>> Start(bool corrupt_loads = false);
  ~DataPlaneHarness();
  DataPlaneHarness(const DataPlaneHarness&) = delete;
  DataPlaneHarness& operator=(const DataPlaneHarness&) = delete;

  // Run generates up to max_ops operations from `input`, runs them against
  // the node and the model, sweeps, and leaves the node empty. OK, or
  // INTERNAL describing the first divergence (op index, op, expected, got).
  absl::Status Run(std::span<const uint8_t> input, size_t max_ops = 1000);
  // Reset invalidates every page of both tenants and checks none is left.
  absl::Status Reset();

  PageStore& store() { return *store_; }
  const DataPlaneServer& server() const { return *server_; }

 private:
  DataPlaneHarness() = default;
  struct Pending;
  // Send starts `op` on its tenant's connection.
  void Send(const Op& op, size_t index, std::vector<Pending>* pending);
  // Collect waits for every pending reply and checks it.
  absl::Status Collect(std::vector<Pending>* pending);
  absl::Status Sweep();

  MemoryBlockDevice disk_{4096};  // 16 MiB: every page of a run fits on it
  std::unique_ptr<TenantRegistry> tenants_;
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<transport::Transport> server_transport_, client_transport_;
  std::unique_ptr<DataPlaneServer> server_;
  std::array<std::unique_ptr<transport::RpcChannel>, kTenants> channels_;
  std::array<uint32_t, kTenants> tenant_index_{};
  DataPlaneModel model_;
};

}  // namespace farswap::server::testing

#endif  // FARSWAP_TESTS_SERVER_DATA_PLANE_MODEL_H_
