#include "farswap/common/thread_name.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>

namespace farswap {

namespace {

void SetName(pthread_t thread, std::string_view name) {
  char buf[16];  // TASK_COMM_LEN: 15 bytes and the NUL
  const size_t n = std::min(name.size(), sizeof(buf) - 1);
  std::memcpy(buf, name.data(), n);
  buf[n] = '\0';
  (void)pthread_setname_np(thread, buf);
}

}  // namespace

void SetCurrentThreadName(std::string_view name) { SetName(pthread_self(), name); }

void SetThreadName(std::thread& thread, std::string_view name) {
  SetName(thread.native_handle(), name);
}

}  // namespace farswap
