#include "server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "test_transport.h"

namespace farswap::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// ReadyFile: the addresses farswap-server writes to --ready-file.
struct ReadyFile {
  std::string data_addr, grpc_addr;
};

absl::StatusOr<ReadyFile> ParseReadyFile(const std::string& text) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::DataLossError(absl::StrCat("ready file is not a JSON object: ", text));
  }
  ReadyFile r;
  for (auto [key, field] :
       {std::pair{"data_addr", &r.data_addr}, std::pair{"grpc_addr", &r.grpc_addr}}) {
    auto it = json.find(key);
    if (it == json.end() || !it->is_string()) {
      return absl::DataLossError(absl::StrCat("ready file has no string \"", key, "\": ", text));
    }
    *field = it->get<std::string>();
  }
  return r;
}

}  // namespace

std::string FarswapBinary(const std::string& relative_path) {
  return std::string(FARSWAP_BINARY_DIR) + "/" + relative_path;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const ServerProcessOptions& options) {
  std::unique_ptr<ServerProcess> p(new ServerProcess(options));
  char tmpl[] = "/tmp/farswap-test-node-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  p->dir_ = tmpl;
  if (options.run_as_uid >= 0 && chown(tmpl, options.run_as_uid, options.run_as_uid) != 0) {
    return absl::InternalError(absl::StrCat("cannot hand ", tmpl, " to uid ", options.run_as_uid));
  }
  if (!options.tenants.empty()) {
    std::ofstream(p->dir_ + "/tenants") << options.tenants;
  }
  if (!options.admin_token.empty()) {
    std::ofstream(p->dir_ + "/admin-token") << options.admin_token << "\n";
  }
  absl::Status s = p->Launch();
  if (!s.ok()) return s;
  return p;
}

absl::Status ServerProcess::Launch() {
  const std::string ready = dir_ + "/ready.json";
  std::remove(ready.c_str());
  const std::string transport = options_.transport.empty() ? TestTransport() : options_.transport;
  std::vector<std::string> args = {
      options_.binary.empty() ? FarswapBinary("server/farswap-server") : options_.binary,
      "--data-addr",
      (transport == "tcp" ? "" : transport + "://") + options_.host + ":0",
      "--grpc-addr",
      options_.host + ":" + (grpc_port_.empty() ? options_.grpc_port : grpc_port_),
      "--pool-limit",
      options_.pool_limit,
      "--high-watermark",
      options_.high_watermark,
      "--low-watermark",
      options_.low_watermark,
      "--ready-file",
      ready,
      "--node-id",
      absl::StrCat("test-node-", dir_.substr(dir_.rfind('-') + 1), "-", launches_)};
  if (!options_.backing_size.empty()) {
    args.insert(args.end(),
                {"--backing-file", backing_file(), "--backing-size", options_.backing_size});
  }
  if (!options_.tenants.empty()) args.insert(args.end(), {"--tenants-file", dir_ + "/tenants"});
  if (!options_.admin_token.empty()) {
    args.insert(args.end(), {"--admin-token-file", dir_ + "/admin-token"});
  }
  if (options_.allow_anonymous) args.push_back("--allow-anonymous");
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());

  int inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify < 0) return absl::InternalError("inotify_init1 failed");
  inotify_add_watch(inotify, dir_.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE);

  // Everything the child needs is prepared here: after fork, a child of
  // this multi-threaded process may only make async-signal-safe calls. A
  // malloc there can block forever on an allocator lock another thread
  // held at the fork (ASan's allocator has no fork handler), and the server
  // then never starts.
  const std::string log = dir_ + "/server.log";
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    close(inotify);
    return absl::InternalError(absl::StrCat("cannot open ", log));
  }
  int netns_fd = -1;
  if (!options_.netns.empty()) {
    const std::string netns = "/run/netns/" + options_.netns;
    netns_fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) {
      close(log_fd);
      close(inotify);
      return absl::NotFoundError(absl::StrCat("cannot open network namespace ", netns));
    }
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = options_.extra_env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const std::string& x : options_.extra_env) replaced |= x.starts_with(name);
    if (!replaced) env_strings.emplace_back(entry);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int uid = options_.run_as_uid;
  // Run as another user: the binary is opened here, as the caller, and
  // executed through that descriptor, because the user may not search the
  // folders it lies in (a build tree under `mktemp -d`, mode 0700).
  const int exe_fd = uid >= 0 ? open(argv[0], O_PATH | O_CLOEXEC) : -1;
  if (uid >= 0 && exe_fd < 0) {
    close(log_fd);
    if (netns_fd >= 0) close(netns_fd);
    close(inotify);
    return absl::InternalError(absl::StrCat("cannot open ", args[0]));
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    if (netns_fd >= 0) close(netns_fd);
    if (exe_fd >= 0) close(exe_fd);
    close(inotify);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    // The server dies with the test, also when the test crashes (SIGKILL
    // when the forking thread exits; every caller forks from a thread that
    // lives as long as its servers). A parent that died before prctl took
    // effect is caught by the getppid check.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    dup2(log_fd, 1);  // dup2 clears O_CLOEXEC on the copy
    dup2(log_fd, 2);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
      static const char kMessage[] = "cannot join the network namespace\n";
      (void)!write(2, kMessage, sizeof kMessage - 1);
      _exit(126);
    }
    // Raw system calls: they change this (the only) thread's credentials
    // without glibc's all-threads broadcast, and are async-signal-safe.
    if (uid >= 0 &&
        (syscall(SYS_setgroups, 0, nullptr) != 0 || syscall(SYS_setresgid, uid, uid, uid) != 0 ||
         syscall(SYS_setresuid, uid, uid, uid) != 0)) {
      static const char kMessage[] = "cannot change user\n";
      (void)!write(2, kMessage, sizeof kMessage - 1);
      _exit(126);
    }
    if (exe_fd >= 0) {
      syscall(SYS_execveat, exe_fd, "", argv.data(), envp.data(), AT_EMPTY_PATH);
    } else {
      execve(argv[0], argv.data(), envp.data());
    }
    _exit(127);
  }
  close(log_fd);
  if (netns_fd >= 0) close(netns_fd);
  if (exe_fd >= 0) close(exe_fd);
  pid_ = pid;
  launches_++;
  // Wait for the ready file: inotify wakes us on every write or rename in
  // the folder; the process exiting early is checked each time.
  const absl::Time deadline = absl::Now() + options_.ready_timeout;
  absl::Status result = absl::DeadlineExceededError(absl::StrCat(
      "farswap-server did not become ready within ", absl::FormatDuration(options_.ready_timeout)));
  for (;;) {
    std::string json = ReadFile(ready);
    if (!json.empty()) {
      absl::StatusOr<ReadyFile> parsed = ParseReadyFile(json);
      if (parsed.ok()) {
        data_addr_ = parsed->data_addr;
        grpc_addr_ = parsed->grpc_addr;
      }
      result = parsed.status();
      break;
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      result = absl::InternalError(
          absl::StrCat("farswap-server exited before it was ready: ", ReadFile(log)));
      break;
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    pollfd pfd{inotify, POLLIN, 0};
    // Bounded wait for the next file event (the child's exit produces none,
    // so the bound also paces that check).
    poll(&pfd, 1, int(std::min<int64_t>(absl::ToInt64Milliseconds(left), 200)));
    char buf[4096];
    while (read(inotify, buf, sizeof buf) > 0) {
    }
  }
  close(inotify);
  if (absl::IsDeadlineExceeded(result)) {
    result = absl::DeadlineExceededError(
        absl::StrCat(result.message(), "; its log so far:\n", ReadFile(log)));
  }
  if (!result.ok() && pid_ > 0) Kill();
  return result;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Kill();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  // SIGKILL alone: it ends a paused (SIGSTOPped) process too. A SIGCONT
  // first would let a paused node run until the SIGKILL lands, answering
  // requests a test meant to die unanswered with it.
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  paused_ = false;
}

absl::StatusOr<int> ServerProcess::Terminate() {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  paused_ = false;
  if (!WIFEXITED(status)) return absl::InternalError("farswap-server did not exit cleanly");
  return WEXITSTATUS(status);
}

void ServerProcess::Pause() {
  if (pid_ <= 0 || paused_) return;
  kill(pid_, SIGSTOP);
  // kill() returns before the group stop is done: a thread running on
  // another CPU may still read and answer a frame sent right after it.
  int status = 0;
  pid_t got;
  while ((got = waitpid(pid_, &status, WUNTRACED)) < 0 && errno == EINTR) {
  }
  if (got == pid_ && !WIFSTOPPED(status)) pid_ = -1;  // it exited, and is reaped
  paused_ = pid_ > 0;
}

void ServerProcess::Resume() {
  if (pid_ > 0) kill(pid_, SIGCONT);
  paused_ = false;
}

absl::Status ServerProcess::Restart() {
  Kill();
  return Launch();
}

absl::Status ServerProcess::RestartAtSameAddress() {
  const size_t colon = grpc_addr_.rfind(':');
  if (colon == std::string::npos) {
    return absl::FailedPreconditionError(absl::StrCat("no port in gRPC address ", grpc_addr_));
  }
  grpc_port_ = grpc_addr_.substr(colon + 1);
  Kill();
  return Launch();
}

std::string ServerProcess::backing_file() const {
  if (options_.backing_size.empty()) return "";
  return options_.backing_file.empty() ? dir_ + "/backing" : options_.backing_file;
}

std::string ServerProcess::Log() const { return ReadFile(dir_ + "/server.log"); }

bool ServerProcess::WaitForLog(const std::string& text, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (Log().find(text) != std::string::npos) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace farswap::testing
