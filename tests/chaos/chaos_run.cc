#include "chaos_run.h"

#include <algorithm>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "chaos_cluster.h"
#include "farswap/client/client.h"
#include "farswap/client/client_page_backend.h"
#include "farswap/client/region.h"

namespace farswap::chaos {
namespace {

// The workloads and the client under test, torn down in reverse order.
struct Harness {
  std::unique_ptr<Client> client;
  std::unique_ptr<ClientPageBackend> backend;
  std::unique_ptr<Region> region;
  std::unique_ptr<RegionWorkload> region_load;
  std::unique_ptr<ClientWorkload> client_load;

  WorkloadCounters Counters() const {
    WorkloadCounters c = client_load->counters();
    c += region_load->counters();
    return c;
  }
  ~Harness() {
    client_load.reset();  // joins its threads
    region_load.reset();
    region.reset();
    backend.reset();
    client.reset();
  }
};

std::string Summary(const WorkloadCounters& d, uint64_t client_lost) {
  return absl::StrCat("data_loss_errors ", d.data_loss_errors, " (wrong bytes ", d.wrong_data,
                      "), sigbus ", d.sigbus, ", lost_pages ", d.lost_pages, ", client lost_pages ",
                      client_lost);
}

}  // namespace

WorkloadCounters ChaosReport::total() const {
  WorkloadCounters t = client;
  t += region;
  return t;
}
uint64_t ChaosReport::lost_pages() const { return total().lost_pages + client_lost_pages; }
uint64_t ChaosReport::sigbus() const { return std::max(total().sigbus, region_sigbus_delivered); }
uint64_t ChaosReport::data_loss_errors() const { return total().data_loss_errors; }

absl::StatusOr<ChaosReport> RunChaos(const ChaosOptions& o) {
  auto log = [&o](const std::string& line) {
    if (o.log) o.log(line);
  };
  auto interrupted = [&o] { return o.interrupted != nullptr && o.interrupted->load(); };
  if (o.replicas < 1 || o.replicas > o.nodes) {
    return absl::InvalidArgumentError("replicas: 1..nodes");
  }
  absl::StatusOr<std::unique_ptr<ChaosCluster>> cluster =
      ChaosCluster::Create({.nodes = o.nodes,
                            .pool_limit = o.pool_limit,
                            .backing_size = o.backing_size,
                            .tmpfs_size = o.tmpfs_size,
                            .server_binary = o.server_binary});
  if (!cluster.ok()) return cluster.status();
  ChaosCluster& c = **cluster;
  log(absl::StrCat("cluster ", c.tag(), ": ", c.size(), " nodes"));
  ChaosCluster::ClientNetns in_client_netns(c);
  if (!in_client_netns.status().ok()) return in_client_netns.status();

  ChaosReport r;
  r.nodes = o.nodes;
  r.replicas = o.replicas;
  r.seed = o.seed;
  r.enabled = o.faults;
  Harness h;
  ClientOptions co;
  co.nodes = c.grpc_addresses();
  co.replicas = o.replicas;
  co.client_name = "farswap-chaos";
  co.op_timeout = o.timing.failure_timeout;
  co.health_interval = o.health_interval;
  co.attach_timeout = absl::Seconds(2);
  co.pages_per_slab = o.pages_per_slab;
  co.io_threads = 1;
  co.spin_wait = absl::ZeroDuration();  // two shared vCPUs: sleep, do not spin
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  if (!client.ok()) return client.status();
  h.client = std::move(*client);
  h.backend = std::make_unique<ClientPageBackend>(h.client.get());
  absl::StatusOr<std::unique_ptr<Region>> region = Region::Create(
      h.backend.get(), o.region_bytes,
      {.local_budget = o.region_budget, .fault_threads = 1, .evict_threads = 1, .spin_us = 0});
  if (!region.ok()) return region.status();
  h.region = std::move(*region);
  h.region_load = std::make_unique<RegionWorkload>(
      h.region.get(), RegionWorkloadOptions{.threads = o.region_threads, .seed = o.seed + 1});
  h.client_load = std::make_unique<ClientWorkload>(
      h.client.get(),
      ClientWorkloadOptions{
          .pages = o.client_pages, .threads = o.client_threads, .seed = o.seed + 2});
  const absl::Time start = absl::Now();
  h.region_load->Start();
  h.client_load->Start();

  std::mt19937_64 rng(o.seed);
  std::vector<FaultKind> round;
  std::string unsettled_since;  // the fault after which slabs stayed short
  // Sleep in short steps, so an interrupt or a lost page is seen quickly.
  auto wait = [&](absl::Duration d, uint64_t* max_lost) {
    const absl::Time until = absl::Now() + d;
    while (absl::Now() < until && !interrupted()) {
      absl::SleepFor(std::min(absl::Milliseconds(100), until - absl::Now()));
      *max_lost = std::max(*max_lost, h.client->stats().lost_pages);
    }
  };
  uint64_t warmup_lost = 0;
  wait(absl::Seconds(3), &warmup_lost);
  const absl::Time deadline = start + o.duration;
  while (absl::Now() < deadline && !interrupted()) {
    if (round.empty()) {
      round = o.faults;
      std::shuffle(round.begin(), round.end(), rng);
    }
    const Fault f = PlanFault(round.back(), c.size(), o.timing, rng);
    round.pop_back();
    FaultKindReport& k = r.by_kind[int(f.kind)];
    if (!unsettled_since.empty()) {
      // The last fault did not settle: give it another settle_timeout.
      if (h.client->WaitUntilReplicated(o.settle_timeout).ok()) {
        log("  settled late: " + unsettled_since);
        unsettled_since.clear();
      } else {
        k.injected_unsettled++;
      }
    }
    const std::string unsettled_note =
        unsettled_since.empty() ? "" : " [unsettled since " + unsettled_since + "]";
    const WorkloadCounters before = h.Counters();
    const uint64_t lost_before = h.client->stats().lost_pages;
    uint64_t lost = lost_before;  // the most seen until settled
    k.injected++;
    r.faults_injected++;
    log(absl::StrCat("[", absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Seconds(1))),
                     "] inject ", f.Describe(), unsettled_note));
    if (absl::Status s = InjectFault(f, o.timing, c); !s.ok()) {
      k.inject_errors++;
      r.errors.push_back(absl::StrCat(f.Describe(), ": inject: ", s.ToString()));
    }
    wait(f.duration, &lost);
    absl::Status healed = HealFault(f, o.timing, c);
    for (int tries = 0; !healed.ok() && tries < 10; ++tries) {  // e.g. a restart racing a port
      wait(absl::Seconds(1), &lost);
      healed = HealFault(f, o.timing, c);
    }
    if (!healed.ok()) {
      k.heal_errors++;
      r.errors.push_back(absl::StrCat(f.Describe(), ": heal: ", healed.ToString()));
    }
    absl::Status settled = h.client->WaitUntilNodeUp(c.grpc_address(f.node), o.settle_timeout);
    if (settled.ok()) settled = h.client->WaitUntilReplicated(o.settle_timeout);
    if (!settled.ok()) {
      k.recovery_timeouts++;
      r.errors.push_back(absl::StrCat(f.Describe(), ": recovery: ", settled.ToString()));
      if (unsettled_since.empty()) unsettled_since = f.Describe();
    } else {
      unsettled_since.clear();
    }
    wait(o.pause, &lost);
    const WorkloadCounters d = h.Counters() - before;
    // Pages the client counted lost on top of those it had already lost.
    const uint64_t new_lost = lost - lost_before;
    k.during += d;
    k.client_lost_pages = std::max(k.client_lost_pages, new_lost);
    r.client_lost_pages = std::max(r.client_lost_pages, lost);
    if (d.data_loss_errors || d.sigbus || d.lost_pages || new_lost) {
      r.failures.push_back(absl::StrCat(f.Describe(), unsettled_note, ": ", Summary(d, new_lost)));
    }
    log(absl::StrCat("  healed: ", Summary(d, new_lost), ", ops ", d.operations, ", verified ",
                     d.pages_verified,
                     settled.ok() ? "" : absl::StrCat(", NOT SETTLED: ", settled.message())));
  }
  r.interrupted = interrupted();
  h.client_load->Stop();
  h.region_load->Stop();
  // Every page once more, with every node back.
  if (!r.interrupted) {
    h.client->WaitUntilReplicated(o.settle_timeout).IgnoreError();
    const WorkloadCounters before = h.Counters();
    h.client_load->VerifyAll(absl::Seconds(5));
    h.region_load->VerifyAll();
    const WorkloadCounters d = h.Counters() - before;
    log(absl::StrCat("final check: ", d.pages_verified, " pages verified, ", Summary(d, 0)));
    if (d.data_loss_errors || d.sigbus || d.lost_pages) {
      r.failures.push_back(absl::StrCat("final check: ", Summary(d, 0)));
    }
  }
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  r.client = h.client_load->counters();
  r.region = h.region_load->counters();
  for (std::string& e : h.client_load->wrong_data_examples()) {
    r.wrong_data_examples.push_back("client " + std::move(e));
  }
  for (std::string& e : h.region_load->wrong_data_examples()) {
    r.wrong_data_examples.push_back("region " + std::move(e));
  }
  const RegionStats rs = h.region->stats();
  const ClientStats cs = h.client->stats();
  r.region_sigbus_delivered = rs.sigbus_delivered;
  r.client_lost_pages = std::max(r.client_lost_pages, cs.lost_pages);
  r.client_load_errors = cs.load_errors;
  r.client_store_errors = cs.store_errors;
  r.failovers = cs.failovers;
  r.rereplicated_slabs = cs.rereplicated_slabs;
  return r;
}

}  // namespace farswap::chaos
