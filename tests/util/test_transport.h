// test_transport.h: which data-plane backend the tests' memory nodes use.
// FARSWAP_TEST_TRANSPORT ("tcp" or "ucx"; unset or empty: "tcp") lets ctest
// run a whole cluster test a second time over UCX (tests/client/
// CMakeLists.txt registers the *_ucx variants) without a copy of it.
#ifndef FARSWAP_TESTS_UTIL_TEST_TRANSPORT_H_
#define FARSWAP_TESTS_UTIL_TEST_TRANSPORT_H_

#include <cstdlib>
#include <string>

namespace farswap::testing {

inline std::string TestTransport() {
  const char* t = std::getenv("FARSWAP_TEST_TRANSPORT");
  return t != nullptr && *t != '\0' ? t : "tcp";
}

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_TEST_TRANSPORT_H_
