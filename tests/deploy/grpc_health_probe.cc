// grpc_health_probe: what the kubelet does for a `grpc:` probe, for the
// DaemonSet test (daemonset_test.mjs): one grpc.health.v1.Health/Check of
// SERVICE ("" = the server as a whole) at HOST:PORT within TIMEOUT_MS.
//
//   grpc_health_probe HOST:PORT [SERVICE] [TIMEOUT_MS]
//
// Prints the status (SERVING, NOT_SERVING, or the gRPC error: an unknown
// service is NOT_FOUND) and exits 0 only for SERVING, as the probe succeeds
// only then; 1 otherwise, 2 for bad usage (farswap/common/cli.h: --help and
// --version too).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <iostream>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "farswap/common/cli.h"
#include "grpc/health/v1/health.grpc.pb.h"

int main(int argc, char** argv) {
  CLI::App app("grpc_health_probe: one grpc.health.v1.Health/Check, as a kubelet grpc probe",
               "grpc_health_probe");
  farswap::cli::Configure(app);
  std::string address, service;
  long timeout_ms = 1000;
  app.add_option("address", address, "the server's HOST:PORT")->required();
  app.add_option("service", service, "the service to ask for (default \"\": the whole server)");
  app.add_option("timeout-ms", timeout_ms, "deadline of the check in milliseconds")
      ->check(CLI::Range(1L, 600000L))
      ->capture_default_str();
  if (std::optional<int> exit_status = farswap::cli::Parse(app, argc, argv)) return *exit_status;
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    std::cout << absl::StatusCodeToString(absl::StatusCode(s.error_code())) << ": "
              << s.error_message() << std::endl;
    return 1;
  }
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status())
            << std::endl;
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}
