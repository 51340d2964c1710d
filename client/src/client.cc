// client.cc: the data path of farswap::Client — store, load, invalidate —
// and the public API. Locking rules are in client_impl.h.
#include "farswap/client/client.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client_impl.h"

namespace farswap {

using transport::FrameHeader;
using transport::IncomingMessage;
using transport::Opcode;
using transport::OutgoingMessage;

namespace {

absl::Status WithPage(uint64_t page_no, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat("page ", page_no, ": ", s.message()));
}

}  // namespace

// WriteOp is one store or invalidate of pages of one slab, sent to every
// replica (and the node filling, if any). Thread-safe through `mu`.
struct Client::Impl::StoreOp {
  enum class Kind { kStore, kInvalidate } kind = Kind::kStore;
  uint64_t slab = 0;
  uint64_t first = 0;  // first page
  uint64_t count = 1;  // pages (invalidate ranges)
  PreparedPage page;   // kStore: built once, sent to every replica unchanged
  std::array<uint8_t, 8> count_payload{};
  DoneCallback done;
  int attempt = 0;

  struct Result {
    Target target;
    absl::Status status;
  };
  Mutex mu;
  size_t pending ABSL_GUARDED_BY(mu) = 0;
  std::vector<Result> results ABSL_GUARDED_BY(mu);
};

// LoadOp tries the replicas of one page in turn until one returns a copy
// that verifies. Only one request is in flight at a time, so it needs no
// lock: each step runs after the previous one's callback.
struct Client::Impl::LoadOp {
  uint64_t page_no = 0;
  uint64_t slab = 0;
  uint8_t* out = nullptr;
  size_t* wire_bytes = nullptr;  // optional: payload bytes of the verified reply
  DoneCallback done;
  std::vector<int> order;  // replica node ids, in the order to try
  size_t next = 0;
  int tried = 0;
  bool saw_bad_copy = false;  // some replica answered with a bad or missing copy
  std::string errors;
};

Client::Impl::Impl(const ClientOptions& options, std::unique_ptr<NodeAttacher> attacher,
                   std::unique_ptr<transport::Transport> transport)
    : options_(options),
      pages_per_slab_(options.pages_per_slab),
      codec_options_{.codec = options.codec,
                     .zstd_level = options.zstd_level,
                     .raw_threshold = options.raw_threshold},
      attacher_(std::move(attacher)),
      transport_(std::move(transport)),
      table_(options.pages_per_slab) {}

Client::Impl::Failure Client::Impl::Classify(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return Failure::kNone;
    case absl::StatusCode::kUnavailable:       // connection closed
    case absl::StatusCode::kDeadlineExceeded:  // node stalled
    case absl::StatusCode::kCancelled:         // channel closed
    case absl::StatusCode::kUnauthenticated:   // node restarted: session gone
      return Failure::kNodeDown;
    case absl::StatusCode::kResourceExhausted:
      // Our own transport refuses a send when the node has stopped reading
      // megabytes of requests: that node is stalled, not full.
      if (absl::StartsWith(s.message(), "output queue to")) return Failure::kNodeDown;
      return Failure::kNodeFull;
    case absl::StatusCode::kFailedPrecondition:
      return Failure::kNodeDraining;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
      return Failure::kPageBad;
    default:
      return Failure::kOther;
  }
}

std::vector<client_internal::Candidate> Client::Impl::CandidatesLocked(
    const std::vector<int>& exclude) const {
  std::vector<client_internal::Candidate> out;
  for (int i = 0; i < int(nodes_.size()); ++i) {
    const Node& n = nodes_[i];
    if (n.state != NodeState::kUp || n.full || n.draining) continue;
    if (std::find(exclude.begin(), exclude.end(), i) != exclude.end()) continue;
    out.push_back({.node = i, .key = n.key});
  }
  return out;
}

Client::Impl::Target Client::Impl::TargetLocked(int node) const {
  const Node& n = nodes_[node];
  return Target{
      .node = node, .address = n.address, .channel = n.channel, .counters = n.counters.get()};
}

void Client::Impl::Call(const Target& t, OutgoingMessage m, transport::ReplyCallback done) {
  NodeCounters* c = t.counters;
  c->requests++;
  if (t.channel == nullptr) {
    c->errors++;
    done(absl::UnavailableError(absl::StrCat("node ", t.address, " is down")));
    return;
  }
  const absl::Time start = absl::Now();
  t.channel->Call(std::move(m), options_.op_timeout,
                  [c, start, done = std::move(done)](absl::StatusOr<IncomingMessage> r) {
                    c->latency.Record(absl::Now() - start);
                    if (!r.ok()) c->errors++;
                    done(std::move(r));
                  });
}

void Client::Impl::HandleFailure(int node, const Channel& channel, uint64_t slab, Failure f,
                                 const absl::Status& s) {
  std::vector<Channel> cleanup;
  uint64_t first = 0, count = 0;
  {
    MutexLock l(&mu_);
    Node& n = nodes_[node];
    switch (f) {
      case Failure::kNodeDown:
        // A stale call on an old connection says nothing about a node that
        // has since been re-attached.
        if (n.channel == channel && n.state == NodeState::kUp) MarkDownLocked(node, s.ToString());
        return;
      case Failure::kNodeFull:
      case Failure::kNodeDraining: {
        if (f == Failure::kNodeFull) {
          n.full = true;
        } else {
          n.draining = true;
        }
        n.last_error = s.ToString();
        // Move the slab off it, unless it holds the only copy: then it keeps
        // serving loads and this write fails instead.
        client_internal::Slab* sl = table_.Find(slab);
        if (sl == nullptr) return;
        bool replica =
            std::find(sl->replicas.begin(), sl->replicas.end(), node) != sl->replicas.end();
        if ((replica && sl->replicas.size() > 1) || sl->filling == node) {
          table_.DropReplica(slab, node);
          if (n.channel) cleanup.push_back(n.channel);
          first = table_.FirstPage(slab);
          count = table_.pages_per_slab();
          wake_ = true;
          changed_.SignalAll();
        }
        break;
      }
      default:
        return;
    }
  }
  // Free what the node holds of the slab it no longer serves (best effort).
  for (const Channel& ch : cleanup) {
    auto payload = std::make_shared<std::array<uint8_t, 8>>(transport::EncodeU64Payload(count));
    ch->Call(OutgoingMessage{.header = {.opcode = Opcode::kInvalidateRange, .page = first},
                             .payload = {{payload->data(), payload->size()}},
                             .on_sent = [payload](absl::Status) {}},
             options_.op_timeout, [payload](absl::StatusOr<IncomingMessage>) {});
  }
}

void Client::Impl::MarkDownLocked(int node, const std::string& why) {
  Node& n = nodes_[node];
  n.state = n.state == NodeState::kRemoved ? NodeState::kRemoved : NodeState::kDown;
  n.last_error = why;
  n.times_down++;
  if (n.channel) retired_.push_back(n.channel);
  n.channel = nullptr;
  std::vector<uint64_t> affected = table_.DropNode(node);
  n.orphaned_slabs.insert(n.orphaned_slabs.end(), affected.begin(), affected.end());
  wake_ = true;
  changed_.SignalAll();
}

// ---------------------------------------------------------------- stores

void Client::Impl::StoreAsync(uint64_t page_no, const void* page, DoneCallback done,
                              SnapshotMode mode, size_t* wire_bytes) {
  auto op = std::make_shared<StoreOp>();
  op->kind = StoreOp::Kind::kStore;
  op->first = page_no;
  op->slab = page_no / pages_per_slab_;
  op->done = std::move(done);
  client_internal::PreparePage(client_internal::ThreadCodec(codec_options_), page_no, page, mode,
                               &op->page);
  if (wire_bytes != nullptr) *wire_bytes = op->page.payload_bytes().size();
  IssueStore(std::move(op));
}

void Client::Impl::InvalidateRangeAsync(uint64_t first, uint64_t count, DoneCallback done) {
  if (count == 0) {
    done(absl::OkStatus());
    return;
  }
  if (first + (count - 1) < first) {
    done(absl::InvalidArgumentError(
        absl::StrCat("page range ", first, " + ", count, " overflows the page number space")));
    return;
  }
  // One operation per slab touched; `done` runs when the last finishes,
  // with the first error.
  struct Tally {
    Mutex mu;
    uint64_t left ABSL_GUARDED_BY(mu) = 0;
    absl::Status first_error ABSL_GUARDED_BY(mu);
    DoneCallback done;
  };
  auto tally = std::make_shared<Tally>();
  tally->done = std::move(done);
  std::vector<std::shared_ptr<StoreOp>> ops;
  const uint64_t last = first + count - 1;
  for (uint64_t p = first;;) {
    uint64_t slab = p / pages_per_slab_;
    uint64_t slab_last = slab * pages_per_slab_ + pages_per_slab_ - 1;
    uint64_t end = std::min(last, slab_last);
    auto op = std::make_shared<StoreOp>();
    op->kind = StoreOp::Kind::kInvalidate;
    op->slab = slab;
    op->first = p;
    op->count = end - p + 1;
    op->count_payload = transport::EncodeU64Payload(op->count);
    op->done = [tally](absl::Status s) {
      DoneCallback d;
      absl::Status result;
      {
        MutexLock l(&tally->mu);
        if (!s.ok() && tally->first_error.ok()) tally->first_error = s;
        if (--tally->left != 0) return;
        result = tally->first_error;
        d = std::move(tally->done);
      }
      d(result);
    };
    ops.push_back(std::move(op));
    if (end == last) break;
    p = end + 1;
  }
  {
    MutexLock l(&tally->mu);
    tally->left = ops.size();
  }
  for (auto& op : ops) IssueStore(std::move(op));
}

void Client::Impl::IssueStore(std::shared_ptr<StoreOp> op) {
  std::vector<Target> targets;
  absl::Status refused;
  {
    MutexLock l(&mu_);
    if (stopping_) {
      refused = absl::CancelledError("the client is shutting down");
    } else if (op->kind == StoreOp::Kind::kInvalidate && table_.Find(op->slab) == nullptr) {
      // Never stored anything there: nothing to drop.
    } else {
      client_internal::Slab& s = table_.GetOrCreate(op->slab);
      if (op->kind == StoreOp::Kind::kStore) {
        table_.Place(op->slab, replicas_, CandidatesLocked(s.replicas));
      }
      if (s.replicas.empty() && op->kind == StoreOp::Kind::kStore) {
        int up = 0;
        for (const Node& n : nodes_) up += n.state == NodeState::kUp;
        refused = absl::UnavailableError(absl::StrCat("no memory node can take slab ", op->slab,
                                                      " (", nodes_.size(), " known, ", up,
                                                      " up; the rest down, full or draining)"));
      } else {
        for (int r : s.replicas) targets.push_back(TargetLocked(r));
        if (s.filling >= 0) targets.push_back(TargetLocked(s.filling));
        if (!targets.empty()) s.writes_in_flight++;
        if (targets.empty()) {  // an invalidate of a slab with no replica left
          for (uint64_t p = op->first; p < op->first + op->count; ++p) {
            s.lost.Clear(table_.IndexOf(p));
            s.present.Clear(table_.IndexOf(p));
          }
        }
      }
    }
  }
  if (!refused.ok() || targets.empty()) {
    if (!refused.ok()) store_errors_ += op->kind == StoreOp::Kind::kStore;
    if (refused.ok() && op->kind == StoreOp::Kind::kInvalidate) invalidates_ += op->count;
    op->done(refused.ok() ? refused : WithPage(op->first, refused));
    return;
  }
  {
    MutexLock l(&op->mu);
    op->pending = targets.size();
    op->results.clear();
  }
  for (const Target& t : targets) {
    OutgoingMessage m;
    if (op->kind == StoreOp::Kind::kStore) {
      m.header = op->page.header();
      m.payload = {op->page.payload_bytes()};
    } else if (op->count == 1) {
      m.header = {.opcode = Opcode::kInvalidate, .page = op->first};
    } else {
      m.header = {.opcode = Opcode::kInvalidateRange, .page = op->first};
      m.payload = {{op->count_payload.data(), op->count_payload.size()}};
    }
    m.on_sent = [op](absl::Status) {};  // keeps the payload alive until written
    Call(t, std::move(m), [this, op, t](absl::StatusOr<IncomingMessage> r) {
      bool last;
      {
        MutexLock l(&op->mu);
        op->results.push_back({t, r.status()});
        last = --op->pending == 0;
      }
      if (last) FinishStore(op);
    });
  }
}

void Client::Impl::FinishStore(std::shared_ptr<StoreOp> op) {
  std::vector<StoreOp::Result> results;
  {
    MutexLock l(&op->mu);
    results = op->results;
  }
  const bool is_store = op->kind == StoreOp::Kind::kStore;
  absl::Status first_error;
  std::vector<int> acked;
  bool node_lost = false;
  for (const StoreOp::Result& r : results) {
    absl::Status s = r.status;
    if (!is_store && s.code() == absl::StatusCode::kNotFound) s = absl::OkStatus();
    if (s.ok()) {
      acked.push_back(r.target.node);
      continue;
    }
    Failure f = Classify(s);
    node_lost |= f != Failure::kOther;
    HandleFailure(r.target.node, r.target.channel, op->slab, f, s);
    if (first_error.ok())
      first_error = absl::Status(s.code(), absl::StrCat(r.target.address, ": ", s.message()));
  }
  bool ok = false, retry = false;
  {
    MutexLock l(&mu_);
    client_internal::Slab* s = table_.Find(op->slab);
    if (s != nullptr) {
      s->writes_in_flight--;
      ok = !s->replicas.empty();
      for (int r : s->replicas) {
        ok &= std::find(acked.begin(), acked.end(), r) != acked.end();
      }
      if (ok) {
        for (uint64_t p = op->first; p < op->first + op->count; ++p) {
          uint32_t i = table_.IndexOf(p);
          if (is_store) {
            s->present.Set(i);
          } else {
            s->present.Clear(i);
          }
          s->lost.Clear(i);
          // A copier filling a replacement must (re)copy what changed.
          if (s->filling >= 0) s->dirty.Set(i);
        }
      }
      retry = !ok && node_lost && op->attempt < 3 && !stopping_;
      changed_.SignalAll();
    }
  }
  if (retry) {
    op->attempt++;
    IssueStore(std::move(op));
    return;
  }
  if (ok) {
    if (is_store) {
      stores_++;
      bytes_before_ += kPageSize;
      bytes_after_ += op->page.payload_bytes().size();
      same_pages_ += op->page.encoded.kind == EncodedPage::Kind::kSameFilled;
      raw_pages_ += op->page.encoded.kind == EncodedPage::Kind::kRaw;
    } else {
      invalidates_ += op->count;
    }
    op->done(absl::OkStatus());
    return;
  }
  if (is_store) store_errors_++;
  if (first_error.ok()) first_error = absl::UnavailableError("no replica acknowledged");
  op->done(WithPage(op->first, first_error));
}

// ---------------------------------------------------------------- loads

void Client::Impl::LoadAsync(uint64_t page_no, void* out, DoneCallback done, size_t* wire_bytes) {
  auto op = std::make_shared<LoadOp>();
  op->page_no = page_no;
  op->wire_bytes = wire_bytes;
  op->slab = page_no / pages_per_slab_;
  op->out = static_cast<uint8_t*>(out);
  op->done = std::move(done);
  absl::Status refused;
  {
    MutexLock l(&mu_);
    client_internal::Slab* s = table_.Find(op->slab);
    uint32_t i = table_.IndexOf(page_no);
    if (s != nullptr && s->present.Get(i)) {
      op->order = s->replicas;
      // Spread loads over the replicas; the rotation is per page, so one
      // page always tries the same replica first.
      if (!op->order.empty()) {
        std::rotate(op->order.begin(), op->order.begin() + page_no % op->order.size(),
                    op->order.end());
      }
    } else if (s != nullptr && s->lost.Get(i)) {
      refused = absl::DataLossError(absl::StrCat("page ", page_no, ": every replica of slab ",
                                                 op->slab, " was lost (nodes failed)"));
    } else {
      refused =
          absl::NotFoundError(absl::StrCat("page ", page_no, ": never stored, or invalidated"));
    }
  }
  if (!refused.ok()) {
    load_errors_++;
    if (refused.code() == absl::StatusCode::kDataLoss) unavailable_loads_++;
    op->done(refused);
    return;
  }
  TryLoad(std::move(op));
}

void Client::Impl::TryLoad(std::shared_ptr<LoadOp> op) {
  Target t;
  while (t.node < 0) {
    if (op->next >= op->order.size()) {
      load_errors_++;
      unavailable_loads_++;
      absl::StatusCode code =
          op->saw_bad_copy ? absl::StatusCode::kDataLoss : absl::StatusCode::kUnavailable;
      op->done(absl::Status(code, absl::StrCat("page ", op->page_no, ": no replica of slab ",
                                               op->slab, " returned a valid copy",
                                               op->errors.empty() ? "" : ": ", op->errors)));
      return;
    }
    int node = op->order[op->next++];
    MutexLock l(&mu_);
    if (nodes_[node].state == NodeState::kUp) {
      t = TargetLocked(node);
    } else {
      absl::StrAppend(&op->errors, op->errors.empty() ? "" : "; ", nodes_[node].address,
                      " is down");
    }
  }
  op->tried++;
  Call(t, OutgoingMessage{.header = {.opcode = Opcode::kLoad, .page = op->page_no}},
       [this, op, t](absl::StatusOr<IncomingMessage> r) {
         absl::Status s = r.status();
         if (r.ok()) {
           uint8_t scratch[kPageSize];  // unverified bytes never reach op->out
           s = client_internal::DecodeVerified(client_internal::ThreadCodec(codec_options_),
                                               op->page_no, r->header, r->payload, scratch);
           if (s.ok()) {
             std::memcpy(op->out, scratch, kPageSize);
             if (op->wire_bytes != nullptr) *op->wire_bytes = r->payload.size();
             loads_++;
             if (op->tried > 1) failovers_++;
             op->done(absl::OkStatus());
             return;
           }
           checksum_failures_++;
         }
         Failure f = Classify(s);
         if (f == Failure::kPageBad) op->saw_bad_copy = true;
         if (f == Failure::kNodeDown) HandleFailure(t.node, t.channel, op->slab, f, s);
         absl::StrAppend(&op->errors, op->errors.empty() ? "" : "; ", t.address, ": ",
                         s.ToString());
         TryLoad(op);
       });
}

// ---------------------------------------------------------------- stats

ClientStats Client::Impl::Stats() const {
  ClientStats st;
  st.stores = stores_;
  st.loads = loads_;
  st.invalidates = invalidates_;
  st.store_errors = store_errors_;
  st.load_errors = load_errors_;
  st.bytes_before_compression = bytes_before_;
  st.bytes_after_compression = bytes_after_;
  st.same_pages = same_pages_;
  st.raw_pages = raw_pages_;
  st.checksum_failures = checksum_failures_;
  st.failovers = failovers_;
  st.rereplicated_slabs = rereplicated_slabs_;
  st.rereplicated_pages = rereplicated_pages_;
  st.unavailable_loads = unavailable_loads_;
  st.replicas = replicas_;
  MutexLock l(&mu_);
  st.lost_pages = table_.LostPages();
  st.slabs = table_.size();
  for (const auto& [id, s] : table_.slabs()) {
    st.under_replicated_slabs += s.present.Any() && int(s.replicas.size()) < replicas_;
  }
  for (int i = 0; i < int(nodes_.size()); ++i) {
    const Node& n = nodes_[i];
    NodeStats ns;
    ns.address = n.address;
    ns.data_addr = n.data_addr;
    ns.node_id = n.node_id;
    ns.state = n.state == NodeState::kUp ? "up" : n.state == NodeState::kDown ? "down" : "removed";
    ns.full = n.full;
    ns.draining = n.draining;
    ns.slabs = table_.SlabsOn(i);
    ns.requests = n.counters->requests;
    ns.errors = n.counters->errors;
    ns.times_down = n.times_down;
    ns.latency_us = n.counters->latency.Snapshot();
    st.nodes.push_back(std::move(ns));
  }
  return st;
}

// ---------------------------------------------------------------- API

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options,
                                                        std::unique_ptr<NodeAttacher> attacher) {
  if (options.nodes.empty() && options.dns_name.empty()) {
    return absl::InvalidArgumentError("ClientOptions: name the memory nodes (nodes or dns_name)");
  }
  if (options.pages_per_slab == 0) {
    return absl::InvalidArgumentError("ClientOptions: pages_per_slab must be at least 1");
  }
  if (options.replicas < 0) return absl::InvalidArgumentError("ClientOptions: replicas < 0");
  if (attacher == nullptr) return absl::InvalidArgumentError("Client::Connect: no attacher");
  absl::StatusOr<std::unique_ptr<transport::Transport>> t =
      transport::CreateTransport(options.transport, {.io_threads = options.io_threads});
  if (!t.ok()) return t.status();
  auto impl = std::make_unique<Impl>(options, std::move(attacher), std::move(*t));
  if (absl::Status s = impl->Start(); !s.ok()) return s;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

namespace {
// Waiter turns an asynchronous completion into a blocking call.
class Waiter {
 public:
  DoneCallback Callback() {
    return [this](absl::Status s) {
      MutexLock l(&mu_);
      status_ = std::move(s);
      done_ = true;
      cv_.SignalAll();
    };
  }
  absl::Status Wait() {
    MutexLock l(&mu_);
    while (!done_) cv_.Wait(&mu_);
    return status_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// Countdown waits for n asynchronous completions, keeping each status.
class Countdown {
 public:
  explicit Countdown(size_t n) : statuses_(n), left_(n) {}
  DoneCallback Callback(size_t i) {
    return [this, i](absl::Status s) {
      MutexLock l(&mu_);
      statuses_[i] = std::move(s);
      if (--left_ == 0) cv_.SignalAll();
    };
  }
  std::vector<absl::Status> Wait() {
    MutexLock l(&mu_);
    while (left_ != 0) cv_.Wait(&mu_);
    return statuses_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<absl::Status> statuses_ ABSL_GUARDED_BY(mu_);
  size_t left_ ABSL_GUARDED_BY(mu_);
};
}  // namespace

absl::Status Client::Store(uint64_t page_no, const void* page, SnapshotMode mode,
                           size_t* wire_bytes) {
  Waiter w;
  impl_->StoreAsync(page_no, page, w.Callback(), mode, wire_bytes);
  return w.Wait();
}

absl::Status Client::Load(uint64_t page_no, void* out, size_t* wire_bytes) {
  Waiter w;
  impl_->LoadAsync(page_no, out, w.Callback(), wire_bytes);
  return w.Wait();
}

absl::Status Client::Invalidate(uint64_t page_no) { return InvalidateRange(page_no, 1); }

absl::Status Client::InvalidateRange(uint64_t first, uint64_t count) {
  Waiter w;
  impl_->InvalidateRangeAsync(first, count, w.Callback());
  return w.Wait();
}

void Client::StoreAsync(uint64_t page_no, const void* page, DoneCallback done, SnapshotMode mode) {
  impl_->StoreAsync(page_no, page, std::move(done), mode);
}
void Client::LoadAsync(uint64_t page_no, void* out, DoneCallback done) {
  impl_->LoadAsync(page_no, out, std::move(done));
}
void Client::InvalidateAsync(uint64_t page_no, DoneCallback done) {
  impl_->InvalidateRangeAsync(page_no, 1, std::move(done));
}

std::vector<absl::Status> Client::StoreBatch(std::span<const PageWrite> pages, SnapshotMode mode) {
  Countdown c(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    impl_->StoreAsync(pages[i].page_no, pages[i].page, c.Callback(i), mode);
  }
  return c.Wait();
}

std::vector<absl::Status> Client::LoadBatch(std::span<const PageRead> pages) {
  Countdown c(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    impl_->LoadAsync(pages[i].page_no, pages[i].out, c.Callback(i));
  }
  return c.Wait();
}

void Client::SetNodes(const std::vector<std::string>& addresses) {
  impl_->SetDynamicNodes(addresses);
}
absl::Status Client::WaitUntilReplicated(absl::Duration timeout) {
  return impl_->WaitUntilReplicated(timeout);
}
absl::Status Client::WaitUntilNodeUp(const std::string& address, absl::Duration timeout) {
  return impl_->WaitUntilNodeUp(address, timeout);
}
ClientStats Client::stats() const { return impl_->Stats(); }
int Client::replicas() const { return impl_->replicas(); }

}  // namespace farswap
