#include "memcached_driver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "farswap/common/status_macros.h"

namespace farswap::bench {
namespace {

using Clock = std::chrono::steady_clock;

absl::StatusOr<int> FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("no free port: ", strerror(errno)));
  }
  close(fd);
  return int(ntohs(a.sin_port));
}

absl::StatusOr<int> Dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ", strerror(e)));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// Reader buffers a connection's replies.
class Reader {
 public:
  explicit Reader(int fd) : fd_(fd) {}
  // Line returns the next "\r\n"-terminated line without the terminator.
  absl::StatusOr<std::string> Line() {
    for (;;) {
      size_t at = buf_.find("\r\n", pos_);
      if (at != std::string::npos) {
        std::string line = buf_.substr(pos_, at - pos_);
        pos_ = at + 2;
        return line;
      }
      FARSWAP_RETURN_IF_ERROR(Fill());
    }
  }
  absl::StatusOr<std::string> Bytes(size_t n) {
    while (buf_.size() - pos_ < n) FARSWAP_RETURN_IF_ERROR(Fill());
    std::string out = buf_.substr(pos_, n);
    pos_ += n;
    return out;
  }

 private:
  absl::Status Fill() {
    if (pos_ > (1 << 20)) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
    char tmp[65536];
    ssize_t n = read(fd_, tmp, sizeof tmp);
    if (n <= 0) return absl::UnavailableError("memcached closed the connection");
    buf_.append(tmp, size_t(n));
    return absl::OkStatus();
  }
  int fd_;
  std::string buf_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MemcachedProcess>> MemcachedProcess::Start(uint64_t memory_mb,
                                                                          int threads) {
  std::unique_ptr<MemcachedProcess> p(new MemcachedProcess());
  FARSWAP_ASSIGN_OR_RETURN(p->port_, FreePort());
  std::string port = std::to_string(p->port_), mem = std::to_string(memory_mb),
              t = std::to_string(threads);
  p->pid_ = fork();
  if (p->pid_ == 0) {
    execlp("memcached", "memcached", "-l", "127.0.0.1", "-p", port.c_str(), "-U", "0", "-m",
           mem.c_str(), "-t", t.c_str(), "-c", "1024", "-u", "nobody", nullptr);
    _exit(127);
  }
  if (p->pid_ < 0) return absl::InternalError("fork failed");
  // memcached has no ready file: poll its port, bounded (5 s), the only
  // way to learn an external process is listening.
  for (int i = 0; i < 500; ++i) {
    absl::StatusOr<int> fd = Dial(p->port_);
    if (fd.ok()) {
      close(*fd);
      return p;
    }
    int status;
    if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      return absl::UnavailableError("memcached exited at start (is it installed?)");
    }
    usleep(10000);  // bounded polling of an external process, see above
  }
  return absl::DeadlineExceededError("memcached did not listen within 5 s");
}

MemcachedProcess::~MemcachedProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

uint64_t MemcachedProcess::RssBytes() const {
  std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

absl::StatusOr<Json> RunMemcached(const PageFile& pages, int threads, int depth) {
  const size_t n = pages.page_count();
  // -m counts item memory; a 4 KiB value plus key and header takes a
  // 4.5 KiB slab chunk, so give it twice the raw size plus slack.
  FARSWAP_ASSIGN_OR_RETURN(auto mc, MemcachedProcess::Start(n * 8192 / (1 << 20) + 64, 2));
  const uint64_t rss_empty = mc->RssBytes();
  std::vector<std::vector<double>> load_us(threads);
  std::vector<std::string> errors(threads);
  std::atomic<uint64_t> bad{0};
  auto run = [&](bool store) {
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        absl::StatusOr<int> fd = Dial(mc->port());
        if (!fd.ok()) {
          errors[t] = fd.status().ToString();
          return;
        }
        Reader r(*fd);
        std::vector<size_t> mine;
        for (size_t i = size_t(t); i < n; i += size_t(threads)) mine.push_back(i);
        for (size_t at = 0; at < mine.size(); at += size_t(depth)) {
          size_t k = std::min(size_t(depth), mine.size() - at);
          std::string req;
          for (size_t j = 0; j < k; ++j) {
            size_t i = mine[at + j];
            if (store) {
              absl::StrAppend(&req, "set p", i, " 0 0 ", kPageSize, "\r\n");
              req.append(reinterpret_cast<const char*>(pages.page(i)), kPageSize);
              req += "\r\n";
            } else {
              absl::StrAppend(&req, "get p", i, "\r\n");
            }
          }
          auto t0 = Clock::now();
          if (!WriteAll(*fd, req)) {
            errors[t] = "write to memcached failed";
            break;
          }
          for (size_t j = 0; j < k; ++j) {
            absl::StatusOr<std::string> line = r.Line();
            if (!line.ok()) {
              errors[t] = line.status().ToString();
              break;
            }
            if (store) {
              if (*line != "STORED") bad++;
              continue;
            }
            if (line->rfind("VALUE ", 0) != 0) {
              bad++;  // "END": a miss
              continue;
            }
            absl::StatusOr<std::string> data = r.Bytes(kPageSize + 2);
            absl::StatusOr<std::string> end = r.Line();
            if (!data.ok() || !end.ok()) {
              errors[t] = "short read from memcached";
              break;
            }
            load_us[t].push_back(
                std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
            if (std::memcmp(data->data(), pages.page(mine[at + j]), kPageSize) != 0) bad++;
          }
          if (!errors[t].empty()) break;
        }
        close(*fd);
      });
    }
    for (auto& th : ts) th.join();
  };
  auto t0 = Clock::now();
  run(true);
  double store_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const uint64_t rss_full = mc->RssBytes();
  t0 = Clock::now();
  run(false);
  double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  for (const std::string& e : errors) {
    if (!e.empty()) return absl::UnavailableError("memcached run: " + e);
  }
  std::vector<double> all;
  for (auto& v : load_us) all.insert(all.end(), v.begin(), v.end());
  Json j;
  j.Int("pages", n)
      .Num("store_pages_per_s", n / store_s)
      .Num("load_pages_per_s", n / load_s)
      .Num("load_us_p50", Percentile(all, 50))
      .Num("load_us_p99", Percentile(all, 99))
      .Bool("verified", bad == 0 && all.size() == n)
      .Int("bad_pages", bad)
      .Int("rss_bytes", rss_full)
      .Int("rss_empty_bytes", rss_empty)
      .Num("rss_per_stored_byte", double(rss_full) / double(n * kPageSize))
      .Num("rss_growth_per_stored_byte", double(rss_full - rss_empty) / double(n * kPageSize));
  return j;
}

}  // namespace farswap::bench
