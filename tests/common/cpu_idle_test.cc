// cpu_idle_test: ReadCpuIdleState over fake sysfs trees, and the warning it
// leads to.
#include "farswap/common/cpu_idle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace farswap {
namespace {

namespace fs = std::filesystem;

class CpuIdleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("cpu_idle_test." + std::to_string(::getpid()) + "." +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Write puts `text` at `relative` under the fake root.
  void Write(const std::string& relative, const std::string& text) {
    const fs::path p = root_ / relative;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  void HaltpollGuest(const std::string& poll_ns) {
    Write("devices/system/cpu/cpuidle/current_driver", "haltpoll\n");
    Write("devices/system/cpu/cpuidle/current_governor", "haltpoll\n");
    Write("module/haltpoll/parameters/guest_halt_poll_ns", poll_ns);
  }

  fs::path root_;
};

TEST_F(CpuIdleTest, AHaltpollGuestThatNeverPollsIsSeenAndWarnedAbout) {
  HaltpollGuest("0\n");
  const CpuIdleState s = ReadCpuIdleState(root_.string());
  EXPECT_EQ(s.driver, "haltpoll");
  EXPECT_EQ(s.governor, "haltpoll");
  ASSERT_TRUE(s.guest_halt_poll_ns.has_value());
  EXPECT_EQ(*s.guest_halt_poll_ns, 0u);
  EXPECT_TRUE(s.halt_polling_off());
  const std::string w = HaltPollingWarning(s);
  EXPECT_THAT(w, ::testing::HasSubstr("guest_halt_poll_ns=0"));
  EXPECT_THAT(w, ::testing::HasSubstr("/sys/module/haltpoll/parameters/guest_halt_poll_ns"));
}

TEST_F(CpuIdleTest, AHaltpollGuestThatPollsIsNotWarnedAbout) {
  HaltpollGuest("200000\n");
  const CpuIdleState s = ReadCpuIdleState(root_.string());
  ASSERT_TRUE(s.guest_halt_poll_ns.has_value());
  EXPECT_EQ(*s.guest_halt_poll_ns, 200000u);
  EXPECT_FALSE(s.halt_polling_off());
  EXPECT_EQ(HaltPollingWarning(s), "");
}

TEST_F(CpuIdleTest, AnotherDriverIsNotHaltPollingOffEvenWithTheModuleParameterAtZero) {
  // The haltpoll module may be loaded while another driver runs the CPUs.
  Write("devices/system/cpu/cpuidle/current_driver", "intel_idle\n");
  Write("devices/system/cpu/cpuidle/current_governor_ro", "menu\n");
  Write("module/haltpoll/parameters/guest_halt_poll_ns", "0\n");
  const CpuIdleState s = ReadCpuIdleState(root_.string());
  EXPECT_EQ(s.driver, "intel_idle");
  EXPECT_EQ(s.governor, "menu");  // read from current_governor_ro
  EXPECT_FALSE(s.halt_polling_off());
  EXPECT_EQ(HaltPollingWarning(s), "");
}

TEST_F(CpuIdleTest, AMissingOrUnreadableTreeLeavesEveryFieldEmpty) {
  CpuIdleState s = ReadCpuIdleState((root_ / "absent").string());
  EXPECT_EQ(s.driver, "");
  EXPECT_EQ(s.governor, "");
  EXPECT_FALSE(s.guest_halt_poll_ns.has_value());
  EXPECT_FALSE(s.halt_polling_off());

  // A value that is not a number is no value.
  HaltpollGuest("lots\n");
  s = ReadCpuIdleState(root_.string());
  EXPECT_EQ(s.driver, "haltpoll");
  EXPECT_FALSE(s.guest_halt_poll_ns.has_value());
  EXPECT_FALSE(s.halt_polling_off());
}

}  // namespace
}  // namespace farswap
