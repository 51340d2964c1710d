// server_process.h: a real farswap-server process for integration tests.
//
//   auto node = ServerProcess::Start({.pool_limit = "4M"}).value();
//   Connect(node->data_addr()) ... farswapctl --node node->grpc_addr() ...
//   node->Kill();                 // SIGKILL, as a crash
//   node->Restart();              // a fresh process on new ports, same backing file
//
// The server listens on 127.0.0.1 port 0 (or options.host, in options.netns); Start waits (inotify
// on the ready file's folder, bounded) until it has written --ready-file, and reads the bound
// addresses back. The destructor kills the process if it still runs and removes its temporary
// folder. Not thread-safe: one test thread drives a ServerProcess.
#ifndef FARSWAP_TESTS_UTIL_SERVER_PROCESS_H_
#define FARSWAP_TESTS_UTIL_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace farswap::testing {

struct ServerProcessOptions {
  std::string pool_limit = "64M";
  // backing_size: "" runs without a backing file (no writeback).
  std::string backing_size = "256M";
  std::string high_watermark = "0.9";
  std::string low_watermark = "0.8";
  // tenants: contents of a tenants file; "" runs with the default tenant
  // (needs allow_anonymous).
  std::string tenants;
  // admin_token: contents of an --admin-token-file; "" passes none.
  std::string admin_token;
  // allow_anonymous: pass --allow-anonymous (no tenants file needed; without
  // an admin token, operator RPCs need no credential).
  bool allow_anonymous = true;
  std::vector<std::string> extra_args;
  absl::Duration ready_timeout = absl::Seconds(30);
  // binary: the farswap-server to run (default: this build's).
  std::string binary;
  // netns: a named network namespace (/run/netns/NAME) the server runs in;
  // "" keeps the caller's. host: the address both planes bind. grpc_port:
  // "0" picks a free one; a fixed port keeps the address across Restart.
  std::string netns;
  std::string host = "127.0.0.1";
  std::string grpc_port = "0";
  // backing_file: where the backing file lives ("" = in the temporary folder).
  std::string backing_file;
  // transport: the data plane's backend (farswap-server --transport): "tcp"
  // or "ucx" (data_addr() then carries its scheme, "ucx://..."); "" takes
  // FARSWAP_TEST_TRANSPORT (test_transport.h), else tcp.
  std::string transport;
  // run_as_uid: the user (and group of the same number) the server runs as;
  // -1 keeps the caller's. Needs root; the temporary folder is handed to it.
  int run_as_uid = -1;
  // extra_env: NAME=VALUE entries added to (or replacing in) the server's
  // environment, which is otherwise the caller's.
  std::vector<std::string> extra_env;
};

class ServerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const ServerProcessOptions& options);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // data_addr: "127.0.0.1:port" (TCP) or "ucx://127.0.0.1:port".
  const std::string& data_addr() const { return data_addr_; }
  const std::string& grpc_addr() const { return grpc_addr_; }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  bool running() const { return pid_ > 0; }

  // Kill sends SIGKILL and reaps the process.
  void Kill();
  // Terminate sends SIGTERM and waits for a clean exit; returns its status.
  absl::StatusOr<int> Terminate();
  // Pause / Resume send SIGSTOP / SIGCONT (a node that stops answering).
  // Pause returns once every thread of the process has stopped (waitpid
  // with WUNTRACED), so nothing sent after it is read before Resume; a
  // process that exits instead is reaped (running() turns false).
  void Pause();
  void Resume();
  // Restart starts a new process with the same options and backing file;
  // addresses change (port 0 again).
  absl::Status Restart();
  // RestartAtSameAddress is Restart, but the new process listens for gRPC
  // on the port the old one had (a node restarted in place: clients that
  // know it by that address re-attach and see a new incarnation). The data
  // plane's port still changes.
  absl::Status RestartAtSameAddress();
  // backing_file returns the path of its backing file ("" without one).
  std::string backing_file() const;
  // Log returns what the server has logged so far.
  std::string Log() const;
  // WaitForLog waits until the server has logged `text`, or `timeout`
  // passed; true if it has. For a line logged after the state change a test
  // can see (a counter in its stats moves first, then the line is written).
  bool WaitForLog(const std::string& text, absl::Duration timeout = absl::Seconds(30)) const;

 private:
  explicit ServerProcess(const ServerProcessOptions& options) : options_(options) {}
  absl::Status Launch();

  const ServerProcessOptions options_;
  std::string dir_;
  pid_t pid_ = -1;
  // paused_: a stop was reported by waitpid and no Resume has followed (a
  // second Pause must not wait for a stop that was already reported).
  bool paused_ = false;
  std::string data_addr_, grpc_addr_;
  // grpc_port_: the port Launch listens on for gRPC where set (else
  // options_.grpc_port).
  std::string grpc_port_;
  int launches_ = 0;
};

// FarswapBinary returns the path of a binary built in this tree, e.g.
// FarswapBinary("server/farswap-server").
std::string FarswapBinary(const std::string& relative_path);

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_SERVER_PROCESS_H_
