// page_codec.h: how one 4 KiB page becomes the bytes a memory node keeps.
//
// A page is encoded exactly once, from a snapshot that cannot change while
// it is read (docs/invariants.md rule 3): same-filled pages (one repeated 8-byte
// word, e.g. all zeros) become just that word; others are compressed with
// lz4 (default) or zstd; a page that does not compress below `raw_threshold`
// bytes is kept raw, since compressing it would only cost CPU on every load.
// The encoded length is what the store allocates and copies: nothing is
// ever re-encoded into a buffer sized by an earlier encoding.
//
//   PageCodec codec({.codec = Codec::kLz4, .raw_threshold = pool.huge_class_size()});
//   uint8_t out[kPageSize];
//   EncodedPage e = codec.Encode(snapshot, out);
//   ...
//   codec.Decode(e.codec, stored_bytes, e.length, page_out);
#ifndef FARSWAP_CLIENT_PAGE_CODEC_H_
#define FARSWAP_CLIENT_PAGE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace farswap {

// Codec numbers are part of the wire format: never renumber.
enum class Codec : uint8_t { kNone = 0, kLz4 = 1, kZstd = 2 };

absl::StatusOr<Codec> ParseCodec(const std::string& name);  // "lz4", "zstd", "none"
const char* CodecName(Codec codec);

// IsSameFilled reports whether the page is one 8-byte word repeated, and
// which.
bool IsSameFilled(const uint8_t* page, uint64_t* fill);

struct PageCodecOptions {
  Codec codec = Codec::kLz4;
  int zstd_level = 1;
  // Encodings of raw_threshold bytes or more are replaced by the raw page.
  uint32_t raw_threshold = 4096;
};

struct EncodedPage {
  enum class Kind : uint8_t { kSameFilled, kCompressed, kRaw };
  Kind kind = Kind::kRaw;
  Codec codec = Codec::kNone;  // kNone for raw and same-filled pages
  uint32_t length = 0;         // bytes written to `out` (0 for same-filled)
  uint64_t fill = 0;           // the repeated word of a same-filled page
};

// PageCodec encodes and decodes pages. It keeps compression contexts, so it
// is not thread-safe: use one per thread.
class PageCodec {
 public:
  explicit PageCodec(const PageCodecOptions& options);
  ~PageCodec();
  PageCodec(const PageCodec&) = delete;
  PageCodec& operator=(const PageCodec&) = delete;

  // Encode encodes the 4096-byte `page` once into `out` (4096 bytes).
  EncodedPage Encode(const uint8_t* page, uint8_t* out);

  // Decode turns `len` stored bytes of codec `codec` back into a 4096-byte
  // page. DATA_LOSS when the bytes do not decode to exactly one page.
  absl::Status Decode(Codec codec, const uint8_t* in, size_t len, uint8_t* page_out);
  // DecodeSameFilled writes the repeated word over the page.
  static void DecodeSameFilled(uint64_t fill, uint8_t* page_out);

  const PageCodecOptions& options() const { return options_; }

 private:
  const PageCodecOptions options_;
  ZSTD_CCtx_s* zstd_c_ = nullptr;
  ZSTD_DCtx_s* zstd_d_ = nullptr;
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_PAGE_CODEC_H_
