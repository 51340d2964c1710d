// cpu_idle.h: what this machine's idle CPUs do, as far as a remote page
// cares (README.md, "Virtual machines: halt polling").
//
// A remote page's round trip wakes a sleeping thread on each side: the
// node's I/O thread when the request lands, the faulting (or waiting)
// thread when the reply has been installed. Where the CPU that thread
// slept on has gone idle, the wake-up also waits for that CPU to leave its
// idle state. In a KVM guest whose cpuidle driver is `haltpoll`, an idle
// vCPU first polls for up to `guest_halt_poll_ns` (the kernel's default is
// 200000, adapted up and down) and only then halts; a halted vCPU is woken
// by the host, which on the development VM costs 15-20 us a time. Booted
// with `haltpoll.guest_halt_poll_ns=0`, every such wake-up pays that.
//
//   CpuIdleState s = ReadCpuIdleState();
//   if (s.halt_polling_off()) spdlog::warn("{}", HaltPollingWarning(s));
//
// Thread safety: the functions are safe to call from any thread; they only
// read sysfs.
#ifndef FARSWAP_COMMON_CPU_IDLE_H_
#define FARSWAP_COMMON_CPU_IDLE_H_

#include <cstdint>
#include <optional>
#include <string>

namespace farswap {

// CpuIdleState is what sysfs says about idle CPUs. Every field is empty
// where the file is absent or unreadable (a container may hide /sys).
struct CpuIdleState {
  // driver: devices/system/cpu/cpuidle/current_driver ("haltpoll",
  // "intel_idle", "acpi_idle", ...).
  std::string driver;
  // governor: devices/system/cpu/cpuidle/current_governor (or
  // current_governor_ro, where the kernel offers only that).
  std::string governor;
  // guest_halt_poll_ns: module/haltpoll/parameters/guest_halt_poll_ns, the
  // haltpoll driver's polling window before a vCPU halts.
  std::optional<uint64_t> guest_halt_poll_ns;

  // halt_polling_off: the haltpoll driver runs and never polls, so every
  // wake-up of an idle vCPU goes through the host.
  bool halt_polling_off() const {
    return driver == "haltpoll" && guest_halt_poll_ns.has_value() && *guest_halt_poll_ns == 0;
  }
};

// ReadCpuIdleState reads the state under `sysfs_root` (tests pass a fake
// tree).
CpuIdleState ReadCpuIdleState(const std::string& sysfs_root = "/sys");

// HaltPollingWarning: one log line saying what halt polling off costs and
// how to turn it on, for a state whose halt_polling_off() is true; "" for
// any other.
std::string HaltPollingWarning(const CpuIdleState& state);

}  // namespace farswap

#endif  // FARSWAP_COMMON_CPU_IDLE_H_
