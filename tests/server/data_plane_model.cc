// data_plane_model.cc: see data_plane_model.h.
#include "data_plane_model.h"

#include <algorithm>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "farswap/common/status_macros.h"

namespace farswap::server::testing {
namespace {

using transport::Codec;
using transport::FrameHeader;
using transport::FrameView;
using transport::IncomingMessage;
using transport::Opcode;

constexpr absl::Duration kTimeout = absl::Seconds(60);
constexpr const char* kTenantIds[kTenants] = {"alpha", "beta"};

// Expand returns `len` bytes derived from `seed` (xorshift64).
std::vector<uint8_t> Expand(uint64_t seed, size_t len) {
  std::vector<uint8_t> out(len);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + len + 1;
  for (size_t i = 0; i < len; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    out[i] = uint8_t(x >> 24);
  }
  return out;
}

std::vector<uint8_t> U64Bytes(uint64_t v) {
  auto a = transport::EncodeU64Payload(v);
  return std::vector<uint8_t>(a.begin(), a.end());
}

Opcode OpcodeOf(OpKind kind) {
  switch (kind) {
    case OpKind::kStore:
      return Opcode::kStore;
    case OpKind::kLoad:
      return Opcode::kLoad;
    case OpKind::kInvalidate:
      return Opcode::kInvalidate;
    case OpKind::kInvalidateRange:
      return Opcode::kInvalidateRange;
    case OpKind::kPing:
      return Opcode::kPing;
    case OpKind::kBatch:
      break;
  }
  return Opcode::kBatch;
}

// Generator draws operations; it remembers the highest version it has
// stamped on each page so that the next STORE can go below, to or above it.
class Generator {
 public:
  explicit Generator(OpReader& reader) : r_(reader) {}

  Op Next() {
    const uint8_t head = r_.Byte();
    const int tenant = head & 1;
    const bool wait = (head & 6) != 0;  // three in four ops wait for their reply
    const uint8_t pick = r_.Byte() % 100;
    Op op;
    if (pick >= 84) {
      op.kind = OpKind::kBatch;
      const uint64_t n = r_.InRange(1, kMaxBatchOps);
      for (uint64_t i = 0; i < n; ++i) op.batch.push_back(Simple(tenant, r_.Byte() % 84));
    } else {
      op = Simple(tenant, pick);
    }
    op.tenant = tenant;
    op.wait = wait;
    return op;
  }

 private:
  // Simple draws a non-BATCH op; pick in 0..83 chooses its kind.
  Op Simple(int tenant, uint8_t pick) {
    Op op;
    op.tenant = tenant;
    ++serial_;
    if (pick < 35) {
      op.kind = OpKind::kStore;
      op.page = Page();
      uint64_t& last = last_version_[{tenant, op.page}];
      switch (r_.Byte() % 8) {
        case 0:
          op.version = 0;
          break;
        case 1:
        case 2:
          op.version = last - std::min(last, r_.InRange(1, 3));
          break;
        case 3:
          op.version = last;
          break;
        case 7:
          op.version = last + r_.InRange(1, uint64_t{1} << 40);  // a clock-like jump
          break;
        default:
          op.version = last + r_.InRange(1, 3);
          break;
      }
      last = std::max(last, op.version);
      const uint64_t seed = r_.U64() + serial_ * 0x9E3779B97F4A7C15ull;
      op.checksum = seed ^ 0xC0FFEE;
      if (r_.OneIn(6)) {
        op.same_filled = true;
        op.fill = r_.OneIn(2) ? 0 : seed;
      } else {
        size_t len = 0;
        switch (r_.Byte() % 8) {
          case 0:
            len = 1;
            break;
          case 1:
            len = transport::kMaxPagePayload;
            break;
          case 2:
            len = r_.InRange(1, 64);
            break;
          default:
            len = r_.InRange(1, transport::kMaxPagePayload);
            break;
        }
        const uint8_t codec = r_.Byte() % 4;
        op.codec = codec < 2 ? Codec::kNone : codec == 2 ? Codec::kLz4 : Codec::kZstd;
        op.payload = Expand(seed, len);
      }
    } else if (pick < 65) {
      op.kind = OpKind::kLoad;
      op.page = Page();
    } else if (pick < 75) {
      op.kind = OpKind::kInvalidate;
      op.page = Page();
      // One in three conditional (a version: drop only a copy at most it),
      // around the versions this page has been stored with.
      if (r_.OneIn(3)) {
        const uint64_t last = last_version_[{tenant, op.page}];
        op.version = std::max<uint64_t>(1, last + r_.InRange(0, 4) - std::min<uint64_t>(last, 2));
      }
    } else if (pick < 82) {
      op.kind = OpKind::kInvalidateRange;
      op.page = Page();
      uint64_t count = 0;
      switch (r_.Byte() % 8) {
        case 5:  // either side of the store's visit-each-key threshold
          count = r_.OneIn(2) ? 4095 : 4096;
          break;
        case 6:  // to the top of the page space
          count = UINT64_MAX;
          break;
        case 7:
          count = r_.InRange(4096, uint64_t{1} << 40);
          break;
        default:
          count = r_.InRange(1, 100);
          break;
      }
      // page + count - 1 must not wrap (the transport refuses the frame).
      const uint64_t max_count = op.page == 0 ? UINT64_MAX : UINT64_MAX - op.page + 1;
      op.count = std::min(count, max_count);
    } else {
      op.kind = OpKind::kPing;
      op.payload = Expand(serial_, r_.InRange(0, 64));
    }
    return op;
  }

  uint64_t Page() {
    const uint8_t b = r_.Byte();
    return b < 248 ? b % kNearPages : kFarPages[b % kFarPages.size()];
  }

  OpReader& r_;
  uint64_t serial_ = 0;
  std::map<std::pair<int, uint64_t>, uint64_t> last_version_;
};

std::string DescribePage(const ModelPage& p) {
  if (p.same_filled) {
    return absl::StrCat("same-filled fill=", p.fill, " checksum=", p.checksum, " v=", p.version);
  }
  return absl::StrCat(p.payload.size(), " bytes codec=", transport::CodecName(p.codec),
                      " checksum=", p.checksum, " v=", p.version);
}

std::string DescribeExpected(const Op& op, const Expected& e) {
  std::string s = absl::StatusCodeToString(e.code);
  if (e.code == absl::StatusCode::kOk && op.kind == OpKind::kLoad) {
    absl::StrAppend(&s, " ", DescribePage(e.page));
  }
  return s;
}

// CheckReply compares one reply (a whole frame or a BATCH entry) with the
// prediction; it returns what differs, or "" when nothing does. `message`
// is a failed reply's text.
std::string CheckReply(const Op& op, const Expected& want, absl::StatusCode code,
                       const FrameHeader* h, std::span<const uint8_t> payload,
                       absl::string_view message) {
  if (code != want.code) {
    return absl::StrCat("expected ", DescribeExpected(op, want), ", got ",
                        absl::StatusCodeToString(code), " ", message);
  }
  if (h == nullptr) return "";  // a failed top-level reply: the code is all there is
  std::string why;
  auto differs = [&why](bool bad, absl::string_view what) {
    if (bad && why.empty()) why = std::string(what);
  };
  differs(!h->is_reply(), "reply without the REPLY flag");
  differs(h->opcode != OpcodeOf(op.kind), "reply opcode differs");
  if (code != absl::StatusCode::kOk) {
    differs(h->page != 0, "failed reply with a page number");
    return why.empty() ? "" : absl::StrCat(why, ": ", transport::DescribeHeader(*h));
  }
  differs(h->page != (op.kind == OpKind::kPing ? 0 : op.page), "reply page differs");
  if (op.kind == OpKind::kLoad) {
    const ModelPage& p = want.page;
    ModelPage got;
    got.same_filled = h->same_filled();
    got.codec = h->codec;
    got.checksum = h->checksum;
    got.version = h->version;
    if (got.same_filled) {
      absl::StatusOr<uint64_t> fill = transport::DecodeU64Payload(payload);
      got.fill = fill.ok() ? *fill : ~p.fill;
    } else {
      got.payload.assign(payload.begin(), payload.end());
    }
    const bool same = got.same_filled == p.same_filled && got.codec == p.codec &&
                      got.checksum == p.checksum && got.version == p.version &&
                      got.fill == p.fill && got.payload == p.payload;
    if (!same) {
      std::string detail = absl::StrCat("expected ", DescribePage(p), ", got ", DescribePage(got));
      if (!p.same_filled && !got.same_filled && got.payload.size() == p.payload.size()) {
        auto at = std::mismatch(p.payload.begin(), p.payload.end(), got.payload.begin());
        if (at.first != p.payload.end()) {
          absl::StrAppend(&detail, " (payload differs from byte ", at.first - p.payload.begin(),
                          ")");
        }
      }
      return detail;
    }
  } else if (op.kind == OpKind::kPing) {
    differs(!std::equal(payload.begin(), payload.end(), op.payload.begin(), op.payload.end()),
            "PING echo differs");
  } else {
    differs(!payload.empty() || h->flags != transport::kFlagReply || h->checksum != 0 ||
                h->version != 0 || h->codec != Codec::kNone,
            "OK reply carries a page");
  }
  return why.empty() ? "" : absl::StrCat(why, ": ", transport::DescribeHeader(*h));
}

}  // namespace

// --- OpReader ----------------------------------------------------------------------------

uint8_t OpReader::Byte() { return pos_ < data_.size() ? data_[pos_++] : 0; }

uint64_t OpReader::U64() {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(Byte()) << (8 * i);
  return v;
}

uint64_t OpReader::InRange(uint64_t lo, uint64_t hi) {
  const uint64_t span = hi - lo;
  uint64_t v = 0;
  // As many bytes as the range needs, no more, so inputs stay short.
  for (uint64_t left = span; left != 0; left >>= 8) v = (v << 8) | Byte();
  return span == UINT64_MAX ? v : lo + v % (span + 1);
}

std::vector<Op> GenerateOps(OpReader& reader, size_t max_ops) {
  Generator g(reader);
  std::vector<Op> ops;
  while (ops.size() < max_ops && !reader.exhausted()) ops.push_back(g.Next());
  return ops;
}

// --- Op ---------------------------------------------------------------------------------

FrameHeader Op::Header() const {
  FrameHeader h{.opcode = OpcodeOf(kind)};
  switch (kind) {
    case OpKind::kStore:
      h.page = page;
      h.flags = same_filled ? transport::kFlagSameFilled : 0;
      h.codec = same_filled ? Codec::kNone : codec;
      h.checksum = checksum;
      h.version = version;
      break;
    case OpKind::kInvalidate:
      h.page = page;
      h.version = version;  // 0, or conditional
      break;
    case OpKind::kLoad:
    case OpKind::kInvalidateRange:
      h.page = page;
      break;
    case OpKind::kPing:
      break;
    case OpKind::kBatch:
      h.page = batch.size();
      break;
  }
  h.payload_length = uint32_t(RequestPayload().size());
  return h;
}

std::vector<uint8_t> Op::RequestPayload() const {
  switch (kind) {
    case OpKind::kStore:
      return same_filled ? U64Bytes(fill) : payload;
    case OpKind::kInvalidateRange:
      return U64Bytes(count);
    case OpKind::kPing:
      return payload;
    case OpKind::kBatch: {
      std::vector<uint8_t> out;
      for (const Op& e : batch) {
        const std::vector<uint8_t> p = e.RequestPayload();
        FrameHeader h = e.Header();
        auto wire = transport::EncodeHeader(h);
        out.insert(out.end(), wire.begin(), wire.end());
        out.insert(out.end(), p.begin(), p.end());
      }
      return out;
    }
    default:
      return {};
  }
}

std::string Op::Describe() const {
  std::string s = absl::StrCat("tenant ", tenant, " ", transport::OpcodeName(OpcodeOf(kind)));
  switch (kind) {
    case OpKind::kStore:
      absl::StrAppend(&s, " page ", page, " v=", version, " checksum=", checksum);
      if (same_filled) {
        absl::StrAppend(&s, " same-filled fill=", fill);
      } else {
        absl::StrAppend(&s, " ", payload.size(), " bytes codec=", transport::CodecName(codec));
      }
      break;
    case OpKind::kLoad:
      absl::StrAppend(&s, " page ", page);
      break;
    case OpKind::kInvalidate:
      absl::StrAppend(&s, " page ", page);
      if (version != 0) absl::StrAppend(&s, " up to v=", version);
      break;
    case OpKind::kInvalidateRange:
      absl::StrAppend(&s, " pages ", page, " + ", count);
      break;
    case OpKind::kPing:
      absl::StrAppend(&s, " ", payload.size(), " bytes");
      break;
    case OpKind::kBatch:
      absl::StrAppend(&s, " of ", batch.size(), ":");
      for (size_t i = 0; i < batch.size(); ++i) {
        absl::StrAppend(&s, "\n    [", i, "] ", batch[i].Describe());
      }
      break;
  }
  if (!wait) absl::StrAppend(&s, " (pipelined)");
  return s;
}

// --- DataPlaneModel ------------------------------------------------------------------------

Expected DataPlaneModel::Apply(const Op& op) {
  const std::pair<int, uint64_t> key{op.tenant, op.page};
  Expected e;
  switch (op.kind) {
    case OpKind::kStore: {
      auto it = pages_.find(key);
      if (it != pages_.end() && it->second.version > op.version) {
        e.code = absl::StatusCode::kAborted;  // stale version; nothing changes
        break;
      }
      if (it == pages_.end() && op.tenant == 1 && PageCount(1) >= kBetaQuotaPages) {
        e.code = absl::StatusCode::kResourceExhausted;  // quota; only a new page counts
        break;
      }
      ModelPage& p = pages_[key];
      p = ModelPage{.codec = op.same_filled ? Codec::kNone : op.codec,
                    .checksum = op.checksum,
                    .version = op.version,
                    .same_filled = op.same_filled,
                    .fill = op.same_filled ? op.fill : 0};
      if (!op.same_filled) p.payload = op.payload;
      break;
    }
    case OpKind::kLoad: {
      auto it = pages_.find(key);
      if (it == pages_.end()) {
        e.code = absl::StatusCode::kNotFound;
      } else {
        e.page = it->second;
      }
      break;
    }
    case OpKind::kInvalidate: {
      // A conditional invalidate keeps a copy newer than its version.
      auto it = pages_.find(key);
      if (it != pages_.end() && (op.version == 0 || it->second.version <= op.version)) {
        pages_.erase(it);
      }
      break;
    }
    case OpKind::kInvalidateRange: {
      const uint64_t last = op.page + (op.count - 1);
      auto first = pages_.lower_bound(key);
      auto end = first;
      while (end != pages_.end() && end->first.first == op.tenant && end->first.second <= last) {
        ++end;
      }
      pages_.erase(first, end);
      break;
    }
    case OpKind::kPing:
      e.page.payload = op.payload;
      break;
    case OpKind::kBatch:
      e.code = absl::StatusCode::kInternal;  // the caller applies entries one by one
      break;
  }
  return e;
}

const ModelPage* DataPlaneModel::Find(int tenant, uint64_t page) const {
  auto it = pages_.find({tenant, page});
  return it == pages_.end() ? nullptr : &it->second;
}

uint64_t DataPlaneModel::PageCount(int tenant) const {
  uint64_t n = 0;
  for (const auto& entry : pages_) n += entry.first.first == tenant ? 1 : 0;
  return n;
}

// --- DataPlaneHarness ------------------------------------------------------------------------

// Pending is a request sent and not yet checked.
struct DataPlaneHarness::Pending {
  size_t index = 0;
  const Op* op = nullptr;
  std::vector<Expected> expected;  // one, or one per BATCH entry
  std::future<absl::StatusOr<IncomingMessage>> reply;
};

absl::StatusOr<std::unique_ptr<DataPlaneHarness>> DataPlaneHarness::Start(bool corrupt_loads) {
  std::unique_ptr<DataPlaneHarness> h(new DataPlaneHarness);
  FARSWAP_ASSIGN_OR_RETURN(TenantRegistry tenants,
                           TenantRegistry::Parse(absl::StrCat(kTenantIds[0], "::0\n", kTenantIds[1],
                                                              "::", kBetaQuotaPages * kBlockSize),
                                                 "data_plane_model"));
  h->tenants_ = std::make_unique<TenantRegistry>(std::move(tenants));
  // A small pool (32 full pages) over a large disk: pages are written back
  // all the time, stores wait for room and loads read the disk, so requests
  // go to the workers as well as run on the I/O threads.
  FARSWAP_ASSIGN_OR_RETURN(
      h->store_,
      PageStore::Create(
          {.limits = {.pool_limit_bytes = 128 * 1024, .high_watermark = 0.8, .low_watermark = 0.6},
           .backing = &h->disk_}));
  // As farswap-server applies the tenants file's quotas.
  for (const Tenant& t : h->tenants_->tenants()) {
    if (t.quota_bytes != 0) h->store_->SetTenantQuota(t.index, QuotaPagesForBytes(t.quota_bytes));
  }
  FARSWAP_ASSIGN_OR_RETURN(h->server_transport_,
                           transport::CreateTransport("tcp", {.io_threads = 2}));
  FARSWAP_ASSIGN_OR_RETURN(h->client_transport_,
                           transport::CreateTransport("tcp", {.io_threads = 1}));
  h->server_ = std::make_unique<DataPlaneServer>(
      h->store_.get(), h->tenants_.get(), h->server_transport_.get(),
      DataPlaneOptions{.workers = 2, .test_corrupt_loads = corrupt_loads});
  FARSWAP_RETURN_IF_ERROR(h->server_->Listen("127.0.0.1:0"));
  for (int t = 0; t < kTenants; ++t) {
    FARSWAP_ASSIGN_OR_RETURN(Session session, h->tenants_->Attach(kTenantIds[t], ""));
    h->tenant_index_[t] = session.tenant_index;
    FARSWAP_ASSIGN_OR_RETURN(h->channels_[t], transport::RpcChannel::Connect(
                                                  *h->client_transport_, h->server_->address()));
    FARSWAP_RETURN_IF_ERROR(
        h->channels_[t]
            ->Call({.opcode = Opcode::kHello},
                   std::vector<uint8_t>(session.token.begin(), session.token.end()), kTimeout)
            .get()
            .status());
  }
  if (h->tenant_index_[0] == h->tenant_index_[1]) {
    return absl::InternalError("the two tenants share a page-store index");
  }
  FARSWAP_RETURN_IF_ERROR(h->Reset());
  return h;
}

DataPlaneHarness::~DataPlaneHarness() {
  for (auto& ch : channels_) ch.reset();
  if (server_ != nullptr) server_->Shutdown();
  if (server_transport_ != nullptr) server_transport_->Shutdown();
  if (client_transport_ != nullptr) client_transport_->Shutdown();
}

void DataPlaneHarness::Send(const Op& op, size_t index, std::vector<Pending>* pending) {
  Pending p{.index = index, .op = &op};
  if (op.kind == OpKind::kBatch) {
    for (const Op& e : op.batch) p.expected.push_back(model_.Apply(e));
  } else {
    p.expected.push_back(model_.Apply(op));
  }
  p.reply = channels_[op.tenant]->Call(op.Header(), op.RequestPayload(), kTimeout);
  pending->push_back(std::move(p));
}

absl::Status DataPlaneHarness::Collect(std::vector<Pending>* pending) {
  std::string first;  // the first divergence, in op order
  for (Pending& p : *pending) {
    absl::StatusOr<IncomingMessage> reply = p.reply.get();
    if (!first.empty()) continue;  // drain the rest
    std::string why;
    const Op& op = *p.op;
    if (op.kind != OpKind::kBatch) {
      why = reply.ok() ? CheckReply(op, p.expected[0], absl::StatusCode::kOk, &reply->header,
                                    reply->payload, "")
                       : CheckReply(op, p.expected[0], reply.status().code(), nullptr, {},
                                    reply.status().message());
    } else if (!reply.ok()) {
      why = absl::StrCat("BATCH failed as a whole: ", reply.status().ToString());
    } else {
      absl::StatusOr<std::vector<FrameView>> entries =
          transport::DecodeBatch({reply->header, reply->payload});
      if (!entries.ok()) {
        why = absl::StrCat("BATCH reply does not decode: ", entries.status().ToString());
      } else if (entries->size() != op.batch.size()) {
        why = absl::StrCat("BATCH reply has ", entries->size(), " entries for ", op.batch.size());
      } else {
        for (size_t i = 0; i < entries->size() && why.empty(); ++i) {
          const FrameView& e = (*entries)[i];
          const bool ok = e.header.status == absl::StatusCode::kOk;
          absl::string_view message(reinterpret_cast<const char*>(e.payload.data()),
                                    ok ? 0 : e.payload.size());
          why = CheckReply(op.batch[i], p.expected[i], e.header.status, &e.header, e.payload,
                           message);
          if (!why.empty()) why = absl::StrCat("entry ", i, ": ", why);
        }
      }
    }
    if (!why.empty()) first = absl::StrCat("op ", p.index, " (", op.Describe(), "): ", why);
  }
  pending->clear();
  if (first.empty()) return absl::OkStatus();
  return absl::InternalError(first);
}

absl::Status DataPlaneHarness::Sweep() {
  // Every page the model holds must load as the model has it, and the
  // node's per-tenant page counts must equal the model's: together, the
  // node holds exactly the model's pages (a page it kept that the model
  // dropped shows as one page too many).
  std::vector<Op> loads;
  for (int t = 0; t < kTenants; ++t) {
    for (const auto& entry : model_.Pages()) {
      if (entry.first.first == t) {
        loads.push_back(Op{.kind = OpKind::kLoad, .tenant = t, .page = entry.first.second});
      }
    }
  }
  std::vector<Pending> pending;
  for (size_t i = 0; i < loads.size(); ++i) Send(loads[i], i, &pending);
  if (absl::Status s = Collect(&pending); !s.ok()) {
    return absl::InternalError(absl::StrCat("final sweep: ", s.message()));
  }
  const PageStoreStats stats = store_->GetStats();
  for (int t = 0; t < kTenants; ++t) {
    uint64_t stored = 0;
    for (const TenantStats& ts : stats.tenants) {
      if (ts.tenant == tenant_index_[t]) stored = ts.stored_pages;
    }
    if (stored != model_.PageCount(t)) {
      return absl::InternalError(absl::StrCat("final sweep: tenant ", t, " has ", stored,
                                              " pages on the node, the model has ",
                                              model_.PageCount(t)));
    }
  }
  return absl::OkStatus();
}

absl::Status DataPlaneHarness::Reset() {
  std::vector<Op> wipe;
  for (int t = 0; t < kTenants; ++t) {
    // INVALIDATE_RANGE cannot name page UINT64_MAX (page + count - 1 would
    // wrap for count 2^64), so that one goes on its own.
    wipe.push_back(
        Op{.kind = OpKind::kInvalidateRange, .tenant = t, .page = 0, .count = UINT64_MAX});
    wipe.push_back(Op{.kind = OpKind::kInvalidate, .tenant = t, .page = UINT64_MAX});
  }
  std::vector<Pending> pending;
  for (size_t i = 0; i < wipe.size(); ++i) Send(wipe[i], i, &pending);
  if (absl::Status s = Collect(&pending); !s.ok()) {
    return absl::InternalError(absl::StrCat("reset: ", s.message()));
  }
  model_.Clear();
  const PageStoreStats stats = store_->GetStats();
  if (stats.stored_pages != 0) {
    return absl::InternalError(
        absl::StrCat("reset: the node still holds ", stats.stored_pages, " pages"));
  }
  return absl::OkStatus();
}

absl::Status DataPlaneHarness::Run(std::span<const uint8_t> input, size_t max_ops) {
  OpReader reader(input);
  const std::vector<Op> ops = GenerateOps(reader, max_ops);
  std::vector<Pending> pending;
  std::array<size_t, kTenants> in_flight{};
  absl::Status result;
  for (size_t i = 0; i < ops.size() && result.ok(); ++i) {
    Send(ops[i], i, &pending);
    if (ops[i].wait || ++in_flight[ops[i].tenant] >= kMaxInFlight) {
      result = Collect(&pending);
      in_flight = {};
    }
  }
  if (result.ok()) result = Collect(&pending);
  if (result.ok()) result = Sweep();
  // Leave the node empty even after a divergence, so the next run starts
  // from nothing; a reset that fails is a divergence of its own.
  absl::Status reset = Reset();
  return result.ok() ? reset : result;
}

}  // namespace farswap::server::testing
