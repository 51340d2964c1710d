// chaos_test.cc: the chaos suite's CI cases (ctest -L chaos). Three
// farswap-server processes in their own network namespaces, a region and a
// Client workload verifying every page, one fault at a time (chaos_run.h).
//   - R=2, any single fault: no lost page, no SIGBUS, no data-loss error.
//   - R=1, SIGSTOP stalls shorter than the failure timeout: no lost page.
//   - the kinds that lose pages today (kFailingToday), on request.
// Needs root (namespaces, tmpfs, userfaultfd) and ip/nft/tc; skips, saying
// why, without them. FARSWAP_CHAOS_SECONDS overrides the fault period.
// The long run is `farswap-bench chaos --minutes 30` (README.md).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "chaos_cluster.h"
#include "chaos_run.h"

namespace farswap::chaos {
namespace {

// kCiFaults: the kinds the R=2 CI case injects — every kind. kFailingToday:
// kinds known to lose pages on main, run by their own case (skipped, and
// reported as skipped, unless FARSWAP_CHAOS_KNOWN_FAILING=1); empty now.
// drain and pool_limit were there while the client kept a node's
// `draining` / `full` flag until the node re-attached (slabs stayed short
// of R copies and the next fault elsewhere lost pages); the client now
// re-attaches such a node every 5 s, and a 30-minute run of every kind
// (297 faults) lost nothing.
const std::vector<FaultKind> kCiFaults = {FaultKind::kKillRestart,
                                          FaultKind::kStopLong,
                                          FaultKind::kStopShort,
                                          FaultKind::kPartitionNode,
                                          FaultKind::kPartitionClientNode,
                                          FaultKind::kPartitionNodeNode,
                                          FaultKind::kPacketLoss,
                                          FaultKind::kDelay,
                                          FaultKind::kBackingEnospc,
                                          FaultKind::kDrain,
                                          FaultKind::kPoolLimit};
const std::vector<FaultKind> kFailingToday = {};

// SIGINT/SIGTERM (ctest's timeout, Ctrl-C) end the run early, so the
// namespaces and mounts are removed; a SIGKILLed run's are removed by the
// next run.
std::atomic<bool> interrupted{false};
void OnSignal(int) { interrupted = true; }

absl::Duration Period(absl::Duration fallback) {
  const char* s = std::getenv("FARSWAP_CHAOS_SECONDS");
  return s != nullptr ? absl::Seconds(std::atoi(s)) : fallback;
}

void Print(const ChaosReport& r) {
  std::cout << "chaos: " << r.faults_injected << " faults in " << r.seconds
            << " s, R=" << r.replicas << "\n";
  for (FaultKind k : r.enabled) {
    const FaultKindReport& f = r.by_kind[int(k)];
    if (f.injected == 0) continue;
    std::cout << "  " << FaultName(k) << ": injected " << f.injected << ", data_loss_errors "
              << f.during.data_loss_errors << ", sigbus " << f.during.sigbus << ", lost_pages "
              << f.during.lost_pages << ", client lost_pages " << f.client_lost_pages
              << ", recovery timeouts " << f.recovery_timeouts << "\n";
  }
  const WorkloadCounters t = r.total();
  std::cout << "  operations " << t.operations << ", pages verified " << t.pages_verified
            << ", lost_pages " << r.lost_pages() << ", sigbus " << r.sigbus()
            << ", data_loss_errors " << r.data_loss_errors() << "\n";
  for (const std::string& f : r.failures) std::cout << "  FAILURE " << f << "\n";
  for (const std::string& e : r.errors) std::cout << "  harness: " << e << "\n";
  for (const std::string& e : r.wrong_data_examples) std::cout << "  WRONG DATA " << e << "\n";
}

class ChaosTest : public ::testing::Test {
 protected:
  void Run(ChaosOptions o) {
    if (absl::Status s = CanCreateNetworkNamespaces(); !s.ok()) {
      GTEST_SKIP() << "chaos suite skipped: cannot build network namespaces: " << s;
    }
    o.log = [](const std::string& line) { std::cout << line << std::endl; };
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    o.interrupted = &interrupted;
    absl::StatusOr<ChaosReport> r = RunChaos(o);
    if (r.status().code() == absl::StatusCode::kFailedPrecondition) {
      GTEST_SKIP() << "chaos suite skipped: " << r.status();  // e.g. no userfaultfd
    }
    ASSERT_TRUE(r.ok()) << r.status();
    Print(*r);
    EXPECT_FALSE(r->interrupted) << "interrupted by a signal";
    EXPECT_GT(r->total().pages_verified, 0u);
    EXPECT_EQ(r->lost_pages(), 0u);
    EXPECT_EQ(r->sigbus(), 0u);
    EXPECT_EQ(r->data_loss_errors(), 0u);
    EXPECT_EQ(r->total().wrong_data, 0u) << "a read returned bytes that were never stored";
    for (FaultKind k : r->enabled) {
      EXPECT_EQ(r->by_kind[int(k)].recovery_timeouts, 0u)
          << FaultName(k) << ": slabs stayed short of R copies after healing";
    }
  }
};

TEST_F(ChaosTest, ReplicatedSurvivesEverySingleFault) {
  ChaosOptions o;
  o.replicas = 2;
  o.duration = Period(absl::Seconds(80));
  o.faults = kCiFaults;
  Run(o);
}

TEST_F(ChaosTest, UnreplicatedSurvivesStallsShorterThanTheTimeout) {
  ChaosOptions o;
  o.replicas = 1;
  o.duration = Period(absl::Seconds(25));
  o.faults = {FaultKind::kStopShort};
  o.pause = absl::Milliseconds(500);
  Run(o);
}

TEST_F(ChaosTest, KnownFailingTodayDrainAndPoolLimitThenOtherFaults) {
  if (kFailingToday.empty()) GTEST_SKIP() << "no fault kind is known to lose pages on main";
  if (std::getenv("FARSWAP_CHAOS_KNOWN_FAILING") == nullptr) {
    GTEST_SKIP() << "known to lose pages on main today (see kFailingToday); "
                    "FARSWAP_CHAOS_KNOWN_FAILING=1 runs it";
  }
  ChaosOptions o;
  o.replicas = 2;
  o.duration = Period(absl::Seconds(80));
  o.faults = kFailingToday;
  o.faults.push_back(FaultKind::kKillRestart);
  o.faults.push_back(FaultKind::kStopLong);
  Run(o);
}

}  // namespace
}  // namespace farswap::chaos
