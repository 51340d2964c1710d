// test_transport.h: which data-plane backend the tests' memory nodes use.
// FARSWAP_TEST_TRANSPORT ("tcp" or "ucx"; unset or empty: "tcp") lets ctest
// run a whole cluster test again over UCX (farswap_test_over_ucx in
// cmake/FarswapHelpers.cmake registers *_ucx, over UCX's TCP transport, and
// *_ucx_sm, over its shared memory) without a copy of it.
#ifndef FARSWAP_TESTS_UTIL_TEST_TRANSPORT_H_
#define FARSWAP_TESTS_UTIL_TEST_TRANSPORT_H_

#include <cstdlib>
#include <string>

namespace farswap::testing {

inline std::string TestTransport() {
  const char* t = std::getenv("FARSWAP_TEST_TRANSPORT");
  return t != nullptr && *t != '\0' ? t : "tcp";
}

// TestCarrierPattern: a regular expression every data connection's carrier
// (ConnectionStats::carrier, NodeStats::carrier) must match in this run:
// FARSWAP_TEST_CARRIER as ctest sets it for each variant ("tcp" for the TCP
// backend, "tcp/.+" for UCX over TCP, a shared-memory transport for the
// *_ucx_sm runs); unset: anything.
inline std::string TestCarrierPattern() {
  const char* p = std::getenv("FARSWAP_TEST_CARRIER");
  return p != nullptr && *p != '\0' ? p : ".*";
}

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_TEST_TRANSPORT_H_
