// thread_name.h: names the calling thread as `top -H`, `ps -L`, perf and
// gdb show it (/proc/self/task/TID/comm).
//
//   io_thread_ = std::thread([this] {
//     SetCurrentThreadName("fs-io-0");
//     Run();
//   });
//
// Every long-lived farswap thread is named "fs-<role>[-N]" so an operator can
// tell the fault, eviction, I/O and writeback threads apart (README.md,
// "Threads").
#ifndef FARSWAP_COMMON_THREAD_NAME_H_
#define FARSWAP_COMMON_THREAD_NAME_H_

#include <string_view>
#include <thread>

namespace farswap {

// SetCurrentThreadName sets the calling thread's name, cut to the kernel's
// 15 bytes. Best effort: a failure leaves the name as it was.
void SetCurrentThreadName(std::string_view name);

// SetThreadName names `thread` from the thread that started it: the name is
// set when this returns, before the thread has run any of its own code.
void SetThreadName(std::thread& thread, std::string_view name);

}  // namespace farswap

#endif  // FARSWAP_COMMON_THREAD_NAME_H_
