// client_impl.h: Client::Impl, shared by client.cc (the data path:
// store, load, invalidate) and client_maintenance.cc (membership, health,
// re-attach, re-replication). gRPC-free.
//
// Threads. Callers' threads snapshot and encode pages and issue requests;
// transport I/O threads run reply callbacks, which update the slab table and
// may issue retries (never blocking); one maintenance thread pings nodes,
// re-attaches failed ones, re-resolves DNS and re-replicates slabs (it may
// block on the network); one retry thread re-issues parked operations.
//
// Failure model (ClientOptions::dead_node_timeout). A node that stops
// answering (a timeout, a failed ping, a broken connection) is *suspect*:
// it takes no new slabs and loads try its slabs' other replicas first, but
// it keeps every slab and its copies stay authoritative. It loses a slab
// only when another replica has acknowledged a newer write of it (its copy
// is stale) or when a re-replication has committed a verified copy
// elsewhere. An operation that cannot complete because every copy it needs
// is on suspect nodes, or because of back-pressure (our own output queue is
// full), is *parked* and sent again — never failed for it. A node suspect
// for dead_node_timeout is declared dead (kDown): only then are its slabs
// dropped. A node that re-attaches with a new incarnation restarted empty;
// with the same one its memory is intact (see the orphan records).
//
// Locks. Impl::mu_ guards the node list and the slab table. StoreOp::mu
// guards one operation's reply tally. Lock order: StoreOp::mu is never held
// while taking Impl::mu_ or calling into a channel, and Impl::mu_ is never
// held while calling into a channel (a call can complete inline, running a
// callback that takes mu_). transports_mu_ is a leaf (held only to find or
// make the transport for an address's scheme); so is rdma_mu_ (held to
// probe for an RDMA device once).
#ifndef FARSWAP_CLIENT_SRC_CLIENT_IMPL_H_
#define FARSWAP_CLIENT_SRC_CLIENT_IMPL_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "farswap/client/client.h"
#include "farswap/common/mutex.h"
#include "farswap/transport/rpc_channel.h"
#include "farswap/transport/transport.h"
#include "page_pipeline.h"
#include "recycled_blocks.h"
#include "slab_table.h"

namespace farswap {

using client_internal::PreparedPage;
using client_internal::SlabTable;

class Client::Impl {
 public:
  Impl(const ClientOptions& options, std::unique_ptr<NodeAttacher> attacher,
       std::unique_ptr<transport::Transport> transport);
  ~Impl();

  // --- data path (client.cc) ---
  void StoreAsync(uint64_t page_no, const void* page, DoneCallback done, SnapshotMode mode,
                  size_t* wire_bytes = nullptr);
  void LoadAsync(uint64_t page_no, void* out, DoneCallback done, size_t* wire_bytes = nullptr);
  // StoreManyAsync / LoadManyAsync: many pages at once; the requests bound
  // for one node leave as one BATCH frame (at most kMaxBatchEntries each).
  // done[i] runs exactly once for pages[i].
  void StoreManyAsync(std::span<const PageWrite> pages, SnapshotMode mode,
                      std::vector<DoneCallback> done, size_t* wire_bytes = nullptr);
  // ScrubTally: one scrub's counts (client_scrub.cc), shared by its loads
  // and their repairs, which update it before they finish. pending: loads
  // and repairs issued and not finished.
  struct ScrubTally {
    std::atomic<uint64_t> pages{0}, copies_checked{0}, bad_copies{0}, repaired{0},
        repairs_failed{0}, repairs_skipped{0}, unreadable{0};
    void Issue(uint64_t n) {
      MutexLock l(&mu);
      pending += n;
    }
    void Finish() {
      MutexLock l(&mu);
      if (--pending == 0) idle.SignalAll();
    }
    bool Idle() {
      MutexLock l(&mu);
      return pending == 0;
    }
    void WaitIdle() {
      MutexLock l(&mu);
      while (pending != 0) idle.Wait(&mu);
    }
    Mutex mu;
    CondVar idle;
    uint64_t pending ABSL_GUARDED_BY(mu) = 0;
  };
  struct LoadRequest {
    uint64_t page_no = 0;
    void* out = nullptr;
    DoneCallback done;
    size_t* wire_bytes = nullptr;
    // A scrub's load (client_scrub.cc): `first_replica` is read first, and
    // the load is counted in `scrub`, not in loads / failovers.
    int first_replica = -1;
    std::shared_ptr<ScrubTally> scrub;
  };
  void LoadManyAsync(std::span<LoadRequest> requests);
  void InvalidateRangeAsync(uint64_t first, uint64_t count, DoneCallback done);
  ClientStats Stats() const;

  // --- scrubbing (client_scrub.cc) ---
  absl::StatusOr<ScrubResult> Scrub(uint64_t first, uint64_t count) ABSL_LOCKS_EXCLUDED(mu_);
  // ScrubInBackground issues the background scrub's next loads
  // (ClientOptions::scrub_pages_per_second) unless its last ones are still
  // out; called by the maintenance thread.
  void ScrubInBackground() ABSL_LOCKS_EXCLUDED(mu_);

  // --- membership and maintenance (client_maintenance.cc) ---
  absl::Status Start();  // attach initially, start the maintenance thread
  void SetDynamicNodes(const std::vector<std::string>& addresses);
  absl::Status WaitUntilReplicated(absl::Duration timeout);
  absl::Status WaitUntilNodeUp(const std::string& address, absl::Duration timeout);
  int replicas() const { return replicas_; }
  absl::Duration spin_wait() const { return options_.spin_wait; }
  // spin_wait(pages): how long a synchronous batch of `pages` spins
  // (ClientOptions::spin_wait_per_page).
  absl::Duration spin_wait(size_t pages) const {
    if (options_.spin_wait <= absl::ZeroDuration() || pages <= 1) return options_.spin_wait;
    absl::Duration d = options_.spin_wait + options_.spin_wait_per_page * int64_t(pages - 1);
    return std::max(options_.spin_wait, std::min(d, ClientOptions::kMaxBatchSpinWait));
  }
  // wait_helper: the transport a synchronous call's spin helps
  // (ClientOptions::poll_while_waiting), or nullptr.
  transport::Transport* wait_helper() const {
    return options_.poll_while_waiting ? transport_.get() : nullptr;
  }

 private:
  struct StoreOp;
  struct LoadOp;
  struct StoreBatchCall;
  // Channels are owned by owned_channels_ until the Impl is destroyed (a
  // failed node's channel is closed, never freed early), so requests and
  // callbacks can hold plain pointers to them.
  using Channel = transport::RpcChannel*;

  // NodeCounters are a node's lock-free statistics; the object never moves.
  struct NodeCounters {
    // address is the node's (Node::address), set when the node is added and
    // never changed: Targets view it here, where it never moves.
    std::string address;
    std::atomic<uint64_t> requests{0}, errors{0};
    LatencyHistogram latency;
  };
  // kSuspect: stopped answering, copies kept (see the failure model);
  // kDown: declared dead or never attached.
  enum class NodeState { kUp, kSuspect, kDown, kRemoved };
  // Orphan is a slab this node was dropped from while it may still hold
  // pages of it; settled when the node returns (invalidated there, or, for
  // the only copy, given back to the slab).
  struct Orphan {
    uint64_t slab = 0;
    uint64_t epoch = 0;      // the slab's epoch right after the drop
    bool only_copy = false;  // it held the last replica
  };
  struct Node {
    std::string address;  // gRPC control-plane address: the node's identity
    uint64_t key = 0;     // rendezvous identity (hash of address)
    NodeState state = NodeState::kDown;
    bool is_static = false;  // from options.nodes: never removed by SetNodes
    bool full = false;       // RESOURCE_EXHAUSTED: no new slabs until re-attached
    // draining: a store was refused with FAILED_PRECONDITION, or a PING
    // reply carried NODE_DRAINING. No new slabs go there, and maintenance
    // moves its slabs to other nodes (CountsTowardsRLocked) until it is
    // re-attached.
    bool draining = false;
    // flagged_at: when full or draining was set. Such a node is re-attached
    // every kRecheckFlags while it stays up: an Attach that succeeds (the
    // drain was undone; the pool limit may have been raised) clears both.
    absl::Time flagged_at = absl::InfinitePast();
    Channel channel = nullptr;  // set while up (and while suspect, until it breaks)
    // load_channel: the connection loads go on (ClientOptions::
    // load_connection), or channel itself. Set and retired with channel;
    // channel is the node's identity in failure handling.
    Channel load_channel = nullptr;
    std::string data_addr, node_id;
    std::string carrier;  // NodeStats::carrier
    std::string last_error;
    uint64_t times_down = 0, times_suspect = 0;
    // Corrupt copies served (NoteCorruptCopy): in all, and in the window
    // that began at bad_window_start; quarantined while it is out
    // (ClientOptions::quarantine_after_bad_copies), since quarantined_at.
    uint64_t bad_copies = 0, window_bad_copies = 0, quarantines = 0;
    absl::Time bad_window_start = absl::InfinitePast();
    bool quarantined = false;
    absl::Time quarantined_at = absl::InfinitePast();
    bool warned_kept = false;                         // "kept" logged in this window
    absl::Time suspect_since = absl::InfinitePast();  // while kSuspect
    uint64_t incarnation = 0;                         // from the last Attach
    bool conditional_invalidate = false;              // from the last Attach
    bool scrub_loads = false;                         // from the last Attach
    bool warned_plaintext = false;                    // its plaintext data plane was logged
    // orphans: slabs dropped from this node while it may still hold their
    // pages; settled before it serves again.
    std::vector<Orphan> orphans;
    std::unique_ptr<NodeCounters> counters = std::make_unique<NodeCounters>();
  };
  // Target is one node an operation sends to.
  struct Target {
    int node = -1;
    absl::string_view address;       // NodeCounters::address: copying a Target allocates nothing
    Channel channel = nullptr;       // null when the node is down
    Channel load_channel = nullptr;  // where its loads go (Node::load_channel)
    NodeCounters* counters = nullptr;
    bool scrub_loads = false;  // Node::scrub_loads
  };
  // TargetList: where one operation goes; the replicas plus a node being
  // filled fit inline, so planning a page allocates nothing.
  using TargetList = absl::InlinedVector<Target, 4>;

  // NodeGroups groups a call's requests by target node (first seen first).
  // `requests` is how many the call has: each group's list is sized for
  // all of them once, so Add does not grow it request by request.
  struct NodeGroups {
    explicit NodeGroups(size_t call_requests) : requests(call_requests) {}
    const size_t requests;
    // A one-page call (a fault's load) fits inline and allocates nothing.
    using Members = absl::InlinedVector<size_t, 1>;
    absl::InlinedVector<std::pair<Target, Members>, 4> groups;
    void Add(const Target& t, size_t request) {
      for (auto& [target, members] : groups) {
        if (target.node == t.node) {
          members.push_back(request);
          return;
        }
      }
      Members members;
      members.reserve(requests);
      members.push_back(request);
      groups.emplace_back(t, std::move(members));
    }
  };

  // Classification of a failed request to a node. kBackpressure: our own
  // output queue to it is full — the node is busy, not failed.
  enum class Failure {
    kNone,
    kNodeDown,
    kNodeFull,
    kNodeDraining,
    kPageBad,
    kBackpressure,
    kOther
  };
  static Failure Classify(const absl::Status& s);

  // Data path helpers (client.cc).
  void IssueStore(std::shared_ptr<StoreOp> op);
  // IssueStores plans every operation under one hold of mu_ and sends the
  // writes bound for each node as BATCH frames.
  void IssueStores(std::span<std::shared_ptr<StoreOp>> ops);
  // PlanStoreLocked picks the operation's targets (placing its slab for a
  // store); an error means it cannot be sent at all. No targets and OK: an
  // invalidate with nothing to drop.
  absl::Status PlanStoreLocked(StoreOp& op, TargetList* targets) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static transport::OutgoingMessage StoreMessage(const StoreOp& op);
  void SendStoreBatch(const Target& t, std::vector<std::shared_ptr<StoreOp>> ops);
  void OnStoreReply(const std::shared_ptr<StoreOp>& op, const Target& t, absl::Status status);
  void FinishStore(std::shared_ptr<StoreOp> op);
  // SplitBatchReply turns a BATCH reply into one status per entry (the
  // call's own failure for all of them when it failed) and, when `views` is
  // given, the entries themselves.
  static std::vector<absl::Status> SplitBatchReply(
      const absl::StatusOr<transport::IncomingMessage>& reply, size_t entries,
      std::vector<transport::FrameView>* views);
  absl::Status PlanLoadLocked(LoadOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // NextLoadTargetLocked advances to the op's next live replica; false when
  // none is left.
  bool NextLoadTargetLocked(LoadOp& op, Target* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLoad(std::shared_ptr<LoadOp> op, const Target& t);
  // OnLoadReply handles one replica's answer for `op`; `sent` is when the
  // request left (for the network time).
  void OnLoadReply(const std::shared_ptr<LoadOp>& op, const Target& t, absl::Status s,
                   const transport::FrameHeader& header, std::span<const uint8_t> payload,
                   std::chrono::steady_clock::time_point sent);
  // PageChange: how the page of a load that met bad, stale or missing
  // copies changed since the load was planned. kNone: not at all (the
  // copies are bad); kWriteInFlight: a store or invalidate of it is still
  // unacknowledged; kSettled: it changed, and nothing of it is in flight.
  enum class PageChange { kNone, kWriteInFlight, kSettled };
  PageChange PageChangeSincePlanLocked(const LoadOp& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FailLoad: no replica gave a valid copy. Parks the load instead when a
  // replica is suspect (it may come back) or a write of the page is in
  // flight, and plans it again when the page changed since it was planned:
  // a load racing the caller's store or invalidate of its page returns one
  // of the versions or NOT_FOUND, never DATA_LOSS.
  void FailLoad(std::shared_ptr<LoadOp> op);
  // RetryLoad re-plans a parked load from the current slab table.
  void RetryLoad(std::shared_ptr<LoadOp> op);
  // StoreRacedLoad: a copy whose checksum differs from the one the load
  // expected may be a newer store of the caller's that raced the load.
  bool StoreRacedLoad(const LoadOp& op, uint64_t checksum);
  // LoadFlags: the flags of op's LOAD frame to t: SCRUB for a scrub's load
  // (it checks the node's medium, not its read cache) where t takes it.
  static uint8_t LoadFlags(const LoadOp& op, const Target& t);
  void TryLoad(std::shared_ptr<LoadOp> op);
  // RepairCopies writes a verified copy (`good`, `payload`: the reply that
  // gave it) back to the replicas of op.bad_copies, read repair: a replica
  // found bad, stale or missing would otherwise leave the page one copy
  // short until the slab moves. Skipped, and counted, where the page or its
  // slab changed since the load was planned, or the node is not an up
  // replica; the next load that meets the bad copy tries again. Called
  // before the load's `done`, with no lock held.
  void RepairCopies(const LoadOp& op, const transport::FrameHeader& good,
                    std::span<const uint8_t> payload) ABSL_LOCKS_EXCLUDED(mu_);
  // DropRepairLeftover runs when `node` acknowledged a repair of `page`
  // (store version `version`, planned at slab epoch `epoch`). If the page
  // was invalidated since the repair was checked (the last write issued for
  // it is an invalidate, at the same epoch, or its slab is gone), the
  // invalidate may have reached the node first and the repair then stored
  // a copy nobody will free: it is dropped with a conditional INVALIDATE
  // (that version or older only, so a newer store is never erased), where
  // the node takes one. With no lock held.
  void DropRepairLeftover(uint64_t slab, uint64_t epoch, uint64_t page, int node, uint64_t version)
      ABSL_LOCKS_EXCLUDED(mu_);
  // CountLoadRefused counts a load that ends without a copy (`code`): in
  // the client's load errors, or in its scrub's tally (a page that changed
  // while the scrub read it is not counted unreadable).
  void CountLoadRefused(const LoadOp& op, absl::StatusCode code) ABSL_LOCKS_EXCLUDED(mu_);
  // CountScrubbed counts a finished scrub load's reads and bad copies.
  void CountScrubbed(const LoadOp& op);
  // IssueScrubLoads sends one scrub load per (stored page, up replica) from
  // page `cursor` on, before `end`, stopping after `max_copies`; returns
  // the page to go on from (`end` when the range is done). Its loads finish
  // into `tally`.
  uint64_t IssueScrubLoads(uint64_t cursor, uint64_t end, uint64_t max_copies,
                           const std::shared_ptr<ScrubTally>& tally) ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<client_internal::Candidate> CandidatesLocked(const std::vector<int>& exclude) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Target TargetLocked(int node) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // HandleFailure applies a failed request's consequence for `node`
  // (reached through `channel`) on `slab`: make the node suspect, or drop
  // the slab's replica there and stop placing new slabs on it.
  void HandleFailure(int node, const Channel& channel, uint64_t slab, Failure f,
                     const absl::Status& s);
  // MarkSuspectLocked: the node stopped answering (see the failure model).
  // `broken`: its connection is gone (closed, reset, session lost), so the
  // channel is retired and the node is re-attached.
  void MarkSuspectLocked(int node, const std::string& why, bool broken)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // MarkDeadLocked: the node is dead (suspect too long, restarted empty,
  // removed): its slabs are dropped and remembered as orphans.
  void MarkDeadLocked(int node, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // DropReplicaLocked drops `node` from one slab, recording the orphan.
  void DropReplicaLocked(uint64_t slab, int node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool LiveLocked(int node) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return nodes_[node].state == NodeState::kUp;
  }
  // CountsTowardsRLocked: a replica on this node counts towards R. A
  // draining node is up and serves loads, but its slabs are moved off (it
  // will stop), so it counts no more than a suspect one.
  bool CountsTowardsRLocked(int node) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return LiveLocked(node) && !nodes_[node].draining && !nodes_[node].quarantined;
  }
  // NoteCorruptCopy counts a corrupt copy `node` served, and quarantines
  // the node when it has served too many (ClientOptions::
  // quarantine_after_bad_copies).
  void NoteCorruptCopy(int node) ABSL_LOCKS_EXCLUDED(mu_);
  // EndQuarantinesLocked returns nodes quarantined for quarantine_time to
  // service.
  void EndQuarantinesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Park queues `retry` for the retry thread (next tick, or sooner when
  // membership changes). Counted in parked_retries.
  void Park(std::function<void()> retry);
  void RetryLoop();
  // ParkExpired: an operation parked since `since` has waited longer than a
  // suspect node can stay suspect, plus slack.
  bool ParkExpired(absl::Time since) const;
  // Lane: which of a node's connections a request goes on (Node::
  // load_channel).
  enum class Lane { kMain, kLoads };
  void Call(const Target& t, transport::OutgoingMessage m, transport::ReplyCallback done,
            Lane lane = Lane::kMain);
  // ChannelFor: the channel `lane` uses to reach t (t.channel non-null).
  static Channel ChannelFor(const Target& t, Lane lane);
  static absl::Status NodeDownError(const Target& t);
  // RetireChannelsLocked hands the node's connections to the maintenance
  // thread to close, and clears them.
  void RetireChannelsLocked(Node& n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Maintenance (client_maintenance.cc).
  void MaintenanceLoop();
  void PingNodes();
  void ReattachDownNodes();
  // DeclareDeadNodes declares dead the nodes suspect for dead_node_timeout.
  void DeclareDeadNodes();
  // SettleOrphans brings a returning node's orphans in line through
  // `channel` (invalidate stale slabs, give back only copies) and marks it
  // up with `attachment` (null: it answered on its current channels) and
  // its connections `channel` and `load_channel`.
  absl::Status SettleOrphansAndMarkUp(int node, Channel channel, Channel load_channel,
                                      const Attachment* attachment);
  absl::Status AttachNode(int node);
  void Resolve();
  bool ReplicateOneSlab(uint64_t slab);
  // VerifyCopy decodes a node's copy of `page` and checks it against what
  // the client stored (DATA_LOSS when corrupt or stale).
  absl::Status VerifyCopy(uint64_t slab, uint64_t page, const transport::IncomingMessage& copy);
  // GoodCopyElsewhere loads `page` from the slab's other live replicas
  // until one verifies.
  absl::StatusOr<transport::IncomingMessage> GoodCopyElsewhere(uint64_t slab, uint64_t page,
                                                               int except);
  // MarkPageLost: no replica holds an intact copy of a present page.
  void MarkPageLost(uint64_t slab, uint64_t page, const std::string& why);
  void WakeMaintenance();
  int AddNodeLocked(const std::string& address, bool is_static) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClientOptions options_;
  const uint64_t pages_per_slab_;  // = options_.pages_per_slab
  const PageCodecOptions codec_options_;
  int replicas_ = 1;
  std::unique_ptr<NodeAttacher> attacher_;
  // transport_: ClientOptions::transport's backend, for data addresses
  // without a scheme (and those of its own); an address of another scheme
  // ("ucx://...") gets a backend of that scheme, made on first use, with
  // the same options (TransportFor).
  std::unique_ptr<transport::Transport> transport_;
  Mutex transports_mu_;
  std::map<std::string, std::unique_ptr<transport::Transport>, std::less<>> other_transports_
      ABSL_GUARDED_BY(transports_mu_);
  absl::StatusOr<transport::Transport*> TransportFor(const std::string& data_addr);
  // HasRdma: whether this host has an RDMA device (transport::
  // ProbeRdmaDevices, asked once, on the first attach that needs it).
  bool HasRdma() ABSL_LOCKS_EXCLUDED(rdma_mu_);
  Mutex rdma_mu_;  // a leaf
  std::optional<bool> has_rdma_ ABSL_GUARDED_BY(rdma_mu_);

  mutable Mutex mu_;
  CondVar changed_;  // membership, replication progress or shutdown
  std::vector<Node> nodes_ ABSL_GUARDED_BY(mu_);
  SlabTable table_ ABSL_GUARDED_BY(mu_);
  std::vector<Channel> retired_ ABSL_GUARDED_BY(mu_);  // closed by the maintenance thread
  std::vector<std::unique_ptr<transport::RpcChannel>> owned_channels_ ABSL_GUARDED_BY(mu_);
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::function<void()>> parked_ ABSL_GUARDED_BY(mu_);
  CondVar parked_cv_;  // parked_ non-empty, membership changed, or shutdown
  std::thread retrier_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_resolve_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::thread maintenance_;

  // next_store_version_: the version stamped on the next STORE
  // (transport/README.md, "Page versions"). Seeded with the wall clock in ns
  // when the client is created, so a restarted client keeps counting upward
  // past anything its predecessor stored.
  std::atomic<uint64_t> next_store_version_{uint64_t(absl::GetCurrentTimeNanos())};

  // The blocks StoreOps and LoadOps are made in (recycled_blocks.h): no
  // heap allocation per page once the client has warmed up.
  const std::shared_ptr<client_internal::RecycledBlocks> store_op_blocks_ =
      std::make_shared<client_internal::RecycledBlocks>();
  const std::shared_ptr<client_internal::RecycledBlocks> load_op_blocks_ =
      std::make_shared<client_internal::RecycledBlocks>();

  // Counters (ClientStats).
  std::atomic<uint64_t> stores_{0}, loads_{0}, invalidates_{0}, store_errors_{0}, load_errors_{0},
      bytes_before_{0}, bytes_after_{0}, same_pages_{0}, raw_pages_{0}, checksum_failures_{0},
      failovers_{0}, rereplicated_slabs_{0}, rereplicated_pages_{0}, unavailable_loads_{0},
      load_network_ns_{0}, load_decode_ns_{0}, stale_copies_{0}, parked_retries_{0},
      recovered_pages_{0}, copies_repaired_{0}, copy_repairs_failed_{0}, copy_repairs_skipped_{0},
      repair_leftovers_dropped_{0}, scrubbed_copies_{0}, scrub_bad_copies_{0},
      scrub_unreadable_pages_{0}, scrub_passes_{0};

  // The background scrub (ScrubInBackground; maintenance thread only): the
  // page it goes on from, its loads still out, and when it last issued.
  uint64_t background_scrub_cursor_ = 0;
  uint64_t background_scrub_pass_pages_ = 0;   // pages the pass under way has read
  bool background_scrub_pass_ending_ = false;  // its last loads are out
  std::shared_ptr<ScrubTally> background_scrub_;
  absl::Time background_scrub_last_ = absl::InfinitePast();
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_SRC_CLIENT_IMPL_H_
