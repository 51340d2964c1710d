// data_plane_fuzzer: libFuzzer target for the data plane. Each input is
// read as a sequence of two-tenant operations (data_plane_model.h), run
// through one in-process node started for the whole process, and every
// reply is compared with the model; a divergence prints the op and both
// answers and aborts. Each run ends by invalidating every page of both
// tenants, so inputs are independent.
#include <cstdio>
#include <cstdlib>

#include "data_plane_model.h"

namespace farswap::server::testing {
namespace {

DataPlaneHarness* harness = nullptr;

DataPlaneHarness& Harness() {
  if (harness == nullptr) {
    absl::StatusOr<std::unique_ptr<DataPlaneHarness>> h = DataPlaneHarness::Start();
    if (!h.ok()) {
      std::fprintf(stderr, "data_plane_fuzzer: node: %s\n", h.status().ToString().c_str());
      std::abort();
    }
    harness = h->release();
    // Stop the node's threads before static destructors run at exit.
    std::atexit([] { delete harness; });
  }
  return *harness;
}

}  // namespace
}  // namespace farswap::server::testing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::Status s = farswap::server::testing::Harness().Run({data, size});
  if (!s.ok()) {
    std::fprintf(stderr, "data_plane_fuzzer: divergence: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
  return 0;
}
