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

 private:
  Client* const client_;
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_CLIENT_PAGE_BACKEND_H_
