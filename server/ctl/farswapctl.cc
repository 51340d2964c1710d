// farswapctl: the operator's command line for one memory node, over the
// gRPC control plane (proto/farswap/v1/memory_node.proto).
//
//   farswapctl --node HOST:PORT [--timeout SECONDS] COMMAND [flags]
//     stats [--json] [--tenant ID]   node and per-tenant counters
//     health                         gRPC health check; exit 0 only if SERVING
//     compact                        run pool compaction now
//     drain [--resume]               refuse new stores (loads still served)
//     set-limit [--pool-limit BYTES] [--high-watermark F] [--low-watermark F]
//               [--tenant ID --quota BYTES]
//
// Exit status: 0 success, 1 the node answered an error (printed with its
// status code) or could not be reached, 2 bad usage.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "farswap/common/cli.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace farswap {
namespace {

constexpr char kUsage[] =
    "usage: farswapctl --node HOST:PORT [--timeout SECONDS] COMMAND [flags]\n"
    "  stats [--json] [--tenant ID]     node and per-tenant counters\n"
    "  health                           exit 0 only if farswap.v1.MemoryNode is SERVING\n"
    "                                   (NOT_SERVING while draining or after a disk error)\n"
    "  compact                          run pool compaction now\n"
    "  drain [--resume]                 refuse new stores (loads still served)\n"
    "  set-limit [--pool-limit BYTES] [--high-watermark F] [--low-watermark F]\n"
    "            [--tenant ID --quota BYTES]\n";

int Usage(const std::string& why) {
  if (!why.empty()) std::cerr << "farswapctl: " << why << "\n";
  std::cerr << kUsage;
  return 2;
}

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
  std::printf("  pages stored %llu (same-filled %llu, huge %llu), on backing store %llu\n",
              (unsigned long long)n.stored_pages(), (unsigned long long)n.same_pages(),
              (unsigned long long)n.huge_pages(), (unsigned long long)n.pages_on_backing());
  double overhead = p.compr_data_size() ? double(p.mem_used_total()) / p.compr_data_size() : 0;
  std::printf("  pool: orig %s, compressed %s, memory %s of %s (max %s), overhead %.3f\n",
              Mib(p.orig_data_size()).c_str(), Mib(p.compr_data_size()).c_str(),
              Mib(p.mem_used_total()).c_str(),
              p.mem_limit() ? Mib(p.mem_limit()).c_str() : "no limit",
              Mib(p.mem_used_max()).c_str(), overhead);
  std::printf(
      "  backing: %s of %s used, %llu reads, %llu writes, written back %llu%s%s\n",
      Mib(n.backing().used_bytes()).c_str(), Mib(n.backing().size_bytes()).c_str(),
      (unsigned long long)n.backing().reads(), (unsigned long long)n.backing().writes(),
      (unsigned long long)n.written_back_pages(),
      n.backing().io_error().empty() ? "" : ", I/O ERROR: ", n.backing().io_error().c_str());
  std::printf("  ops: stores %llu, loads %llu (misses %llu), invalidates %llu\n",
              (unsigned long long)n.stores(), (unsigned long long)n.loads(),
              (unsigned long long)n.load_misses(), (unsigned long long)n.invalidates());
  const v1::RejectStats& j = n.rejects();
  std::printf(
      "  rejects: pool_full %llu, quota %llu, backing_full %llu, draining %llu, io_error %llu\n",
      (unsigned long long)j.pool_full(), (unsigned long long)j.quota(),
      (unsigned long long)j.backing_full(), (unsigned long long)j.draining(),
      (unsigned long long)j.io_error());
  for (const v1::TenantStats& t : r.tenants()) {
    const v1::RejectStats& tr = t.rejects();
    std::printf("  tenant %s: %llu pages, %s compressed, quota %s, rejects %llu\n",
                t.tenant_id().c_str(), (unsigned long long)t.stored_pages(),
                Mib(t.stored_bytes()).c_str(),
                t.quota_bytes() ? Mib(t.quota_bytes()).c_str() : "none",
                (unsigned long long)(tr.pool_full() + tr.quota() + tr.backing_full() +
                                     tr.draining() + tr.io_error()));
  }
}

int Run(int argc, char** argv) {
  absl::StatusOr<Args> parsed =
      Args::Parse(argc - 1, argv + 1,
                  {"node", "timeout", "json", "tenant", "resume", "pool-limit", "high-watermark",
                   "low-watermark", "quota"},
                  {"json", "resume"}, /*allow_positional=*/true);
  if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
  const Args& args = *parsed;
  if (args.positional().size() != 1) return Usage("exactly one COMMAND is needed");
  if (!args.Has("node")) return Usage("--node HOST:PORT (the node's gRPC address) is required");
  absl::StatusOr<double> timeout = args.GetDouble("timeout", 10);
  if (!timeout.ok()) return Usage(std::string(timeout.status().message()));
  const std::string command = args.positional()[0];

  auto channel = grpc::CreateChannel(args.Get("node"), grpc::InsecureChannelCredentials());
  auto deadline =
      std::chrono::system_clock::now() + std::chrono::milliseconds(int64_t(*timeout * 1000));
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  auto stub = v1::MemoryNode::NewStub(channel);

  if (command == "stats") {
    v1::GetStatsRequest req;
    req.set_tenant_id(args.Get("tenant"));
    v1::GetStatsResponse resp;
    grpc::Status s = stub->GetStats(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    if (args.Has("json")) {
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
    req.set_service("farswap.v1.MemoryNode");  // NOT_SERVING while draining or on a disk error
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
    req.set_drain(!args.Has("resume"));
    v1::DrainResponse resp;
    grpc::Status s = stub->Drain(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    std::cout << (resp.draining() ? "draining" : "accepting stores") << ", " << resp.stored_pages()
              << " pages stored" << std::endl;
    return 0;
  }
  if (command == "set-limit") {
    v1::SetLimitsRequest req;
    bool any = false;
    if (args.Has("pool-limit")) {
      absl::StatusOr<uint64_t> v = args.GetBytes("pool-limit", 0);
      if (!v.ok()) return Usage(std::string(v.status().message()));
      req.set_pool_limit_bytes(*v);
      any = true;
    }
    for (const char* name : {"high-watermark", "low-watermark"}) {
      if (!args.Has(name)) continue;
      absl::StatusOr<double> v = args.GetDouble(name, 0);
      if (!v.ok()) return Usage(std::string(v.status().message()));
      if (std::string(name) == "high-watermark") {
        req.set_high_watermark(*v);
      } else {
        req.set_low_watermark(*v);
      }
      any = true;
    }
    if (args.Has("quota")) {
      if (!args.Has("tenant")) return Usage("--quota needs --tenant ID");
      absl::StatusOr<uint64_t> v = args.GetBytes("quota", 0);
      if (!v.ok()) return Usage(std::string(v.status().message()));
      req.set_tenant_id(args.Get("tenant"));
      req.set_tenant_quota_bytes(*v);
      any = true;
    }
    if (!any) return Usage("set-limit needs at least one limit flag");
    v1::SetLimitsResponse resp;
    grpc::Status s = stub->SetLimits(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    std::cout << "limits set" << std::endl;
    return 0;
  }
  return Usage(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace
}  // namespace farswap

int main(int argc, char** argv) { return farswap::Run(argc, argv); }
