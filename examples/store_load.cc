// store_load: attach a farswap::Client to one memory node, store pages of
// several kinds (text-like, random, same-filled), load them back and compare
// every byte, then invalidate one and check that it is gone.
//
//   store_load GRPC_ADDR [PAGES]     (PAGES default 256)
//
// GRPC_ADDR is the node's control-plane address (farswap-server --grpc-addr,
// or "grpc_addr" in its --ready-file). Exit status 0 when every page came
// back intact, 1 on any error, 2 for bad usage.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "farswap/client/client.h"

namespace {

constexpr size_t kPage = 4096;

// FillPage gives page `n` contents that depend on n: every third page is
// same-filled, every third random (incompressible), the rest text-like.
void FillPage(uint64_t n, uint8_t* page) {
  switch (n % 3) {
    case 0:
      std::memset(page, static_cast<int>(n & 0xff), kPage);
      break;
    case 1: {
      std::mt19937_64 rng(n);
      for (size_t i = 0; i < kPage; i += 8) {
        const uint64_t v = rng();
        std::memcpy(page + i, &v, 8);
      }
      break;
    }
    default: {
      const std::string line = "page " + std::to_string(n) + ": the quick brown fox\n";
      for (size_t i = 0; i < kPage; ++i) page[i] = static_cast<uint8_t>(line[i % line.size()]);
    }
  }
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "store_load: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: store_load GRPC_ADDR [PAGES]\n");
    return 2;
  }
  const uint64_t pages = argc == 3 ? std::strtoull(argv[2], nullptr, 10) : 256;
  if (pages == 0) {
    std::fprintf(stderr, "store_load: PAGES must be a positive number\n");
    return 2;
  }

  farswap::ClientOptions options;
  options.nodes = {argv[1]};
  options.client_name = "store_load-example";
  absl::StatusOr<std::unique_ptr<farswap::Client>> client = farswap::Client::Connect(options);
  if (!client.ok()) return Fail("connect: " + client.status().ToString());

  std::vector<uint8_t> page(kPage), loaded(kPage);
  for (uint64_t n = 0; n < pages; ++n) {
    FillPage(n, page.data());
    absl::Status s = (*client)->Store(n, page.data());
    if (!s.ok()) return Fail("store: " + s.ToString());
  }
  for (uint64_t n = 0; n < pages; ++n) {
    FillPage(n, page.data());
    std::memset(loaded.data(), 0xA5, kPage);
    absl::Status s = (*client)->Load(n, loaded.data());
    if (!s.ok()) return Fail("load: " + s.ToString());
    if (std::memcmp(page.data(), loaded.data(), kPage) != 0) {
      return Fail("page " + std::to_string(n) + " came back with other bytes");
    }
  }
  absl::Status s = (*client)->Invalidate(0);
  if (!s.ok()) return Fail("invalidate: " + s.ToString());
  s = (*client)->Load(0, loaded.data());
  if (!absl::IsNotFound(s)) {
    return Fail("load of an invalidated page: want NOT_FOUND, got " + s.ToString());
  }

  const farswap::ClientStats st = (*client)->stats();
  std::printf(
      "store_load: %llu pages stored and verified (%llu same-filled, %llu raw), "
      "%llu -> %llu bytes\n",
      static_cast<unsigned long long>(pages), static_cast<unsigned long long>(st.same_pages),
      static_cast<unsigned long long>(st.raw_pages),
      static_cast<unsigned long long>(st.bytes_before_compression),
      static_cast<unsigned long long>(st.bytes_after_compression));
  return 0;
}
