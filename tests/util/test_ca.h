// test_ca.h: a throwaway certificate authority for TLS tests, made with the
// `openssl` command line (Debian's openssl package) in a folder the caller
// owns.
//
//   auto ca = TestCa::Create(dir, "farswap test CA").value();
//   CertificateFiles node = ca->Issue("node-1").value();  // SANs 127.0.0.1, localhost
//   ServerProcess::Start({.extra_args = {"--tls-cert", node.cert_file, ...}});
//
// Keys are P-256, certificates valid for a day, each with a fresh random
// serial. Not thread-safe: one test thread uses a TestCa.
#ifndef FARSWAP_TESTS_UTIL_TEST_CA_H_
#define FARSWAP_TESTS_UTIL_TEST_CA_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace farswap::testing {

struct CertificateFiles {
  std::string cert_file;  // PEM certificate
  std::string key_file;   // PEM private key, unencrypted
};

class TestCa {
 public:
  // Create makes a self-signed CA with subject CN=`common_name`; its files
  // are <dir>/<common_name without spaces>-ca.{crt,key}.
  static absl::StatusOr<std::unique_ptr<TestCa>> Create(const std::string& dir,
                                                        const std::string& common_name);

  // Issue signs a new key for CN=`common_name`, usable by a server
  // (subjectAltName IP:127.0.0.1 and DNS:localhost) and a client; files are
  // <dir>/<common_name>.{crt,key}, overwritten if they exist.
  absl::StatusOr<CertificateFiles> Issue(const std::string& common_name);

  const std::string& cert_file() const { return ca_.cert_file; }

 private:
  TestCa(std::string dir, CertificateFiles ca) : dir_(std::move(dir)), ca_(std::move(ca)) {}

  const std::string dir_;
  const CertificateFiles ca_;
};

}  // namespace farswap::testing

#endif  // FARSWAP_TESTS_UTIL_TEST_CA_H_
