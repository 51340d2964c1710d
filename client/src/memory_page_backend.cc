#include <xxhash.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "farswap/client/page_backend.h"
#include "farswap/common/page_file.h"

namespace farswap {

MemoryPageBackend::MemoryPageBackend(const PageCodecOptions& codec_options)
    : codec_options_(codec_options) {}

MemoryPageBackend::~MemoryPageBackend() = default;

std::unique_ptr<PageCodec> MemoryPageBackend::TakeCodec() {
  {
    MutexLock l(&mu_);
    if (!codecs_.empty()) {
      std::unique_ptr<PageCodec> c = std::move(codecs_.back());
      codecs_.pop_back();
      return c;
    }
  }
  return std::make_unique<PageCodec>(codec_options_);
}

void MemoryPageBackend::ReturnCodec(std::unique_ptr<PageCodec> codec) {
  MutexLock l(&mu_);
  codecs_.push_back(std::move(codec));
}

absl::StatusOr<size_t> MemoryPageBackend::Store(uint64_t page_no, const uint8_t* page) {
  if (store_hook_) store_hook_(page_no);
  Entry e;
  // Encode once from the caller's stable page; the stored length is exactly
  // that encoding's length (docs/invariants.md rule 3).
  e.checksum = XXH3_64bits(page, kPageSize);
  uint8_t out[kPageSize];
  std::unique_ptr<PageCodec> codec = TakeCodec();
  e.encoding = codec->Encode(page, out);
  ReturnCodec(std::move(codec));
  if (e.encoding.kind == EncodedPage::Kind::kRaw) {
    e.bytes.assign(page, page + kPageSize);
    e.encoding.length = kPageSize;
  } else {
    e.bytes.assign(out, out + e.encoding.length);
  }
  const size_t wire = e.encoding.length;
  MutexLock l(&mu_);
  auto [it, inserted] = pages_.try_emplace(page_no);
  if (!inserted) stats_.stored_bytes -= it->second.bytes.size();
  stats_.stored_bytes += e.bytes.size();
  it->second = std::move(e);
  stats_.stores++;
  stats_.pages = pages_.size();
  return wire;
}

absl::StatusOr<size_t> MemoryPageBackend::Load(uint64_t page_no, uint8_t* out) {
  if (load_hook_) load_hook_(page_no);
  Entry e;
  {
    MutexLock l(&mu_);
    stats_.loads++;
    auto f = failures_.find(page_no);
    if (f != failures_.end()) {
      absl::Status s = f->second.status;
      if (f->second.remaining > 0 && --f->second.remaining == 0) failures_.erase(f);
      stats_.load_failures++;
      return s;
    }
    auto it = pages_.find(page_no);
    if (it == pages_.end()) {
      return absl::NotFoundError(absl::StrCat("page ", page_no, " is not stored"));
    }
    e = it->second;  // copy out: decode runs without the lock
  }
  uint8_t page[kPageSize];
  switch (e.encoding.kind) {
    case EncodedPage::Kind::kSameFilled:
      PageCodec::DecodeSameFilled(e.encoding.fill, page);
      break;
    case EncodedPage::Kind::kRaw:
      std::memcpy(page, e.bytes.data(), kPageSize);
      break;
    case EncodedPage::Kind::kCompressed: {
      std::unique_ptr<PageCodec> codec = TakeCodec();
      absl::Status s = codec->Decode(e.encoding.codec, e.bytes.data(), e.bytes.size(), page);
      ReturnCodec(std::move(codec));
      if (!s.ok()) {
        MutexLock l(&mu_);
        stats_.load_failures++;
        stats_.checksum_errors++;
        return s;
      }
      break;
    }
  }
  if (XXH3_64bits(page, kPageSize) != e.checksum) {
    MutexLock l(&mu_);
    stats_.load_failures++;
    stats_.checksum_errors++;
    return absl::DataLossError(absl::StrCat("page ", page_no, " failed its xxh3 checksum"));
  }
  std::memcpy(out, page, kPageSize);
  return e.encoding.length;
}

absl::Status MemoryPageBackend::Invalidate(uint64_t page_no) {
  MutexLock l(&mu_);
  auto it = pages_.find(page_no);
  if (it != pages_.end()) {
    stats_.stored_bytes -= it->second.bytes.size();
    pages_.erase(it);
  }
  stats_.invalidates++;
  stats_.pages = pages_.size();
  return absl::OkStatus();
}

void MemoryPageBackend::FailLoads(uint64_t page_no, absl::Status status, int times) {
  MutexLock l(&mu_);
  failures_[page_no] = Failure{std::move(status), times};
}

void MemoryPageBackend::ClearFailures() {
  MutexLock l(&mu_);
  failures_.clear();
}

bool MemoryPageBackend::CorruptPage(uint64_t page_no) {
  MutexLock l(&mu_);
  auto it = pages_.find(page_no);
  if (it == pages_.end() || it->second.bytes.empty()) return false;
  it->second.bytes[it->second.bytes.size() / 2] ^= 0x5a;
  return true;
}

MemoryPageBackend::Stats MemoryPageBackend::stats() const {
  MutexLock l(&mu_);
  return stats_;
}

}  // namespace farswap
