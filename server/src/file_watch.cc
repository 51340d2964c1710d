#include "file_watch.h"

namespace farswap::server {
namespace {

bool SameTime(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

}  // namespace

bool FileWatch::FileIdentity::operator==(const FileIdentity& o) const {
  return device == o.device && inode == o.inode && size == o.size &&
         SameTime(modified, o.modified) && SameTime(changed, o.changed);
}

FileWatch::FileWatch(std::string path, std::function<void(absl::string_view why)> reload)
    : path_(std::move(path)), reload_(std::move(reload)) {
  MutexLock l(&mu_);
  Identify(&last_);
}

bool FileWatch::Identify(FileIdentity* out) const {
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) return false;  // follows symlinks
  *out = FileIdentity{.device = st.st_dev,
                      .inode = st.st_ino,
                      .size = st.st_size,
                      .modified = st.st_mtim,
                      .changed = st.st_ctim};
  return true;
}

void FileWatch::Reload(absl::string_view why) {
  MutexLock l(&mu_);
  Identify(&last_);  // what is read now: Poll need not read it again
  reload_(why);
}

void FileWatch::Poll() {
  MutexLock l(&mu_);
  FileIdentity now;
  if (!Identify(&now) || now == last_) return;
  last_ = now;
  reload_("file changed");
}

}  // namespace farswap::server
