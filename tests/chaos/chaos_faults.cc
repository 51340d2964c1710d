#include "chaos_faults.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace farswap::chaos {
namespace {

constexpr const char* kNames[kFaultKinds] = {
    "kill_restart",          "stop_long",           "stop_short",  "partition_node",
    "partition_client_node", "partition_node_node", "packet_loss", "delay",
    "backing_enospc",        "pool_limit",          "drain"};

// The slow link: 2 Mbit/s is ~60 pages/s raw, far below what the workload
// asks, so replies queue; tbf drops what would wait longer than kMaxDelayMs.
constexpr int kSlowLinkKbit = 2000;
constexpr int kMaxDelayMs = 300;

}  // namespace

const char* FaultName(FaultKind kind) { return kNames[int(kind)]; }

std::vector<FaultKind> AllFaultKinds() {
  std::vector<FaultKind> all;
  for (int i = 0; i < kFaultKinds; ++i) all.push_back(FaultKind(i));
  return all;
}

absl::StatusOr<std::vector<FaultKind>> ParseFaultKinds(const std::string& text) {
  if (text == "all") return AllFaultKinds();
  std::vector<FaultKind> out;
  for (absl::string_view name : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int found = -1;
    for (int i = 0; i < kFaultKinds; ++i) {
      if (name == kNames[i]) found = i;
    }
    if (found < 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown fault kind '", name, "'"));
    }
    out.push_back(FaultKind(found));
  }
  if (out.empty()) return absl::InvalidArgumentError("no fault kinds");
  return out;
}

std::string Fault::Describe() const {
  std::string s = absl::StrCat(FaultName(kind), " node ", node);
  if (peer >= 0) absl::StrAppend(&s, " peer ", peer);
  absl::StrAppend(&s, " for ", absl::FormatDuration(duration));
  return s;
}

Fault PlanFault(FaultKind kind, int nodes, const FaultTiming& timing, std::mt19937_64& rng) {
  Fault f{.kind = kind};
  f.node = int(rng() % uint64_t(nodes));
  if (kind == FaultKind::kPartitionNodeNode && nodes > 1) {
    f.peer = (f.node + 1 + int(rng() % uint64_t(nodes - 1))) % nodes;
  }
  const double span = absl::ToDoubleSeconds(timing.max_duration - timing.min_duration);
  f.duration = timing.min_duration + absl::Seconds(span * double(rng() % 1000) / 1000.0);
  if (kind == FaultKind::kStopShort) {
    // Well inside the timeout: a request sent just before the stop still
    // has most of its timeout left when the node resumes.
    f.duration = timing.failure_timeout * (0.2 + 0.2 * double(rng() % 100) / 100.0);
  } else if (kind == FaultKind::kStopLong) {
    f.duration = std::max(f.duration, timing.failure_timeout * 3);
  }
  return f;
}

absl::Status InjectFault(const Fault& f, const FaultTiming& timing, ChaosCluster& c) {
  switch (f.kind) {
    case FaultKind::kKillRestart:
      c.Kill(f.node);
      return absl::OkStatus();
    case FaultKind::kStopLong:
    case FaultKind::kStopShort:
      c.Stop(f.node);
      return absl::OkStatus();
    case FaultKind::kPartitionNode:
      return c.DropAll(f.node);
    case FaultKind::kPartitionClientNode:
      return c.DropPeer(f.node, -1);
    case FaultKind::kPartitionNodeNode:
      return f.peer < 0 ? absl::OkStatus() : c.DropPeer(f.node, f.peer);
    case FaultKind::kPacketLoss:
      return c.DropRandom(f.node, timing.loss_percent);
    case FaultKind::kDelay:
      return c.SlowLink(f.node, kSlowLinkKbit, kMaxDelayMs);
    case FaultKind::kBackingEnospc: {
      c.Kill(f.node);
      absl::Status s = c.FillTmpfs(f.node);
      if (!s.ok()) return s;
      s = c.Restart(f.node);
      if (s.ok()) return absl::InternalError("restart on a full tmpfs succeeded (no ENOSPC)");
      return absl::OkStatus();  // refused, as expected: the node stays down
    }
    case FaultKind::kPoolLimit:
      return c.SetPoolLimit(f.node, timing.lowered_pool_limit_bytes);
    case FaultKind::kDrain:
      return c.Drain(f.node, true);
  }
  return absl::InternalError("unknown fault kind");
}

absl::Status HealFault(const Fault& f, const FaultTiming& timing, ChaosCluster& c) {
  switch (f.kind) {
    case FaultKind::kKillRestart:
      return c.Restart(f.node);
    case FaultKind::kStopLong:
    case FaultKind::kStopShort:
      c.Continue(f.node);
      return absl::OkStatus();
    case FaultKind::kPartitionNode:
    case FaultKind::kPartitionClientNode:
    case FaultKind::kPartitionNodeNode:
    case FaultKind::kPacketLoss:
    case FaultKind::kDelay:
      return c.Heal(f.node);
    case FaultKind::kBackingEnospc:
      c.FreeTmpfs(f.node).IgnoreError();
      return c.Restart(f.node);
    case FaultKind::kPoolLimit:
      return c.SetPoolLimit(f.node, timing.pool_limit_bytes);
    case FaultKind::kDrain:
      return c.Drain(f.node, false);
  }
  return absl::InternalError("unknown fault kind");
}

}  // namespace farswap::chaos
