// client.cc: the data path of farswap::Client — store, load, invalidate —
// and the public API. Locking rules are in client_impl.h.
#include "farswap/client/client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client_impl.h"
#include "completion_waiter.h"
#include "data_address_choice.h"
#include "farswap/common/cpu_idle.h"
#include "farswap/common/sync_point.h"
#include "farswap/common/thread_name.h"

namespace farswap {

using transport::FrameHeader;
using transport::IncomingMessage;
using transport::Opcode;
using transport::OutgoingMessage;

namespace {

// kMaxLoadReplans: how many times one load follows its slab to new
// replicas before it fails (each move is a committed, verified copy, so a
// second is already rare).
constexpr int kMaxLoadReplans = 3;

absl::Status WithPage(uint64_t page_no, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat("page ", page_no, ": ", s.message()));
}

}  // namespace

// WriteOp is one store or invalidate of pages of one slab, sent to every
// replica (and the node filling, if any). Thread-safe through `mu`.
struct Client::Impl::StoreOp {
  // User-provided, so allocate_shared does not zero the 4 KiB payload
  // (PreparePage writes it) as value-initialisation would.
  StoreOp() {}

  enum class Kind { kStore, kInvalidate } kind = Kind::kStore;
  uint64_t slab = 0;
  uint64_t first = 0;  // first page
  uint64_t count = 1;  // pages (invalidate ranges)
  PreparedPage page;   // kStore: built once, sent to every replica unchanged
  std::array<uint8_t, 8> count_payload{};
  DoneCallback done;
  int attempt = 0;
  absl::Time parked_since = absl::InfinitePast();  // first parked (a suspect node, back-pressure)

  struct Result {
    Target target;
    absl::Status status;
  };
  using Results = absl::InlinedVector<Result, 4>;  // one per target
  Mutex mu;
  size_t pending ABSL_GUARDED_BY(mu) = 0;
  Results results ABSL_GUARDED_BY(mu);
};

// LoadOp tries the replicas of one page in turn until one returns a copy
// that verifies. Only one request is in flight at a time, so it needs no
// lock: each step runs after the previous one's callback.
struct Client::Impl::LoadOp {
  uint64_t page_no = 0;
  uint64_t slab = 0;
  uint8_t* out = nullptr;
  size_t* wire_bytes = nullptr;  // optional: payload bytes of the verified reply
  DoneCallback done;
  absl::InlinedVector<int, 4> order;  // replica node ids, in the order to try
  size_t next = 0;
  int tried = 0;
  // checked: the requests a replica answered about its copy (the copy, or
  // that it is bad or missing); a request that timed out or found the
  // connection down read nothing and is not counted.
  int checked = 0;
  bool saw_bad_copy = false;  // some replica answered with a bad or missing copy
  // bad_copies: the replicas that answered with a bad, stale or missing
  // copy; a verified copy from another replica is written back to them
  // (RepairCopies).
  absl::InlinedVector<int, 2> bad_copies;
  bool saw_suspect = false;  // some replica is suspect: it may come back
  uint64_t expected = 0;     // xxh3-64 of what the client last stored there
  // issued_at_plan: the slab table's issued[] for the page when the load
  // was planned (a store or invalidate sent since changes it).
  uint64_t issued_at_plan = 0;
  // newer_from: the store version the next store would have taken when the
  // load was planned. A copy of at least this version was stored by a
  // store issued after the load began: newer than `expected`, never older.
  uint64_t newer_from = 0;
  // epoch: the slab's epoch when `order` was planned. A slab moved since
  // (re-replicated, or evacuated off a draining node, whose copy is then
  // invalidated) is planned again rather than failed.
  uint64_t epoch = 0;
  int replans = 0;
  absl::Time parked_since = absl::InfinitePast();
  std::string errors;
  // The request in flight (SendLoad): where it went, when it left, and the
  // operation itself, which the reply callback takes back. Holding the op
  // here instead of in the callback keeps the callback two pointers, which
  // std::function stores without allocating; the channel calls it exactly
  // once (RpcChannel's contract), so the reference never outlives the call.
  Target target;
  std::chrono::steady_clock::time_point sent;
  std::shared_ptr<LoadOp> in_flight;
  // A scrub's load (LoadRequest): the replica read first, and the tally it
  // is counted in instead of loads / failovers.
  int first_replica = -1;
  std::shared_ptr<ScrubTally> scrub;
};

Client::Impl::Impl(const ClientOptions& options, std::unique_ptr<NodeAttacher> attacher,
                   std::unique_ptr<transport::Transport> transport)
    : options_(options),
      pages_per_slab_(options.pages_per_slab),
      codec_options_{.codec = options.codec,
                     .zstd_level = options.zstd_level,
                     .raw_threshold = options.raw_threshold},
      attacher_(std::move(attacher)),
      transport_(std::move(transport)),
      table_(options.pages_per_slab) {}

bool Client::Impl::HasRdma() {
  if (options_.data_transport != "auto") return false;  // not asked
  MutexLock l(&rdma_mu_);
  if (!has_rdma_.has_value()) has_rdma_ = !transport::ProbeRdmaDevices().devices.empty();
  return *has_rdma_;
}

absl::StatusOr<transport::Transport*> Client::Impl::TransportFor(const std::string& data_addr) {
  const absl::string_view scheme = transport::AddressScheme(data_addr);
  if (data_addr.find("://") == std::string::npos || scheme == transport_->scheme()) {
    return transport_.get();
  }
  MutexLock l(&transports_mu_);
  auto it = other_transports_.find(scheme);
  if (it != other_transports_.end()) return it->second.get();
  absl::StatusOr<std::unique_ptr<transport::Transport>> t = transport::CreateTransport(
      scheme, {.io_threads = options_.io_threads, .busy_poll = options_.busy_poll});
  if (!t.ok()) {
    return absl::Status(t.status().code(),
                        absl::StrCat("node data address ", data_addr, ": ", t.status().message()));
  }
  return other_transports_.emplace(std::string(scheme), *std::move(t)).first->second.get();
}

Client::Impl::Failure Client::Impl::Classify(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return Failure::kNone;
    case absl::StatusCode::kUnavailable:       // connection closed
    case absl::StatusCode::kDeadlineExceeded:  // node stalled
    case absl::StatusCode::kCancelled:         // channel closed
    case absl::StatusCode::kUnauthenticated:   // node restarted: session gone
      return Failure::kNodeDown;
    case absl::StatusCode::kResourceExhausted:
      // Our own transport refuses a send when the node has stopped reading
      // megabytes of requests: that node is stalled, not full.
      if (absl::StartsWith(s.message(), "output queue to")) return Failure::kBackpressure;
      return Failure::kNodeFull;
    case absl::StatusCode::kFailedPrecondition:
      return Failure::kNodeDraining;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
      return Failure::kPageBad;
    default:
      return Failure::kOther;
  }
}

std::vector<client_internal::Candidate> Client::Impl::CandidatesLocked(
    const std::vector<int>& exclude) const {
  std::vector<client_internal::Candidate> out;
  for (int i = 0; i < int(nodes_.size()); ++i) {
    const Node& n = nodes_[i];
    if (n.state != NodeState::kUp || n.full || n.draining || n.quarantined) continue;
    if (std::find(exclude.begin(), exclude.end(), i) != exclude.end()) continue;
    out.push_back({.node = i, .key = n.key});
  }
  return out;
}

Client::Impl::Target Client::Impl::TargetLocked(int node) const {
  const Node& n = nodes_[node];
  return Target{.node = node,
                .address = n.counters->address,
                .channel = n.channel,
                .load_channel = n.load_channel,
                .counters = n.counters.get(),
                .scrub_loads = n.scrub_loads};
}

absl::Status Client::Impl::NodeDownError(const Target& t) {
  return absl::UnavailableError(absl::StrCat("node ", t.address, " is down"));
}

Client::Impl::Channel Client::Impl::ChannelFor(const Target& t, Lane lane) {
  return lane == Lane::kLoads && t.load_channel != nullptr ? t.load_channel : t.channel;
}

void Client::Impl::Call(const Target& t, OutgoingMessage m, transport::ReplyCallback done,
                        Lane lane) {
  NodeCounters* c = t.counters;
  c->requests++;
  if (t.channel == nullptr) {
    c->errors++;
    done(NodeDownError(t));
    return;
  }
  const absl::Time start = absl::Now();
  ChannelFor(t, lane)->Call(std::move(m), options_.op_timeout,
                            [c, start, done = std::move(done)](absl::StatusOr<IncomingMessage> r) {
                              c->latency.Record(absl::Now() - start);
                              if (!r.ok()) c->errors++;
                              done(std::move(r));
                            });
}

void Client::Impl::HandleFailure(int node, const Channel& channel, uint64_t slab, Failure f,
                                 const absl::Status& s) {
  std::vector<Channel> cleanup;
  uint64_t first = 0, count = 0;
  {
    MutexLock l(&mu_);
    Node& n = nodes_[node];
    switch (f) {
      case Failure::kNodeDown: {
        // A stale call on an old connection says nothing about a node that
        // has since been re-attached.
        if (n.channel != channel || channel == nullptr) return;
        // A timeout leaves the connection usable (a stalled node may
        // answer on it again); a closed or reset one, or a lost session,
        // needs a re-attach.
        const bool broken = s.code() != absl::StatusCode::kDeadlineExceeded;
        if (n.state == NodeState::kUp || (n.state == NodeState::kSuspect && broken)) {
          MarkSuspectLocked(node, s.ToString(), broken);
        }
        return;
      }
      case Failure::kNodeFull:
      case Failure::kNodeDraining: {
        if (!n.full && !n.draining) n.flagged_at = absl::Now();
        if (f == Failure::kNodeFull) {
          n.full = true;
        } else {
          n.draining = true;
        }
        n.last_error = s.ToString();
        // Move the slab off it, unless it holds the only copy: then it keeps
        // serving loads and this write fails instead.
        client_internal::Slab* sl = table_.Find(slab);
        if (sl == nullptr) return;
        bool replica =
            std::find(sl->replicas.begin(), sl->replicas.end(), node) != sl->replicas.end();
        if ((replica && sl->replicas.size() > 1) || sl->filling == node) {
          table_.DropReplica(slab, node);
          if (n.channel) cleanup.push_back(n.channel);
          first = table_.FirstPage(slab);
          count = table_.pages_per_slab();
          wake_ = true;
          changed_.SignalAll();
        }
        break;
      }
      default:
        return;
    }
  }
  // Free what the node holds of the slab it no longer serves (best effort).
  for (const Channel& ch : cleanup) {
    auto payload = std::make_shared<std::array<uint8_t, 8>>(transport::EncodeU64Payload(count));
    ch->Call(OutgoingMessage{.header = {.opcode = Opcode::kInvalidateRange, .page = first},
                             .payload = {{payload->data(), payload->size()}},
                             .on_sent = [payload](absl::Status) {}},
             options_.op_timeout, [payload](absl::StatusOr<IncomingMessage>) {});
  }
}

void Client::Impl::MarkSuspectLocked(int node, const std::string& why, bool broken) {
  Node& n = nodes_[node];
  if (n.state == NodeState::kUp) {
    n.state = NodeState::kSuspect;
    n.suspect_since = absl::Now();
    n.times_suspect++;
    spdlog::warn("farswap client: node {} is suspect: {}", n.address, why);
  }
  n.last_error = why;
  if (broken) RetireChannelsLocked(n);
  wake_ = true;
  changed_.SignalAll();
  parked_cv_.SignalAll();
}

void Client::Impl::RetireChannelsLocked(Node& n) {
  if (n.load_channel != nullptr && n.load_channel != n.channel) retired_.push_back(n.load_channel);
  if (n.channel != nullptr) retired_.push_back(n.channel);
  n.channel = n.load_channel = nullptr;
}

void Client::Impl::MarkDeadLocked(int node, const std::string& why) {
  Node& n = nodes_[node];
  if (n.state != NodeState::kRemoved) n.state = NodeState::kDown;
  n.last_error = why;
  n.times_down++;
  spdlog::warn("farswap client: node {} is down: {}", n.address, why);
  RetireChannelsLocked(n);
  for (const client_internal::SlabTable::Dropped& d : table_.DropNode(node)) {
    n.orphans.push_back({.slab = d.slab, .epoch = d.epoch, .only_copy = d.only_copy});
  }
  wake_ = true;
  changed_.SignalAll();
  parked_cv_.SignalAll();
}

void Client::Impl::DropReplicaLocked(uint64_t slab, int node) {
  bool only_copy = false;
  if (!table_.DropReplica(slab, node, &only_copy)) return;
  nodes_[node].orphans.push_back(
      {.slab = slab, .epoch = table_.Find(slab)->epoch, .only_copy = only_copy});
  wake_ = true;
  changed_.SignalAll();
}

void Client::Impl::Park(std::function<void()> retry) {
  MutexLock l(&mu_);
  parked_.push_back(std::move(retry));
  parked_cv_.SignalAll();
}

bool Client::Impl::ParkExpired(absl::Time since) const {
  return absl::Now() - since > options_.dead_node_timeout + 2 * options_.op_timeout;
}

void Client::Impl::RetryLoop() {
  SetCurrentThreadName("fs-retry");
  // kParkTick: how soon a parked operation is tried again when nothing
  // wakes the loop first (membership changes do).
  constexpr absl::Duration kParkTick = absl::Milliseconds(20);
  MutexLock l(&mu_);
  while (!stopping_) {
    if (parked_.empty()) {
      parked_cv_.Wait(&mu_);
      continue;
    }
    parked_cv_.WaitWithTimeout(&mu_, kParkTick);
    if (stopping_) break;
    std::vector<std::function<void()>> run;
    run.swap(parked_);
    mu_.Unlock();
    for (std::function<void()>& f : run) {
      parked_retries_++;
      f();
    }
    mu_.Lock();
  }
}

// ---------------------------------------------------------------- stores

void Client::Impl::StoreAsync(uint64_t page_no, const void* page, DoneCallback done,
                              SnapshotMode mode, size_t* wire_bytes) {
  PageWrite one{.page_no = page_no, .page = page};
  std::vector<DoneCallback> callbacks;
  callbacks.push_back(std::move(done));
  StoreManyAsync({&one, 1}, mode, std::move(callbacks), wire_bytes);
}

void Client::Impl::StoreManyAsync(std::span<const PageWrite> pages, SnapshotMode mode,
                                  std::vector<DoneCallback> done, size_t* wire_bytes) {
  std::vector<std::shared_ptr<StoreOp>> ops;
  ops.reserve(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    std::shared_ptr<StoreOp> op = client_internal::MakeRecycled<StoreOp>(store_op_blocks_);
    op->kind = StoreOp::Kind::kStore;
    op->first = pages[i].page_no;
    op->slab = pages[i].page_no / pages_per_slab_;
    op->done = std::move(done[i]);
    client_internal::PreparePage(client_internal::ThreadCodec(codec_options_), pages[i].page_no,
                                 pages[i].page, mode, &op->page);
    // Retries and every replica send this same version.
    op->page.version = next_store_version_.fetch_add(1, std::memory_order_relaxed);
    if (wire_bytes != nullptr) wire_bytes[i] = op->page.payload_bytes().size();
    ops.push_back(std::move(op));
  }
  IssueStores(ops);
}

void Client::Impl::InvalidateRangeAsync(uint64_t first, uint64_t count, DoneCallback done) {
  if (count == 0) {
    done(absl::OkStatus());
    return;
  }
  if (first + (count - 1) < first) {
    done(absl::InvalidArgumentError(
        absl::StrCat("page range ", first, " + ", count, " overflows the page number space")));
    return;
  }
  // One operation per slab touched; `done` runs when the last finishes,
  // with the first error.
  struct Tally {
    Mutex mu;
    uint64_t left ABSL_GUARDED_BY(mu) = 0;
    absl::Status first_error ABSL_GUARDED_BY(mu);
    DoneCallback done;
  };
  auto tally = std::make_shared<Tally>();
  tally->done = std::move(done);
  std::vector<std::shared_ptr<StoreOp>> ops;
  const uint64_t last = first + count - 1;
  for (uint64_t p = first;;) {
    uint64_t slab = p / pages_per_slab_;
    uint64_t slab_last = slab * pages_per_slab_ + pages_per_slab_ - 1;
    uint64_t end = std::min(last, slab_last);
    std::shared_ptr<StoreOp> op = client_internal::MakeRecycled<StoreOp>(store_op_blocks_);
    op->kind = StoreOp::Kind::kInvalidate;
    op->slab = slab;
    op->first = p;
    op->count = end - p + 1;
    op->count_payload = transport::EncodeU64Payload(op->count);
    op->done = [tally](absl::Status s) {
      DoneCallback d;
      absl::Status result;
      {
        MutexLock l(&tally->mu);
        if (!s.ok() && tally->first_error.ok()) tally->first_error = s;
        if (--tally->left != 0) return;
        result = tally->first_error;
        d = std::move(tally->done);
      }
      d(result);
    };
    ops.push_back(std::move(op));
    if (end == last) break;
    p = end + 1;
  }
  {
    MutexLock l(&tally->mu);
    tally->left = ops.size();
  }
  IssueStores(ops);
}

absl::Status Client::Impl::PlanStoreLocked(StoreOp& op, TargetList* targets) {
  mu_.AssertHeld();
  if (stopping_) return absl::CancelledError("the client is shutting down");
  if (op.kind == StoreOp::Kind::kInvalidate && table_.Find(op.slab) == nullptr) {
    return absl::OkStatus();  // never stored anything there: nothing to drop
  }
  client_internal::Slab& s = table_.GetOrCreate(op.slab);
  if (op.kind == StoreOp::Kind::kStore) {
    table_.Place(op.slab, replicas_, CandidatesLocked(s.replicas));
  }
  if (s.replicas.empty() && op.kind == StoreOp::Kind::kStore) {
    int up = 0;
    for (const Node& n : nodes_) up += n.state == NodeState::kUp;
    return absl::UnavailableError(absl::StrCat("no memory node can take slab ", op.slab, " (",
                                               nodes_.size(), " known, ", up,
                                               " up; the rest down, full or draining)"));
  }
  for (int r : s.replicas) targets->push_back(TargetLocked(r));
  if (s.filling >= 0) targets->push_back(TargetLocked(s.filling));
  if (op.kind == StoreOp::Kind::kStore) {
    s.issued[table_.IndexOf(op.first)] = op.page.checksum;
  } else {
    // A load that meets the copies this drops waits for it (FailLoad).
    for (uint64_t p = op.first; p < op.first + op.count; ++p) {
      s.issued[table_.IndexOf(p)] = client_internal::kIssuedInvalidate;
    }
  }
  if (!targets->empty()) s.writes_in_flight++;
  if (targets->empty()) {  // an invalidate of a slab with no replica left
    for (uint64_t p = op.first; p < op.first + op.count; ++p) {
      s.lost.Clear(table_.IndexOf(p));
      s.present.Clear(table_.IndexOf(p));
    }
  }
  return absl::OkStatus();
}

OutgoingMessage Client::Impl::StoreMessage(const StoreOp& op) {
  OutgoingMessage m;
  if (op.kind == StoreOp::Kind::kStore) {
    m.header = op.page.header();
    m.payload = {op.page.payload_bytes()};
  } else if (op.count == 1) {
    m.header = {.opcode = Opcode::kInvalidate, .page = op.first};
  } else {
    m.header = {.opcode = Opcode::kInvalidateRange, .page = op.first};
    m.payload = {{op.count_payload.data(), op.count_payload.size()}};
  }
  return m;
}

void Client::Impl::OnStoreReply(const std::shared_ptr<StoreOp>& op, const Target& t,
                                absl::Status status) {
  bool last;
  {
    MutexLock l(&op->mu);
    op->results.push_back({t, std::move(status)});
    last = --op->pending == 0;
  }
  if (last) FinishStore(op);
}

void Client::Impl::IssueStore(std::shared_ptr<StoreOp> op) {
  std::shared_ptr<StoreOp> one[1] = {std::move(op)};
  IssueStores(one);
}

void Client::Impl::IssueStores(std::span<std::shared_ptr<StoreOp>> ops) {
  // Plan every operation under one hold of mu_, then send: the writes bound
  // for one node leave as one BATCH frame (docs/design.md, "A page's way out and back"), a single
  // write as a plain frame.
  std::vector<TargetList> targets(ops.size());
  std::vector<absl::Status> refused(ops.size());
  bool any_suspect = false;  // a refused store may wait for a suspect node
  {
    MutexLock l(&mu_);
    for (size_t i = 0; i < ops.size(); ++i) refused[i] = PlanStoreLocked(*ops[i], &targets[i]);
    for (const Node& n : nodes_) any_suspect |= n.state == NodeState::kSuspect;
  }
  // The operations (indices into ops) that write to each node; a handful of
  // nodes, so a linear search beats hashing.
  NodeGroups by_node(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    StoreOp& op = *ops[i];
    if (!refused[i].ok() || targets[i].empty()) {
      if (refused[i].code() == absl::StatusCode::kUnavailable && any_suspect) {
        // No node can take the slab now, but a suspect one may come back.
        if (op.parked_since == absl::InfinitePast()) op.parked_since = absl::Now();
        if (!ParkExpired(op.parked_since)) {
          std::shared_ptr<StoreOp> again = ops[i];
          Park([this, again] { IssueStore(again); });
          continue;
        }
      }
      if (!refused[i].ok()) store_errors_ += op.kind == StoreOp::Kind::kStore;
      if (refused[i].ok() && op.kind == StoreOp::Kind::kInvalidate) invalidates_ += op.count;
      op.done(refused[i].ok() ? refused[i] : WithPage(op.first, refused[i]));
      continue;
    }
    {
      MutexLock l(&op.mu);
      op.pending = targets[i].size();
      op.results.clear();
    }
    for (const Target& t : targets[i]) {
      by_node.Add(t, i);
    }
  }
  for (auto& group : by_node.groups) {
    const Target& t = group.first;
    const NodeGroups::Members& members = group.second;
    for (size_t begin = 0; begin < members.size(); begin += transport::kMaxBatchEntries) {
      const size_t end = std::min(members.size(), begin + transport::kMaxBatchEntries);
      if (end - begin == 1) {
        std::shared_ptr<StoreOp> op = ops[members[begin]];
        OutgoingMessage m = StoreMessage(*op);
        m.on_sent = [op](absl::Status) {};  // keeps the payload alive until written
        Call(t, std::move(m),
             [this, op, t](absl::StatusOr<IncomingMessage> r) { OnStoreReply(op, t, r.status()); });
        continue;
      }
      std::vector<std::shared_ptr<StoreOp>> batch_ops;
      batch_ops.reserve(end - begin);
      for (size_t k = begin; k < end; ++k) batch_ops.push_back(ops[members[k]]);
      SendStoreBatch(t, std::move(batch_ops));
    }
  }
}

// StoreBatchCall owns one BATCH of writes to one node until it is sent and
// answered: the encoder's sub-headers and the operations whose payloads its
// pieces point into.
struct Client::Impl::StoreBatchCall {
  explicit StoreBatchCall(std::vector<std::shared_ptr<StoreOp>> batch_ops)
      : encoder(batch_ops.size()), ops(std::move(batch_ops)) {}
  transport::BatchEncoder encoder;
  std::vector<std::shared_ptr<StoreOp>> ops;
};

void Client::Impl::SendStoreBatch(const Target& t, std::vector<std::shared_ptr<StoreOp>> ops) {
  auto call = std::make_shared<StoreBatchCall>(std::move(ops));
  for (const std::shared_ptr<StoreOp>& op : call->ops) {
    absl::Status added;
    if (op->kind == StoreOp::Kind::kStore) {
      // The page's one payload piece, without StoreMessage's vector.
      const std::span<const uint8_t> payload = op->page.payload_bytes();
      added = call->encoder.Add(op->page.header(), {&payload, 1});
    } else {
      OutgoingMessage m = StoreMessage(*op);
      added = call->encoder.Add(m.header, m.payload);
    }
    assert(added.ok());  // headers the client builds are valid by construction
    (void)added;
  }
  OutgoingMessage m;
  m.header = call->encoder.Header(0);
  m.payload.assign(call->encoder.pieces().begin(), call->encoder.pieces().end());
  m.on_sent = [call](absl::Status) {};
  Call(t, std::move(m), [this, call, t](absl::StatusOr<IncomingMessage> r) {
    std::vector<absl::Status> statuses = SplitBatchReply(r, call->ops.size(), nullptr);
    for (size_t i = 0; i < call->ops.size(); ++i) OnStoreReply(call->ops[i], t, statuses[i]);
  });
}

std::vector<absl::Status> Client::Impl::SplitBatchReply(
    const absl::StatusOr<IncomingMessage>& reply, size_t entries,
    std::vector<transport::FrameView>* views) {
  if (!reply.ok()) return std::vector<absl::Status>(entries, reply.status());
  absl::StatusOr<std::vector<transport::FrameView>> subs =
      transport::DecodeBatch({reply->header, reply->payload});
  if (subs.ok() && subs->size() != entries) {
    subs = absl::InternalError(
        absl::StrCat("BATCH reply has ", subs->size(), " entries for ", entries, " requests"));
  }
  if (!subs.ok()) return std::vector<absl::Status>(entries, subs.status());
  std::vector<absl::Status> out(entries);
  for (size_t i = 0; i < entries; ++i) {
    const transport::FrameView& v = (*subs)[i];
    if (v.header.status != absl::StatusCode::kOk) {
      out[i] = absl::Status(v.header.status, std::string(v.payload.begin(), v.payload.end()));
    }
  }
  if (views != nullptr) *views = *std::move(subs);
  return out;
}

void Client::Impl::FinishStore(std::shared_ptr<StoreOp> op) {
  StoreOp::Results results;  // taken: a retry plans new ones
  {
    MutexLock l(&op->mu);
    results.swap(op->results);
  }
  const bool is_store = op->kind == StoreOp::Kind::kStore;
  absl::Status first_error;
  absl::InlinedVector<int, 4> acked, suspect;  // suspect: failed as down (stalled, unreachable)
  bool node_lost = false, wait = false;
  bool superseded = false;  // some replica holds a newer store of the page
  for (const StoreOp::Result& r : results) {
    absl::Status s = r.status;
    if (!is_store && s.code() == absl::StatusCode::kNotFound) s = absl::OkStatus();
    // ABORTED ("stale version"): the node already holds a newer version of
    // the page, from a store issued after this one (an earlier try of this
    // one was abandoned). Harmless: the newer data is where it should be.
    if (is_store && s.code() == absl::StatusCode::kAborted) {
      superseded = true;
      s = absl::OkStatus();
    }
    if (s.ok()) {
      acked.push_back(r.target.node);
      continue;
    }
    Failure f = Classify(s);
    if (f == Failure::kNodeDown) suspect.push_back(r.target.node);
    // A suspect node or back-pressure is waited out (parked), not failed.
    wait |= f == Failure::kNodeDown || f == Failure::kBackpressure;
    node_lost |= f == Failure::kNodeFull || f == Failure::kNodeDraining || f == Failure::kPageBad;
    // A draining node that holds the slab's only replica refuses the write
    // until maintenance has moved the slab elsewhere: wait for that.
    wait |= f == Failure::kNodeDraining;
    HandleFailure(r.target.node, r.target.channel, op->slab, f, s);
    if (first_error.ok())
      first_error = absl::Status(s.code(), absl::StrCat(r.target.address, ": ", s.message()));
  }
  bool ok = false, retry = false;
  {
    MutexLock l(&mu_);
    client_internal::Slab* s = table_.Find(op->slab);
    if (s != nullptr) {
      s->writes_in_flight--;
      auto has = [](const auto& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); };
      // A replica that missed this write while another replica took it
      // holds a stale copy now: it leaves the slab (re-replication tops the
      // slab up). Without such a witness nobody is dropped: the write waits.
      bool replica_acked = false;
      for (int r : s->replicas) replica_acked |= has(acked, r);
      bool dropped = false;
      if (replica_acked) {
        for (int node : suspect) {
          if (has(s->replicas, node) || s->filling == node) {
            DropReplicaLocked(op->slab, node);
            dropped = true;
          }
        }
      }
      ok = !s->replicas.empty();
      for (int r : s->replicas) ok &= has(acked, r);
      if (ok) {
        for (uint64_t p = op->first; p < op->first + op->count; ++p) {
          uint32_t i = table_.IndexOf(p);
          if (is_store) {
            s->present.Set(i);
            // The newer store's own completion records its checksum.
            if (!superseded) s->checksums[i] = op->page.checksum;
          } else {
            s->present.Clear(i);
          }
          s->lost.Clear(i);
          // A copier filling a replacement must (re)copy what changed.
          if (s->filling >= 0) s->dirty.Set(i);
        }
      }
      retry = !ok && node_lost && op->attempt < 3 && !stopping_;
      // Wake the waiters on changed_ only when this completion can be what
      // one waits for: a copier filling a replacement replica (writes in
      // flight, dirty pages), a dropped replica, a failure, an invalidate
      // (present pages). A plain acknowledged store is none of these, and
      // signalling it woke the maintenance thread once per page stored.
      if (!ok || !is_store || dropped || s->filling >= 0) changed_.SignalAll();
    }
  }
  if (!ok && !retry && wait) {
    if (op->parked_since == absl::InfinitePast()) op->parked_since = absl::Now();
    if (!ParkExpired(op->parked_since)) {
      Park([this, op] { IssueStore(op); });
      return;
    }
  }
  if (retry) {
    op->attempt++;
    IssueStore(std::move(op));
    return;
  }
  if (ok) {
    if (is_store) {
      stores_++;
      bytes_before_ += kPageSize;
      bytes_after_ += op->page.payload_bytes().size();
      same_pages_ += op->page.encoded.kind == EncodedPage::Kind::kSameFilled;
      raw_pages_ += op->page.encoded.kind == EncodedPage::Kind::kRaw;
    } else {
      invalidates_ += op->count;
    }
    op->done(absl::OkStatus());
    return;
  }
  if (is_store) store_errors_++;
  if (first_error.ok()) first_error = absl::UnavailableError("no replica acknowledged");
  op->done(WithPage(op->first, first_error));
}

// ---------------------------------------------------------------- loads

void Client::Impl::LoadAsync(uint64_t page_no, void* out, DoneCallback done, size_t* wire_bytes) {
  LoadRequest one{
      .page_no = page_no, .out = out, .done = std::move(done), .wire_bytes = wire_bytes};
  LoadManyAsync({&one, 1});
}

absl::Status Client::Impl::PlanLoadLocked(LoadOp& op) {
  mu_.AssertHeld();
  client_internal::Slab* s = table_.Find(op.slab);
  uint32_t i = table_.IndexOf(op.page_no);
  if (s != nullptr && s->present.Get(i)) {
    op.order.assign(s->replicas.begin(), s->replicas.end());
    op.next = 0;
    op.expected = s->checksums[i];
    op.issued_at_plan = s->issued[i];
    op.newer_from = next_store_version_.load(std::memory_order_relaxed);
    op.epoch = s->epoch;
    // Spread loads over the replicas; the rotation is per page, so one
    // page always tries the same replica first. Live replicas go before
    // draining ones (their slabs are being moved off), then suspect ones.
    if (!op.order.empty()) {
      std::rotate(op.order.begin(), op.order.begin() + op.page_no % op.order.size(),
                  op.order.end());
      absl::InlinedVector<int, 4> ordered, draining, suspect;
      for (int node : op.order) {
        if (CountsTowardsRLocked(node)) {
          ordered.push_back(node);
        } else {
          (LiveLocked(node) ? draining : suspect).push_back(node);
        }
      }
      ordered.insert(ordered.end(), draining.begin(), draining.end());
      ordered.insert(ordered.end(), suspect.begin(), suspect.end());
      op.order = std::move(ordered);
      // A scrub reads the copy it checks first, the others only to fail
      // over to (and to repair it from).
      if (op.first_replica >= 0) {
        if (auto it = absl::c_find(op.order, op.first_replica); it != op.order.end()) {
          std::rotate(op.order.begin(), it, it + 1);
        }
      }
    }
    return absl::OkStatus();
  }
  if (s != nullptr && s->lost.Get(i)) {
    return absl::DataLossError(absl::StrCat("page ", op.page_no, ": every replica of slab ",
                                            op.slab, " was lost (nodes failed)"));
  }
  return absl::NotFoundError(absl::StrCat("page ", op.page_no, ": never stored, or invalidated"));
}

bool Client::Impl::NextLoadTargetLocked(LoadOp& op, Target* t) {
  mu_.AssertHeld();
  while (op.next < op.order.size()) {
    int node = op.order[op.next++];
    const Node& n = nodes_[node];
    if (n.state == NodeState::kSuspect) op.saw_suspect = true;
    // A suspect node still connected may answer (a stall that ended).
    if (n.state == NodeState::kUp || (n.state == NodeState::kSuspect && n.channel != nullptr)) {
      *t = TargetLocked(node);
      return true;
    }
    absl::StrAppend(&op.errors, op.errors.empty() ? "" : "; ", n.address,
                    n.state == NodeState::kSuspect ? " is suspect" : " is down");
  }
  return false;
}

Client::Impl::PageChange Client::Impl::PageChangeSincePlanLocked(const LoadOp& op) {
  mu_.AssertHeld();
  const client_internal::Slab* s = table_.Find(op.slab);
  if (s == nullptr) return PageChange::kSettled;
  const uint32_t i = table_.IndexOf(op.page_no);
  const bool changed = s->epoch != op.epoch || !s->present.Get(i) ||
                       s->checksums[i] != op.expected || s->issued[i] != op.issued_at_plan ||
                       op.issued_at_plan != op.expected;  // a write in flight at the plan
  if (!changed) return PageChange::kNone;
  // A store or invalidate of this page sent and not yet acknowledged.
  const bool in_flight =
      s->writes_in_flight > 0 && s->present.Get(i) && s->issued[i] != s->checksums[i];
  return in_flight ? PageChange::kWriteInFlight : PageChange::kSettled;
}

void Client::Impl::FailLoad(std::shared_ptr<LoadOp> op) {
  bool moved;
  PageChange change = PageChange::kNone;
  {
    MutexLock l(&mu_);
    const client_internal::Slab* s = table_.Find(op->slab);
    moved = s != nullptr && s->epoch != op->epoch && !stopping_;
    // A scrub's load counts a changed page itself (CountLoadRefused).
    if (!moved && op->saw_bad_copy && op->scrub == nullptr && !stopping_) {
      change = PageChangeSincePlanLocked(*op);
    }
  }
  if (moved && op->replans < kMaxLoadReplans) {
    // The slab moved while this load was on its way (its old copy may have
    // been freed): try the replicas it has now.
    op->replans++;
    RetryLoad(std::move(op));
    return;
  }
  if (change != PageChange::kNone) {
    // The copies it found bad, stale or missing were being replaced or
    // dropped by the caller's own store or invalidate, sent after the load
    // was planned or still in flight then: no loss. Once that write is
    // done, the load is planned again from what the table says now (the
    // new version, or NOT_FOUND after an invalidate).
    if (change == PageChange::kWriteInFlight) {
      if (op->parked_since == absl::InfinitePast()) op->parked_since = absl::Now();
      if (!ParkExpired(op->parked_since)) {
        op->saw_bad_copy = false;
        op->bad_copies.clear();
        // [none] Parked behind the page's write in flight.
        FARSWAP_SYNC_POINT("Client::FailLoad:parked-behind-write");
        Park([this, op] { RetryLoad(op); });
        return;
      }
    } else if (op->replans < kMaxLoadReplans) {
      op->saw_bad_copy = false;
      op->bad_copies.clear();
      op->replans++;
      RetryLoad(std::move(op));
      return;
    }
  }
  if (op->saw_suspect) {
    // Some copy is on a node that may come back: wait for it (a stall is
    // not a loss), up to the time it takes to be declared dead.
    if (op->parked_since == absl::InfinitePast()) op->parked_since = absl::Now();
    if (!ParkExpired(op->parked_since)) {
      Park([this, op] { RetryLoad(op); });
      return;
    }
  }
  absl::StatusCode code =
      op->saw_bad_copy ? absl::StatusCode::kDataLoss : absl::StatusCode::kUnavailable;
  CountLoadRefused(*op, code);
  op->done(absl::Status(
      code, absl::StrCat("page ", op->page_no, ": no replica of slab ", op->slab,
                         " returned a valid copy", op->errors.empty() ? "" : ": ", op->errors)));
}

void Client::Impl::RetryLoad(std::shared_ptr<LoadOp> op) {
  absl::Status planned;
  Target t;
  bool found = false;
  {
    MutexLock l(&mu_);
    if (stopping_) {
      planned = absl::CancelledError("the client is shutting down");
    } else {
      op->saw_suspect = false;
      op->errors.clear();
      planned = PlanLoadLocked(*op);
      if (planned.ok()) found = NextLoadTargetLocked(*op, &t);
    }
  }
  if (!planned.ok()) {
    CountLoadRefused(*op, planned.code());
    op->done(planned);
    return;
  }
  if (!found) {
    FailLoad(std::move(op));
    return;
  }
  SendLoad(std::move(op), t);
}

void Client::Impl::LoadManyAsync(std::span<LoadRequest> requests) {
  // Plan every load under one hold of mu_ and pick each one's first
  // replica; loads whose first replica is the same node leave as one BATCH.
  // Sized inline for a one-page call (a fault's load): it allocates nothing.
  absl::InlinedVector<std::shared_ptr<LoadOp>, 1> ops(requests.size());
  absl::InlinedVector<absl::Status, 1> refused(requests.size());
  absl::InlinedVector<Target, 1> first(requests.size());
  {
    MutexLock l(&mu_);
    for (size_t i = 0; i < requests.size(); ++i) {
      std::shared_ptr<LoadOp> op = client_internal::MakeRecycled<LoadOp>(load_op_blocks_);
      op->page_no = requests[i].page_no;
      op->wire_bytes = requests[i].wire_bytes;
      op->slab = op->page_no / pages_per_slab_;
      op->out = static_cast<uint8_t*>(requests[i].out);
      op->done = std::move(requests[i].done);
      op->first_replica = requests[i].first_replica;
      op->scrub = std::move(requests[i].scrub);
      refused[i] = PlanLoadLocked(*op);
      if (refused[i].ok() && !NextLoadTargetLocked(*op, &first[i])) first[i].node = -1;
      ops[i] = std::move(op);
    }
  }
  // [none] Planned, not sent: tests change the pages here.
  FARSWAP_SYNC_POINT("Client::LoadManyAsync:planned");
  NodeGroups by_node(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!refused[i].ok()) {
      CountLoadRefused(*ops[i], refused[i].code());
      ops[i]->done(refused[i]);
      continue;
    }
    if (first[i].node < 0) {
      FailLoad(ops[i]);
      continue;
    }
    by_node.Add(first[i], i);
  }
  for (auto& group : by_node.groups) {
    const Target& t = group.first;
    const NodeGroups::Members& members = group.second;
    for (size_t begin = 0; begin < members.size(); begin += transport::kMaxBatchEntries) {
      const size_t end = std::min(members.size(), begin + transport::kMaxBatchEntries);
      if (end - begin == 1) {
        SendLoad(ops[members[begin]], t);
        continue;
      }
      auto batch = std::make_shared<std::vector<std::shared_ptr<LoadOp>>>();
      batch->reserve(end - begin);
      transport::BatchEncoder encoder(end - begin);
      for (size_t k = begin; k < end; ++k) {
        const std::shared_ptr<LoadOp>& op = ops[members[k]];
        op->tried++;
        batch->push_back(op);
        absl::Status added =
            encoder.Add({.opcode = Opcode::kLoad, .flags = LoadFlags(*op, t), .page = op->page_no});
        assert(added.ok());
        (void)added;
      }
      auto enc = std::make_shared<transport::BatchEncoder>(std::move(encoder));
      OutgoingMessage m;
      m.header = enc->Header(0);
      m.payload.assign(enc->pieces().begin(), enc->pieces().end());
      m.on_sent = [enc](absl::Status) {};
      const auto sent = std::chrono::steady_clock::now();
      Call(
          t, std::move(m),
          [this, batch, t, sent](absl::StatusOr<IncomingMessage> r) {
            std::vector<transport::FrameView> views;
            std::vector<absl::Status> statuses = SplitBatchReply(r, batch->size(), &views);
            for (size_t i = 0; i < batch->size(); ++i) {
              if (statuses[i].ok()) {
                OnLoadReply((*batch)[i], t, statuses[i], views[i].header, views[i].payload, sent);
              } else {
                OnLoadReply((*batch)[i], t, statuses[i], {}, {}, sent);
              }
            }
          },
          Lane::kLoads);
    }
  }
}

bool Client::Impl::StoreRacedLoad(const LoadOp& op, uint64_t checksum) {
  // The caller stored the page again while this load was in flight: the
  // node may already serve the new version before its acknowledgement
  // reaches us. Accept it when it is what the table now expects, or what
  // the last store sent for the page carried.
  MutexLock l(&mu_);
  const client_internal::Slab* s = table_.Find(op.slab);
  if (s == nullptr) return false;
  const uint32_t i = table_.IndexOf(op.page_no);
  return s->checksums[i] == checksum || s->issued[i] == checksum;
}

uint8_t Client::Impl::LoadFlags(const LoadOp& op, const Target& t) {
  return op.scrub != nullptr && t.scrub_loads ? transport::kFlagScrub : 0;
}

void Client::Impl::SendLoad(std::shared_ptr<LoadOp> op, const Target& t) {
  // Not through Call: its wrapper around the callback would cost a heap
  // allocation per page. The callback counts the node's latency and errors
  // itself.
  op->tried++;
  t.counters->requests++;
  const auto sent = std::chrono::steady_clock::now();
  if (t.channel == nullptr) {
    t.counters->errors++;
    OnLoadReply(op, t, NodeDownError(t), {}, {}, sent);
    return;
  }
  LoadOp* raw = op.get();
  raw->target = t;
  raw->sent = sent;
  raw->in_flight = std::move(op);
  ChannelFor(t, Lane::kLoads)
      ->Call(OutgoingMessage{.header = {.opcode = Opcode::kLoad,
                                        .flags = LoadFlags(*raw, t),
                                        .page = raw->page_no}},
             options_.op_timeout, [this, raw](absl::StatusOr<IncomingMessage> r) {
               std::shared_ptr<LoadOp> self = std::move(raw->in_flight);
               const Target to = self->target;  // a retry may send it elsewhere
               to.counters->latency.Record(
                   absl::FromChrono(std::chrono::steady_clock::now() - self->sent));
               if (!r.ok()) to.counters->errors++;
               if (r.ok()) {
                 OnLoadReply(self, to, absl::OkStatus(), r->header, r->payload, self->sent);
               } else {
                 OnLoadReply(self, to, r.status(), {}, {}, self->sent);
               }
             });
}

void Client::Impl::OnLoadReply(const std::shared_ptr<LoadOp>& op, const Target& t, absl::Status s,
                               const transport::FrameHeader& header,
                               std::span<const uint8_t> payload,
                               std::chrono::steady_clock::time_point sent) {
  // corrupt: the node said its copy is bad (its own disk check), or the
  // copy failed ours; a stale or missing copy is not corrupt.
  bool corrupt = s.code() == absl::StatusCode::kDataLoss;
  if (s.ok() || Classify(s) == Failure::kPageBad) op->checked++;
  if (s.ok()) {
    const auto received = std::chrono::steady_clock::now();
    uint8_t scratch[kPageSize];  // unverified bytes never reach op->out
    s = client_internal::DecodeVerified(client_internal::ThreadCodec(codec_options_), op->page_no,
                                        header, payload, scratch);
    corrupt = !s.ok();
    // A copy of another checksum is the page as a store sent after the
    // load began left it (its version says so), or as a store in flight
    // left it (StoreRacedLoad): both are newer than what the load
    // expected, and either may be returned. Anything else is older.
    if (s.ok() && header.checksum != op->expected && header.version < op->newer_from &&
        !StoreRacedLoad(*op, header.checksum)) {
      // A copy that is intact but is not what was last stored here: an
      // older version. Never handed out as the page.
      stale_copies_++;
      s = absl::DataLossError(absl::StrCat("stale copy (xxh3 ", absl::Hex(header.checksum),
                                           ", last stored ", absl::Hex(op->expected), ")"));
    }
    if (s.ok()) {
      if (op->scrub == nullptr) {
        const auto decoded = std::chrono::steady_clock::now();
        load_network_ns_ +=
            uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(received - sent).count());
        load_decode_ns_ += uint64_t(
            std::chrono::duration_cast<std::chrono::nanoseconds>(decoded - received).count());
        loads_++;
        if (op->tried > 1) failovers_++;
      } else {
        CountScrubbed(*op);
      }
      std::memcpy(op->out, scratch, kPageSize);
      if (op->wire_bytes != nullptr) *op->wire_bytes = payload.size();
      // Before `done`: the caller may store or invalidate the page once the
      // load returns, and those must reach a repaired node after the repair.
      if (!op->bad_copies.empty()) RepairCopies(*op, header, payload);
      op->done(absl::OkStatus());
      return;
    }
    checksum_failures_++;
  }
  if (corrupt) NoteCorruptCopy(t.node);
  Failure f = Classify(s);
  if (f == Failure::kPageBad) {
    op->saw_bad_copy = true;
    if (!absl::c_linear_search(op->bad_copies, t.node)) op->bad_copies.push_back(t.node);
  }
  if (f == Failure::kNodeDown || f == Failure::kBackpressure) op->saw_suspect = true;
  if (f == Failure::kNodeDown) HandleFailure(t.node, t.channel, op->slab, f, s);
  absl::StrAppend(&op->errors, op->errors.empty() ? "" : "; ", t.address, ": ", s.ToString());
  TryLoad(op);
}

void Client::Impl::NoteCorruptCopy(int node) {
  MutexLock l(&mu_);
  Node& n = nodes_[node];
  n.bad_copies++;
  if (options_.quarantine_after_bad_copies == 0 || n.quarantined) return;
  const absl::Time now = absl::Now();
  if (now - n.bad_window_start >= options_.quarantine_window) {
    n.bad_window_start = now;
    n.window_bad_copies = 0;
    n.warned_kept = false;
  }
  if (++n.window_bad_copies < options_.quarantine_after_bad_copies) return;
  // Only where its slabs have somewhere to go: `replicas` other nodes that
  // take slabs.
  int others = 0;
  for (int i = 0; i < int(nodes_.size()); ++i) {
    const Node& o = nodes_[i];
    others += i != node && o.state == NodeState::kUp && !o.full && !o.draining && !o.quarantined;
  }
  if (others < replicas_) {
    if (!n.warned_kept) {
      spdlog::warn(
          "farswap client: node {} served {} corrupt copies in {}, but is kept: only {} other "
          "node(s) can take its slabs ({} needed)",
          n.address, n.window_bad_copies, absl::FormatDuration(options_.quarantine_window), others,
          replicas_);
      n.warned_kept = true;
    }
    return;
  }
  n.quarantined = true;
  n.quarantined_at = now;
  n.quarantines++;
  n.last_error = absl::StrCat("quarantined: ", n.window_bad_copies, " corrupt copies");
  spdlog::error(
      "farswap client: node {} served {} corrupt copies in {}: quarantined for {} (no new "
      "slabs; its slabs move to healthy nodes)",
      n.address, n.window_bad_copies, absl::FormatDuration(options_.quarantine_window),
      absl::FormatDuration(options_.quarantine_time));
  wake_ = true;
  changed_.SignalAll();
}

void Client::Impl::EndQuarantinesLocked() {
  mu_.AssertHeld();
  const absl::Time now = absl::Now();
  for (Node& n : nodes_) {
    if (!n.quarantined || now - n.quarantined_at < options_.quarantine_time) continue;
    n.quarantined = false;
    n.window_bad_copies = 0;
    n.bad_window_start = absl::InfinitePast();
    spdlog::info("farswap client: node {} is out of quarantine: it takes new slabs again",
                 n.address);
  }
}

void Client::Impl::RepairCopies(const LoadOp& op, const transport::FrameHeader& good,
                                std::span<const uint8_t> payload) {
  absl::InlinedVector<Target, 2> targets;
  // [none] Before the check: a store racing the repair is planned here.
  FARSWAP_SYNC_POINT("Client::RepairCopies:before-check");
  {
    MutexLock l(&mu_);
    const client_internal::Slab* s = table_.Find(op.slab);
    const uint32_t i = table_.IndexOf(op.page_no);
    // Only while nothing has changed the page or its slab since the load
    // was planned: no store or invalidate in flight (it may be newer than
    // this copy, or be about to drop it), the copy is what the table
    // expects, and the slab has not moved. Otherwise the next load finds
    // the bad copy again and repairs it then.
    const bool unchanged = !stopping_ && s != nullptr && s->epoch == op.epoch &&
                           s->writes_in_flight == 0 && s->present.Get(i) &&
                           s->checksums[i] == good.checksum;
    for (int node : op.bad_copies) {
      // A node that left the slab, or is draining, suspect or down, keeps
      // no copy worth repairing.
      if (unchanged && absl::c_linear_search(s->replicas, node) && CountsTowardsRLocked(node) &&
          nodes_[node].state == NodeState::kUp) {
        targets.push_back(TargetLocked(node));
      } else {
        copy_repairs_skipped_++;
        if (op.scrub != nullptr) op.scrub->repairs_skipped++;
      }
    }
  }
  if (targets.empty()) return;
  // A scrub waits for its repairs' answers (ScrubTally::pending).
  if (op.scrub != nullptr) op.scrub->Issue(targets.size());
  // The verified copy exactly as the good replica holds it (codec, checksum
  // and store version included): the same bytes every replica has. The
  // node's version check refuses it where a newer store got there first.
  transport::FrameHeader h{.opcode = Opcode::kStore,
                           .flags = uint8_t(good.flags & transport::kFlagSameFilled),
                           .page = op.page_no,
                           .payload_length = uint32_t(payload.size()),
                           .codec = good.codec,
                           .checksum = good.checksum,
                           .version = good.version};
  auto bytes = std::make_shared<std::vector<uint8_t>>(payload.begin(), payload.end());
  // [none] Checked, not sent: a newer store sent here reaches the node
  // first, and the node's version check refuses the repair.
  FARSWAP_SYNC_POINT("Client::RepairCopies:before-send");
  for (const Target& t : targets) {
    OutgoingMessage m;
    m.header = h;
    m.payload = {{bytes->data(), bytes->size()}};
    m.on_sent = [bytes](absl::Status) {};
    const uint64_t page = op.page_no;
    Call(t, std::move(m),
         [this, page, address = std::string(t.address), scrub = op.scrub, slab = op.slab,
          epoch = op.epoch, node = t.node,
          version = good.version](absl::StatusOr<IncomingMessage> r) {
           if (scrub != nullptr) (r.ok() ? scrub->repaired : scrub->repairs_failed)++;
           if (r.ok()) {
             copies_repaired_++;
             DropRepairLeftover(slab, epoch, page, node, version);
           } else {
             // ABORTED "stale version": a newer store got there first, which is
             // as good as a repair. Anything else leaves the bad copy for the
             // next load to find.
             copy_repairs_failed_++;
             spdlog::warn("farswap client: repairing page {} on {} failed: {}", page, address,
                          r.status().ToString());
           }
           // [none] Counted: tests wait here for the repair's answer.
           FARSWAP_SYNC_POINT("Client::RepairCopies:answered");
           if (scrub != nullptr) scrub->Finish();
         });
  }
}

void Client::Impl::DropRepairLeftover(uint64_t slab, uint64_t epoch, uint64_t page, int node,
                                      uint64_t version) {
  // Version 0 (an unversioned store) would make the invalidate unconditional.
  if (version == 0) return;
  Target t;
  {
    MutexLock l(&mu_);
    const Node& n = nodes_[node];
    if (stopping_ || !n.conditional_invalidate || n.state != NodeState::kUp) return;
    const client_internal::Slab* s = table_.Find(slab);
    // At another epoch the slab may have been copied back to the node since,
    // with this very version: that copy is not a leftover.
    const bool invalidated =
        s == nullptr || (s->epoch == epoch &&
                         s->issued[table_.IndexOf(page)] == client_internal::kIssuedInvalidate);
    if (!invalidated) return;
    t = TargetLocked(node);
  }
  repair_leftovers_dropped_++;
  OutgoingMessage m;
  m.header = {.opcode = Opcode::kInvalidate, .page = page, .version = version};
  Call(t, std::move(m),
       [page, address = std::string(t.address)](absl::StatusOr<IncomingMessage> r) {
         // Not dropped (the node went away): a space leak on that node, not a
         // page lost; the copy goes when the page is stored again or its slab
         // is freed there.
         if (!r.ok()) {
           spdlog::warn("farswap client: dropping what a repair of page {} left on {} failed: {}",
                        page, address, r.status().ToString());
         }
         // [none] Answered: tests wait here.
         FARSWAP_SYNC_POINT("Client::DropRepairLeftover:answered");
       });
}

void Client::Impl::CountLoadRefused(const LoadOp& op, absl::StatusCode code) {
  if (op.scrub == nullptr) {
    load_errors_++;
    if (code == absl::StatusCode::kDataLoss || code == absl::StatusCode::kUnavailable) {
      unavailable_loads_++;
    }
    return;
  }
  // A scrub's page invalidated meanwhile (NOT_FOUND) was simply not there
  // to check, and a shutdown (CANCELLED) ended the look: neither is a page
  // without an intact copy.
  CountScrubbed(op);
  if (code != absl::StatusCode::kDataLoss && code != absl::StatusCode::kUnavailable) return;
  // Nor is a page that changed while the scrub read it: its copies were
  // being replaced (a store newer than the one the load expected makes an
  // older copy stale). Its bad copies are left to the next pass, like a
  // repair that stands down.
  bool changed;
  {
    MutexLock l(&mu_);
    const client_internal::Slab* s = table_.Find(op.slab);
    const uint32_t i = table_.IndexOf(op.page_no);
    if (s == nullptr) {
      changed = true;
    } else if (s->lost.Get(i)) {
      changed = false;  // every replica lost
    } else {
      changed = s->epoch != op.epoch || s->writes_in_flight > 0 || !s->present.Get(i) ||
                s->checksums[i] != op.expected;
    }
  }
  if (changed) {
    op.scrub->repairs_skipped += op.bad_copies.size();
    copy_repairs_skipped_ += op.bad_copies.size();
    return;
  }
  op.scrub->unreadable++;
  scrub_unreadable_pages_++;
}

void Client::Impl::CountScrubbed(const LoadOp& op) {
  op.scrub->copies_checked += op.checked;
  op.scrub->bad_copies += op.bad_copies.size();
  scrubbed_copies_ += op.checked;
  scrub_bad_copies_ += op.bad_copies.size();
}

void Client::Impl::TryLoad(std::shared_ptr<LoadOp> op) {
  Target t;
  bool found;
  {
    MutexLock l(&mu_);
    found = NextLoadTargetLocked(*op, &t);
  }
  if (!found) {
    FailLoad(std::move(op));
    return;
  }
  SendLoad(std::move(op), t);
}

// ---------------------------------------------------------------- stats

ClientStats Client::Impl::Stats() const {
  ClientStats st;
  st.stores = stores_;
  st.loads = loads_;
  st.invalidates = invalidates_;
  st.store_errors = store_errors_;
  st.load_errors = load_errors_;
  st.bytes_before_compression = bytes_before_;
  st.bytes_after_compression = bytes_after_;
  st.same_pages = same_pages_;
  st.raw_pages = raw_pages_;
  st.checksum_failures = checksum_failures_;
  st.failovers = failovers_;
  st.rereplicated_slabs = rereplicated_slabs_;
  st.rereplicated_pages = rereplicated_pages_;
  st.unavailable_loads = unavailable_loads_;
  st.load_network_ns = load_network_ns_;
  st.load_decode_ns = load_decode_ns_;
  st.stale_copies = stale_copies_;
  st.copies_repaired = copies_repaired_;
  st.copy_repairs_failed = copy_repairs_failed_;
  st.copy_repairs_skipped = copy_repairs_skipped_;
  st.repair_leftovers_dropped = repair_leftovers_dropped_;
  st.scrubbed_copies = scrubbed_copies_;
  st.scrub_bad_copies = scrub_bad_copies_;
  st.scrub_unreadable_pages = scrub_unreadable_pages_;
  st.scrub_passes = scrub_passes_;
  st.parked_retries = parked_retries_;
  st.recovered_pages = recovered_pages_;
  st.replicas = replicas_;
  MutexLock l(&mu_);
  st.lost_pages = table_.LostPages();
  st.slabs = table_.size();
  for (const auto& [id, s] : table_.slabs()) {
    int live = 0;
    for (int r : s.replicas) live += CountsTowardsRLocked(r) ? 1 : 0;
    st.under_replicated_slabs += s.present.Any() && live < replicas_;
  }
  for (int i = 0; i < int(nodes_.size()); ++i) {
    const Node& n = nodes_[i];
    NodeStats ns;
    ns.address = n.address;
    ns.data_addr = n.data_addr;
    ns.carrier = n.carrier;
    ns.node_id = n.node_id;
    ns.state = n.state == NodeState::kUp        ? "up"
               : n.state == NodeState::kSuspect ? "suspect"
               : n.state == NodeState::kDown    ? "down"
                                                : "removed";
    ns.full = n.full;
    ns.draining = n.draining;
    ns.quarantined = n.quarantined;
    ns.bad_copies = n.bad_copies;
    ns.quarantines = n.quarantines;
    ns.slabs = table_.SlabsOn(i);
    ns.requests = n.counters->requests;
    ns.errors = n.counters->errors;
    ns.times_down = n.times_down;
    ns.times_suspect = n.times_suspect;
    ns.incarnation = n.incarnation;
    ns.latency_us = n.counters->latency.Snapshot();
    ns.latency_sum_ns = n.counters->latency.sum_ns();
    st.nodes.push_back(std::move(ns));
  }
  return st;
}

// ---------------------------------------------------------------- API

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options,
                                                        std::unique_ptr<NodeAttacher> attacher) {
  if (options.nodes.empty() && options.dns_name.empty()) {
    return absl::InvalidArgumentError("ClientOptions: name the memory nodes (nodes or dns_name)");
  }
  if (options.pages_per_slab == 0) {
    return absl::InvalidArgumentError("ClientOptions: pages_per_slab must be at least 1");
  }
  if (options.replicas < 0) return absl::InvalidArgumentError("ClientOptions: replicas < 0");
  if (options.spin_wait < absl::ZeroDuration() ||
      options.spin_wait_per_page < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ClientOptions: spin_wait and spin_wait_per_page must be >= 0");
  }
  if (attacher == nullptr) return absl::InvalidArgumentError("Client::Connect: no attacher");
  if (absl::Status s = client_internal::CheckDataTransportPreference(options.data_transport);
      !s.ok()) {
    return s;
  }
  // The waiters help this transport only (Impl::wait_helper): its I/O
  // threads need not be woken for the replies they read.
  absl::StatusOr<std::unique_ptr<transport::Transport>> t =
      transport::CreateTransport(options.transport, {.io_threads = options.io_threads,
                                                     .busy_poll = options.busy_poll,
                                                     .quiet_helping = options.poll_while_waiting});
  if (!t.ok()) return t.status();
  auto impl = std::make_unique<Impl>(options, std::move(attacher), std::move(*t));
  if (absl::Status s = impl->Start(); !s.ok()) return s;
  // Once a process: a host setting, the same for every client in it.
  static std::once_flag halt_polling_checked;
  std::call_once(halt_polling_checked, [] {
    if (std::string w = HaltPollingWarning(ReadCpuIdleState()); !w.empty()) {
      spdlog::warn("farswap client: {}", w);
    }
  });
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

absl::Status Client::Store(uint64_t page_no, const void* page, SnapshotMode mode,
                           size_t* wire_bytes) {
  client_internal::CompletionWaiter w(1, impl_->spin_wait(), impl_->wait_helper());
  impl_->StoreAsync(page_no, page, w.Callback(0), mode, wire_bytes);
  return w.WaitOne();
}

absl::Status Client::Load(uint64_t page_no, void* out, size_t* wire_bytes) {
  client_internal::CompletionWaiter w(1, impl_->spin_wait(), impl_->wait_helper());
  impl_->LoadAsync(page_no, out, w.Callback(0), wire_bytes);
  return w.WaitOne();
}

absl::Status Client::Invalidate(uint64_t page_no) { return InvalidateRange(page_no, 1); }

absl::Status Client::InvalidateRange(uint64_t first, uint64_t count) {
  client_internal::CompletionWaiter w(1, impl_->spin_wait(), impl_->wait_helper());
  impl_->InvalidateRangeAsync(first, count, w.Callback(0));
  return w.WaitOne();
}

void Client::StoreAsync(uint64_t page_no, const void* page, DoneCallback done, SnapshotMode mode) {
  impl_->StoreAsync(page_no, page, std::move(done), mode);
}
void Client::LoadAsync(uint64_t page_no, void* out, DoneCallback done) {
  impl_->LoadAsync(page_no, out, std::move(done));
}
void Client::InvalidateAsync(uint64_t page_no, DoneCallback done) {
  impl_->InvalidateRangeAsync(page_no, 1, std::move(done));
}

std::vector<absl::Status> Client::StoreBatch(std::span<const PageWrite> pages, SnapshotMode mode,
                                             size_t* wire_bytes) {
  client_internal::CompletionWaiter w(pages.size(), impl_->spin_wait(pages.size()),
                                      impl_->wait_helper());
  std::vector<DoneCallback> done;
  done.reserve(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) done.push_back(w.Callback(i));
  impl_->StoreManyAsync(pages, mode, std::move(done), wire_bytes);
  return w.Wait();
}

std::vector<absl::Status> Client::LoadBatch(std::span<const PageRead> pages, size_t* wire_bytes) {
  client_internal::CompletionWaiter w(pages.size(), impl_->spin_wait(pages.size()),
                                      impl_->wait_helper());
  std::vector<Impl::LoadRequest> requests(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    requests[i] = {.page_no = pages[i].page_no,
                   .out = pages[i].out,
                   .done = w.Callback(i),
                   .wire_bytes = wire_bytes == nullptr ? nullptr : &wire_bytes[i]};
  }
  impl_->LoadManyAsync(requests);
  return w.Wait();
}

void Client::SetNodes(const std::vector<std::string>& addresses) {
  impl_->SetDynamicNodes(addresses);
}
absl::Status Client::WaitUntilReplicated(absl::Duration timeout) {
  return impl_->WaitUntilReplicated(timeout);
}
absl::Status Client::WaitUntilNodeUp(const std::string& address, absl::Duration timeout) {
  return impl_->WaitUntilNodeUp(address, timeout);
}
ClientStats Client::stats() const { return impl_->Stats(); }
int Client::replicas() const { return impl_->replicas(); }
absl::StatusOr<ScrubResult> Client::Scrub(uint64_t first, uint64_t count) {
  return impl_->Scrub(first, count);
}

}  // namespace farswap
