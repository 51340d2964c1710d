// cold_recompressor.h: the page store's cold tier — the codec step that
// turns a stored lz4 (or raw) page into zstd, and the thread that runs the
// cold passes. Private to server/; the protocol is in cold_recompressor.cc.
//
//   PageRecompressor codec(/*zstd_level=*/3);
//   uint8_t out[PageRecompressor::kMaxOutput];
//   absl::StatusOr<size_t> n = codec.Recompress(kLz4, stored_bytes, out);
#ifndef FARSWAP_SERVER_COLD_RECOMPRESSOR_H_
#define FARSWAP_SERVER_COLD_RECOMPRESSOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "farswap/common/mutex.h"
#include "farswap/common/thread_name.h"

struct ZSTD_CCtx_s;

namespace farswap::server {
namespace internal {

// PageRecompressor decodes one stored page payload and encodes it as zstd.
// It keeps a zstd compression context (a one-shot ZSTD_compress costs ~4.5x
// more on 4 KiB pages), so it is not thread-safe: one per pass.
class PageRecompressor {
 public:
  // kMaxOutput: the most bytes Recompress writes: ZSTD_COMPRESSBOUND(4096)
  // (checked against zstd.h in the .cc, which this header does not include).
  static constexpr size_t kMaxOutput = 4174;

  // zstd_level: see ValidLevel.
  explicit PageRecompressor(int zstd_level);
  ~PageRecompressor();
  PageRecompressor(const PageRecompressor&) = delete;
  PageRecompressor& operator=(const PageRecompressor&) = delete;

  // ValidLevel: whether zstd accepts `level` here (1..ZSTD_maxCLevel()).
  static bool ValidLevel(int level);
  // Recompressible: whether a payload of wire codec `codec` can be
  // recompressed (lz4 and raw pages; zstd pages are left alone).
  static bool Recompressible(uint8_t codec);

  // Recompress decodes `in` (wire codec `codec`: lz4, or raw = 4096 bytes)
  // into a page and writes that page's zstd encoding to `out` (kMaxOutput
  // bytes), returning its length. INVALID_ARGUMENT when `in` does not decode
  // to exactly one page or the codec is not recompressible; INTERNAL when
  // zstd fails.
  absl::StatusOr<size_t> Recompress(uint8_t codec, absl::Span<const uint8_t> in, uint8_t* out);

 private:
  const int level_;
  ZSTD_CCtx_s* const cctx_;
};

}  // namespace internal

// ColdPassWorker owns one thread that calls run_pass every `interval`,
// measured from the end of one pass to the start of the next. Nothing here
// is shared with callers; the destructor stops and joins the thread (a pass
// in progress finishes first).
class ColdPassWorker {
 public:
  ColdPassWorker(absl::Duration interval, std::function<void()> run_pass)
      : interval_(interval), run_pass_(std::move(run_pass)), thread_([this] { Loop(); }) {}

  ~ColdPassWorker() {
    {
      MutexLock l(&mu_);
      stopping_ = true;
      cv_.SignalAll();
    }
    thread_.join();
  }

  ColdPassWorker(const ColdPassWorker&) = delete;
  ColdPassWorker& operator=(const ColdPassWorker&) = delete;

 private:
  void Loop() {
    SetCurrentThreadName("fs-cold");
    for (;;) {
      {
        MutexLock l(&mu_);
        // A periodic timer, not a synchronisation: the pass itself
        // re-validates everything it touches under the key locks.
        const absl::Time deadline = absl::Now() + interval_;
        while (!stopping_ && absl::Now() < deadline) cv_.WaitWithDeadline(&mu_, deadline);
        if (stopping_) return;
      }
      run_pass_();  // no lock held: the pass takes LRU, key and pool locks
    }
  }

  const absl::Duration interval_;
  const std::function<void()> run_pass_;
  Mutex mu_;
  CondVar cv_;  // signalled on stop
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts after every field above is built
};

}  // namespace farswap::server

#endif  // FARSWAP_SERVER_COLD_RECOMPRESSOR_H_
