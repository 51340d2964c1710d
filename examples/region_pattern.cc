// region_pattern: map a far-memory Region backed by one memory node, write a
// pattern several times larger than the region's local budget (so most
// pages are evicted to the node), read it all back and verify it, then check
// from the region's counters that pages really went to the node and came
// back.
//
//   region_pattern GRPC_ADDR [SIZE_MIB [BUDGET_MIB]]   (defaults 32 and 4)
//
// Needs userfaultfd: root, or sysctl vm.unprivileged_userfaultfd=1. Exit
// status 0 when every byte matched, 1 on any error, 2 for bad usage.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "farswap/client/client.h"
#include "farswap/client/client_page_backend.h"
#include "farswap/client/region.h"

namespace {

// Word i of the region: a function of its index that differs on every page.
uint64_t Pattern(uint64_t i) { return (i * 0x9E3779B97F4A7C15ULL) ^ (i >> 9); }

int Fail(const std::string& what) {
  std::fprintf(stderr, "region_pattern: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: region_pattern GRPC_ADDR [SIZE_MIB [BUDGET_MIB]]\n");
    return 2;
  }
  const uint64_t size_mib = argc >= 3 ? std::strtoull(argv[2], nullptr, 10) : 32;
  const uint64_t budget_mib = argc >= 4 ? std::strtoull(argv[3], nullptr, 10) : 4;
  if (size_mib == 0 || budget_mib == 0 || budget_mib >= size_mib) {
    std::fprintf(stderr, "region_pattern: need 0 < BUDGET_MIB < SIZE_MIB\n");
    return 2;
  }

  farswap::ClientOptions options;
  options.nodes = {argv[1]};
  options.client_name = "region_pattern-example";
  // Only the region calls this client, synchronously: its waits may read
  // their replies themselves (no I/O-thread wake-up per remote fault).
  options.poll_while_waiting = true;
  absl::StatusOr<std::unique_ptr<farswap::Client>> client = farswap::Client::Connect(options);
  if (!client.ok()) return Fail("connect: " + client.status().ToString());

  // The backend must outlive the region: declared first, destroyed last.
  farswap::ClientPageBackend backend(client->get());
  farswap::RegionOptions region_options;
  region_options.local_budget = budget_mib << 20;
  absl::StatusOr<std::unique_ptr<farswap::Region>> region =
      farswap::Region::Create(&backend, size_mib << 20, region_options);
  if (!region.ok()) return Fail("region: " + region.status().ToString());

  uint64_t* words = reinterpret_cast<uint64_t*>((*region)->data());
  const uint64_t count = (*region)->size() / sizeof(uint64_t);
  for (uint64_t i = 0; i < count; ++i) words[i] = Pattern(i);
  for (uint64_t i = 0; i < count; ++i) {
    if (words[i] != Pattern(i)) {
      return Fail("word " + std::to_string(i) + " (page " + std::to_string(i * 8 / 4096) +
                  ") reads back wrong");
    }
  }

  const farswap::RegionStats st = (*region)->stats();
  std::printf(
      "region_pattern: %llu MiB verified with a %llu MiB budget: %llu pages stored, "
      "%llu loaded, %llu faults, peak %llu resident pages (budget %llu)\n",
      static_cast<unsigned long long>(size_mib), static_cast<unsigned long long>(budget_mib),
      static_cast<unsigned long long>(st.pages_stored),
      static_cast<unsigned long long>(st.pages_loaded),
      static_cast<unsigned long long>(st.missing_faults + st.wp_faults),
      static_cast<unsigned long long>(st.max_resident_pages),
      static_cast<unsigned long long>(st.budget_pages));
  // The pattern does not fit the budget, so pages must have gone to the node
  // and come back from it; and residency stays within one batch of budget.
  if (st.pages_stored == 0 || st.pages_loaded == 0) {
    return Fail("no page went through the node: the budget was not enforced");
  }
  if (st.max_resident_pages > st.budget_pages + region_options.evict_batch) {
    return Fail("residency exceeded the budget by more than one eviction batch");
  }
  if (st.sigbus_delivered != 0 || st.store_errors != 0) {
    return Fail("region reported errors: " + st.last_error);
  }
  return 0;
}
