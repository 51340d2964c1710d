// client_scrub.cc: Client::Scrub and the background scrub
// (ClientOptions::scrub_pages_per_second). Every up replica's copy of each
// stored page is read once, first, by a load that fails over to the page's
// other replicas when that copy is bad, stale or missing; read repair
// (RepairCopies, client.cc) then rewrites the bad copy from the verified one
// under its usual rules (it stands down when the page or its slab changed
// meanwhile). A scrub is made of ordinary loads, so it needs no lock or
// protocol of its own: its loads are only marked (LoadOp::scrub) to be
// counted in their scrub's tally rather than in the client's loads.
#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client_impl.h"

namespace farswap {
namespace {
// kScrubChunk: copies one scrub has out at once (one BATCH frame per node).
constexpr uint64_t kScrubChunk = 256;
constexpr uint64_t kNoEnd = std::numeric_limits<uint64_t>::max();
}  // namespace

uint64_t Client::Impl::IssueScrubLoads(uint64_t cursor, uint64_t end, uint64_t max_copies,
                                       const std::shared_ptr<ScrubTally>& tally) {
  struct Copy {
    uint64_t page;
    int replica;
  };
  std::vector<Copy> copies;
  {
    MutexLock l(&mu_);
    if (stopping_) return end;
    while (cursor < end && copies.size() < max_copies) {
      const uint64_t slab = cursor / pages_per_slab_;
      const client_internal::Slab* s = table_.Find(slab);
      if (s == nullptr) {
        // On to the next slab the table holds, if any.
        std::optional<uint64_t> next;
        for (const auto& entry : table_.slabs()) {
          if (entry.first > slab && (!next || entry.first < *next)) next = entry.first;
        }
        cursor = next ? std::max(cursor, *next * pages_per_slab_) : end;
        continue;
      }
      // The copies worth checking: on replicas that count towards R and
      // are up (a draining node's slabs are moving off, a suspect node's
      // copies are looked at once it answers again).
      absl::InlinedVector<int, 4> up;
      for (int r : s->replicas) {
        if (CountsTowardsRLocked(r) && nodes_[r].state == NodeState::kUp) up.push_back(r);
      }
      const uint64_t slab_last = slab * pages_per_slab_ + (pages_per_slab_ - 1);
      for (; cursor < end && copies.size() < max_copies; ++cursor) {
        if (!up.empty() && s->present.Get(table_.IndexOf(cursor))) {
          tally->pages++;
          for (int r : up) copies.push_back({cursor, r});
        }
        if (cursor == slab_last) {
          ++cursor;
          break;
        }
      }
    }
  }
  if (copies.empty()) return cursor;
  auto buffers = std::make_shared<std::vector<uint8_t>>(copies.size() * kPageSize);
  std::vector<LoadRequest> requests(copies.size());
  tally->Issue(copies.size());
  for (size_t i = 0; i < copies.size(); ++i) {
    requests[i] = {.page_no = copies[i].page,
                   .out = buffers->data() + i * kPageSize,
                   .done = [tally, buffers](absl::Status) { tally->Finish(); },
                   .first_replica = copies[i].replica,
                   .scrub = tally};
  }
  LoadManyAsync(requests);
  return cursor;
}

absl::StatusOr<ScrubResult> Client::Impl::Scrub(uint64_t first, uint64_t count) {
  if (count > kNoEnd - first) {
    return absl::InvalidArgumentError(
        absl::StrCat("scrub of ", count, " pages from page ", first, " overflows"));
  }
  auto tally = std::make_shared<ScrubTally>();
  const uint64_t end = first + count;
  for (uint64_t cursor = first; cursor < end;) {
    cursor = IssueScrubLoads(cursor, end, kScrubChunk, tally);
    tally->WaitIdle();  // its loads and their repairs
    MutexLock l(&mu_);
    if (stopping_) return absl::CancelledError("the client is shutting down");
  }
  return ScrubResult{.pages = tally->pages,
                     .copies_checked = tally->copies_checked,
                     .bad_copies = tally->bad_copies,
                     .copies_repaired = tally->repaired,
                     .repairs_failed = tally->repairs_failed,
                     .repairs_skipped = tally->repairs_skipped,
                     .unreadable_pages = tally->unreadable};
}

void Client::Impl::ScrubInBackground() {
  const uint64_t rate = options_.scrub_pages_per_second;
  if (rate == 0) return;
  if (background_scrub_ != nullptr && !background_scrub_->Idle()) return;  // still out
  if (background_scrub_pass_ending_) {
    // The pass's last loads and repairs are done: it is complete (if it
    // found any page at all).
    if (background_scrub_pass_pages_ > 0) scrub_passes_++;
    background_scrub_pass_pages_ = 0;
    background_scrub_pass_ending_ = false;
  }
  const absl::Time now = absl::Now();
  if (background_scrub_last_ == absl::InfinitePast()) {
    background_scrub_last_ = now;  // the budget accrues from the first tick
    return;
  }
  // The pages the elapsed time allows, at most a second's worth (and at
  // least a chunk): a long gap (a stalled node held the last loads) is not
  // made up in one burst.
  const double allowed = absl::ToDoubleSeconds(now - background_scrub_last_) * double(rate);
  if (allowed < 1) return;
  background_scrub_last_ = now;
  const uint64_t pages = std::min(uint64_t(allowed), std::max(rate, kScrubChunk));
  // Counted in the client's stats as it goes; the tally says when these
  // loads and their repairs are done.
  auto tally = std::make_shared<ScrubTally>();
  uint64_t cursor = IssueScrubLoads(background_scrub_cursor_, kNoEnd,
                                    pages * uint64_t(std::max(replicas_, 1)), tally);
  background_scrub_pass_pages_ += tally->pages;
  if (cursor == kNoEnd) {  // past the last stored page
    background_scrub_pass_ending_ = true;
    cursor = 0;
  }
  background_scrub_cursor_ = cursor;
  background_scrub_ = std::move(tally);
}

}  // namespace farswap
