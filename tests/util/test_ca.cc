#include "test_ca.h"

#include <unistd.h>

#include <fstream>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "run_program.h"

namespace farswap::testing {
namespace {

// OpenSslBinary: the `openssl` on $PATH (RunProgram wants a path).
absl::StatusOr<std::string> OpenSslBinary() {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir, "/openssl");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::NotFoundError("no `openssl` on $PATH (Debian package openssl)");
}

absl::Status OpenSsl(std::vector<std::string> args) {
  absl::StatusOr<std::string> openssl = OpenSslBinary();
  if (!openssl.ok()) return openssl.status();
  args.insert(args.begin(), *openssl);
  absl::StatusOr<ProgramResult> r = RunProgram(args);
  if (!r.ok()) return r.status();
  if (r->exit_status != 0) {
    return absl::InternalError(absl::StrCat("openssl ", args[1], " failed: ", r->err));
  }
  return absl::OkStatus();
}

std::vector<std::string> NewKeyArgs(const std::string& key_file) {
  return {"-newkey", "ec",      "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes",  "-keyout", key_file};
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestCa>> TestCa::Create(const std::string& dir,
                                                       const std::string& common_name) {
  const std::string base = absl::StrCat(dir, "/", absl::StrReplaceAll(common_name, {{" ", "-"}}));
  CertificateFiles ca{.cert_file = base + "-ca.crt", .key_file = base + "-ca.key"};
  std::vector<std::string> args = {"req", "-x509"};
  for (std::string& a : NewKeyArgs(ca.key_file)) args.push_back(std::move(a));
  args.insert(args.end(),
              {"-out", ca.cert_file, "-days", "1", "-subj", absl::StrCat("/CN=", common_name)});
  if (absl::Status s = OpenSsl(args); !s.ok()) return s;
  return std::unique_ptr<TestCa>(new TestCa(dir, std::move(ca)));
}

absl::StatusOr<CertificateFiles> TestCa::Issue(const std::string& common_name) {
  const std::string base = absl::StrCat(dir_, "/", common_name);
  CertificateFiles out{.cert_file = base + ".crt", .key_file = base + ".key"};
  const std::string csr = base + ".csr", extensions = base + ".ext";
  std::vector<std::string> args = {"req"};
  for (std::string& a : NewKeyArgs(out.key_file)) args.push_back(std::move(a));
  args.insert(args.end(), {"-out", csr, "-subj", absl::StrCat("/CN=", common_name)});
  if (absl::Status s = OpenSsl(args); !s.ok()) return s;
  std::ofstream(extensions) << "basicConstraints=CA:FALSE\n"
                               "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "extendedKeyUsage=serverAuth,clientAuth\n";
  std::random_device random;
  const uint64_t serial = (uint64_t(random()) << 32 | random()) >> 1;  // positive
  if (absl::Status s = OpenSsl({"x509", "-req", "-in", csr, "-CA", ca_.cert_file, "-CAkey",
                                ca_.key_file, "-set_serial", absl::StrCat(serial), "-days", "1",
                                "-extfile", extensions, "-out", out.cert_file});
      !s.ok()) {
    return s;
  }
  return out;
}

}  // namespace farswap::testing
