// file_block_device.cc: FileBlockDevice, pread/pwrite on a file or a block
// device, with O_DIRECT where the filesystem supports it.
//
// O_DIRECT needs the buffer, the offset and the length aligned to the
// logical block size; offsets and lengths are whole 4 KiB blocks, and a
// caller's buffer that is not 4 KiB-aligned is bounced through an aligned
// one. Filesystems that refuse O_DIRECT (tmpfs: EINVAL at open, or at the
// first I/O on some FUSE mounts) get buffered I/O and one log line.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "farswap/server/block_device.h"
#include "spdlog/spdlog.h"
#include "uring_write_queue.h"

namespace farswap::server {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBlock = std::unique_ptr<uint8_t, FreeDeleter>;

AlignedBlock NewAlignedBlock(uint64_t count = 1) {
  return AlignedBlock(static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, count * kBlockSize)));
}

bool IsAligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kBlockSize == 0; }

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    case EIO:
      return absl::DataLossError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// FullIo loops over short transfers; returns 0 or an errno.
template <typename Fn>
int FullIo(Fn io, uint8_t* buf, size_t len, off_t offset) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = io(buf + done, len - done, offset + off_t(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;  // past the end of a file that shrank under us
    done += size_t(n);
  }
  return 0;
}

// ProbeDirectIo reads block 0 through `fd`; EINVAL means the filesystem
// accepted O_DIRECT at open but not for I/O.
bool ProbeDirectIo(int fd) {
  AlignedBlock buf = NewAlignedBlock();
  ssize_t n;
  do {
    n = ::pread(fd, buf.get(), kBlockSize, 0);
  } while (n < 0 && errno == EINTR);
  return !(n < 0 && errno == EINVAL);
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileBlockDevice>> FileBlockDevice::Open(
    const FileBlockDeviceOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("backing store path is empty");
  struct stat st {};
  bool exists = ::stat(options.path.c_str(), &st) == 0;
  bool is_block_device = exists && S_ISBLK(st.st_mode);
  if (!is_block_device && options.size_bytes < kBlockSize) {
    return absl::InvalidArgumentError(absl::StrCat("backing file ", options.path,
                                                   " needs a size of at least ", kBlockSize,
                                                   " bytes, got ", options.size_bytes));
  }
  int flags = O_RDWR | O_CLOEXEC | (is_block_device ? 0 : O_CREAT);
  bool direct = options.direct_io;
  int fd = direct ? ::open(options.path.c_str(), flags | O_DIRECT, 0600) : -1;
  if (direct && fd < 0 && errno == EINVAL) {
    spdlog::info("backing store {}: O_DIRECT not supported here, using buffered I/O", options.path);
    direct = false;
  } else if (direct && fd < 0) {
    return ErrnoStatus(errno, absl::StrCat("open ", options.path));
  }
  if (!direct) {
    fd = ::open(options.path.c_str(), flags, 0600);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", options.path));
  }

  uint64_t size = options.size_bytes;
  if (is_block_device) {
    uint64_t device_bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &device_bytes) != 0) {
      absl::Status s = ErrnoStatus(errno, absl::StrCat("BLKGETSIZE64 ", options.path));
      ::close(fd);
      return s;
    }
    if (size == 0) size = device_bytes;
    if (size > device_bytes) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat("backing size ", size,
                                                     " exceeds block device ", options.path, " (",
                                                     device_bytes, " bytes)"));
    }
  } else {
    const off_t bytes = off_t(size / kBlockSize * kBlockSize);
    if (::ftruncate(fd, bytes) != 0) {
      absl::Status s = ErrnoStatus(errno, absl::StrCat("truncate ", options.path, " to ", size));
      ::close(fd);
      return s;
    }
    // Reserve the space now, so a full filesystem fails here, with a clear
    // message, rather than as write errors during writeback. Filesystems
    // without fallocate keep the sparse file.
    int err = ::posix_fallocate(fd, 0, bytes);
    if (err == ENOSPC || err == EDQUOT) {
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("reserve ", size, " bytes for ", options.path));
    }
    if (err != 0) {
      spdlog::info("backing store {}: cannot preallocate ({}), keeping a sparse file", options.path,
                   std::strerror(err));
    }
  }
  if (direct && !ProbeDirectIo(fd)) {
    spdlog::info("backing store {}: O_DIRECT I/O refused (EINVAL), using buffered I/O",
                 options.path);
    ::close(fd);
    direct = false;
    fd = ::open(options.path.c_str(), flags, 0600);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", options.path));
  }
  spdlog::info("backing store {}: {} blocks of {} bytes, {} I/O", options.path, size / kBlockSize,
               kBlockSize, direct ? "direct" : "buffered");
  return std::unique_ptr<FileBlockDevice>(
      new FileBlockDevice(fd, options.path, size / kBlockSize, direct));
}

FileBlockDevice::~FileBlockDevice() { ::close(fd_); }

absl::Status FileBlockDevice::ReadBlock(uint64_t block, void* dst) {
  return ReadBlocks(block, 1, dst);
}

absl::Status FileBlockDevice::WriteBlock(uint64_t block, const void* src) {
  return WriteBlocks(block, 1, src);
}

absl::Status FileBlockDevice::ReadBlocks(uint64_t first, uint64_t count, void* dst) {
  if (count == 0 || first >= block_count_ || count > block_count_ - first) {
    return absl::OutOfRangeError(
        absl::StrCat("blocks ", first, "+", count, " are not within ", path_));
  }
  const size_t len = count * kBlockSize;
  AlignedBlock bounce;
  uint8_t* buf = static_cast<uint8_t*>(dst);
  if (direct_io_ && !IsAligned(dst)) {
    bounce = NewAlignedBlock(count);
    buf = bounce.get();
  }
  int err = FullIo([&](uint8_t* p, size_t n, off_t o) { return ::pread(fd_, p, n, o); }, buf, len,
                   off_t(first * kBlockSize));
  if (err != 0)
    return ErrnoStatus(err, absl::StrCat("read blocks ", first, "+", count, " of ", path_));
  if (bounce) std::memcpy(dst, bounce.get(), len);
  return absl::OkStatus();
}

absl::Status FileBlockDevice::WriteBlocks(uint64_t first, uint64_t count, const void* src) {
  if (count == 0 || first >= block_count_ || count > block_count_ - first) {
    return absl::OutOfRangeError(
        absl::StrCat("blocks ", first, "+", count, " are not within ", path_));
  }
  const size_t len = count * kBlockSize;
  AlignedBlock bounce;
  const uint8_t* buf = static_cast<const uint8_t*>(src);
  if (direct_io_ && !IsAligned(src)) {
    bounce = NewAlignedBlock(count);
    std::memcpy(bounce.get(), src, len);
    buf = bounce.get();
  }
  int err = FullIo([&](uint8_t* p, size_t n, off_t o) { return ::pwrite(fd_, p, n, o); },
                   const_cast<uint8_t*>(buf), len, off_t(first * kBlockSize));
  if (err != 0) {
    return ErrnoStatus(err, absl::StrCat("write blocks ", first, "+", count, " of ", path_));
  }
  return absl::OkStatus();
}

std::unique_ptr<BlockWriteQueue> FileBlockDevice::NewWriteQueue(size_t depth) {
  absl::StatusOr<std::unique_ptr<BlockWriteQueue>> ring =
      internal::NewUringWriteQueue(fd_, block_count_, depth, path_);
  if (ring.ok()) return std::move(*ring);
  spdlog::warn("backing store {}: io_uring unavailable ({}); segment writes use synchronous pwrite",
               path_, std::string(ring.status().message()));
  return NewSyncWriteQueue(this, depth);
}

absl::Status FileBlockDevice::Sync() {
  if (::fdatasync(fd_) != 0) return ErrnoStatus(errno, absl::StrCat("fdatasync ", path_));
  return absl::OkStatus();
}

std::string FileBlockDevice::Describe() const {
  return absl::StrCat("file:", path_, direct_io_ ? " (O_DIRECT)" : " (buffered)");
}

}  // namespace farswap::server
