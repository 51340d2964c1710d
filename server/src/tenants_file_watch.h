// tenants_file_watch.h: farswap-server's reloading of --tenants-file.
//
// The node re-reads its tenants file on SIGHUP (Reload) and when the file
// changes (Poll, called once a second by the node's watch loop). Poll
// stat()s the path, following symlinks, and reloads when the file's
// identity — device, inode, size, modification and change times — differs
// from the last look. Following symlinks is what makes a Kubernetes Secret
// volume work: its files are symlinks into a "..data" directory link that
// the kubelet swaps atomically, so after an update the path resolves to a
// new inode. A stat poll rather than inotify: one stat a second is nothing,
// it sees in-place edits, renames over the path and symlink swaps alike,
// and it needs no watch descriptors to re-arm when the directory entry is
// replaced. A path that cannot be stat()ed (mid-swap, or deleted) is left
// alone until it can.
//
// Each reload goes through TenantRegistry::ReloadFile (what it keeps and
// ends: TenantRegistry, "Rotation"), then sets the page-store quotas of
// added tenants and of tenants whose quota changed, and logs one line with
// what changed. A file that cannot be read or parsed is rejected whole and
// logged as an error; the old tenants stay.
//
//   TenantsFileWatch watch(flags.tenants_file, &registry, store);
//   watch.Reload("SIGHUP");  // on the signal
//   watch.Poll();            // once a second
#ifndef FARSWAP_SERVER_TENANTS_FILE_WATCH_H_
#define FARSWAP_SERVER_TENANTS_FILE_WATCH_H_

#include <sys/stat.h>

#include <string>

#include "absl/strings/string_view.h"
#include "farswap/common/mutex.h"
#include "farswap/server/page_store.h"
#include "farswap/server/tenant_registry.h"

namespace farswap::server {

// ApplyFileQuota gives `tenant` the page-store quota its tenants-file line
// sets: its quota_bytes rounded up to pages, or, for 0 ("none"), the
// store's default tenant quota.
void ApplyFileQuota(PageStore& store, const Tenant& tenant);

// TenantsFileWatch is safe for concurrent use: Reload and Poll may run on
// different threads (the signal thread and the watch loop); one reload runs
// at a time. The registry and the store must outlive it.
class TenantsFileWatch {
 public:
  // The file's identity now is the baseline for Poll: the caller has just
  // loaded the file.
  TenantsFileWatch(std::string path, TenantRegistry* tenants, PageStore* store);

  // Reload re-reads the file now; `why` names what asked, in the log.
  void Reload(absl::string_view why);
  // Poll reloads if the file's identity changed since the last look.
  void Poll();

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
  void ReloadLocked(absl::string_view why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  TenantRegistry* const tenants_;
  PageStore* const store_;
  // mu_ serialises reloads; it is taken before the registry's and the page
  // store's locks, never after.
  Mutex mu_;
  FileIdentity last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_TENANTS_FILE_WATCH_H_
