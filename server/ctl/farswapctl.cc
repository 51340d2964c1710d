// farswapctl: the operator's command line for one memory node, over the
// gRPC control plane (proto/farswap/v1/memory_node.proto).
//
//   farswapctl --node HOST:PORT [--timeout SECONDS] [--admin-token-file PATH]
//              [--tls-ca PATH [--tls-cert PATH --tls-key PATH] [--tls-server-name NAME]]
//              COMMAND [flags]
//   farswapctl [COMMAND] --help | --version
//     stats [--json] [--tenant ID]   node and per-tenant counters
//     health                         gRPC health check; exit 0 only if SERVING
//     compact                        run pool compaction now
//     drain [--resume] [--wait]      refuse new stores (loads still served);
//                                    --wait: until clients moved every page off
//     set-limit [--pool-limit BYTES] [--high-watermark F] [--low-watermark F]
//               [--tenant ID --quota BYTES]
//
// --admin-token-file sends the node's admin token as gRPC metadata
// `authorization: Bearer <token>`: stats (node-wide), compact, drain and
// set-limit are operator work (README.md, "Roles"). --tls-ca talks TLS to a
// node started with --tls-cert, verifying it against that CA bundle;
// --tls-cert/--tls-key present a client certificate (--tls-client-ca nodes).
//
// Exit status: 0 success, 1 the node answered an error (printed with its
// status code, e.g. UNAUTHENTICATED) or could not be reached, 2 bad usage
// (also: an admin token or TLS file that cannot be read or is empty). Flags are parsed by
// CLI11 (farswap/common/cli.h); --node and --timeout may also follow COMMAND.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "farswap/client/control_plane_channel.h"
#include "farswap/common/cli.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace farswap {
namespace {

int Fail(const grpc::Status& s) {
  std::cerr << "farswapctl: " << absl::StatusCodeToString(absl::StatusCode(s.error_code())) << ": "
            << s.error_message() << "\n";
  return 1;
}

std::string Mib(uint64_t bytes) { return absl::StrCat(bytes / (1 << 20), " MiB"); }

void PrintHuman(const v1::GetStatsResponse& r) {
  const v1::NodeStats& n = r.node();
  const v1::PoolStats& p = n.pool();
  std::printf("node %s%s, %u sessions\n", r.node_id().c_str(), n.draining() ? " (draining)" : "",
              n.sessions());
  const uint64_t up = n.uptime_seconds();
  std::printf("  version %s, uptime %llud %02llu:%02llu:%02llu (%llu s)\n", n.version().c_str(),
              (unsigned long long)(up / 86400), (unsigned long long)(up / 3600 % 24),
              (unsigned long long)(up / 60 % 60), (unsigned long long)(up % 60),
              (unsigned long long)up);
  std::printf(
      "  data plane: %u connections open, %llu accepted; bytes in %llu (%s), out %llu (%s)\n",
      n.connections(), (unsigned long long)n.connections_accepted(),
      (unsigned long long)n.bytes_received(), Mib(n.bytes_received()).c_str(),
      (unsigned long long)n.bytes_sent(), Mib(n.bytes_sent()).c_str());
  {
    const v1::DataTransportStats& t = n.data_transport();
    std::vector<std::pair<std::string, uint64_t>> carriers(t.connections_by_carrier().begin(),
                                                           t.connections_by_carrier().end());
    std::sort(carriers.begin(), carriers.end());
    std::string by_carrier;
    for (const auto& [carrier, count] : carriers) {
      absl::StrAppend(&by_carrier, by_carrier.empty() ? "" : ", ",
                      carrier.empty() ? "(handshake)" : carrier, " ", count);
    }
    std::printf("  data transport: %s at %s; connections by carrier: %s\n",
                t.backend().empty() ? "?" : t.backend().c_str(),
                t.data_addrs().empty() ? t.data_addr().c_str()
                                       : absl::StrJoin(t.data_addrs(), ", ").c_str(),
                by_carrier.empty() ? "none" : by_carrier.c_str());
    std::printf("  RDMA devices: %s\n", t.rdma_devices().empty()
                                            ? absl::StrCat("none (", t.rdma_missing(), ")").c_str()
                                            : absl::StrJoin(t.rdma_devices(), ", ").c_str());
  }
  if (n.has_cpuidle()) {
    const v1::CpuIdleStats& c = n.cpuidle();
    std::printf(
        "  idle CPUs: %s%s%s\n",
        c.driver().empty() ? "cpuidle unknown" : absl::StrCat("cpuidle ", c.driver()).c_str(),
        c.has_guest_halt_poll_ns()
            ? absl::StrCat(", guest_halt_poll_ns ", c.guest_halt_poll_ns()).c_str()
            : "",
        c.halt_polling_off() ? " (vCPUs halt at once: each wake-up goes through the host)" : "");
  }
  if (n.data_tls()) {
    std::printf("  data plane encryption: TLS; %llu handshakes refused, %llu connections kTLS\n",
                (unsigned long long)n.tls_handshake_failures(),
                (unsigned long long)n.ktls_connections());
  } else {
    std::printf("  data plane encryption: none (page contents travel in the clear)\n");
  }
  std::printf("  pages stored %llu (same-filled %llu, huge %llu), on backing store %llu\n",
              (unsigned long long)n.stored_pages(), (unsigned long long)n.same_pages(),
              (unsigned long long)n.huge_pages(), (unsigned long long)n.pages_on_backing());
  double overhead = p.compr_data_size() ? double(p.mem_used_total()) / p.compr_data_size() : 0;
  std::printf("  pool: orig %s, compressed %s, memory %s of %s (max %s), overhead %.3f\n",
              Mib(p.orig_data_size()).c_str(), Mib(p.compr_data_size()).c_str(),
              Mib(p.mem_used_total()).c_str(),
              p.mem_limit() ? Mib(p.mem_limit()).c_str() : "no limit",
              Mib(p.mem_used_max()).c_str(), overhead);
  if (p.page_release() == "madvise") {
    std::printf(
        "  pool pages go back to the OS one range a call (madvise): this kernel has no "
        "process_madvise(MADV_DONTNEED) (Linux 6.13), so drains are slower\n");
  }
  std::printf(
      "  backing: %s of %s used, %llu reads, %llu writes, written back %llu pages%s%s\n",
      Mib(n.backing().used_bytes()).c_str(), Mib(n.backing().size_bytes()).c_str(),
      (unsigned long long)n.backing().reads(), (unsigned long long)n.backing().writes(),
      (unsigned long long)n.written_back_pages(),
      n.backing().io_error().empty() ? "" : ", I/O ERROR: ", n.backing().io_error().c_str());
  {
    const v1::BackingStats& b = n.backing();
    const double per_page =
        n.pages_on_backing() ? double(b.used_bytes()) / double(n.pages_on_backing()) : 0;
    const double live_per_page =
        n.pages_on_backing() ? double(b.live_bytes()) / double(n.pages_on_backing()) : 0;
    const double amplification =
        b.written_back_bytes() ? double(b.bytes_written()) / double(b.written_back_bytes()) : 0;
    std::printf(
        "  segments: %llu of %llu KiB, %llu free; live %s; disk bytes per page %.0f (compressed "
        "%.0f); written %s, write amplification %.3f; cleaner moved %llu pages, freed %llu "
        "segments\n",
        (unsigned long long)b.segments(), (unsigned long long)(b.segment_bytes() / 1024),
        (unsigned long long)b.free_segments(), Mib(b.live_bytes()).c_str(), per_page, live_per_page,
        Mib(b.bytes_written()).c_str(), amplification, (unsigned long long)b.cleaner_moves(),
        (unsigned long long)b.cleaner_segments());
    std::printf(
        "  disk loads: %llu read requests (%llu pages coalesced), %llu in flight; promoted "
        "%llu\n",
        (unsigned long long)b.disk_read_requests(), (unsigned long long)b.disk_reads_coalesced(),
        (unsigned long long)b.disk_reads_in_flight(), (unsigned long long)b.promotions());
    if (b.read_cache_limit_bytes() > 0) {
      std::printf(
          "  read cache: %llu hits, %llu misses; holds %s of %s; readahead %llu KiB; %llu "
          "mismatches\n",
          (unsigned long long)b.read_cache_hits(), (unsigned long long)b.read_cache_misses(),
          Mib(b.read_cache_bytes()).c_str(), Mib(b.read_cache_limit_bytes()).c_str(),
          (unsigned long long)(b.readahead_bytes() / 1024),
          (unsigned long long)b.read_cache_mismatches());
    }
  }
  std::printf("  ops: stores %llu, loads %llu (misses %llu), invalidates %llu\n",
              (unsigned long long)n.stores(), (unsigned long long)n.loads(),
              (unsigned long long)n.load_misses(), (unsigned long long)n.invalidates());
  const v1::RejectStats& j = n.rejects();
  std::printf(
      "  rejects: pool_full %llu, quota %llu, backing_full %llu, draining %llu, io_error %llu\n",
      (unsigned long long)j.pool_full(), (unsigned long long)j.quota(),
      (unsigned long long)j.backing_full(), (unsigned long long)j.draining(),
      (unsigned long long)j.io_error());
  const v1::ColdTierStats& c = n.cold();
  if (c.passes() != 0) {
    std::printf(
        "  cold tier: %llu passes, %llu pages recompressed (%s saved), %llu kept, %llu aborted, "
        "%llu cold loads\n",
        (unsigned long long)c.passes(), (unsigned long long)c.recompressed_pages(),
        Mib(c.bytes_saved()).c_str(), (unsigned long long)c.kept_pages(),
        (unsigned long long)c.aborted(), (unsigned long long)c.loads());
  }
  if (n.tenant_reloads() != 0 || n.tenant_reload_failures() != 0) {
    std::printf("  tenants file: %llu reloads, %llu rejected\n",
                (unsigned long long)n.tenant_reloads(),
                (unsigned long long)n.tenant_reload_failures());
  }
  if (n.admin_token_reloads() != 0 || n.admin_token_reload_failures() != 0) {
    std::printf("  admin token file: %llu reloads, %llu rejected\n",
                (unsigned long long)n.admin_token_reloads(),
                (unsigned long long)n.admin_token_reload_failures());
  }
  for (const v1::TenantStats& t : r.tenants()) {
    const v1::RejectStats& tr = t.rejects();
    std::printf("  tenant %s%s: %llu pages, %s compressed, quota %s, rejects %llu\n",
                t.tenant_id().c_str(), t.removed() ? " (removed)" : "",
                (unsigned long long)t.stored_pages(), Mib(t.stored_bytes()).c_str(),
                t.quota_bytes() ? Mib(t.quota_bytes()).c_str() : "none",
                (unsigned long long)(tr.pool_full() + tr.quota() + tr.backing_full() +
                                     tr.draining() + tr.io_error()));
  }
}

// Flags: every flag of farswapctl and its subcommands. Optional values are
// the ones set-limit sends only when given.
struct Flags {
  std::string node;
  std::string admin_token_file;
  std::string admin_token;  // read from admin_token_file; "" = send no credential
  ControlPlaneTls tls;      // all empty: plaintext
  double timeout_s = 10;
  bool json = false;
  std::string tenant;
  // health_service: the service `health` asks about; "" is the node as a
  // whole (SERVING while the process serves, draining or not).
  std::string health_service = "farswap.v1.MemoryNode";
  bool resume = false;
  bool wait = false;
  std::optional<uint64_t> pool_limit;
  std::optional<double> high_watermark;
  std::optional<double> low_watermark;
  std::optional<uint64_t> quota;
};

// Authorize sends the admin token, if any, with the call of `ctx`.
void Authorize(grpc::ClientContext& ctx, const Flags& flags) {
  if (!flags.admin_token.empty()) {
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", flags.admin_token));
  }
}

// WaitUntilEmpty polls a draining node until it stores no pages: its
// clients see the drain in their next health ping and move their slabs to
// other nodes, freeing them here. Returns the exit status: 0 when empty, 1
// when `deadline` passes first or the node fails.
int WaitUntilEmpty(v1::MemoryNode::Stub& stub, const Flags& flags,
                   std::chrono::system_clock::time_point deadline, uint64_t stored) {
  // kPoll: how often the node is asked. The pages leave as other processes
  // (the clients) move them; there is nothing to block on but the node.
  constexpr auto kPoll = std::chrono::milliseconds(200);
  uint64_t shown = stored;
  while (stored > 0) {
    if (std::chrono::system_clock::now() + kPoll >= deadline) {
      std::cerr << "farswapctl: drain --wait: " << stored
                << " pages still stored when --timeout ran out (a client that is gone holds "
                   "pages until its session expires)\n";
      return 1;
    }
    std::this_thread::sleep_for(kPoll);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    Authorize(ctx, flags);
    v1::DrainRequest req;
    req.set_drain(true);
    v1::DrainResponse resp;
    grpc::Status s = stub.Drain(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    stored = resp.stored_pages();
    if (stored != shown) {
      std::cout << "draining, " << stored << " pages stored" << std::endl;
      shown = stored;
    }
  }
  std::cout << "drained: no pages stored" << std::endl;
  return 0;
}

int Run(const CLI::App& app, const std::string& command, const Flags& flags,
        std::shared_ptr<grpc::Channel> channel) {
  auto deadline =
      std::chrono::system_clock::now() + std::chrono::milliseconds(int64_t(flags.timeout_s * 1000));
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  Authorize(ctx, flags);
  auto stub = v1::MemoryNode::NewStub(channel);

  if (command == "stats") {
    v1::GetStatsRequest req;
    req.set_tenant_id(flags.tenant);
    v1::GetStatsResponse resp;
    grpc::Status s = stub->GetStats(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    if (flags.json) {
      std::string json;
      google::protobuf::util::JsonPrintOptions opts;
      opts.always_print_primitive_fields = true;
      opts.preserve_proto_field_names = true;
      google::protobuf::util::MessageToJsonString(resp, &json, opts);
      std::cout << json << std::endl;
    } else {
      PrintHuman(resp);
    }
    return 0;
  }
  if (command == "health") {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(
        flags.health_service);  // MemoryNode: NOT_SERVING while draining or on a disk error
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = health->Check(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status())
              << std::endl;
    return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
  }
  if (command == "compact") {
    v1::CompactResponse resp;
    grpc::Status s = stub->Compact(&ctx, v1::CompactRequest(), &resp);
    if (!s.ok()) return Fail(s);
    std::cout << "compacted: " << resp.pages_freed() << " pages freed" << std::endl;
    return 0;
  }
  if (command == "drain") {
    v1::DrainRequest req;
    req.set_drain(!flags.resume);
    v1::DrainResponse resp;
    grpc::Status s = stub->Drain(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    std::cout << (resp.draining() ? "draining" : "accepting stores") << ", " << resp.stored_pages()
              << " pages stored" << std::endl;
    if (!flags.wait || !resp.draining()) return 0;
    return WaitUntilEmpty(*stub, flags, deadline, resp.stored_pages());
  }
  // set-limit
  v1::SetLimitsRequest req;
  if (flags.pool_limit) req.set_pool_limit_bytes(*flags.pool_limit);
  if (flags.high_watermark) req.set_high_watermark(*flags.high_watermark);
  if (flags.low_watermark) req.set_low_watermark(*flags.low_watermark);
  if (flags.quota) {
    if (flags.tenant.empty()) return cli::UsageError(app, "--quota needs --tenant ID");
    req.set_tenant_id(flags.tenant);
    req.set_tenant_quota_bytes(*flags.quota);
  }
  if (!flags.pool_limit && !flags.high_watermark && !flags.low_watermark && !flags.quota) {
    return cli::UsageError(app, "set-limit needs at least one limit flag");
  }
  v1::SetLimitsResponse resp;
  grpc::Status s = stub->SetLimits(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);
  std::cout << "limits set" << std::endl;
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app(
      "farswapctl: the operator's command line for one memory node (gRPC control plane).\n"
      "Exit status: 0 success, 1 the node answered an error or could not be reached, 2 bad "
      "usage.",
      "farswapctl");
  cli::Configure(app);
  Flags f;
  app.add_option("--node", f.node, "the node's gRPC address")->type_name("HOST:PORT")->required();
  app.add_option("--timeout", f.timeout_s, "deadline of the call in seconds")
      ->type_name("SECONDS")
      ->check(cli::Finite())
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--admin-token-file", f.admin_token_file,
                 "send the node's admin token (farswap-server --admin-token-file) with the call")
      ->type_name("PATH");
  app.add_option("--tls-ca", f.tls.ca_file,
                 "talk TLS, verifying the node against this PEM CA bundle (default: plaintext)")
      ->type_name("PATH");
  app.add_option("--tls-cert", f.tls.cert_file,
                 "client certificate (PEM chain) for nodes that require one; needs --tls-ca and "
                 "--tls-key")
      ->type_name("PATH");
  app.add_option("--tls-key", f.tls.key_file, "the PEM private key of --tls-cert")
      ->type_name("PATH");
  app.add_option("--tls-server-name", f.tls.server_name,
                 "the name the node's certificate must carry (default: the host of --node)")
      ->type_name("NAME");
  app.require_subcommand(1);
  CLI::App* stats = app.add_subcommand("stats", "node and per-tenant counters");
  stats->add_flag("--json", f.json, "print the GetStatsResponse as JSON (proto field names)");
  stats->add_option("--tenant", f.tenant, "only this tenant's counters")->type_name("ID");
  CLI::App* health = app.add_subcommand(
      "health",
      "exit 0 only if the service is SERVING (farswap.v1.MemoryNode: NOT_SERVING while "
      "draining or after a disk error)");
  health
      ->add_option("--service", f.health_service,
                   "the gRPC health service to ask about; \"\" is the whole node, SERVING "
                   "while it runs (a liveness probe's question)")
      ->capture_default_str();
  app.add_subcommand("compact", "run pool compaction now");
  CLI::App* drain = app.add_subcommand("drain", "refuse new stores (loads still served)");
  drain->add_flag("--resume", f.resume, "accept stores again");
  drain->add_flag("--wait", f.wait,
                  "return once clients have moved every page off the node (exit 0), or exit 1 "
                  "when --timeout runs out first (the deadline of the whole wait)");
  CLI::App* set_limit = app.add_subcommand("set-limit", "change limits (at least one flag)");
  set_limit->add_option("--pool-limit", f.pool_limit, "pool memory limit, K/M/G suffixes")
      ->transform(cli::Bytes());
  set_limit->add_option("--high-watermark", f.high_watermark, "writeback starts above F")
      ->type_name("F")
      ->check(cli::Fraction());
  set_limit->add_option("--low-watermark", f.low_watermark, "writeback stops at F")
      ->type_name("F")
      ->check(cli::Fraction());
  set_limit->add_option("--tenant", f.tenant, "the tenant whose --quota to set")->type_name("ID");
  set_limit->add_option("--quota", f.quota, "the tenant's quota, K/M/G suffixes (needs --tenant)")
      ->transform(cli::Bytes());
  if (std::optional<int> exit_status = cli::Parse(app, argc, argv)) return *exit_status;
  if (!f.admin_token_file.empty()) {
    std::ifstream in(f.admin_token_file);
    if (!in) {
      return cli::UsageError(
          app, absl::StrCat("--admin-token-file ", f.admin_token_file, ": cannot open"));
    }
    std::stringstream text;
    text << in.rdbuf();
    f.admin_token = std::string(absl::StripTrailingAsciiWhitespace(text.str()));
    if (f.admin_token.empty()) {
      return cli::UsageError(app,
                             absl::StrCat("--admin-token-file ", f.admin_token_file, ": empty"));
    }
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = NewControlPlaneChannel(f.node, f.tls);
  if (!channel.ok()) {
    return cli::UsageError(app, std::string(channel.status().message()));
  }
  return Run(app, app.get_subcommands().front()->get_name(), f, *channel);
}

}  // namespace
}  // namespace farswap

int main(int argc, char** argv) { return farswap::Main(argc, argv); }
