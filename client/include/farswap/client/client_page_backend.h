// client_page_backend.h: farswap::Client as the far-memory region's
// PageBackend, so a Region pages through real memory nodes (with placement,
// replicas, checksums and failover).
//
//   auto client = Client::Connect(options).value();
//   ClientPageBackend backend(client.get());
//   auto region = Region::Create(&backend, 1 << 30, {.local_budget = 256 << 20}).value();
//
// Thread safety: as the Client (safe for concurrent use); the Client must
// outlive this.
#ifndef FARSWAP_CLIENT_CLIENT_PAGE_BACKEND_H_
#define FARSWAP_CLIENT_CLIENT_PAGE_BACKEND_H_

#include <span>
#include <vector>

#include "farswap/client/client.h"
#include "farswap/client/page_backend.h"

namespace farswap {

class ClientPageBackend final : public PageBackend {
 public:
  explicit ClientPageBackend(Client* client) : client_(client) {}

  // The region hands over a page that cannot change during the call (it is
  // write-protected or a private copy), so the client skips its own copy.
  absl::StatusOr<size_t> Store(uint64_t page_no, const uint8_t* page) override {
    size_t wire = 0;
    absl::Status s = client_->Store(page_no, page, SnapshotMode::kStable, &wire);
    if (!s.ok()) return s;
    return wire;
  }
  absl::StatusOr<size_t> Load(uint64_t page_no, uint8_t* out) override {
    size_t wire = 0;
    absl::Status s = client_->Load(page_no, out, &wire);
    if (!s.ok()) return s;
    return wire;
  }
  absl::Status Invalidate(uint64_t page_no) override { return client_->Invalidate(page_no); }

  // The batches go out as one BATCH frame per node (Client::StoreBatch).
  void StoreBatch(std::span<const uint64_t> page_nos, std::span<const uint8_t* const> pages,
                  std::span<absl::StatusOr<size_t>> results) override {
    std::vector<PageWrite> writes(page_nos.size());
    for (size_t i = 0; i < writes.size(); ++i) writes[i] = {page_nos[i], pages[i]};
    std::vector<size_t> wire(writes.size(), 0);
    std::vector<absl::Status> s = client_->StoreBatch(writes, SnapshotMode::kStable, wire.data());
    for (size_t i = 0; i < writes.size(); ++i) {
      results[i] = s[i].ok() ? absl::StatusOr<size_t>(wire[i]) : absl::StatusOr<size_t>(s[i]);
    }
  }
  void LoadBatch(std::span<const uint64_t> page_nos, std::span<uint8_t* const> outs,
                 std::span<absl::StatusOr<size_t>> results) override {
    std::vector<PageRead> reads(page_nos.size());
    for (size_t i = 0; i < reads.size(); ++i) reads[i] = {page_nos[i], outs[i]};
    std::vector<size_t> wire(reads.size(), 0);
    std::vector<absl::Status> s = client_->LoadBatch(reads, wire.data());
    for (size_t i = 0; i < reads.size(); ++i) {
      results[i] = s[i].ok() ? absl::StatusOr<size_t>(wire[i]) : absl::StatusOr<size_t>(s[i]);
    }
  }

 private:
  Client* const client_;
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_CLIENT_PAGE_BACKEND_H_
