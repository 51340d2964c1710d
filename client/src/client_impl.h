// client_impl.h: Client::Impl, shared by client.cc (the data path:
// store, load, invalidate) and client_maintenance.cc (membership, health,
// re-attach, re-replication). gRPC-free.
//
// Threads. Callers' threads snapshot and encode pages and issue requests;
// transport I/O threads run reply callbacks, which update the slab table and
// may issue retries (never blocking); one maintenance thread pings nodes,
// re-attaches failed ones, re-resolves DNS and re-replicates slabs (it may
// block on the network).
//
// Locks. Impl::mu_ guards the node list and the slab table. StoreOp::mu
// guards one operation's reply tally. Lock order: StoreOp::mu is never held
// while taking Impl::mu_ or calling into a channel, and Impl::mu_ is never
// held while calling into a channel (a call can complete inline, running a
// callback that takes mu_).
#ifndef FARSWAP_CLIENT_SRC_CLIENT_IMPL_H_
#define FARSWAP_CLIENT_SRC_CLIENT_IMPL_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "farswap/client/client.h"
#include "farswap/common/mutex.h"
#include "farswap/transport/rpc_channel.h"
#include "farswap/transport/transport.h"
#include "page_pipeline.h"
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
  struct LoadRequest {
    uint64_t page_no = 0;
    void* out = nullptr;
    DoneCallback done;
    size_t* wire_bytes = nullptr;
  };
  void LoadManyAsync(std::span<LoadRequest> requests);
  void InvalidateRangeAsync(uint64_t first, uint64_t count, DoneCallback done);
  ClientStats Stats() const;

  // --- membership and maintenance (client_maintenance.cc) ---
  absl::Status Start();  // attach initially, start the maintenance thread
  void SetDynamicNodes(const std::vector<std::string>& addresses);
  absl::Status WaitUntilReplicated(absl::Duration timeout);
  absl::Status WaitUntilNodeUp(const std::string& address, absl::Duration timeout);
  int replicas() const { return replicas_; }
  absl::Duration spin_wait() const { return options_.spin_wait; }

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
    std::atomic<uint64_t> requests{0}, errors{0};
    LatencyHistogram latency;
  };
  enum class NodeState { kUp, kDown, kRemoved };
  struct Node {
    std::string address;  // gRPC control-plane address: the node's identity
    uint64_t key = 0;     // rendezvous identity (hash of address)
    NodeState state = NodeState::kDown;
    bool is_static = false;  // from options.nodes: never removed by SetNodes
    bool full = false;       // RESOURCE_EXHAUSTED: no new slabs until re-attached
    bool draining = false;   // FAILED_PRECONDITION: no new slabs until re-attached
    Channel channel;         // set while up
    std::string data_addr, node_id;
    std::string last_error;
    uint64_t times_down = 0;
    // orphaned_slabs: slabs dropped from this node while it may still hold
    // their pages; invalidated there before it rejoins.
    std::vector<uint64_t> orphaned_slabs;
    std::unique_ptr<NodeCounters> counters = std::make_unique<NodeCounters>();
  };
  // Target is one node an operation sends to.
  struct Target {
    int node = -1;
    std::string address;
    Channel channel;  // null when the node is down
    NodeCounters* counters = nullptr;
  };

  // NodeGroups groups a call's requests by target node (first seen first).
  struct NodeGroups {
    std::vector<std::pair<Target, std::vector<size_t>>> groups;
    void Add(const Target& t, size_t request) {
      for (auto& [target, members] : groups) {
        if (target.node == t.node) {
          members.push_back(request);
          return;
        }
      }
      groups.push_back({t, {request}});
    }
  };

  // Classification of a failed request to a node.
  enum class Failure { kNone, kNodeDown, kNodeFull, kNodeDraining, kPageBad, kOther };
  static Failure Classify(const absl::Status& s);

  // Data path helpers (client.cc).
  void IssueStore(std::shared_ptr<StoreOp> op);
  // IssueStores plans every operation under one hold of mu_ and sends the
  // writes bound for each node as BATCH frames.
  void IssueStores(std::span<std::shared_ptr<StoreOp>> ops);
  // PlanStoreLocked picks the operation's targets (placing its slab for a
  // store); an error means it cannot be sent at all. No targets and OK: an
  // invalidate with nothing to drop.
  absl::Status PlanStoreLocked(StoreOp& op, std::vector<Target>* targets)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  void FailLoad(LoadOp& op);
  void TryLoad(std::shared_ptr<LoadOp> op);
  std::vector<client_internal::Candidate> CandidatesLocked(const std::vector<int>& exclude) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Target TargetLocked(int node) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // HandleFailure applies a failed request's consequence for `node`
  // (reached through `channel`) on `slab`: mark the node down, or drop the
  // slab's replica there and stop placing new slabs on it.
  void HandleFailure(int node, const Channel& channel, uint64_t slab, Failure f,
                     const absl::Status& s);
  void MarkDownLocked(int node, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Call(const Target& t, transport::OutgoingMessage m, transport::ReplyCallback done);

  // Maintenance (client_maintenance.cc).
  void MaintenanceLoop();
  void PingNodes();
  void ReattachDownNodes();
  absl::Status AttachNode(int node);
  void Resolve();
  bool ReplicateOneSlab(uint64_t slab);
  void WakeMaintenance();
  int AddNodeLocked(const std::string& address, bool is_static) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClientOptions options_;
  const uint64_t pages_per_slab_;  // = options_.pages_per_slab
  const PageCodecOptions codec_options_;
  int replicas_ = 1;
  std::unique_ptr<NodeAttacher> attacher_;
  std::unique_ptr<transport::Transport> transport_;

  mutable Mutex mu_;
  CondVar changed_;  // membership, replication progress or shutdown
  std::vector<Node> nodes_ ABSL_GUARDED_BY(mu_);
  SlabTable table_ ABSL_GUARDED_BY(mu_);
  std::vector<Channel> retired_ ABSL_GUARDED_BY(mu_);  // closed by the maintenance thread
  std::vector<std::unique_ptr<transport::RpcChannel>> owned_channels_ ABSL_GUARDED_BY(mu_);
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_resolve_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::thread maintenance_;

  // next_store_version_: the version stamped on the next STORE
  // (transport/README.md, "Page versions"). Seeded with the wall clock in ns
  // when the client is created, so a restarted client keeps counting upward
  // past anything its predecessor stored.
  std::atomic<uint64_t> next_store_version_{uint64_t(absl::GetCurrentTimeNanos())};

  // Counters (ClientStats).
  std::atomic<uint64_t> stores_{0}, loads_{0}, invalidates_{0}, store_errors_{0}, load_errors_{0},
      bytes_before_{0}, bytes_after_{0}, same_pages_{0}, raw_pages_{0}, checksum_failures_{0},
      failovers_{0}, rereplicated_slabs_{0}, rereplicated_pages_{0}, unavailable_loads_{0},
      load_network_ns_{0}, load_decode_ns_{0};
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_SRC_CLIENT_IMPL_H_
