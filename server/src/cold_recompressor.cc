// cold_recompressor.cc: the cold tier — pool entries that stay cold are
// recompressed from their stored lz4 (or raw) bytes into zstd.
//
// Why. Clients compress with lz4 because a page fault waits for the decode;
// zstd saves a further ~25-35% on typical pages but costs several times the
// CPU to encode. A page that sits in the pool unloaded for a whole pass is
// unlikely to be loaded soon, so the node spends its own idle CPU to
// re-encode it once and keeps the smaller object (zram's recompress of idle
// slots, `recomp_algorithm` + `recompress type=idle`).
//
// Which entries. A pass walks the whole LRU (LruList::ScanCold, bounded
// chunks per LRU-lock hold). Every entry carries a cold_referenced bit that
// stores start set and loads set; the scan clears it, and an entry whose bit
// it finds already clear was not loaded since the previous pass: it is a
// candidate. With the worker running a pass every cold_after seconds, a page
// is recompressed between cold_after and 2 x cold_after after its last store
// or load. Each version of a page is looked at once (Entry::cold_state).
//
// What a load returns. The recompressed entry's codec becomes zstd, and a
// load returns the zstd bytes with codec ZSTD in the LOAD reply: the wire
// always carried the codec, and every client decodes zstd (client/
// page_codec.cc), so nothing on the wire changes. The page's checksum is
// the client's xxh3 of the original page and stays valid: the same page
// comes out of the decoder.
//
// The protocol for one candidate, as writeback's (writeback.cc; the 2023
// zsmalloc LRU crash in shared/seeds/ is what happens without it: a
// relocation re-checks after every unlocked step, and the newest version
// always wins). Locks held at each step are in brackets.
//
//  1. [LRU] ScanCold copies (key, entry, gen) of a candidate and rotates
//     it to the head. Drop the LRU lock — a key lock is never taken under
//     it.                  sync point "PageStore::ColdPass:after-lru-unlock" [none]
//  2. [key] Re-validate index[key] == entry && entry.gen == gen && state ==
//     IN_POOL && cold_state == HOT, else abort. A codec other than lz4/raw
//     marks the entry KEPT. Copy the stored bytes to a private buffer and
//     remember (handle, codec, length). Drop the key lock.
//                          sync point "PageStore::ColdPass:copied-unlocked" [none]
//  3. [none] Decode and encode as zstd into a buffer of zstd's bound; when
//     the result does not fit a smaller pool size class (or the bytes do
//     not decode to one page)
//     mark KEPT under the key lock if still (entry, gen, HOT) and stop.
//     Otherwise allocate a pool object of exactly the new length and copy
//     the result in (no room: abort, a later pass retries).
//                          sync point "PageStore::ColdPass:encoded-unlocked" [none]
//  4. [key] Publish only if the entry is still (entry, gen), IN_POOL, HOT
//     and holds the same (handle, codec): it takes the new handle, codec
//     ZSTD and the new length, becomes RECOMPRESSED, and the old object is
//     freed. Otherwise whatever came in between wins (a store: a new entry;
//     an invalidate: no entry; writeback: WRITEBACK_PENDING or ON_DISK) and
//     the new object is freed — nothing of the old version is published.
//
// Why (handle, codec) and not only gen: the payload of one generation is
// one page, so any of its encodings is correct; requiring the same handle
// as well means the object freed in step 4 is exactly the one step 2 read,
// and a writeback that copied those bytes cannot be left pointing at a
// payload of another codec (it also needs IN_POOL, which excludes
// WRITEBACK_PENDING).
//
// Lock order is page_store.cc's: key stripe -> index shard -> LRU ->
// tenants_mu_ -> zspool; the LRU lock is dropped before any key lock.
//
// Writeback takes recompressed entries first: LruList::PickColdest reads
// Entry::cold_state under the LRU lock (PreferRecompressedLocked).
#include "cold_recompressor.h"

#include <lz4.h>
#include <zstd.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "farswap/common/page_file.h"
#include "farswap/common/sync_point.h"
#include "farswap/server/page_store.h"
#include "farswap/transport/frame.h"
#include "lru_list.h"
#include "page_index.h"

namespace farswap::server {

using internal::ColdState;
using internal::Entry;
using internal::EntryState;
using internal::PageRecompressor;
using internal::WritebackCandidate;
using transport::Codec;

namespace internal {

static_assert(PageRecompressor::kMaxOutput == ZSTD_COMPRESSBOUND(kPageSize),
              "kMaxOutput is zstd's bound for one page");

PageRecompressor::PageRecompressor(int zstd_level) : level_(zstd_level), cctx_(ZSTD_createCCtx()) {}

PageRecompressor::~PageRecompressor() { ZSTD_freeCCtx(cctx_); }

bool PageRecompressor::ValidLevel(int level) { return level >= 1 && level <= ZSTD_maxCLevel(); }

bool PageRecompressor::Recompressible(uint8_t codec) {
  return codec == uint8_t(Codec::kLz4) || codec == uint8_t(Codec::kNone);
}

absl::StatusOr<size_t> PageRecompressor::Recompress(uint8_t codec, absl::Span<const uint8_t> in,
                                                    uint8_t* out) {
  uint8_t page[kPageSize];
  const uint8_t* src = page;
  if (codec == uint8_t(Codec::kLz4)) {
    const int n =
        LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(page),
                            int(in.size()), int(kPageSize));
    if (n != int(kPageSize)) {
      return absl::InvalidArgumentError(
          absl::StrCat("lz4 payload of ", in.size(), " bytes does not decode to one page"));
    }
  } else if (codec == uint8_t(Codec::kNone)) {
    if (in.size() != kPageSize) {
      return absl::InvalidArgumentError(absl::StrCat("raw payload of ", in.size(), " bytes"));
    }
    src = in.data();
  } else {
    return absl::InvalidArgumentError(absl::StrCat("codec ", int(codec), " is not recompressed"));
  }
  if (cctx_ == nullptr) return absl::InternalError("zstd context allocation failed");
  const size_t r = ZSTD_compressCCtx(cctx_, out, kMaxOutput, src, kPageSize, level_);
  if (ZSTD_isError(r)) {
    return absl::InternalError(absl::StrCat("zstd: ", ZSTD_getErrorName(r)));
  }
  return r;
}

}  // namespace internal

absl::Status PageStore::StartColdTier() {
  if (!PageRecompressor::ValidLevel(options_.cold_zstd_level)) {
    return absl::InvalidArgumentError(absl::StrCat("cold zstd level must be 1..", ZSTD_maxCLevel(),
                                                   "; got ", options_.cold_zstd_level));
  }
  if (options_.cold_after_seconds == 0 || !options_.start_cold_worker) return absl::OkStatus();
  cold_worker_ = std::make_unique<ColdPassWorker>(absl::Seconds(options_.cold_after_seconds),
                                                  [this] { RunColdPass(); });
  return absl::OkStatus();
}

ColdPassResult PageStore::RunColdPass() {
  ColdPassResult result;
  PageRecompressor codec(options_.cold_zstd_level);
  std::vector<WritebackCandidate> candidates;
  candidates.reserve(internal::LruList::kMaxScanPerHold);
  uint64_t left = lru_->size();
  while (left > 0) {
    const uint64_t before = left;
    candidates.clear();
    lru_->ScanCold(&left, &candidates);  // step 1 [LRU lock]
    result.scanned += before - left;
    for (const WritebackCandidate& c : candidates) RecompressOne(c, codec, &result);
  }
  // The freed lz4 objects leave holes all over the zspages; memory only
  // goes back to the OS when compaction turns them into empty pages.
  if (result.recompressed > 0) pool_->Compact();
  counters_.cold_passes.fetch_add(1, std::memory_order_relaxed);
  counters_.cold_recompressed.fetch_add(result.recompressed, std::memory_order_relaxed);
  counters_.cold_bytes_saved.fetch_add(result.bytes_saved, std::memory_order_relaxed);
  counters_.cold_kept.fetch_add(result.kept, std::memory_order_relaxed);
  counters_.cold_aborted.fetch_add(result.aborted, std::memory_order_relaxed);
  return result;
}

void PageStore::RecompressOne(const WritebackCandidate& c, PageRecompressor& codec,
                              ColdPassResult* result) {
  FARSWAP_SYNC_POINT("PageStore::ColdPass:after-lru-unlock");
  Mutex& key_lock = key_locks_->For(c.key);
  // Still the candidate the scan copied, in the pool, not yet looked at. The
  // pointer comparison comes first: c.entry may be freed memory until the
  // index says it is live. The caller holds the key lock.
  auto still_candidate = [&](Entry* e) {
    return e == c.entry && e->gen == c.gen && e->state == EntryState::kInPool &&
           e->cold_state.load(std::memory_order_relaxed) == uint8_t(ColdState::kHot);
  };
  auto keep = [&] {  // marks the entry KEPT if it is still the candidate
    MutexLock kl(&key_lock);
    Entry* e = index_->Find(c.key);
    if (!still_candidate(e)) {
      ++result->aborted;
      return;
    }
    e->cold_state.store(uint8_t(ColdState::kKept), std::memory_order_relaxed);
    ++result->kept;
  };

  // Step 2 [key lock].
  uint8_t stored[kPageSize];
  alloc::ZsHandle old_handle;
  uint8_t old_codec;
  uint32_t old_length;
  {
    MutexLock kl(&key_lock);
    Entry* e = index_->Find(c.key);
    if (!still_candidate(e)) {
      ++result->aborted;
      return;
    }
    if (!PageRecompressor::Recompressible(e->codec)) {
      e->cold_state.store(uint8_t(ColdState::kKept), std::memory_order_relaxed);
      ++result->kept;
      return;
    }
    absl::StatusOr<alloc::ZsPool::ReadGuard> g = pool_->Read(e->handle);
    if (!g.ok()) {  // cannot happen under the key lock
      ++result->aborted;
      return;
    }
    old_handle = e->handle;
    old_codec = e->codec;
    old_length = e->length;
    std::memcpy(stored, g->data(), old_length);
  }
  FARSWAP_SYNC_POINT("PageStore::ColdPass:copied-unlocked");

  // Step 3 [no lock].
  uint8_t zstd_bytes[PageRecompressor::kMaxOutput];
  absl::StatusOr<size_t> n = codec.Recompress(old_codec, {stored, old_length}, zstd_bytes);
  // Smaller means a smaller pool slot: bytes saved inside the same 16-byte
  // size class save no memory, and every load would pay zstd's decode.
  const alloc::SizeClassTable& classes = pool_->classes();
  if (!n.ok() || classes.ForSize(uint32_t(*n)).size >= classes.ForSize(old_length).size) {
    keep();
    return;
  }
  absl::StatusOr<alloc::ZsHandle> h = pool_->Malloc(*n);
  if (!h.ok()) {  // pool full: a later pass retries
    ++result->aborted;
    return;
  }
  if (!pool_->Write(*h, zstd_bytes, *n).ok()) {
    pool_->Free(*h);
    ++result->aborted;
    return;
  }
  FARSWAP_SYNC_POINT("PageStore::ColdPass:encoded-unlocked");

  // Step 4 [key lock].
  MutexLock kl(&key_lock);
  Entry* e = index_->Find(c.key);
  if (!still_candidate(e) || e->handle != old_handle || e->codec != old_codec) {
    pool_->Free(*h);  // a store, invalidate or writeback won; never publish the old version
    ++result->aborted;
    return;
  }
  e->handle = *h;
  e->codec = uint8_t(Codec::kZstd);
  e->length = uint16_t(*n);  // smaller than the old payload
  e->cold_state.store(uint8_t(ColdState::kRecompressed), std::memory_order_relaxed);
  lru_->NoteRecompressed();
  {
    MutexLock tl(&tenants_mu_);
    tenants_[c.key.tenant].stored_bytes -= old_length - *n;
  }
  pool_->Free(old_handle);
  ++result->recompressed;
  result->bytes_saved += old_length - *n;
}

}  // namespace farswap::server
