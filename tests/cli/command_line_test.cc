// Every binary's command line, through real processes: --help and
// --version answer on stdout with exit 0; a bad value or an unknown flag is
// an error naming the flag with exit 2; --x=false really turns a boolean
// off; and farswap-bench / farswap-demo find a farswap-server copied beside
// them (or given by --server-bin) instead of the one in this build tree.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "farswap/common/sanitizers.h"
#include "run_program.h"
#include "server_process.h"

namespace farswap {
namespace {

using testing::FarswapBinary;
using testing::ProgramResult;
using testing::RunProgram;
using testing::ServerProcess;

const std::string kServer = FarswapBinary("server/farswap-server");
const std::string kCtl = FarswapBinary("server/ctl/farswapctl");
const std::string kBench = FarswapBinary("bench/farswap-bench");
const std::string kWorkload = FarswapBinary("bench/farswap-region-workload");
const std::string kDemo = FarswapBinary("demo/farswap-demo");
const std::string kCorpus = std::string(FARSWAP_CORPUS_DIR) + "/sqlite.pages.zst";
// A PATH with no farswap-server on it.
const std::string kEmptyPath = "/nonexistent";

ProgramResult Exec(const std::vector<std::string>& argv,
                   std::optional<std::string> path_env = std::nullopt) {
  absl::StatusOr<ProgramResult> r = RunProgram(argv, path_env);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.value_or(ProgramResult{});
}

// TempDir: a folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/farswap-cli-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  // Copy copies `binary` into the folder and returns the copy's path.
  std::string Copy(const std::string& binary) const {
    std::filesystem::path to =
        std::filesystem::path(path_) / std::filesystem::path(binary).filename();
    std::filesystem::copy_file(binary, to);
    return to.string();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct HelpCase {
  std::vector<std::string> argv;
  std::vector<std::string> mentions;
};

TEST(CommandLineTest, EveryBinaryAnswersHelpWithItsFlags) {
  const std::vector<HelpCase> cases = {
      {{kServer, "--help"},
       {"--data-addr",    "--grpc-addr",       "--pool-limit",        "--backing-file",
        "--backing-size", "--high-watermark",  "--low-watermark",     "--io-threads",
        "--workers",      "--busy-poll-us",    "--tenants-file",      "--session-idle-timeout",
        "--ready-file",   "--node-id",         "--log-level",         "--test-corrupt-loads",
        "--cold-after",   "--cold-zstd-level", "--writeback-threads", "--version"}},
      {{kCtl, "--help"},
       {"--node", "--timeout", "stats", "health", "compact", "drain", "set-limit", "--version"}},
      {{kCtl, "set-limit", "--help"},
       {"--pool-limit", "--high-watermark", "--low-watermark", "--tenant", "--quota"}},
      {{kCtl, "stats", "--help"}, {"--json", "--tenant"}},
      {{kCtl, "drain", "--help"}, {"--resume"}},
      {{kBench, "--help"},
       {"pool", "node", "e2e", "region", "chaos", "index", "writeback", "--version"}},
      {{kBench, "writeback", "--help"},
       {"--corpus", "--copies", "--rounds", "--churn", "--seed", "--writeback-threads",
        "--segment-size", "--batch-pages", "--write-request-size", "--backing-file",
        "--backing-size"}},
      {{kBench, "index", "--help"}, {"--entries", "--tenants", "--rounds", "--seed", "--json"}},
      {{kBench, "pool", "--help"},
       {"--corpus", "--codec", "--churn", "--seed", "--max-pages-per-zspage", "--zstd-level",
        "--classes", "--victims-out", "--json"}},
      {{kBench, "node", "--help"},
       {"--corpus", "--node", "--spawn", "--server-bin", "--pool-limit", "--backing-size",
        "--connections", "--depth", "--codec", "--tenant", "--secret"}},
      {{kBench, "e2e", "--help"},
       {"--spawn", "--nodes", "--server-bin", "--corpus", "--replicas", "--threads", "--depth",
        "--kill-one-after", "--compare", "--pool-limit", "--cold-after", "--cold-rounds",
        "--cold-zstd-level", "--rounds"}},
      {{kBench, "region", "--help"},
       {"--size",
        "--local",
        "--workload",
        "--threads",
        "--ops",
        "--seed",
        "--theta",
        "--write-fraction",
        "--backend",
        "--spawn",
        "--replicas",
        "--server-bin",
        "--evict-batch",
        "--fault-threads",
        "--evict-threads",
        "--spin-us",
        "--busy-poll-us",
        "--node-io-threads",
        "--client-io-threads",
        "--no-prefetch",
        "--write-protect-loads",
        "--corpus"}},
      {{kBench, "chaos", "--help"},
       {"--minutes", "--seconds", "--nodes", "--replicas", "--faults", "--seed",
        "--failure-timeout-ms", "--region-size", "--region-budget", "--client-pages", "--threads",
        "--server-bin"}},
      {{kWorkload, "--help"},
       {"--size", "--workload", "--threads", "--ops", "--seed", "--theta", "--write-fraction"}},
      {{kDemo, "--help"},
       {"--size", "--local", "--nodes", "--replicas", "--pool-limit", "--kill-at", "--lookups",
        "--seed", "--server-bin", "--version"}},
  };
  for (const HelpCase& c : cases) {
    ProgramResult r = Exec(c.argv);
    const std::string what = c.argv[0] + " " + c.argv[1];
    EXPECT_EQ(r.exit_status, 0) << what << "\n" << r.err;
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << what << "\n" << r.out;
    for (const std::string& flag : c.mentions) {
      EXPECT_NE(r.out.find(flag), std::string::npos) << what << " does not mention " << flag;
    }
  }
}

TEST(CommandLineTest, EveryBinaryAnswersVersion) {
  for (const auto& [binary, name] :
       std::vector<std::pair<std::string, std::string>>{{kServer, "farswap-server"},
                                                        {kCtl, "farswapctl"},
                                                        {kBench, "farswap-bench"},
                                                        {kWorkload, "farswap-region-workload"},
                                                        {kDemo, "farswap-demo"}}) {
    ProgramResult r = Exec({binary, "--version"});
    EXPECT_EQ(r.exit_status, 0) << binary << "\n" << r.err;
    EXPECT_EQ(r.out.rfind(name + " 0.", 0), 0u) << binary << " printed: " << r.out;
  }
}

struct BadCase {
  std::vector<std::string> argv;
  std::string flag;  // the error must name it
};

TEST(CommandLineTest, BadValuesExitTwoNamingTheFlag) {
  const std::vector<BadCase> cases = {
      {{kDemo, "--seed", "abc"}, "--seed"},
      {{kDemo, "--local", "nan"}, "--local"},
      {{kDemo, "--size", "4M"}, "--size"},
      {{kServer, "--log-level", "loud"}, "--log-level"},
      {{kServer, "--pool-limit", "12Q"}, "--pool-limit"},
      {{kServer, "--pool-limit", "1K"}, "--pool-limit"},
      {{kServer, "--io-threads", "0"}, "--io-threads"},
      {{kServer, "--writeback-threads", "17"}, "--writeback-threads"},
      {{kServer, "--session-idle-timeout", "-1"}, "--session-idle-timeout"},
      {{kServer, "--test-corrupt-loads=maybe"}, "--test-corrupt-loads"},
      {{kServer, "--no-such-flag"}, "--no-such-flag"},
      {{kServer, "--high-watermark", "0.5", "--low-watermark", "0.7"}, "--low-watermark"},
      {{kServer, "--cold-after", "-1"}, "--cold-after"},
      {{kServer, "--cold-zstd-level", "0"}, "--cold-zstd-level"},
      // --ucx-data-addr serves UCX beside a TCP data plane, in plaintext,
      // at an address clients can dial.
      {{kServer, "--transport", "ucx", "--ucx-data-addr", "127.0.0.1:0"}, "--ucx-data-addr"},
      {{kServer, "--ucx-data-addr", "tcp://127.0.0.1:0"}, "--ucx-data-addr"},
      {{kServer, "--ucx-data-addr", "0.0.0.0:0"}, "--ucx-data-addr"},
      {{kServer, "--data-tls", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--ucx-data-addr",
        "127.0.0.1:0"},
       "--ucx-data-addr"},
      {{kCtl, "--node", "127.0.0.1:1", "set-limit", "--pool-limit", "12Q"}, "--pool-limit"},
      {{kCtl, "--node", "127.0.0.1:1", "set-limit", "--quota", "1M"}, "--quota"},
      {{kCtl, "--node", "127.0.0.1:1", "--timeout", "soon", "health"}, "--timeout"},
      {{kCtl, "health"}, "--node"},
      {{kBench, "pool", "--corpus", kCorpus, "--churn", "2"}, "--churn"},
      {{kBench, "node", "--corpus", kCorpus, "--spawn", "--depth", "x"}, "--depth"},
      {{kBench, "region", "--size", "12Q"}, "--size"},
      {{kBench, "region", "--workload", "sideways"}, "--workload"},
      {{kBench, "e2e", "--corpus", kCorpus, "--spawn", "2", "--threads", "-3"}, "--threads"},
      {{kBench, "e2e", "--corpus", kCorpus, "--spawn", "1", "--cold-rounds", "0"}, "--cold-rounds"},
      // Rounds pair two kinds of run: alone there is nothing to alternate.
      {{kBench, "e2e", "--corpus", kCorpus, "--spawn", "1", "--rounds", "2"}, "--rounds"},
      {{kBench, "chaos", "--failure-timeout-ms", "5"}, "--failure-timeout-ms"},
      {{kBench, "index", "--entries", "0"}, "--entries"},
      {{kBench, "writeback", "--corpus", kCorpus, "--churn", "2"}, "--churn"},
      {{kBench, "writeback", "--corpus", kCorpus, "--writeback-threads", "0"},
       "--writeback-threads"},
      {{kWorkload, "--threads", "abc"}, "--threads"},
  };
  for (const BadCase& c : cases) {
    ProgramResult r = Exec(c.argv);
    std::string what;
    for (const std::string& a : c.argv) what += " " + a;
    EXPECT_EQ(r.exit_status, 2) << what << "\n" << r.err;
    EXPECT_NE(r.err.find(c.flag), std::string::npos) << what << " said: " << r.err;
    EXPECT_EQ(r.out, "") << what;
  }
}

// RunNodeBench runs `farswap-bench node` against `node` and returns its
// JSON (stdout must be exactly one JSON object: logs go to stderr).
nlohmann::json RunNodeBench(const std::vector<std::string>& argv, int* exit_status,
                            std::optional<std::string> path_env = std::nullopt) {
  ProgramResult r = Exec(argv, path_env);
  *exit_status = r.exit_status;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "stdout is not one JSON object: " << r.out << "\n" << r.err;
  return j;
}

TEST(CommandLineTest, BooleanFalseTurnsCorruptLoadsOff) {
  for (const std::string value : {"false", "true"}) {
    auto node = ServerProcess::Start({.extra_args = {"--test-corrupt-loads=" + value}});
    ASSERT_TRUE(node.ok()) << node.status();
    int exit_status = -1;
    nlohmann::json j = RunNodeBench(
        {kBench, "node", "--node", (*node)->grpc_addr(), "--corpus", kCorpus}, &exit_status);
    ASSERT_TRUE(j.is_object()) << value;
    // Corrupted loads fail their checksum: verified only when really off.
    EXPECT_EQ(j.value("verified", value == "true"), value == "false") << j.dump();
    EXPECT_EQ(exit_status, value == "false" ? 0 : 1);
  }
}

TEST(CommandLineTest, E2eExitsOneWhenPagesComeBackWrong) {
  // A node that corrupts what it returns: every load fails the client's
  // checksum. The bench still prints its figures, says verified: false,
  // and fails (exit 1) with the reason on stderr — a script that checks
  // only the exit status must not take lost pages for a good run.
  auto node = ServerProcess::Start({.extra_args = {"--test-corrupt-loads"}});
  ASSERT_TRUE(node.ok()) << node.status();
  ProgramResult r = Exec(
      {kBench, "e2e", "--nodes", (*node)->grpc_addr(), "--replicas", "1", "--corpus", kCorpus});
  EXPECT_EQ(r.exit_status, 1) << r.out << "\n" << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(j.is_object()) << "stdout is not one JSON object: " << r.out << "\n" << r.err;
  EXPECT_EQ(j.value("verified", true), false) << j.dump();
  EXPECT_GT(j.value("lost_pages", 0) + j.value("checksum_failures", 0), 0) << j.dump();
  EXPECT_NE(r.err.find("verified: false"), std::string::npos) << r.err;
}

TEST(CommandLineTest, E2eRoundsAreVerifiedOnlyIfEveryRoundWas) {
  // The first node the bench starts corrupts every load it serves; the
  // nodes of later runs are sound. So round 1's first run fails its
  // checksums and every later run verifies: the summary must still say
  // not verified (and exit 1), for --compare memcached (ours) and for
  // --data-tls (the plaintext side), however good the last round was.
  for (const std::vector<std::string>& pairing :
       {std::vector<std::string>{"--compare", "memcached"},
        std::vector<std::string>{"--data-tls"}}) {
    TempDir dir;
    const std::string wrapper = dir.path() + "/first-node-corrupts";
    {
      std::ofstream script(wrapper);
      script << "#!/bin/sh\n"
             << "if mkdir " << dir.path() << "/started 2>/dev/null; then\n"
             << "  exec " << kServer << " --test-corrupt-loads \"$@\"\n"
             << "fi\n"
             << "exec " << kServer << " \"$@\"\n";
    }
    std::filesystem::permissions(wrapper, std::filesystem::perms::owner_all);
    std::vector<std::string> argv = {kBench,         "e2e",   "--spawn",  "1",
                                     "--replicas",   "1",     "--corpus", kCorpus,
                                     "--server-bin", wrapper, "--rounds", "2"};
    argv.insert(argv.end(), pairing.begin(), pairing.end());
    ProgramResult r = Exec(argv);
    EXPECT_EQ(r.exit_status, 1) << pairing[0] << "\n" << r.out << "\n" << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << "stdout is not one JSON object: " << r.out << "\n" << r.err;
    EXPECT_EQ(j.value("rounds", 0), 2) << j.dump();
    if (pairing[0] == "--data-tls") {
      EXPECT_EQ(j["plaintext"].value("verified", true), false) << j.dump();
      EXPECT_EQ(j["tls"].value("verified", false), true) << j.dump();
    } else {
      EXPECT_EQ(j.value("verified", true), false) << j.dump();
      EXPECT_EQ(j["memcached"].value("verified", false), true) << j.dump();
    }
    EXPECT_NE(r.err.find("verified: false"), std::string::npos) << r.err;
  }
}

TEST(CommandLineTest, E2eAgainstMemcachedAlternatesRoundsAndReportsEachRatio) {
  // Two farswap/memcached pairs: a ratio per round, and the figures are the
  // medians of what both sides measured (the pages came back intact from
  // both, or the bench says not verified).
  int exit_status = -1;
  nlohmann::json j = RunNodeBench({kBench, "e2e", "--spawn", "1", "--replicas", "1", "--corpus",
                                   kCorpus, "--compare", "memcached", "--rounds", "2"},
                                  &exit_status);
  ASSERT_EQ(exit_status, 0) << j.dump();
  EXPECT_EQ(j.value("rounds", 0), 2) << j.dump();
  EXPECT_EQ(j.value("verified", false), true) << j.dump();
  ASSERT_TRUE(j.contains("memcached")) << j.dump();
  EXPECT_EQ(j["memcached"].value("verified", false), true) << j.dump();
  for (const std::string op : {"store", "load"}) {
    const nlohmann::json& by_round = j["memcached_" + op + "_ratio_by_round"];
    ASSERT_TRUE(by_round.is_array()) << j.dump();
    ASSERT_EQ(by_round.size(), 2u) << j.dump();
    const double lo = std::min(by_round[0].get<double>(), by_round[1].get<double>());
    const double hi = std::max(by_round[0].get<double>(), by_round[1].get<double>());
    EXPECT_GT(lo, 0) << j.dump();
    // The median of two rounds lies between them.
    const double median = j.value("memcached_" + op + "_ratio", 0.0);
    EXPECT_GE(median, lo * 0.999) << j.dump();
    EXPECT_LE(median, hi * 1.001) << j.dump();
    EXPECT_GT(j.value(op + "_pages_per_s", 0.0), 0) << j.dump();
    EXPECT_GT(j["memcached"].value(op + "_pages_per_s", 0.0), 0) << j.dump();
  }
}

TEST(CommandLineTest, IndexBenchReportsEveryKeyFoundAndItsCost) {
  int exit_status = -1;
  nlohmann::json j = RunNodeBench(
      {kBench, "index", "--entries", "20000", "--tenants", "3", "--rounds", "2"}, &exit_status);
  EXPECT_EQ(exit_status, 0) << j.dump();
  EXPECT_EQ(j.value("verified", false), true) << j.dump();
  EXPECT_EQ(j.value("entries", 0), 20000) << j.dump();
  EXPECT_EQ(j.value("tenants", 0), 3) << j.dump();
  EXPECT_EQ(j.value("rounds", 0), 2) << j.dump();
  // At least the entries themselves are on the heap (glibc's counts; under
  // ASan's allocator there are none and the figure is null), and each
  // operation took some time.
#if defined(FARSWAP_UNDER_ASAN)
  EXPECT_TRUE(j["heap_bytes_per_entry"].is_null()) << j.dump();
#else
  EXPECT_GE(j.value("heap_bytes_per_entry", 0.0), j.value("entry_bytes", 1.0)) << j.dump();
#endif
  for (const char* op : {"insert_ns", "find_ns", "replace_ns", "erase_ns"}) {
    EXPECT_GT(j.value(op, 0.0), 0) << op << " " << j.dump();
  }
}

// bench/compare-fio, small: fio's sequential direct writes and a spawned
// node's writeback on the same file system, in one JSON object. Without
// --writeback-threads the node runs its own default (2 where it may run on
// two CPUs, as this test's affinity mask says), and the output says which.
TEST(CommandLineTest, CompareFioPrintsFioAndTheNodeSideBySide) {
  if (Exec({"/bin/sh", "-c", "command -v fio"}).exit_status != 0) {
    GTEST_SKIP() << "fio is not installed (scripts/install-deps installs it)";
  }
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  ASSERT_EQ(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
  const int default_threads = CPU_COUNT(&cpus) >= 2 ? 2 : 1;
  TempDir dir;
  for (const std::string threads : {"", "1"}) {
    std::vector<std::string> argv = {"/bin/bash",
                                     std::string(FARSWAP_SOURCE_DIR) + "/bench/compare-fio",
                                     "--corpus",
                                     kCorpus,
                                     "--bench",
                                     kBench,
                                     "--dir",
                                     dir.path(),
                                     "--fio-size",
                                     "16M",
                                     "--pool-limit",
                                     "4M",
                                     "--long-drain-copies",
                                     "0"};
    if (!threads.empty()) argv.insert(argv.end(), {"--writeback-threads", threads});
    ProgramResult r = Exec(argv);
    ASSERT_EQ(r.exit_status, 0) << r.out << "\n" << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << "stdout is not one JSON object: " << r.out << "\n" << r.err;
    EXPECT_EQ(j.value("verified", false), true) << j.dump();
    EXPECT_EQ(j.value("writeback_threads", 0), threads.empty() ? default_threads : 1) << j.dump();
    for (const char* fio : {"fio_psync_qd1_bytes_per_s", "fio_io_uring_qd8_bytes_per_s",
                            "fio_psync_request_size_bytes_per_s"}) {
      EXPECT_GT(j.value(fio, 0.0), 0) << fio << " " << j.dump();
    }
    EXPECT_TRUE(j.contains("writeback_drain_vs_fio_psync")) << j.dump();
    EXPECT_FALSE(j.contains("long_drain_bytes_per_s")) << j.dump();  // --long-drain-copies 0
    EXPECT_GT(j.value("store_pages_per_s", 0.0), 0) << j.dump();
  }
  // Its folders under --dir are gone: only what the test made is left.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << dir.path();
}

// The writeback bench on the test corpus with a small file: two threads
// write most of the pages back, and the ones it reads back match.
TEST(CommandLineTest, WritebackBenchWritesPagesBackAndReadsThemBack) {
  int exit_status = -1;
  const std::string backing = ::testing::TempDir() + "writeback-bench.backing";
  nlohmann::json j = RunNodeBench({kBench, "writeback", "--corpus", kCorpus, "--copies", "2",
                                   "--rounds", "2", "--writeback-threads", "2", "--backing-size",
                                   "64M", "--segment-size", "256K", "--backing-file", backing},
                                  &exit_status);
  EXPECT_EQ(exit_status, 0) << j.dump();
  EXPECT_EQ(j.value("verified", false), true) << j.dump();
  EXPECT_EQ(j.value("writeback_threads", 0), 2) << j.dump();
  EXPECT_EQ(j.value("segment_bytes", 0), 256 << 10) << j.dump();
  // A quarter of the pool's memory as the limit, down to half of that: most
  // of the pages go to disk.
  EXPECT_GT(j.value("written_back_pages", 0), j.value("pages", 0) / 2) << j.dump();
  EXPECT_GT(j.value("backing_bytes", 0), 0) << j.dump();
  EXPECT_GT(j.value("checked_pages", 0), 0) << j.dump();
  EXPECT_GT(j.value("cpu_ns_per_page", 0.0), 0) << j.dump();
  EXPECT_GT(j.value("bytes_per_s", 0.0), 0) << j.dump();
  EXPECT_EQ(j["cpu_ns_per_page_by_round"].size(), 2u) << j.dump();
  EXPECT_NE(access(backing.c_str(), F_OK), 0) << "the backing file was left behind";
}

TEST(CommandLineTest, RegionBenchFillsPagesFromACorpusOrSaysWhyNot) {
  // Real pages in, the same contents out of the region as out of local
  // memory (the bench's own check), and the JSON says where pages came from.
  for (const std::string& from : {std::string("pattern"), kCorpus}) {
    std::vector<std::string> argv = {kBench, "region", "--size", "8M", "--workload", "random"};
    if (from != "pattern") argv.insert(argv.end(), {"--corpus", from});
    int exit_status = -1;
    nlohmann::json j = RunNodeBench(argv, &exit_status);
    EXPECT_EQ(exit_status, 0) << from;
    EXPECT_EQ(j.value("pages_from", ""), from) << j.dump();
    EXPECT_EQ(j.value("verified", false), true) << j.dump();
    EXPECT_GT(j.value("evictions", 0), 0) << j.dump();
  }
  ProgramResult r = Exec({kBench, "region", "--size", "8M", "--corpus", kEmptyPath});
  EXPECT_EQ(r.exit_status, 1) << r.err;
  EXPECT_NE(r.err.find(kEmptyPath), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(CommandLineTest, BenchFindsServerCopiedBesideIt) {
  TempDir dir;
  const std::string bench = dir.Copy(kBench);
  dir.Copy(kServer);
  int exit_status = -1;
  nlohmann::json j = RunNodeBench({bench, "node", "--spawn", "--corpus", kCorpus, "--pool-limit",
                                   "64M", "--backing-size", "64M"},
                                  &exit_status, kEmptyPath);
  EXPECT_EQ(exit_status, 0);
  EXPECT_EQ(j.value("verified", false), true) << j.dump();
}

TEST(CommandLineTest, BenchAloneListsWhereItLookedAndTakesServerBin) {
  TempDir dir;
  const std::string bench = dir.Copy(kBench);
  ProgramResult r = Exec({bench, "node", "--spawn", "--corpus", kCorpus}, kEmptyPath);
  EXPECT_EQ(r.exit_status, 1) << r.err;
  EXPECT_NE(r.err.find("no farswap-server found"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir.path() + "/farswap-server"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(kEmptyPath + "/farswap-server"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--server-bin"), std::string::npos) << r.err;

  int exit_status = -1;
  nlohmann::json j = RunNodeBench({bench, "node", "--spawn", "--server-bin", kServer, "--corpus",
                                   kCorpus, "--pool-limit", "64M", "--backing-size", "64M"},
                                  &exit_status, kEmptyPath);
  EXPECT_EQ(exit_status, 0);
  EXPECT_EQ(j.value("verified", false), true) << j.dump();

  r = Exec(
      {bench, "node", "--spawn", "--server-bin", dir.path() + "/nothing", "--corpus", kCorpus});
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.err.find("--server-bin"), std::string::npos) << r.err;
}

TEST(CommandLineTest, DemoFindsServerCopiedBesideIt) {
  TempDir dir;
  const std::string demo = dir.Copy(kDemo);
  ProgramResult alone = Exec({demo, "--size", "8M"}, kEmptyPath);
  EXPECT_EQ(alone.exit_status, 1);
  EXPECT_NE(alone.err.find("no farswap-server found"), std::string::npos) << alone.err;

  dir.Copy(kServer);
  ProgramResult r = Exec(
      {demo, "--size", "8M", "--nodes", "2", "--replicas", "2", "--lookups", "100"}, kEmptyPath);
  EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("OK: "), std::string::npos) << r.out;
}

}  // namespace
}  // namespace farswap
