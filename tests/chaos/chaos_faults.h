// chaos_faults.h: the kinds of fault the chaos suite injects, and how each
// is injected into and healed in a ChaosCluster.
//
//   Fault f = PlanFault(FaultKind::kStopLong, cluster, timing, rng);
//   InjectFault(f, cluster);  sleep(f.duration);  HealFault(f, cluster);
//
// Every fault affects one node (`node`; node-node partitions also `peer`),
// so with R=2 a single fault never leaves a page without a reachable copy.
// Durations are relative to the client's failure timeout (op_timeout): a
// short stall ends well inside it, a long one outlasts it several times.
//
// Thread safety: as ChaosCluster (one driving thread).
#ifndef FARSWAP_TESTS_CHAOS_CHAOS_FAULTS_H_
#define FARSWAP_TESTS_CHAOS_CHAOS_FAULTS_H_

#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chaos_cluster.h"

namespace farswap::chaos {

enum class FaultKind {
  kKillRestart,          // SIGKILL, down for `duration`, restarted empty
  kStopLong,             // SIGSTOP longer than the failure timeout, then SIGCONT
  kStopShort,            // SIGSTOP shorter than the failure timeout
  kPartitionNode,        // the node's link drops everything
  kPartitionClientNode,  // client <-> node dropped; the node still reaches its peers
  kPartitionNodeNode,    // node <-> peer dropped; the client reaches both
  kPacketLoss,           // random loss on the node's link (nft numgen)
  kDelay,                // slow link: tbf rate limit, replies queue up to 300 ms
  kBackingEnospc,        // tmpfs under the backing file filled, node killed: the
                         // restart fails with ENOSPC until space is freed
  kPoolLimit,            // pool limit lowered (writeback, then full), then raised
  kDrain,                // node drained (refuses new stores), then resumed
};
inline constexpr int kFaultKinds = 11;

const char* FaultName(FaultKind kind);
std::vector<FaultKind> AllFaultKinds();
// ParseFaultKinds reads "all" or a comma-separated list of FaultName()s.
absl::StatusOr<std::vector<FaultKind>> ParseFaultKinds(const std::string& text);

struct FaultTiming {
  absl::Duration failure_timeout = absl::Seconds(1);  // the client's op_timeout
  absl::Duration min_duration = absl::Seconds(3);     // of faults other than stalls
  absl::Duration max_duration = absl::Seconds(6);
  int loss_percent = 30;
  uint64_t pool_limit_bytes = 64ull << 20;  // the nodes' normal limit
  uint64_t lowered_pool_limit_bytes = 2ull << 20;
};

struct Fault {
  FaultKind kind;
  int node = 0;
  int peer = -1;
  absl::Duration duration;
  std::string Describe() const;
};

Fault PlanFault(FaultKind kind, int nodes, const FaultTiming& timing, std::mt19937_64& rng);
absl::Status InjectFault(const Fault& fault, const FaultTiming& timing, ChaosCluster& cluster);
// HealFault undoes the fault; for a killed node, restarts it (retrying
// while the disk is still full is the caller's business: it returns the
// restart's error).
absl::Status HealFault(const Fault& fault, const FaultTiming& timing, ChaosCluster& cluster);

}  // namespace farswap::chaos

#endif  // FARSWAP_TESTS_CHAOS_CHAOS_FAULTS_H_
