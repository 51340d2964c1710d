#include "chaos_cluster.h"

#include <dirent.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "farswap/v1/memory_node.grpc.pb.h"

namespace farswap::chaos {
namespace {

// The subnet of every cluster: private (RFC 1918), and only ever configured
// inside the cluster's own namespaces, so clusters of concurrent runs do not
// collide. .1 is the client, .10+K node K.
constexpr char kSubnet[] = "10.213.0.";
constexpr int kFirstNodeHost = 10;
constexpr char kGrpcPort[] = "7001";

std::string Which(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string p = std::string(dir) + name;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

bool PidAlive(pid_t pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

// StalePid returns the pid in "fsw-<pid>-..." when that process is gone, else 0.
pid_t StalePid(const std::string& name) {
  if (name.rfind("fsw-", 0) != 0) return 0;
  pid_t pid = pid_t(std::atoi(name.c_str() + 4));
  return pid > 0 && !PidAlive(pid) ? pid : 0;
}

void Unmount(const std::string& path) { umount2(path.c_str(), MNT_DETACH); }

// RemoveStale deletes namespaces and tmpfs folders of runs whose process died.
void RemoveStale() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    std::string name = e.path().filename().string();
    if (StalePid(name) != 0) RunCommand({"ip", "netns", "del", name}).IgnoreError();
  }
  for (const auto& e : std::filesystem::directory_iterator("/tmp", ec)) {
    std::string name = e.path().filename().string();
    if (StalePid(name) == 0) continue;
    for (const auto& sub : std::filesystem::directory_iterator(e.path(), ec)) {
      Unmount(sub.path().string());
    }
    std::filesystem::remove_all(e.path(), ec);
  }
}

}  // namespace

absl::Status RunCommand(const std::vector<std::string>& argv) {
  std::string path = Which(argv[0]);
  if (path.empty()) return absl::NotFoundError(absl::StrCat(argv[0], ": not installed"));
  std::vector<std::string> args = argv;
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    execv(path.c_str(), cargs.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);) {
    if (n > 0) text.append(buf, size_t(n));
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  std::string cmd;
  for (const auto& a : argv) absl::StrAppend(&cmd, cmd.empty() ? "" : " ", a);
  return absl::InternalError(absl::StrCat("`", cmd, "` failed: ", text));
}

absl::Status CanCreateNetworkNamespaces() {
  if (geteuid() != 0) return absl::PermissionDeniedError("needs root (network namespaces, tmpfs)");
  for (const char* tool : {"ip", "nft", "tc"}) {
    if (Which(tool).empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("`", tool, "` not installed (scripts/install-deps installs it)"));
    }
  }
  // A container may be root without CAP_SYS_ADMIN / CAP_NET_ADMIN: try,
  // in a child, what `ip netns add` and the tmpfs mounts need.
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) _exit(unshare(CLONE_NEWNET | CLONE_NEWNS) == 0 ? 0 : 1);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::PermissionDeniedError(
        "cannot create network and mount namespaces (unshare refused: a container without "
        "CAP_SYS_ADMIN, or no namespace support in the kernel)");
  }
  return absl::OkStatus();
}

ChaosCluster::ChaosCluster(const ChaosClusterOptions& options) : options_(options) {
  static std::atomic<int> sequence{0};
  tag_ = absl::StrCat("fsw-", getpid(), "-", sequence++);
  root_ = "/tmp/" + tag_;
}

absl::StatusOr<std::unique_ptr<ChaosCluster>> ChaosCluster::Create(
    const ChaosClusterOptions& options) {
  if (absl::Status s = CanCreateNetworkNamespaces(); !s.ok()) return s;
  if (options.nodes < 1 || options.nodes > 200) {
    return absl::InvalidArgumentError("ChaosCluster: 1..200 nodes");
  }
  RemoveStale();
  std::unique_ptr<ChaosCluster> c(new ChaosCluster(options));
  if (absl::Status s = c->Build(); !s.ok()) return s;  // the destructor tidies up
  return c;
}

absl::Status ChaosCluster::Build() {
  auto ip = [](std::vector<std::string> args) {
    args.insert(args.begin(), "ip");
    return RunCommand(args);
  };
  const std::string hub = tag_ + "-hub", client = tag_ + "-c";
  // Each step's namespace is recorded before anything is put in it, so a
  // failure half way is cleaned up by the destructor.
  auto add_netns = [&](const std::string& name) {
    namespaces_.push_back(name);
    absl::Status s = ip({"netns", "add", name});
    if (s.ok()) s = ip({"-n", name, "link", "set", "lo", "up"});
    return s;
  };
  // join connects namespace `ns` (interface eth0, address) to the hub's bridge.
  auto join = [&](const std::string& ns, const std::string& hub_side, const std::string& addr) {
    absl::Status s = ip(
        {"-n", hub, "link", "add", hub_side, "type", "veth", "peer", "name", "eth0", "netns", ns});
    if (s.ok()) s = ip({"-n", hub, "link", "set", hub_side, "master", "br0", "up"});
    if (s.ok()) s = ip({"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"});
    if (s.ok()) s = ip({"-n", ns, "link", "set", "eth0", "up"});
    return s;
  };
  absl::Status s = add_netns(hub);
  if (s.ok()) s = ip({"-n", hub, "link", "add", "br0", "type", "bridge"});
  if (s.ok()) s = ip({"-n", hub, "link", "set", "br0", "up"});
  if (s.ok()) s = add_netns(client);
  if (s.ok()) s = join(client, "vc", absl::StrCat(kSubnet, 1));
  if (!s.ok()) return s;
  std::error_code ec;
  std::filesystem::create_directories(root_, ec);
  for (int k = 0; k < options_.nodes; ++k) {
    Node n;
    n.netns = absl::StrCat(tag_, "-n", k);
    n.address = absl::StrCat(kSubnet, kFirstNodeHost + k);
    n.grpc_addr = absl::StrCat(n.address, ":", kGrpcPort);
    n.tmpfs = absl::StrCat(root_, "/n", k);
    nodes_.push_back(std::move(n));
    Node& node = nodes_.back();
    s = add_netns(node.netns);
    if (s.ok()) s = join(node.netns, absl::StrCat("v", k), node.address);
    if (s.ok()) s = Nft(k, "add table inet fsw");
    if (s.ok()) {
      s = Nft(k, "add chain inet fsw input { type filter hook input priority 0; policy accept; }");
    }
    if (s.ok()) {
      s = Nft(k,
              "add chain inet fsw output { type filter hook output priority 0; policy accept; }");
    }
    if (!s.ok()) return s;
    std::filesystem::create_directories(node.tmpfs, ec);
    if (mount("tmpfs", node.tmpfs.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
              ("size=" + options_.tmpfs_size).c_str()) != 0) {
      return absl::InternalError(absl::StrCat("mount tmpfs on ", node.tmpfs, ": ", errno));
    }
    mounts_.push_back(node.tmpfs);
    auto process = testing::ServerProcess::Start({.pool_limit = options_.pool_limit,
                                                  .backing_size = options_.backing_size,
                                                  .extra_args = options_.extra_server_args,
                                                  .binary = options_.server_binary,
                                                  .netns = node.netns,
                                                  .host = node.address,
                                                  .grpc_port = kGrpcPort,
                                                  .backing_file = node.tmpfs + "/backing"});
    if (!process.ok()) return process.status();
    node.process = std::move(*process);
  }
  return absl::OkStatus();
}

ChaosCluster::~ChaosCluster() {
  for (Node& n : nodes_) n.process.reset();  // kills the server
  for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) {
    RunCommand({"ip", "netns", "del", *it}).IgnoreError();
  }
  for (const std::string& m : mounts_) Unmount(m);
  std::error_code ec;
  if (!root_.empty()) std::filesystem::remove_all(root_, ec);
}

ChaosCluster::ClientNetns::ClientNetns(const ChaosCluster& cluster) {
  original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  const std::string path = "/run/netns/" + cluster.tag_ + "-c";
  int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (original_ < 0 || ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
    status_ = absl::InternalError(absl::StrCat("cannot join ", path, ": errno ", errno));
  }
  if (ns >= 0) close(ns);
}

ChaosCluster::ClientNetns::~ClientNetns() {
  if (original_ < 0) return;
  setns(original_, CLONE_NEWNET);
  close(original_);
}

std::vector<std::string> ChaosCluster::grpc_addresses() const {
  std::vector<std::string> out;
  for (const Node& n : nodes_) out.push_back(n.grpc_addr);
  return out;
}

void ChaosCluster::Kill(int node) {
  nodes_[node].process->Kill();
  std::error_code ec;
  std::filesystem::remove(nodes_[node].process->backing_file(), ec);
}

absl::Status ChaosCluster::Restart(int node) {
  Kill(node);
  return nodes_[node].process->Restart();
}

absl::Status ChaosCluster::Nft(int node, const std::string& rule) {
  return RunCommand({"ip", "netns", "exec", nodes_[node].netns, "nft", rule});
}

absl::Status ChaosCluster::DropAll(int node) {
  absl::Status s = Nft(node, "add rule inet fsw input iifname eth0 drop");
  if (s.ok()) s = Nft(node, "add rule inet fsw output oifname eth0 drop");
  return s;
}

absl::Status ChaosCluster::DropPeer(int node, int peer) {
  const std::string addr =
      peer < 0 ? absl::StrCat(kSubnet, 1) : absl::StrCat(kSubnet, kFirstNodeHost + peer);
  absl::Status s = Nft(node, "add rule inet fsw input ip saddr " + addr + " drop");
  if (s.ok()) s = Nft(node, "add rule inet fsw output ip daddr " + addr + " drop");
  return s;
}

absl::Status ChaosCluster::DropRandom(int node, int percent) {
  const std::string match = absl::StrCat("numgen random mod 100 < ", percent, " drop");
  absl::Status s = Nft(node, "add rule inet fsw input iifname eth0 " + match);
  if (s.ok()) s = Nft(node, "add rule inet fsw output oifname eth0 " + match);
  return s;
}

absl::Status ChaosCluster::SlowLink(int node, int kbit_per_s, int max_delay_ms) {
  // tbf: a token bucket; what exceeds the rate queues for up to
  // max_delay_ms (then drops), so replies arrive late under load.
  return RunCommand({"ip", "netns", "exec", nodes_[node].netns, "tc", "qdisc", "add", "dev", "eth0",
                     "root", "tbf", "rate", absl::StrCat(kbit_per_s, "kbit"), "burst", "16kb",
                     "latency", absl::StrCat(max_delay_ms, "ms")});
}

absl::Status ChaosCluster::Heal(int node) {
  absl::Status s = Nft(node, "flush chain inet fsw input");
  if (s.ok()) s = Nft(node, "flush chain inet fsw output");
  // No qdisc to delete is fine: Heal is idempotent.
  RunCommand(
      {"ip", "netns", "exec", nodes_[node].netns, "tc", "qdisc", "del", "dev", "eth0", "root"})
      .IgnoreError();
  return s;
}

absl::Status ChaosCluster::FillTmpfs(int node) {
  const std::string path = nodes_[node].tmpfs + "/filler";
  struct statvfs v {};
  if (statvfs(nodes_[node].tmpfs.c_str(), &v) != 0) return absl::InternalError("statvfs failed");
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError("cannot create " + path);
  // Reserve everything that is free; what fallocate leaves (rounding) is
  // written until ENOSPC.
  off_t free_bytes = off_t(v.f_bavail) * off_t(v.f_frsize);
  posix_fallocate(fd, 0, free_bytes);
  std::vector<char> block(4096, 1);
  lseek(fd, 0, SEEK_END);
  while (write(fd, block.data(), block.size()) > 0) {
  }
  close(fd);
  return absl::OkStatus();
}

absl::Status ChaosCluster::FreeTmpfs(int node) {
  std::error_code ec;
  std::filesystem::remove(nodes_[node].tmpfs + "/filler", ec);
  return absl::OkStatus();
}

namespace {
std::unique_ptr<v1::MemoryNode::Stub> Stub(const std::string& address) {
  return v1::MemoryNode::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}
absl::Status ToStatus(const grpc::Status& s) {
  return absl::Status(absl::StatusCode(s.error_code()), s.error_message());
}
}  // namespace

absl::Status ChaosCluster::SetPoolLimit(int node, uint64_t bytes) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::SetLimitsRequest req;
  req.set_pool_limit_bytes(bytes);
  v1::SetLimitsResponse resp;
  return ToStatus(Stub(nodes_[node].grpc_addr)->SetLimits(&ctx, req, &resp));
}

absl::Status ChaosCluster::Drain(int node, bool drain) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::DrainRequest req;
  req.set_drain(drain);
  v1::DrainResponse resp;
  return ToStatus(Stub(nodes_[node].grpc_addr)->Drain(&ctx, req, &resp));
}

}  // namespace farswap::chaos
