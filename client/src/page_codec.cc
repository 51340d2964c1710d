#include "farswap/client/page_codec.h"

#include <lz4.h>
#include <zstd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "farswap/common/page_file.h"

namespace farswap {

absl::StatusOr<Codec> ParseCodec(const std::string& name) {
  if (name == "lz4") return Codec::kLz4;
  if (name == "zstd") return Codec::kZstd;
  if (name == "none") return Codec::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown codec '", name, "' (use lz4, zstd or none)"));
}

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kLz4:
      return "lz4";
    case Codec::kZstd:
      return "zstd";
    case Codec::kNone:
      return "none";
  }
  return "unknown";
}

bool IsSameFilled(const uint8_t* page, uint64_t* fill) {
  uint64_t first;
  std::memcpy(&first, page, sizeof first);
  for (size_t off = sizeof first; off < kPageSize; off += sizeof first) {
    uint64_t w;
    std::memcpy(&w, page + off, sizeof w);
    if (w != first) return false;
  }
  *fill = first;
  return true;
}

PageCodec::PageCodec(const PageCodecOptions& options) : options_(options) {
  // One-shot ZSTD_compress is ~4.5x slower on 4 KiB pages than a reused
  // context (reference/toolchain-notes.md).
  if (options_.codec == Codec::kZstd) zstd_c_ = ZSTD_createCCtx();
  zstd_d_ = ZSTD_createDCtx();
}

PageCodec::~PageCodec() {
  ZSTD_freeCCtx(zstd_c_);
  ZSTD_freeDCtx(zstd_d_);
}

EncodedPage PageCodec::Encode(const uint8_t* page, uint8_t* out) {
  EncodedPage e;
  if (IsSameFilled(page, &e.fill)) {
    e.kind = EncodedPage::Kind::kSameFilled;
    return e;
  }
  int len = 0;
  const int limit = int(options_.raw_threshold) - 1;  // anything longer is useless
  if (options_.codec == Codec::kLz4 && limit > 0) {
    len = LZ4_compress_default(reinterpret_cast<const char*>(page), reinterpret_cast<char*>(out),
                               int(kPageSize), limit);  // 0: did not fit
  } else if (options_.codec == Codec::kZstd && limit > 0) {
    size_t r = ZSTD_compressCCtx(zstd_c_, out, size_t(limit), page, kPageSize, options_.zstd_level);
    len = ZSTD_isError(r) ? 0 : int(r);
  }
  if (len > 0 && uint32_t(len) < options_.raw_threshold) {
    e.kind = EncodedPage::Kind::kCompressed;
    e.codec = options_.codec;
    e.length = uint32_t(len);
    return e;
  }
  std::memcpy(out, page, kPageSize);
  e.kind = EncodedPage::Kind::kRaw;
  e.codec = Codec::kNone;
  e.length = kPageSize;
  return e;
}

absl::Status PageCodec::Decode(Codec codec, const uint8_t* in, size_t len, uint8_t* page_out) {
  switch (codec) {
    case Codec::kNone:
      if (len != kPageSize) {
        return absl::DataLossError(absl::StrCat("raw page of ", len, " bytes, expected 4096"));
      }
      std::memcpy(page_out, in, kPageSize);
      return absl::OkStatus();
    case Codec::kLz4: {
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in),
                                  reinterpret_cast<char*>(page_out), int(len), int(kPageSize));
      if (n != int(kPageSize)) {
        return absl::DataLossError(absl::StrCat("lz4 payload of ", len,
                                                " bytes did not decode "
                                                "to one page (",
                                                n, ")"));
      }
      return absl::OkStatus();
    }
    case Codec::kZstd: {
      size_t n = ZSTD_decompressDCtx(zstd_d_, page_out, kPageSize, in, len);
      if (ZSTD_isError(n) || n != kPageSize) {
        return absl::DataLossError(
            absl::StrCat("zstd payload of ", len, " bytes did not decode to one page: ",
                         ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length"));
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown codec ", int(codec)));
}

void PageCodec::DecodeSameFilled(uint64_t fill, uint8_t* page_out) {
  for (size_t off = 0; off < kPageSize; off += sizeof fill) {
    std::memcpy(page_out + off, &fill, sizeof fill);
  }
}

}  // namespace farswap
