// farswap-server: one memory node.
//
//   farswap-server [--data-addr HOST:PORT] [--grpc-addr HOST:PORT]
//                  [--pool-limit BYTES] [--backing-file PATH] [--backing-size BYTES]
//                  [--high-watermark F] [--low-watermark F] [--io-threads N]
//                  [--workers N] [--tenants-file PATH] [--ready-file PATH]
//                  [--session-idle-timeout SECONDS] [--node-id NAME] [--log-level LEVEL]
//                  [--metrics-addr HOST:PORT]
//
// README.md ("farswap-server") documents every flag. The node serves the
// data plane (transport/README.md) on --data-addr and the gRPC control
// plane (farswap.v1.MemoryNode, grpc.health.v1.Health, reflection) on
// --grpc-addr; port 0 picks a free port, and --ready-file receives the bound
// addresses as JSON once both listen. SIGTERM or SIGINT shuts it down
// cleanly. Exit status: 0 after a clean shutdown, 1 when it cannot start
// (the reason is logged), 2 for bad flags.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "farswap/common/cli.h"
#include "farswap/common/mutex.h"
#include "farswap/common/status_macros.h"
#include "farswap/server/block_device.h"
#include "farswap/server/data_plane.h"
#include "farswap/server/node_metrics.h"
#include "farswap/server/node_service.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "farswap/transport/transport.h"

namespace farswap::server {
namespace {

// kMemoryNodeService: the gRPC service name whose health this node reports.
constexpr char kMemoryNodeService[] = "farswap.v1.MemoryNode";

constexpr char kUsage[] =
    "usage: farswap-server [flags]\n"
    "  --data-addr HOST:PORT     data plane (default 127.0.0.1:0; port 0 picks one)\n"
    "  --grpc-addr HOST:PORT     gRPC control plane (default 127.0.0.1:0)\n"
    "  --pool-limit BYTES        compressed pool memory limit, K/M/G suffixes (default 256M)\n"
    "  --backing-file PATH       file or block device for LRU writeback (default: none)\n"
    "  --backing-size BYTES      size of a backing file (default 1G)\n"
    "  --high-watermark F        start writeback above F x pool limit (default 0.9)\n"
    "  --low-watermark F         stop writeback at F x pool limit (default 0.8)\n"
    "  --io-threads N            transport event-loop threads (default 2)\n"
    "  --workers N               page-store worker threads (default 2)\n"
    "  --busy-poll-us N          I/O threads poll this long after traffic before sleeping,\n"
    "                            so replies leave without a kernel wake-up (default 0)\n"
    "  --tenants-file PATH       id:secret:quota lines (default: tenant 'default', no secret);\n"
    "                            a quota is rounded up to whole 4 KiB pages\n"
    "  --session-idle-timeout S  close a session that has had no data-plane connection for\n"
    "                            S seconds (checked every second; default 900; 0 = never)\n"
    "  --ready-file PATH         write {\"data_addr\",\"grpc_addr\",\"pid\"} JSON once listening\n"
    "  --node-id NAME            name in stats and logs (default: hostname)\n"
    "  --log-level LEVEL         trace|debug|info|warn|error (default info)\n"
    "  --metrics-addr HOST:PORT  serve Prometheus /metrics there (default: off; port 0 picks one)\n"
    "  --test-corrupt-loads      TEST ONLY: flip a bit in every LOAD reply's payload, to\n"
    "                            exercise clients' checksum verification and failover\n";

struct Flags {
  std::string data_addr = "127.0.0.1:0";
  std::string grpc_addr = "127.0.0.1:0";
  uint64_t pool_limit = 256ull << 20;
  std::string backing_file;
  uint64_t backing_size = 1ull << 30;
  double high_watermark = 0.9;
  double low_watermark = 0.8;
  int io_threads = 2;
  int workers = 2;
  uint64_t busy_poll_us = 0;
  std::string tenants_file;
  uint64_t session_idle_timeout_s = 900;
  std::string ready_file;
  std::string node_id;
  std::string log_level = "info";
  bool test_corrupt_loads = false;
  std::string metrics_addr;  // Prometheus /metrics; empty = off
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  FARSWAP_ASSIGN_OR_RETURN(
      Args a, Args::Parse(argc - 1, argv + 1,
                          {"data-addr", "grpc-addr", "pool-limit", "backing-file", "backing-size",
                           "high-watermark", "low-watermark", "io-threads", "workers",
                           "busy-poll-us", "tenants-file", "session-idle-timeout", "ready-file",
                           "node-id", "log-level", "test-corrupt-loads", "metrics-addr"},
                          {"test-corrupt-loads"}));
  Flags f;
  f.data_addr = a.Get("data-addr", f.data_addr);
  f.grpc_addr = a.Get("grpc-addr", f.grpc_addr);
  FARSWAP_ASSIGN_OR_RETURN(f.pool_limit, a.GetBytes("pool-limit", f.pool_limit));
  f.backing_file = a.Get("backing-file");
  FARSWAP_ASSIGN_OR_RETURN(f.backing_size, a.GetBytes("backing-size", f.backing_size));
  FARSWAP_ASSIGN_OR_RETURN(f.high_watermark, a.GetDouble("high-watermark", f.high_watermark));
  FARSWAP_ASSIGN_OR_RETURN(f.low_watermark, a.GetDouble("low-watermark", f.low_watermark));
  FARSWAP_ASSIGN_OR_RETURN(uint64_t io, a.GetUint("io-threads", 2));
  FARSWAP_ASSIGN_OR_RETURN(uint64_t workers, a.GetUint("workers", 2));
  if (io < 1 || io > 64) return absl::InvalidArgumentError("--io-threads must be 1..64");
  if (workers < 1 || workers > 256) return absl::InvalidArgumentError("--workers must be 1..256");
  f.io_threads = int(io);
  f.workers = int(workers);
  FARSWAP_ASSIGN_OR_RETURN(f.busy_poll_us, a.GetUint("busy-poll-us", 0));
  if (f.busy_poll_us > 1000000) {
    return absl::InvalidArgumentError("--busy-poll-us must be 0..1000000");
  }
  f.tenants_file = a.Get("tenants-file");
  FARSWAP_ASSIGN_OR_RETURN(f.session_idle_timeout_s,
                           a.GetUint("session-idle-timeout", f.session_idle_timeout_s));
  if (f.session_idle_timeout_s > 365ull * 24 * 3600) {
    return absl::InvalidArgumentError("--session-idle-timeout must be 0..31536000 seconds");
  }
  f.ready_file = a.Get("ready-file");
  f.log_level = a.Get("log-level", f.log_level);
  f.test_corrupt_loads = a.Has("test-corrupt-loads");
  f.metrics_addr = a.Get("metrics-addr");
  char host[256] = "farswap";
  gethostname(host, sizeof host - 1);
  f.node_id = a.Get("node-id", host);
  if (!(f.low_watermark > 0 && f.low_watermark < f.high_watermark && f.high_watermark <= 1)) {
    return absl::InvalidArgumentError(
        "watermarks must satisfy 0 < --low-watermark < --high-watermark <= 1");
  }
  if (f.pool_limit < 64 * 1024) return absl::InvalidArgumentError("--pool-limit must be >= 64K");
  return f;
}

// WriteReadyFile writes the JSON atomically (temp file + rename), so a
// watcher never reads half of it.
absl::Status WriteReadyFile(const std::string& path, const std::string& json) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return absl::NotFoundError(absl::StrCat("--ready-file ", path, ": cannot write"));
    f << json << "\n";
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("--ready-file ", path, ": rename failed"));
  }
  return absl::OkStatus();
}

std::string StripTcp(const std::string& addr) {
  return addr.rfind("tcp://", 0) == 0 ? addr.substr(6) : addr;
}

int Serve(const Flags& f) {
  // Block the shutdown signals before any thread starts, so only sigwait
  // below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A ready file left by an earlier run must not pass for this one's.
  if (!f.ready_file.empty()) std::remove(f.ready_file.c_str());

  absl::StatusOr<TenantRegistry> tenants =
      f.tenants_file.empty() ? absl::StatusOr<TenantRegistry>(TenantRegistry::Default())
                             : TenantRegistry::LoadFile(f.tenants_file);
  if (!tenants.ok()) {
    spdlog::error("cannot start: {}", tenants.status().ToString());
    return 1;
  }
  tenants->set_session_idle_timeout(f.session_idle_timeout_s == 0
                                        ? absl::InfiniteDuration()
                                        : absl::Seconds(int64_t(f.session_idle_timeout_s)));
  std::unique_ptr<FileBlockDevice> backing;
  if (!f.backing_file.empty()) {
    auto dev = FileBlockDevice::Open({.path = f.backing_file, .size_bytes = f.backing_size});
    if (!dev.ok()) {
      spdlog::error("cannot start: backing store: {}", dev.status().ToString());
      return 1;
    }
    backing = std::move(*dev);
    spdlog::info("backing store {}: {} blocks of 4 KiB", backing->Describe(),
                 backing->block_count());
  } else {
    spdlog::warn("no --backing-file: no LRU writeback; stores fail when the pool is full");
  }
  PageStoreLimits limits{.pool_limit_bytes = f.pool_limit,
                         .high_watermark = f.high_watermark,
                         .low_watermark = f.low_watermark};
  auto store = PageStore::Create({.limits = limits, .backing = backing.get()});
  if (!store.ok()) {
    spdlog::error("cannot start: page store: {}", store.status().ToString());
    return 1;
  }
  for (const Tenant& t : tenants->tenants()) {
    if (t.quota_bytes != 0) (*store)->SetTenantQuota(t.index, QuotaPagesForBytes(t.quota_bytes));
  }
  auto transport = transport::CreateTransport(
      f.data_addr,
      {.io_threads = f.io_threads, .busy_poll = absl::Microseconds(int64_t(f.busy_poll_us))});
  if (!transport.ok()) {
    spdlog::error("cannot start: transport: {}", transport.status().ToString());
    return 1;
  }
  if (f.test_corrupt_loads) spdlog::warn("--test-corrupt-loads: every LOAD reply is corrupted");
  DataPlaneServer data_plane(store->get(), &*tenants, transport->get(),
                             {.workers = f.workers, .test_corrupt_loads = f.test_corrupt_loads});
  // The data plane's connection handlers point at it, and the transport's
  // I/O threads may call them until the transport's Shutdown returns. So on
  // every way out of here (the early error returns too), stop the data
  // plane (it finishes queued work), then the transport, and only then let
  // data_plane go. Both Shutdowns are idempotent.
  struct StopDataPath {
    DataPlaneServer& data_plane;
    transport::Transport& transport;
    ~StopDataPath() {
      data_plane.Shutdown();
      transport.Shutdown();
    }
  } stop_data_path{data_plane, **transport};
  if (absl::Status s = data_plane.Listen(std::string(transport::StripScheme(f.data_addr)));
      !s.ok()) {
    spdlog::error("cannot start: data plane on {}: {}", f.data_addr, s.ToString());
    return 1;
  }
  const std::string data_addr = StripTcp(data_plane.address());

  MemoryNodeService service(
      store->get(), &*tenants,
      {.node_id = f.node_id, .data_addr = data_addr, .limits = limits, .data_plane = &data_plane});
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(f.grpc_addr, grpc::InsecureServerCredentials(), &grpc_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (!grpc_server || grpc_port == 0) {
    spdlog::error("cannot start: gRPC server could not listen on {}", f.grpc_addr);
    return 1;
  }
  std::string grpc_addr =
      absl::StrCat(f.grpc_addr.substr(0, f.grpc_addr.rfind(':')), ":", grpc_port);
  grpc::HealthCheckServiceInterface* health = grpc_server->GetHealthCheckService();
  health->SetServingStatus(true);
  // The service's own status is what readiness probes and farswapctl ask
  // for; without it set, a check of farswap.v1.MemoryNode answers NOT_FOUND.
  health->SetServingStatus(kMemoryNodeService, true);
  spdlog::info("node {} ready: data plane {}, gRPC {}, pool limit {} bytes", f.node_id, data_addr,
               grpc_addr, f.pool_limit);
  // Prometheus /metrics (node_metrics.h): declared after what it reads, so
  // it stops first.
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> metrics =
      StartNodeMetrics(f.metrics_addr, {.store = store->get(),
                                        .tenants = &*tenants,
                                        .data_plane = &data_plane,
                                        .node_id = f.node_id});
  if (!metrics.ok()) {
    spdlog::error("cannot start: --metrics-addr: {}", metrics.status().ToString());
    return 1;
  }
  if (*metrics) spdlog::info("metrics on http://{}/metrics", (*metrics)->address());
  if (!f.ready_file.empty()) {
    absl::Status s = WriteReadyFile(
        f.ready_file,
        absl::StrCat(
            "{\"data_addr\": \"", data_addr, "\", \"grpc_addr\": \"", grpc_addr, "\"",
            *metrics ? absl::StrCat(", \"metrics_addr\": \"", (*metrics)->address(), "\"") : "",
            ", \"pid\": ", getpid(), "}"));
    if (!s.ok()) {
      spdlog::error("cannot start: {}", s.ToString());
      return 1;
    }
  }

  // Health follows the backing store and draining: a sticky I/O error or a
  // drain makes the node report NOT_SERVING for farswap.v1.MemoryNode
  // (loads of pooled pages still work; a readiness probe takes a draining
  // node out of the Service). The same once-a-second loop closes sessions
  // idle past --session-idle-timeout.
  Mutex stop_mu;
  CondVar stop_cv;
  bool stop = false;
  std::thread health_watch([&] {
    bool healthy = true;
    MutexLock l(&stop_mu);
    while (!stop) {
      const absl::Status backing_health = (*store)->Health();
      const bool draining = (*store)->draining();
      const bool now = backing_health.ok() && !draining;
      if (now != healthy) {
        healthy = now;
        health->SetServingStatus(kMemoryNodeService, healthy);
        spdlog::warn("{} is {}: backing store {}, {}", kMemoryNodeService,
                     healthy ? "SERVING" : "NOT_SERVING", backing_health.ToString(),
                     draining ? "draining" : "not draining");
      }
      if (size_t expired = tenants->ExpireIdleSessions(absl::Now()); expired > 0) {
        spdlog::info("{} idle session(s) expired ({} open)", expired, tenants->session_count());
      }
      stop_cv.WaitWithTimeout(&stop_mu, absl::Seconds(1));  // the polling period
    }
  });

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: shutting down", sig);
  {
    MutexLock l(&stop_mu);
    stop = true;
    stop_cv.SignalAll();
  }
  health_watch.join();
  health->SetServingStatus(false);
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  data_plane.Shutdown();
  (*transport)->Shutdown();
  PageStoreStats stats = (*store)->GetStats();
  spdlog::info("stopped: {} pages stored, {} written back, {} loads, {} stores", stats.stored_pages,
               stats.written_back_pages, stats.loads, stats.stores);
  return 0;
}

}  // namespace
}  // namespace farswap::server

int main(int argc, char** argv) {
  absl::StatusOr<farswap::server::Flags> flags = farswap::server::ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::cerr << "farswap-server: " << flags.status().message() << "\n" << farswap::server::kUsage;
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(flags->log_level));
  spdlog::flush_on(spdlog::level::info);  // one line per state change, visible at once
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ farswap-server[%P] %v");
  return farswap::server::Serve(*flags);
}
