// drain_client: the far-memory client of the DaemonSet test
// (daemonset_test.mjs). It stores pages on the memory nodes with one copy
// each (R=1: a page whose node stops without handing it over is lost),
// reports where they went, keeps its farswap::Client running while the test
// drains and stops a node (the client moves its slabs off a draining node),
// then reads every page back and checks its bytes.
//
//   drain_client --nodes GRPC,GRPC --tenant ID --secret S --pages N
//                [--data-transport auto|tcp|ucx]
//
// Protocol, one JSON object a line on stdout:
//   {"stored": N}                     every page stored
//   (waits for a line "verify" on stdin)
//   {"verified": V, "lost": L, "wrong": W, "first_error": "..."}
// Exit 0 when every page read back intact, 1 otherwise, 2 for bad usage
// (farswap/common/cli.h: --help and --version too).
#include <cinttypes>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "farswap/client/client.h"
#include "farswap/common/cli.h"

namespace farswap {
namespace {

constexpr size_t kPage = 4096;

// FillPage writes page `no`'s contents: text-like bytes that compress, and
// differ from every other page's.
void FillPage(uint64_t no, uint8_t* page) {
  uint64_t x = no * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < kPage; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    for (size_t j = 0; j < 8; ++j) page[i + j] = uint8_t('a' + ((x >> (j * 8)) % 8));
  }
}

int Run(int argc, char** argv) {
  CLI::App app("drain_client: stores pages (R=1), waits for \"verify\" on stdin, reads them back",
               "drain_client");
  cli::Configure(app);
  std::string nodes, tenant = "default", secret;
  uint64_t n_pages = 512;
  app.add_option("--nodes", nodes, "gRPC addresses of the memory nodes, comma-separated")
      ->type_name("GRPC,GRPC")
      ->required();
  app.add_option("--tenant", tenant, "tenant id")->capture_default_str();
  app.add_option("--secret", secret, "the tenant's secret");
  std::string tls_ca, tls_server_name;
  app.add_option("--tls-ca", tls_ca, "the nodes' control plane is TLS: trust this CA bundle");
  app.add_option("--tls-server-name", tls_server_name,
                 "the name the nodes' certificates carry (with --tls-ca)");
  std::string data_transport = "auto";
  app.add_option("--data-transport", data_transport,
                 "which of a node's data-plane addresses to dial (ClientOptions::data_transport)")
      ->check(CLI::IsMember({"auto", "tcp", "ucx"}))
      ->capture_default_str();
  app.add_option("--pages", n_pages, "pages to store")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20))
      ->capture_default_str();
  if (std::optional<int> exit_status = cli::Parse(app, argc, argv)) return *exit_status;
  const uint64_t* pages = &n_pages;
  ClientOptions o;
  o.nodes = absl::StrSplit(nodes, ',', absl::SkipEmpty());
  o.tenant_id = tenant;
  o.secret = secret;
  o.client_name = "drain_client";
  o.tls_ca_file = tls_ca;
  o.tls_server_name = tls_server_name;
  o.data_transport = data_transport;
  o.replicas = 1;
  o.pages_per_slab = 16;  // many slabs, so both nodes get some
  // A node that stopped with pages still on it: report them lost after 5 s
  // rather than the default 20 s, so a failing run ends sooner.
  o.dead_node_timeout = absl::Seconds(5);
  auto client = Client::Connect(o);
  if (!client.ok()) {
    std::fprintf(stderr, "drain_client: %s\n", client.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> page(kPage), back(kPage);
  for (uint64_t no = 0; no < *pages; ++no) {
    FillPage(no, page.data());
    absl::Status s = (*client)->Store(no, page.data());
    if (!s.ok()) {
      std::fprintf(stderr, "drain_client: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("{\"stored\": %" PRIu64 "}\n", *pages);
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line) && line != "verify") {
  }
  uint64_t verified = 0, lost = 0, wrong = 0;
  std::string first_error;
  for (uint64_t no = 0; no < *pages; ++no) {
    FillPage(no, page.data());
    absl::Status s = (*client)->Load(no, back.data());
    if (!s.ok()) {
      lost++;
      if (first_error.empty()) first_error = s.ToString();
    } else if (back != page) {
      wrong++;
    } else {
      verified++;
    }
  }
  for (char& c : first_error) {
    if (c == '"' || c == '\\' || c < 0x20) c = ' ';
  }
  std::printf("{\"verified\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"wrong\": %" PRIu64
              ", \"first_error\": \"%s\"}\n",
              verified, lost, wrong, first_error.c_str());
  std::fflush(stdout);
  return lost == 0 && wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace farswap

int main(int argc, char** argv) { return farswap::Run(argc, argv); }
