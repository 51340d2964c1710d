#include "server_binary.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace farswap::testing {
namespace {

constexpr char kServerName[] = "farswap-server";

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

}  // namespace

absl::StatusOr<std::string> FindServerBinary(const std::string& flag) {
  if (!flag.empty()) {
    if (IsExecutableFile(flag)) return flag;
    return absl::NotFoundError(absl::StrCat("--server-bin ", flag, ": not an executable file"));
  }
  std::vector<std::string> looked;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::filesystem::path dir = self.parent_path();
    for (const std::filesystem::path& candidate :
         {dir / kServerName, dir.parent_path() / "server" / kServerName}) {
      if (IsExecutableFile(candidate.string())) return candidate.string();
      looked.push_back(candidate.string());
    }
  } else {
    looked.push_back("/proc/self/exe (unreadable)");
  }
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "", ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/", kServerName);
    if (IsExecutableFile(candidate)) return candidate;
    looked.push_back(candidate);
  }
  if (path == nullptr || *path == '\0') looked.push_back("$PATH (empty)");
  return absl::NotFoundError(absl::StrCat("no ", kServerName, " found; looked at ",
                                          absl::StrJoin(looked, ", "),
                                          " (give its path with --server-bin PATH)"));
}

}  // namespace farswap::testing
