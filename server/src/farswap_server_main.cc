// farswap-server: one memory node.
//
//   farswap-server [--data-addr HOST:PORT] [--transport tcp|ucx] [--advertise-addr HOST:PORT]
//                  [--ucx-data-addr HOST:PORT]
//                  [--grpc-addr HOST:PORT]
//                  [--pool-limit BYTES] [--backing-file PATH] [--backing-size BYTES]
//                  [--segment-size BYTES] [--cleaner-threshold F] [--cleaner-max-dead F]
//                  [--disk-read-cache BYTES] [--writeback-threads N]
//                  [--high-watermark F] [--low-watermark F] [--io-threads N]
//                  [--workers N] [--tenants-file PATH] [--ready-file PATH]
//                  [--session-idle-timeout SECONDS] [--node-id NAME] [--log-level LEVEL]
//                  [--busy-poll-us N] [--test-corrupt-loads[=true|false]]
//                  [--metrics-addr HOST:PORT] [--admin-token-file PATH] [--allow-anonymous]
//                  [--tls-cert PATH --tls-key PATH [--tls-client-ca PATH]]
//                  [--tls-reload-interval SECONDS] [--data-tls]
//                  [--cold-after SECONDS] [--cold-zstd-level N]
//   farswap-server --help | --version
//
// README.md ("farswap-server") documents every flag. The node serves the
// data plane (transport/README.md) on --data-addr and the gRPC control
// plane (farswap.v1.MemoryNode, grpc.health.v1.Health, reflection) on
// --grpc-addr (TLS with --tls-cert: control_plane_tls.h; the data plane too with --data-tls,
// transport/src/tls_context.h); port 0 picks a free port, and
// --ready-file receives the bound addresses as JSON once both listen. SIGTERM or SIGINT shuts it
// down cleanly; SIGHUP, or a change to the file, reloads --tenants-file and --admin-token-file
// (file_watch.h, credential_reloads.h).
// Exit status: 0 after a clean shutdown, 1 when it cannot start (the reason is logged), 2 for
// bad flags (also: no --tenants-file and no
// --allow-anonymous). Flags are parsed by CLI11
// (farswap/common/cli.h); logs go to stderr.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "advertised_address.h"
#include "control_plane_tls.h"
#include "credential_reloads.h"
#include "farswap/common/cli.h"
#include "farswap/common/cpu_idle.h"
#include "farswap/common/mutex.h"
#include "farswap/common/status_macros.h"
#include "farswap/server/block_device.h"
#include "farswap/server/control_plane_auth.h"
#include "farswap/server/data_plane.h"
#include "farswap/server/node_metrics.h"
#include "farswap/server/node_service.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"
#include "farswap/transport/transport.h"
#include "file_watch.h"

namespace farswap::server {
namespace {

// DefaultWritebackThreads: 2 where this process may run on two CPUs or more
// (its affinity mask: a cpuset or taskset narrows it), else 1. On the 2-core
// VM two threads drained 15-39% faster with stores under writeback
// unchanged (server/README.md, "Writeback threads"); on one CPU a helper
// only takes turns with the writeback thread.
uint32_t DefaultWritebackThreads() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (sched_getaffinity(0, sizeof(cpus), &cpus) != 0) return 1;
  return CPU_COUNT(&cpus) >= 2 ? 2 : 1;
}

// kMemoryNodeService: the gRPC service name whose health this node reports.
constexpr char kMemoryNodeService[] = "farswap.v1.MemoryNode";

struct Flags {
  std::string data_addr = "127.0.0.1:0";
  std::string transport;  // "" = --data-addr's scheme (tcp without one)
  std::string advertise_addr;
  std::string ucx_data_addr;  // "": no second (UCX) listener
  std::string grpc_addr = "127.0.0.1:0";
  uint64_t pool_limit = 256ull << 20;
  std::string backing_file;
  uint64_t backing_size = 1ull << 30;
  uint64_t segment_size = 1ull << 20;
  double cleaner_threshold = 0.5;
  double cleaner_max_dead = 0.08;
  uint32_t cleaner_idle_ms = 100;
  uint64_t disk_read_cache = 4ull << 20;
  uint32_t writeback_threads = DefaultWritebackThreads();
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
  std::string metrics_addr;      // Prometheus /metrics; empty = off
  std::string admin_token_file;  // operator credential; empty = none
  bool allow_anonymous = false;  // the "default" tenant, and operators without a token
  // The control plane's TLS material; no cert = plaintext.
  ControlPlaneTlsOptions tls;
  // data_tls: the data plane speaks TLS with the same files.
  bool data_tls = false;
  // The cold zstd tier (PageStoreOptions); 0 = off.
  uint32_t cold_after_s = 0;
  int cold_zstd_level = 5;
};

// AddFlags declares every flag on `app`, bound to `f` (whose values are the
// defaults). README.md ("farswap-server") documents the same list.
void AddFlags(CLI::App& app, Flags& f) {
  app.add_option("--data-addr", f.data_addr, "data plane HOST:PORT (port 0 picks one)")
      ->type_name("HOST:PORT")
      ->capture_default_str();
  app.add_option("--transport", f.transport,
                 "data-plane backend: tcp, or ucx (UCX: RDMA verbs where there is a device, "
                 "else TCP or shared memory; UCX_TLS and UCX_NET_DEVICES choose); default: "
                 "--data-addr's scheme (ucx://HOST:PORT), else tcp")
      ->check(CLI::IsMember({"tcp", "ucx"}));
  app.add_option("--advertise-addr", f.advertise_addr,
                 "data-plane address handed to clients in Attach (default: the bound one; "
                 "required when --data-addr is 0.0.0.0 or ::; port 0 = the bound port)")
      ->type_name("HOST:PORT");
  app.add_option("--ucx-data-addr", f.ucx_data_addr,
                 "also serve the data plane over UCX on HOST:PORT (port 0 picks one), beside a "
                 "tcp --data-addr; Attach hands out both and each client picks "
                 "(ClientOptions::data_transport: UCX when both hosts have an RDMA device). "
                 "Advertised with --advertise-addr's host when that is given")
      ->type_name("HOST:PORT");
  app.add_option("--grpc-addr", f.grpc_addr, "gRPC control plane HOST:PORT")
      ->type_name("HOST:PORT")
      ->capture_default_str();
  app.add_option("--pool-limit", f.pool_limit,
                 "compressed pool memory limit, K/M/G suffixes (default 256M; at least 64K)")
      ->transform(cli::Bytes());
  app.add_option("--backing-file", f.backing_file,
                 "file or block device for LRU writeback (default: none)")
      ->type_name("PATH");
  app.add_option("--backing-size", f.backing_size, "size of a backing file (default 1G)")
      ->transform(cli::Bytes());
  app.add_option("--segment-size", f.segment_size,
                 "unit of the backing store's log: compressed pages are packed into segments "
                 "of this size, each written whole (default 1M; a multiple of 4K, 4K to 2G)")
      ->transform(cli::Bytes());
  app.add_option("--cleaner-threshold", f.cleaner_threshold,
                 "the cleaner reclaims a segment only while its live bytes are below F x its "
                 "size (0 < F <= 1)")
      ->type_name("F")
      ->check(cli::Fraction())
      ->capture_default_str();
  app.add_option("--cleaner-max-dead", f.cleaner_max_dead,
                 "the writeback thread also cleans, once stores and writeback have been quiet for "
                 "--cleaner-idle-ms, while dead bytes exceed F x the bytes the log holds "
                 "(0 < F <= 1; 1 = only when free segments run low)")
      ->type_name("F")
      ->check(cli::Fraction())
      ->capture_default_str();
  app.add_option("--cleaner-idle-ms", f.cleaner_idle_ms,
                 "milliseconds without a store or a writeback pass before the --cleaner-max-dead "
                 "cleaning runs (0: after every pass)")
      ->type_name("MS")
      ->check(CLI::Range(0, 3600 * 1000))
      ->capture_default_str();
  app.add_option("--writeback-threads", f.writeback_threads,
                 "threads a writeback pass runs on: the writeback thread and N-1 helpers, each "
                 "writing its own segment (default: 2 where the process may run on two CPUs or "
                 "more, else 1)")
      ->type_name("N")
      ->check(CLI::Range(1u, farswap::server::kMaxWritebackThreads))
      ->capture_default_str();
  app.add_option(
         "--disk-read-cache", f.disk_read_cache,
         "readahead for loads of written-back pages: a load that reads the backing store "
         "reads up to 256K around its page and keeps the most recently read of it, up to "
         "this much memory (outside --pool-limit), to answer its neighbours' loads "
         "(default 4M; 0: off, each load reads its page's own blocks; at most 1G). A client's "
         "scrub reads the disk, never the cache")
      ->transform(cli::Bytes());
  app.add_option("--high-watermark", f.high_watermark, "start writeback above F x pool limit")
      ->type_name("F")
      ->check(cli::Fraction())
      ->capture_default_str();
  app.add_option("--low-watermark", f.low_watermark, "stop writeback at F x pool limit")
      ->type_name("F")
      ->check(cli::Fraction())
      ->capture_default_str();
  app.add_option("--io-threads", f.io_threads, "transport event-loop threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--workers", f.workers, "page-store worker threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--cold-after", f.cold_after_s,
                 "recompress pool pages not loaded for S seconds (one cold pass every S "
                 "seconds) from lz4 into zstd, keeping the smaller; 0 = off")
      ->type_name("SECONDS")
      ->check(CLI::Range(uint32_t{0}, uint32_t{365} * 24 * 3600))
      ->capture_default_str();
  app.add_option("--cold-zstd-level", f.cold_zstd_level, "zstd level of the cold tier")
      ->type_name("N")
      ->check(CLI::Range(1, 19))
      ->capture_default_str();
  app.add_option("--busy-poll-us", f.busy_poll_us,
                 "I/O threads poll this long after traffic before sleeping, so replies leave "
                 "without a kernel wake-up")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--tenants-file", f.tenants_file,
                 "id:secret:quota lines; a quota is rounded up to whole 4 KiB pages (required "
                 "unless --allow-anonymous, which serves tenant 'default' with no secret)")
      ->type_name("PATH");
  app.add_option("--session-idle-timeout", f.session_idle_timeout_s,
                 "close a session that has had no data-plane connection for S seconds "
                 "(checked every second; 0 = never)")
      ->type_name("S")
      ->check(CLI::Range(uint64_t{0}, uint64_t{365} * 24 * 3600))
      ->capture_default_str();
  app.add_option("--ready-file", f.ready_file,
                 "write {\"data_addr\", \"grpc_addr\", \"metrics_addr\", \"pid\"} JSON here once "
                 "listening")
      ->type_name("PATH");
  app.add_option("--node-id", f.node_id, "name in stats and logs (default: hostname)")
      ->type_name("NAME");
  app.add_option("--log-level", f.log_level, "log level (logs go to stderr)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_flag("--test-corrupt-loads", f.test_corrupt_loads,
               "TEST ONLY: flip a bit in every LOAD reply's payload, to exercise clients' "
               "checksum verification and failover");
  app.add_option("--metrics-addr", f.metrics_addr,
                 "serve Prometheus /metrics on HOST:PORT (default: off; port 0 picks one)")
      ->type_name("HOST:PORT");
  app.add_option("--admin-token-file", f.admin_token_file,
                 "the operator's bearer token (one line, at least 16 characters): SetLimits, "
                 "Drain, Compact and node-wide GetStats need `authorization: Bearer <token>`; "
                 "re-read on SIGHUP and when the file changes")
      ->type_name("PATH");
  app.add_flag("--allow-anonymous", f.allow_anonymous,
               "for local use and tests: without --tenants-file serve tenant 'default' with no "
               "secret, and without --admin-token-file let callers with no credential do "
               "operator work");
  app.add_option("--tls-cert", f.tls.cert_file,
                 "serve the gRPC control plane over TLS with this PEM certificate chain "
                 "(default: plaintext); re-read every --tls-reload-interval")
      ->type_name("PATH");
  app.add_option("--tls-key", f.tls.key_file,
                 "the PEM private key of --tls-cert (required with it)")
      ->type_name("PATH");
  app.add_option("--tls-client-ca", f.tls.client_ca_file,
                 "mutual TLS: refuse clients without a certificate signed by a CA in this PEM "
                 "bundle (needs --tls-cert)")
      ->type_name("PATH");
  app.add_option("--tls-reload-interval", f.tls.reload_interval_s,
                 "re-read --tls-cert, --tls-key and --tls-client-ca every S seconds; new "
                 "connections use what was read")
      ->type_name("S")
      ->check(CLI::Range(1u, 24u * 3600u))
      ->capture_default_str();
  app.add_flag("--data-tls", f.data_tls,
               "the data plane speaks only TLS, with --tls-cert and --tls-key (required) and, with "
               "--tls-client-ca, client certificates required; the files are re-read for new "
               "connections when they change. Default: plaintext (page contents in the clear)");
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

int Serve(const Flags& f) {
  // Block the shutdown and reload signals before any thread starts, so only
  // sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
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
  std::optional<std::string> admin_token;
  if (!f.admin_token_file.empty()) {
    absl::StatusOr<std::string> token = LoadAdminTokenFile(f.admin_token_file);
    if (!token.ok()) {
      spdlog::error("cannot start: --admin-token-file: {}", token.status().ToString());
      return 1;
    }
    admin_token = std::move(*token);
  } else if (f.allow_anonymous) {
    spdlog::warn(
        "--allow-anonymous and no --admin-token-file: anyone who reaches the gRPC port "
        "may drain, limit and compact this node and read every tenant's stats");
  } else {
    spdlog::warn(
        "no --admin-token-file: SetLimits, Drain, Compact and node-wide GetStats are "
        "refused");
  }
  ControlPlaneAuth auth(&*tenants,
                        {.admin_token = admin_token, .allow_anonymous = f.allow_anonymous});
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
    spdlog::info(
        "backing store {}: {} blocks of 4 KiB, a log of {}-byte segments, cleaner threshold {}, "
        "cleaner max dead {} after {} ms without writeback, read cache {} bytes",
        backing->Describe(), backing->block_count(), f.segment_size, f.cleaner_threshold,
        f.cleaner_max_dead, f.cleaner_idle_ms, f.disk_read_cache);
  } else {
    spdlog::warn("no --backing-file: no LRU writeback; stores fail when the pool is full");
  }
  if (std::string w = HaltPollingWarning(ReadCpuIdleState()); !w.empty()) spdlog::warn("{}", w);
  PageStoreLimits limits{.pool_limit_bytes = f.pool_limit,
                         .high_watermark = f.high_watermark,
                         .low_watermark = f.low_watermark};
  auto store = PageStore::Create({.limits = limits,
                                  .backing = backing.get(),
                                  .segment_bytes = f.segment_size,
                                  .cleaner_threshold = f.cleaner_threshold,
                                  .cleaner_max_dead = f.cleaner_max_dead,
                                  .cleaner_idle_ms = f.cleaner_idle_ms,
                                  .writeback_threads = f.writeback_threads,
                                  .disk_read_cache_bytes = f.disk_read_cache,
                                  .cold_after_seconds = f.cold_after_s,
                                  .cold_zstd_level = f.cold_zstd_level});
  if (!store.ok()) {
    spdlog::error("cannot start: page store: {}", store.status().ToString());
    return 1;
  }
  if (f.cold_after_s > 0) {
    spdlog::info("cold tier: pool pages not loaded for {} s are recompressed into zstd level {}",
                 f.cold_after_s, f.cold_zstd_level);
  }
  if (backing != nullptr) {
    const farswap::server::PageStoreStats st = (*store)->GetStats();
    spdlog::info(
        "backing store: segment writes via {}, up to {} requests of {} KiB in flight, "
        "writeback on {} thread(s)",
        st.write_engine, st.write_queue_depth,
        farswap::server::PageStoreOptions{}.write_request_bytes / 1024, st.writeback_threads);
  }
  for (const Tenant& t : tenants->tenants()) ApplyFileQuota(**store, t);
  // Reload --tenants-file and --admin-token-file on SIGHUP and when they
  // change; none without them.
  std::optional<FileWatch> tenants_watch;
  if (!f.tenants_file.empty()) {
    tenants_watch.emplace(f.tenants_file, [&, store = store->get()](absl::string_view why) {
      ReloadTenantsFile(f.tenants_file, why, &*tenants, store);
    });
  }
  std::optional<FileWatch> admin_token_watch;
  if (!f.admin_token_file.empty()) {
    admin_token_watch.emplace(f.admin_token_file, [&](absl::string_view why) {
      ReloadAdminToken(f.admin_token_file, why, &auth);
    });
  }
  auto transport = transport::CreateTransport(
      f.data_addr,
      {.io_threads = f.io_threads, .busy_poll = absl::Microseconds(int64_t(f.busy_poll_us))});
  if (!transport.ok()) {
    spdlog::error("cannot start: transport: {}", transport.status().ToString());
    return 1;
  }
  if (f.test_corrupt_loads) spdlog::warn("--test-corrupt-loads: every LOAD reply is corrupted");
  DataPlaneOptions data_plane_options{.workers = f.workers,
                                      .test_corrupt_loads = f.test_corrupt_loads};
  if (f.data_tls) {
    data_plane_options.tls = transport::TlsServerOptions{.cert_file = f.tls.cert_file,
                                                         .key_file = f.tls.key_file,
                                                         .client_ca_file = f.tls.client_ca_file};
  }
  DataPlaneServer data_plane(store->get(), &*tenants, transport->get(), data_plane_options);
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
  // What Attach hands out: never an unspecified address (ParseFlags
  // refused that), so a client never dials itself.
  const std::string data_addr = AdvertisedDataAddress(data_plane.address(), f.advertise_addr);
  // --ucx-data-addr: a second backend on the same data plane. On every way
  // out the data plane stops first (it finishes queued work), then this
  // transport, before data_plane goes (its I/O threads call the data
  // plane's handlers); stop_ucx is destroyed before stop_data_path.
  std::unique_ptr<transport::Transport> ucx_transport;
  std::vector<std::string> more_data_addrs;
  struct StopUcx {
    DataPlaneServer& data_plane;
    std::unique_ptr<transport::Transport>& transport;
    ~StopUcx() {
      if (transport == nullptr) return;
      data_plane.Shutdown();
      transport->Shutdown();
    }
  } stop_ucx{data_plane, ucx_transport};
  if (!f.ucx_data_addr.empty()) {
    auto t = transport::CreateUcxTransport(
        {.io_threads = f.io_threads, .busy_poll = absl::Microseconds(int64_t(f.busy_poll_us))});
    if (!t.ok()) {
      spdlog::error("cannot start: --ucx-data-addr: {}", t.status().ToString());
      return 1;
    }
    ucx_transport = std::move(*t);
    const std::string bind(transport::StripScheme(f.ucx_data_addr));
    if (absl::Status s = data_plane.ListenAlso(ucx_transport.get(), bind); !s.ok()) {
      spdlog::error("cannot start: data plane on ucx://{}: {}", bind, s.ToString());
      return 1;
    }
    // Advertised as the primary is: --advertise-addr's host, the bound port.
    std::string advertise;
    if (!f.advertise_addr.empty()) {
      advertise = f.advertise_addr.substr(0, f.advertise_addr.rfind(':')) + ":0";
    }
    more_data_addrs.push_back(AdvertisedDataAddress(data_plane.addresses().back(), advertise));
  }

  // A drain turns the health of farswap.v1.MemoryNode to NOT_SERVING at
  // once (readiness probes, `farswapctl health`), not at the watcher's next
  // look; the watcher below still owns every other change.
  std::atomic<grpc::HealthCheckServiceInterface*> health_on_drain{nullptr};
  MemoryNodeService service(
      store->get(), &*tenants,
      {.node_id = f.node_id,
       .data_addr = data_addr,
       .more_data_addrs = more_data_addrs,
       .data_tls = f.data_tls,
       .limits = limits,
       .data_plane = &data_plane,
       .on_drain_changed =
           [&health_on_drain, &store] {
             if (grpc::HealthCheckServiceInterface* h = health_on_drain.load()) {
               h->SetServingStatus(kMemoryNodeService,
                                   (*store)->Health().ok() && !(*store)->draining());
             }
           },
       .auth = &auth});
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> grpc_credentials =
      ControlPlaneServerCredentials(f.tls);
  if (!grpc_credentials.ok()) {
    spdlog::error("cannot start: {}", grpc_credentials.status().ToString());
    return 1;
  }
  if (f.tls.cert_file.empty()) {
    spdlog::warn(
        "no --tls-cert: the gRPC control plane is plaintext; tenant secrets, session tokens and "
        "the admin token cross the network readable");
  } else {
    spdlog::info("gRPC control plane: TLS with {}{}, files re-read every {} s", f.tls.cert_file,
                 f.tls.client_ca_file.empty() ? ""
                                              : absl::StrCat(", client certificates from ",
                                                             f.tls.client_ca_file, " required"),
                 f.tls.reload_interval_s);
  }
  builder.AddListeningPort(f.grpc_addr, *grpc_credentials, &grpc_port);
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
  health_on_drain.store(health);
  spdlog::info("node {} ready: data plane {}, gRPC {}, pool limit {} bytes", f.node_id, data_addr,
               grpc_addr, f.pool_limit);
  // Prometheus /metrics (node_metrics.h): declared after what it reads, so
  // it stops first.
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> metrics =
      StartNodeMetrics(f.metrics_addr, {.store = store->get(),
                                        .tenants = &*tenants,
                                        .data_plane = &data_plane,
                                        .auth = &auth,
                                        .node_id = f.node_id});
  if (!metrics.ok()) {
    spdlog::error("cannot start: --metrics-addr: {}", metrics.status().ToString());
    return 1;
  }
  if (*metrics) spdlog::info("metrics on http://{}/metrics", (*metrics)->address());
  if (!f.ready_file.empty()) {
    nlohmann::ordered_json ready = {{"data_addr", data_addr}, {"grpc_addr", grpc_addr}};
    if (*metrics) ready["metrics_addr"] = (*metrics)->address();
    ready["pid"] = getpid();
    if (absl::Status s = WriteReadyFile(f.ready_file, ready.dump()); !s.ok()) {
      spdlog::error("cannot start: {}", s.ToString());
      return 1;
    }
  }

  // Health follows the backing store and draining: a sticky I/O error or a
  // drain makes the node report NOT_SERVING for farswap.v1.MemoryNode
  // (loads of pooled pages still work; a readiness probe takes a draining
  // node out of the Service). The same once-a-second loop closes sessions
  // idle past --session-idle-timeout and reloads --tenants-file when it has
  // changed.
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
      if (tenants_watch) tenants_watch->Poll();
      if (admin_token_watch) admin_token_watch->Poll();
      if (size_t expired = tenants->ExpireIdleSessions(absl::Now()); expired > 0) {
        spdlog::info("{} idle session(s) expired ({} open)", expired, tenants->session_count());
      }
      stop_cv.WaitWithTimeout(&stop_mu, absl::Seconds(1));  // the polling period
    }
  });

  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    if (tenants_watch) tenants_watch->Reload("SIGHUP");
    if (admin_token_watch) admin_token_watch->Reload("SIGHUP");
    if (!tenants_watch && !admin_token_watch) {
      spdlog::warn("SIGHUP: nothing to reload (no --tenants-file, no --admin-token-file)");
    }
  }
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
  if (ucx_transport != nullptr) ucx_transport->Shutdown();
  PageStoreStats stats = (*store)->GetStats();
  spdlog::info("stopped: {} pages stored, {} written back, {} loads, {} stores", stats.stored_pages,
               stats.written_back_pages, stats.loads, stats.stores);
  return 0;
}

}  // namespace
}  // namespace farswap::server

int main(int argc, char** argv) {
  using farswap::server::Flags;
  CLI::App app(
      "farswap-server: one far-memory node (data plane and gRPC control plane).\n"
      "Exit status: 0 after a clean shutdown, 1 when it cannot start, 2 for bad flags.",
      "farswap-server");
  farswap::cli::Configure(app);
  Flags flags;
  farswap::server::AddFlags(app, flags);
  if (std::optional<int> exit_status = farswap::cli::Parse(app, argc, argv)) return *exit_status;
  if (!(flags.low_watermark > 0 && flags.low_watermark < flags.high_watermark)) {
    return farswap::cli::UsageError(
        app, "watermarks must satisfy 0 < --low-watermark < --high-watermark <= 1");
  }
  if (flags.pool_limit < 64 * 1024) {
    return farswap::cli::UsageError(app, "--pool-limit must be >= 64K");
  }
  if (flags.disk_read_cache > (uint64_t{1} << 30)) {
    return farswap::cli::UsageError(app, "--disk-read-cache must be at most 1G");
  }
  if (flags.segment_size < 4096 || flags.segment_size % 4096 != 0 ||
      flags.segment_size > (uint64_t{1} << 31)) {
    return farswap::cli::UsageError(
        app, "--segment-size must be a multiple of 4K (4096 bytes) from 4K to 2G");
  }
  if (!(flags.cleaner_threshold > 0)) {
    return farswap::cli::UsageError(app, "--cleaner-threshold must satisfy 0 < F <= 1");
  }
  if (!(flags.cleaner_max_dead > 0)) {
    return farswap::cli::UsageError(app, "--cleaner-max-dead must satisfy 0 < F <= 1");
  }
  if (!flags.transport.empty()) {
    if (flags.data_addr.find("://") != std::string::npos &&
        farswap::transport::AddressScheme(flags.data_addr) != flags.transport) {
      return farswap::cli::UsageError(
          app, "--transport " + flags.transport + " contradicts --data-addr " + flags.data_addr);
    }
    if (flags.data_addr.find("://") == std::string::npos) {
      flags.data_addr = flags.transport + "://" + flags.data_addr;
    }
  }
  if (absl::Status s = farswap::server::CheckAdvertisable(flags.data_addr, flags.advertise_addr);
      !s.ok()) {
    return farswap::cli::UsageError(app, std::string(s.message()));
  }
  if (!flags.ucx_data_addr.empty()) {
    if (farswap::transport::AddressScheme(flags.data_addr) != "tcp") {
      return farswap::cli::UsageError(
          app, "--ucx-data-addr serves UCX beside TCP: --data-addr must be tcp (it is " +
                   flags.data_addr + ")");
    }
    if (flags.ucx_data_addr.find("://") != std::string::npos &&
        farswap::transport::AddressScheme(flags.ucx_data_addr) != "ucx") {
      return farswap::cli::UsageError(
          app, "--ucx-data-addr " + flags.ucx_data_addr + " names another scheme than ucx");
    }
    if (flags.data_tls) {
      return farswap::cli::UsageError(
          app, "--ucx-data-addr cannot go with --data-tls: the UCX backend has no TLS");
    }
    if (farswap::server::IsUnspecifiedHost(flags.ucx_data_addr) && flags.advertise_addr.empty()) {
      return farswap::cli::UsageError(
          app, "--ucx-data-addr " + flags.ucx_data_addr +
                   " listens on every address, which clients cannot dial: pass --advertise-addr "
                   "HOST:PORT (its host is handed out for the UCX listener too)");
    }
  }
  if (flags.tenants_file.empty() && !flags.allow_anonymous) {
    return farswap::cli::UsageError(
        app,
        "no --tenants-file: give one (id:secret:quota lines), or --allow-anonymous to serve "
        "tenant 'default' with no secret (local use and tests only)");
  }
  if (flags.tls.cert_file.empty() != flags.tls.key_file.empty()) {
    return farswap::cli::UsageError(app, "--tls-cert and --tls-key go together");
  }
  if (flags.tls.cert_file.empty() && !flags.tls.client_ca_file.empty()) {
    return farswap::cli::UsageError(app, "--tls-client-ca needs --tls-cert and --tls-key");
  }
  if (flags.data_tls && flags.tls.cert_file.empty()) {
    return farswap::cli::UsageError(app, "--data-tls needs --tls-cert and --tls-key");
  }
  if (flags.node_id.empty()) {
    char host[256] = "farswap";
    gethostname(host, sizeof host - 1);
    flags.node_id = host;
  }
  // Logs go to stderr: stdout stays free for results.
  spdlog::set_default_logger(spdlog::stderr_color_mt("farswap-server"));
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  spdlog::flush_on(spdlog::level::info);  // one line per state change, visible at once
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ farswap-server[%P] %v");
  return farswap::server::Serve(flags);
}
