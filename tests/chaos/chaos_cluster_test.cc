// chaos_cluster_test.cc: the chaos harness removes every namespace, mount
// and folder it created — when it ends, when it fails half way, and, for a
// run that was killed, at the next run's start.
#include "chaos_cluster.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace farswap::chaos {
namespace {

// Leftovers lists what exists of the runs of process `pid`: named network
// namespaces, /tmp folders and mounts whose names start with fsw-<pid>-.
std::vector<std::string> Leftovers(pid_t pid) {
  const std::string prefix = absl::StrCat("fsw-", pid, "-");
  std::vector<std::string> out;
  std::error_code ec;
  for (const char* dir : {"/run/netns", "/tmp"}) {
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().string());
    }
  }
  std::ifstream mounts("/proc/self/mounts");
  for (std::string line; std::getline(mounts, line);) {
    if (line.find("/tmp/" + prefix) != std::string::npos) out.push_back("mount " + line);
  }
  return out;
}

class ChaosClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (absl::Status s = CanCreateNetworkNamespaces(); !s.ok()) {
      GTEST_SKIP() << "cannot build network namespaces: " << s;
    }
  }
};

TEST_F(ChaosClusterTest, RemovesEverythingItCreatedAlsoWhenAServerCannotStart) {
  // A 1 MiB tmpfs cannot hold a 32 MiB backing file: the first server
  // refuses to start (ENOSPC) after namespaces, veths and a mount exist.
  auto c = ChaosCluster::Create({.nodes = 2, .backing_size = "32M", .tmpfs_size = "1M"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("No space left"), absl::string_view::npos) << c.status();
  EXPECT_EQ(Leftovers(getpid()), std::vector<std::string>{});
}

TEST_F(ChaosClusterTest, RemovesWhatAKilledRunLeftBehindAndItsOwnAtTheEnd) {
  // A dead process's pid, and what a run of it would have left.
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  waitpid(dead, nullptr, 0);
  const std::string ns = absl::StrCat("fsw-", dead, "-0-hub");
  const std::string dir = absl::StrCat("/tmp/fsw-", dead, "-0/n0");
  ASSERT_TRUE(RunCommand({"ip", "netns", "add", ns}).ok());
  std::filesystem::create_directories(dir);
  ASSERT_EQ(mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1M"), 0);
  ASSERT_EQ(Leftovers(dead).size(), 3u);
  {
    auto c = ChaosCluster::Create({.nodes = 1});
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(Leftovers(dead), std::vector<std::string>{});
    EXPECT_FALSE(Leftovers(getpid()).empty());
    // The node answers in its namespace, and only there.
    ChaosCluster::ClientNetns in(**c);
    ASSERT_TRUE(in.status().ok()) << in.status();
    EXPECT_TRUE((*c)->SetPoolLimit(0, 64 << 20).ok());
  }
  EXPECT_EQ(Leftovers(getpid()), std::vector<std::string>{});
}

}  // namespace
}  // namespace farswap::chaos
