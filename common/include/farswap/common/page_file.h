// page_file.h: reading files of raw 4 KiB pages (the page corpora).
//
// A page file is a plain concatenation of 4096-byte pages; a name ending in
// ".zst" means the whole file is zstd-compressed. tests/corpus/*.pages.zst
// (made by scripts/capture-corpus) are such files, but any file of 4 KiB
// pages works the same way.
//
//   absl::StatusOr<PageFile> pages = ReadPageFile("python.pages.zst");
//   const uint8_t* p = pages->page(17);
#ifndef FARSWAP_COMMON_PAGE_FILE_H_
#define FARSWAP_COMMON_PAGE_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace farswap {

inline constexpr size_t kPageSize = 4096;

// PageFile holds the pages of one or more page files in memory. It is a
// value type; concurrent const access is safe.
class PageFile {
 public:
  PageFile() = default;

  size_t page_count() const { return bytes_.size() / kPageSize; }
  const uint8_t* page(size_t i) const { return bytes_.data() + i * kPageSize; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

  // Append adds the pages of `other` after this file's pages.
  void Append(const PageFile& other);

 private:
  friend absl::StatusOr<PageFile> ReadPageFile(const std::string& path);
  std::vector<uint8_t> bytes_;
};

// ReadPageFile reads `path` (zstd-decompressing it when the name ends in
// ".zst"). NOT_FOUND when the file cannot be opened, INVALID_ARGUMENT when
// its (decompressed) size is not a positive multiple of 4096 or the zstd
// stream is corrupt.
absl::StatusOr<PageFile> ReadPageFile(const std::string& path);

// ReadPageFiles reads a comma-separated list of paths and concatenates them.
absl::StatusOr<PageFile> ReadPageFiles(const std::string& comma_separated_paths);

}  // namespace farswap

#endif  // FARSWAP_COMMON_PAGE_FILE_H_
