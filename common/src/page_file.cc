#include "farswap/common/page_file.h"

#include <zstd.h>

#include <fstream>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "farswap/common/status_macros.h"

namespace farswap {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

absl::StatusOr<std::vector<uint8_t>> Decompress(const std::string& path,
                                                const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out;
  ZSTD_DStream* ds = ZSTD_createDStream();
  ZSTD_initDStream(ds);
  std::vector<uint8_t> chunk(ZSTD_DStreamOutSize());
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  size_t last = 0;
  while (input.pos < input.size) {
    ZSTD_outBuffer output{chunk.data(), chunk.size(), 0};
    last = ZSTD_decompressStream(ds, &output, &input);
    if (ZSTD_isError(last)) {
      ZSTD_freeDStream(ds);
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": corrupt zstd stream: ", ZSTD_getErrorName(last)));
    }
    out.insert(out.end(), chunk.data(), chunk.data() + output.pos);
  }
  ZSTD_freeDStream(ds);
  if (last != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated zstd stream"));
  }
  return out;
}

}  // namespace

void PageFile::Append(const PageFile& other) {
  bytes_.insert(bytes_.end(), other.bytes_.begin(), other.bytes_.end());
}

absl::StatusOr<PageFile> ReadPageFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<uint8_t> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  PageFile file;
  if (EndsWith(path, ".zst")) {
    FARSWAP_ASSIGN_OR_RETURN(file.bytes_, Decompress(path, raw));
  } else {
    file.bytes_ = std::move(raw);
  }
  if (file.bytes_.empty() || file.bytes_.size() % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": size ", file.bytes_.size(),
                     " is not a positive multiple of the 4096-byte page size"));
  }
  return file;
}

absl::StatusOr<PageFile> ReadPageFiles(const std::string& comma_separated_paths) {
  PageFile all;
  for (absl::string_view p : absl::StrSplit(comma_separated_paths, ',', absl::SkipEmpty())) {
    FARSWAP_ASSIGN_OR_RETURN(PageFile one, ReadPageFile(std::string(p)));
    all.Append(one);
  }
  if (all.page_count() == 0) return absl::InvalidArgumentError("no page files given");
  return all;
}

}  // namespace farswap
