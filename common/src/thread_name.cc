#include "farswap/common/thread_name.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>

namespace farswap {

void SetCurrentThreadName(std::string_view name) {
  char buf[16];  // TASK_COMM_LEN: 15 bytes and the NUL
  const size_t n = std::min(name.size(), sizeof(buf) - 1);
  std::memcpy(buf, name.data(), n);
  buf[n] = '\0';
  (void)pthread_setname_np(pthread_self(), buf);
}

}  // namespace farswap
