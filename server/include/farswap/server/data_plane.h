// data_plane.h: the memory node's data plane — frames from the transport
// turned into page-store operations, and replies back.
//
//   DataPlaneServer dp(&store, &tenants, transport.get(), {.workers = 2});
//   FARSWAP_RETURN_IF_ERROR(dp.Listen("127.0.0.1:0"));
//   std::string where = dp.address();   // "tcp://127.0.0.1:41234"
//
// Sessions. A connection's first frame must be HELLO with a session token
// from the control plane's Attach; the reply is OK, or UNAUTHENTICATED
// followed by closing the connection. Any other frame before a successful
// HELLO gets an UNAUTHENTICATED reply and the connection is closed. After
// HELLO, every page the connection names belongs to the session's tenant:
// page numbers are tenant-scoped, so no frame can reach another tenant's
// pages.
//
// Requests. STORE, LOAD, INVALIDATE, INVALIDATE_RANGE and PING, alone or in
// a BATCH (whose reply is a BATCH of the sub-replies, in order). Replies
// echo the request id and carry the page store's status code with its
// message (RESOURCE_EXHAUSTED with the reason, NOT_FOUND, DATA_LOSS, ...).
// HELLO is handled on the transport's I/O thread (it is a map lookup, and
// it must complete before the frames behind it); everything else runs on a
// small worker pool, because a store may wait for writeback and a load may
// read the backing store, and I/O threads must not block. Replies may
// therefore leave in a different order than requests came: clients match
// them by request id.
//
// Malformed frames never get here: the transport validates every header and
// closes the connection with the reason.
//
// Thread safety: DataPlaneServer is safe for concurrent use; Shutdown must
// not run on a transport I/O thread.
#ifndef FARSWAP_SERVER_DATA_PLANE_H_
#define FARSWAP_SERVER_DATA_PLANE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "farswap/common/mutex.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "farswap/transport/transport.h"

namespace farswap::server {

struct DataPlaneOptions {
  int workers = 2;  // threads running page-store operations
  // test_corrupt_loads: TEST ONLY. Flip one bit of every OK LOAD reply's
  // payload (the checksum is left alone), so clients' end-to-end
  // verification and replica failover can be tested against a real node.
  bool test_corrupt_loads = false;
};

struct DataPlaneStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t hello_refused = 0;  // wrong or missing token
  uint64_t requests = 0;       // frames handled (a BATCH counts its entries)
};

class DataPlaneServer {
 public:
  // store, tenants and transport are not owned and must outlive this.
  DataPlaneServer(PageStore* store, TenantRegistry* tenants, transport::Transport* transport,
                  const DataPlaneOptions& options);
  ~DataPlaneServer();
  DataPlaneServer(const DataPlaneServer&) = delete;
  DataPlaneServer& operator=(const DataPlaneServer&) = delete;

  // Listen binds the data-plane address ("host:0" picks a port).
  absl::Status Listen(const std::string& address);
  // address is the bound address, with its scheme ("tcp://127.0.0.1:41234").
  std::string address() const;
  // Shutdown stops accepting, finishes queued work, joins the workers.
  // Idempotent.
  void Shutdown();

  DataPlaneStats stats() const;

 private:
  struct ConnState;
  using Work = std::function<void()>;

  transport::ConnectionHandler Accept(std::shared_ptr<transport::Connection> conn);
  void OnReceive(const std::shared_ptr<ConnState>& state,
                 std::span<transport::IncomingMessage> messages);
  void Enqueue(Work work);
  void WorkerLoop();
  // Handle runs one request (not HELLO, not BATCH) for `tenant`; the reply's
  // payload is appended to *payload (which must stay alive until sent).
  transport::FrameHeader Handle(uint32_t tenant, const transport::FrameHeader& request,
                                std::span<const uint8_t> payload, std::vector<uint8_t>* out);
  void HandleAndReply(const std::shared_ptr<ConnState>& state, transport::IncomingMessage msg);

  PageStore* const store_;
  TenantRegistry* const tenants_;
  transport::Transport* const transport_;
  const DataPlaneOptions options_;
  std::unique_ptr<transport::Listener> listener_;

  Mutex mu_;
  CondVar work_cv_;
  std::deque<Work> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;

  std::atomic<uint64_t> accepted_{0}, open_{0}, hello_refused_{0}, requests_{0};
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_DATA_PLANE_H_
