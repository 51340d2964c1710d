// file_watch.h: farswap-server's re-reading of a configuration file (the
// tenants file, the admin token file) on SIGHUP and when the file changes.
//
// Reload runs the owner's reload function now (on SIGHUP); Poll, called
// once a second by the node's watch loop, runs it when the file's identity —
// device, inode, size, modification and change times — differs from the
// last look. Poll stat()s the path, following symlinks: that is what makes a
// Kubernetes Secret volume work, whose files are symlinks into a "..data"
// directory link that the kubelet swaps atomically, so after an update the
// path resolves to a new inode. A stat poll rather than inotify: one stat a
// second is nothing, it sees in-place edits, renames over the path and
// symlink swaps alike, and it needs no watch descriptors to re-arm when the
// directory entry is replaced. A path that cannot be stat()ed (mid-swap, or
// deleted) is left alone until it can.
//
//   FileWatch watch(path, [&](absl::string_view why) { ReloadTenantsFile(...); });
//   watch.Reload("SIGHUP");  // on the signal
//   watch.Poll();            // once a second
#ifndef FARSWAP_SERVER_FILE_WATCH_H_
#define FARSWAP_SERVER_FILE_WATCH_H_

#include <sys/stat.h>

#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "farswap/common/mutex.h"

namespace farswap::server {

// FileWatch is safe for concurrent use: Reload and Poll may run on
// different threads (the signal thread and the watch loop); one reload runs
// at a time.
class FileWatch {
 public:
  // reload re-reads the file; `why` names what asked ("SIGHUP", "file
  // changed"), for its log line. It runs with this watch's lock held, so it
  // must not call back into the watch. The file's identity now is the
  // baseline for Poll: the caller has just loaded the file.
  FileWatch(std::string path, std::function<void(absl::string_view why)> reload);

  // Reload re-reads the file now; `why` names what asked, in the log.
  void Reload(absl::string_view why);
  // Poll re-reads the file if its identity changed since the last look.
  void Poll();

  const std::string& path() const { return path_; }

 private:
  struct FileIdentity {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    timespec modified{};
    timespec changed{};
    bool operator==(const FileIdentity& o) const;
  };
  // Identify stats the path (following symlinks); false if it cannot.
  bool Identify(FileIdentity* out) const;

  const std::string path_;
  const std::function<void(absl::string_view)> reload_;
  // mu_ serialises reloads; it is taken before any lock the reload function
  // takes (the tenant registry's, the page store's, the auth's), never after.
  Mutex mu_;
  FileIdentity last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_FILE_WATCH_H_
