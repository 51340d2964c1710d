#include "farswap/common/cpu_idle.h"

#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace farswap {

namespace {

// ReadWord: the file's first line without surrounding blanks; "" when it
// cannot be read.
std::string ReadWord(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  return std::string(absl::StripAsciiWhitespace(line));
}

}  // namespace

CpuIdleState ReadCpuIdleState(const std::string& sysfs_root) {
  CpuIdleState s;
  const std::string cpuidle = sysfs_root + "/devices/system/cpu/cpuidle/";
  s.driver = ReadWord(cpuidle + "current_driver");
  s.governor = ReadWord(cpuidle + "current_governor");
  if (s.governor.empty()) s.governor = ReadWord(cpuidle + "current_governor_ro");
  uint64_t ns = 0;
  if (absl::SimpleAtoi(ReadWord(sysfs_root + "/module/haltpoll/parameters/guest_halt_poll_ns"),
                       &ns)) {
    s.guest_halt_poll_ns = ns;
  }
  return s;
}

std::string HaltPollingWarning(const CpuIdleState& state) {
  if (!state.halt_polling_off()) return "";
  return absl::StrCat(
      "this virtual machine's idle vCPUs halt at once (cpuidle driver haltpoll, "
      "guest_halt_poll_ns=0): every wake-up of a thread on an idle vCPU waits for the host, "
      "twice per remote page (on the development VM a remote fault's median took 1.6-1.8x "
      "as long as with the kernel's default, 200000). To poll: echo 200000 > "
      "/sys/module/haltpoll/parameters/guest_halt_poll_ns (as root; boot parameter "
      "haltpoll.guest_halt_poll_ns=200000). README.md, \"Virtual machines: halt polling\"");
}

}  // namespace farswap
