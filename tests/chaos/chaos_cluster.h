// chaos_cluster.h: farswap-server processes, each in its own network
// namespace, and the knobs a fault scheduler turns on them.
//
//   auto cluster = ChaosCluster::Create({.nodes = 3}).value();   // needs root + ip
//   ChaosCluster::ClientNetns in(*cluster);   // this thread (and the threads
//                                             // it starts) reach the nodes
//   ClientOptions o; o.nodes = cluster->grpc_addresses();
//   cluster->DropAll(1);  ...  cluster->Heal(1);                   // partition node 1
//
// Topology. Per cluster (tag "fsw-<pid>-<n>"): a hub namespace "<tag>-hub"
// holding bridge br0; a client namespace "<tag>-c" (10.213.0.1/24); node
// namespaces "<tag>-n<K>" (10.213.0.<10+K>/24), each joined to the hub by a
// veth pair. Nothing is created in the caller's namespace: the client side
// is a namespace too, which the caller's thread joins (setns) while it runs
// the workload. Each node's backing file sits on its own small tmpfs
// (/tmp/<tag>/n<K>, `tmpfs_bytes`), so filling that tmpfs makes a restart
// fail with ENOSPC. Faults are nftables rules in table `inet fsw` of a node's
// namespace (drops, `numgen random mod 100 < N` loss) and a tbf qdisc on its
// eth0 (a slow link: packets queue, i.e. delay; this kernel has no netem).
//
// Cleanup. The destructor kills the servers, deletes every namespace (which
// removes their veths) and unmounts the tmpfs folders. Create first removes
// what an earlier run left behind when the pid in its tag is dead (a run
// killed with SIGKILL); the servers themselves die with their parent
// (PR_SET_PDEATHSIG). Server processes are started and restarted from the
// thread that created the cluster: they die when that thread exits.
//
// Thread safety: not thread-safe; one thread drives a ChaosCluster.
#ifndef FARSWAP_TESTS_CHAOS_CHAOS_CLUSTER_H_
#define FARSWAP_TESTS_CHAOS_CHAOS_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server_process.h"

namespace farswap::chaos {

struct ChaosClusterOptions {
  int nodes = 3;
  std::string pool_limit = "64M";
  // Each node's backing file (backing_size) lives on a tmpfs of tmpfs_size.
  std::string backing_size = "32M";
  std::string tmpfs_size = "48M";
  std::vector<std::string> extra_server_args = {"--log-level", "warn"};
  // server_binary: the farswap-server to run ("" = this build's).
  std::string server_binary;
};

// CanCreateNetworkNamespaces returns OK when this process can build a
// ChaosCluster (root, `ip`, `nft` and `tc` present), else why not.
absl::Status CanCreateNetworkNamespaces();

// RunCommand runs argv (argv[0] looked up in /usr/sbin, /sbin, then PATH)
// and returns OK when it exits 0, else INTERNAL with its output.
absl::Status RunCommand(const std::vector<std::string>& argv);

class ChaosCluster {
 public:
  static absl::StatusOr<std::unique_ptr<ChaosCluster>> Create(const ChaosClusterOptions& options);
  ~ChaosCluster();
  ChaosCluster(const ChaosCluster&) = delete;
  ChaosCluster& operator=(const ChaosCluster&) = delete;

  // ClientNetns moves the calling thread into the client namespace for its
  // lifetime (threads started meanwhile inherit it), then moves it back.
  class ClientNetns {
   public:
    explicit ClientNetns(const ChaosCluster& cluster);
    ~ClientNetns();
    ClientNetns(const ClientNetns&) = delete;
    ClientNetns& operator=(const ClientNetns&) = delete;
    const absl::Status& status() const { return status_; }

   private:
    int original_ = -1;
    absl::Status status_;
  };

  int size() const { return int(nodes_.size()); }
  std::vector<std::string> grpc_addresses() const;
  const std::string& grpc_address(int node) const { return nodes_[node].grpc_addr; }
  const std::string& tag() const { return tag_; }
  testing::ServerProcess& server(int node) { return *nodes_[node].process; }

  // Processes. Kill sends SIGKILL and deletes the node's backing file (a
  // restarted node has lost its index, so the file is only space; the next
  // start reserves a fresh one, as on a new disk). Restart starts it again
  // on the same addresses; fails with the server's log when it cannot start
  // (a full tmpfs: ENOSPC).
  void Kill(int node);
  absl::Status Restart(int node);
  void Stop(int node) { nodes_[node].process->Pause(); }
  void Continue(int node) { nodes_[node].process->Resume(); }

  // Network faults; Heal removes every one of them from `node`.
  absl::Status DropAll(int node);
  absl::Status DropPeer(int node, int peer);  // peer -1: the client
  absl::Status DropRandom(int node, int percent);
  absl::Status SlowLink(int node, int kbit_per_s, int max_delay_ms);
  absl::Status Heal(int node);

  // Disk: FillTmpfs leaves no free byte on node's tmpfs; FreeTmpfs undoes it.
  absl::Status FillTmpfs(int node);
  absl::Status FreeTmpfs(int node);

  // Control plane (farswap.v1.MemoryNode): pool limit and drain.
  absl::Status SetPoolLimit(int node, uint64_t bytes);
  absl::Status Drain(int node, bool drain);

 private:
  struct Node {
    std::string netns, address, grpc_addr, tmpfs;
    std::unique_ptr<testing::ServerProcess> process;
  };
  explicit ChaosCluster(const ChaosClusterOptions& options);
  absl::Status Build();
  absl::Status Nft(int node, const std::string& rule);

  const ChaosClusterOptions options_;
  std::string tag_;
  std::vector<Node> nodes_;
  std::vector<std::string> namespaces_;  // created, in order
  std::vector<std::string> mounts_;
  std::string root_;  // /tmp/<tag>
};

}  // namespace farswap::chaos

#endif  // FARSWAP_TESTS_CHAOS_CHAOS_CLUSTER_H_
