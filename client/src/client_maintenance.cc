// client_maintenance.cc: membership and repair for farswap::Client —
// attaching nodes, DNS re-resolution, health pings, re-attaching failed
// nodes and re-replicating slabs (the copier described in slab_table.h).
// Everything here runs on the maintenance thread (or in Start/~Impl) and
// may block on the network; locking rules are in client_impl.h.
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <future>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client_impl.h"
#include "data_address_choice.h"
#include "farswap/common/sync_point.h"
#include "farswap/common/thread_name.h"

namespace farswap {

using transport::FrameHeader;
using transport::IncomingMessage;
using transport::Opcode;

namespace {
// kCopyWindow: pages a re-replication keeps in flight. 64 × 4 KiB fills a
// loopback or datacentre round trip without flooding the survivor.
constexpr size_t kCopyWindow = 64;
// kMaxCopyPasses: passes over a slab's dirty pages before the copier gives
// the slab up for this round (it is retried on the next one).
constexpr int kMaxCopyPasses = 20;
// kRecheckFlags: how often an up node marked full or draining is attached
// again to see whether it still is (a drain undone, a pool limit raised).
// Without it such a node took no new slab until it failed, and slabs stayed
// short of R copies.
constexpr absl::Duration kRecheckFlags = absl::Seconds(5);
}  // namespace

int Client::Impl::AddNodeLocked(const std::string& address, bool is_static) {
  Node n;
  n.address = address;
  n.counters->address = address;
  n.key = client_internal::NodeKey(address);
  n.is_static = is_static;
  nodes_.push_back(std::move(n));
  return int(nodes_.size()) - 1;
}

absl::Status Client::Impl::Start() {
  {
    MutexLock l(&mu_);
    std::set<std::string> seen;
    for (const std::string& a : options_.nodes) {
      if (seen.insert(a).second) AddNodeLocked(a, /*is_static=*/true);
    }
  }
  if (!options_.dns_name.empty()) Resolve();
  int count;
  {
    MutexLock l(&mu_);
    count = int(nodes_.size());
  }
  if (count == 0) {
    return absl::UnavailableError(
        absl::StrCat("no memory node: ", options_.dns_name, " resolved to no address"));
  }
  std::vector<std::thread> attachers;
  for (int i = 0; i < count; ++i)
    attachers.emplace_back([this, i] { AttachNode(i).IgnoreError(); });  // kept in last_error
  for (std::thread& t : attachers) t.join();
  std::vector<std::string> errors;
  int up = 0;
  {
    MutexLock l(&mu_);
    for (const Node& n : nodes_) {
      if (n.state == NodeState::kUp) {
        up++;
      } else {
        errors.push_back(absl::StrCat(n.address, ": ", n.last_error));
      }
    }
    replicas_ = options_.replicas != 0 ? options_.replicas : (count >= 2 ? 2 : 1);
  }
  if (up == 0) {
    return absl::UnavailableError(
        absl::StrCat("could not attach to any memory node: ", absl::StrJoin(errors, "; ")));
  }
  for (const std::string& e : errors) spdlog::warn("farswap client: will retry {}", e);
  maintenance_ = std::thread([this] { MaintenanceLoop(); });
  retrier_ = std::thread([this] { RetryLoop(); });
  return absl::OkStatus();
}

Client::Impl::~Impl() {
  {
    MutexLock l(&mu_);
    stopping_ = true;
    changed_.SignalAll();
    parked_cv_.SignalAll();
  }
  if (maintenance_.joinable()) maintenance_.join();
  if (retrier_.joinable()) retrier_.join();
  std::vector<Channel> channels;
  {
    MutexLock l(&mu_);
    for (auto& c : owned_channels_) channels.push_back(c.get());
  }
  // Outstanding operations complete with CANCELLED (no retries: stopping_).
  for (Channel c : channels) c->Close();
  transport_->Shutdown();
  {
    MutexLock l(&transports_mu_);
    for (auto& [scheme, t] : other_transports_) t->Shutdown();
  }
  std::vector<std::unique_ptr<transport::RpcChannel>> owned;
  {
    MutexLock l(&mu_);
    owned.swap(owned_channels_);
  }
  owned.clear();  // joins the channels' timer threads, without mu_ held
  // Operations still parked complete with CANCELLED (they see stopping_).
  std::vector<std::function<void()>> parked;
  {
    MutexLock l(&mu_);
    parked.swap(parked_);
  }
  for (std::function<void()>& f : parked) f();
}

absl::Status Client::Impl::AttachNode(int node) {
  std::string address;
  {
    MutexLock l(&mu_);
    address = nodes_[node].address;
  }
  auto fail = [&](const absl::Status& s) {
    MutexLock l(&mu_);
    nodes_[node].last_error = s.ToString();
    return s;
  };
  absl::StatusOr<Attachment> a = attacher_->Attach(address, options_.tenant_id, options_.secret,
                                                   options_.client_name, options_.attach_timeout);
  if (!a.ok()) return fail(a.status());
  // The node may serve several backends: dial the one data_transport picks.
  const std::string primary = a->data_addr;
  a->data_addr = client_internal::ChooseDataAddress(*a, options_.data_transport, HasRdma());
  if (a->data_addr != primary) {
    spdlog::info("farswap client: node {}: data plane {} (data_transport {}) rather than {}",
                 address, a->data_addr, options_.data_transport, primary);
  }
  // TLS on the data plane when the node says so, never plaintext then.
  std::optional<transport::TlsClientOptions> tls;
  if (a->data_tls) {
    if (options_.tls_ca_file.empty()) {
      return fail(absl::FailedPreconditionError(
          absl::StrCat("node ", address,
                       " serves its data plane only over TLS (--data-tls), and no "
                       "tls_ca_file is configured to verify it")));
    }
    tls = transport::TlsClientOptions{.ca_file = options_.tls_ca_file,
                                      .cert_file = options_.tls_cert_file,
                                      .key_file = options_.tls_key_file,
                                      .server_name = options_.tls_server_name};
  } else if (options_.require_data_tls) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("node ", address,
                     " serves its data plane in plaintext (no --data-tls), and "
                     "require_data_tls refuses that")));
  } else {
    bool first;
    {
      MutexLock l(&mu_);
      first = !nodes_[node].warned_plaintext;
      nodes_[node].warned_plaintext = true;
    }
    if (first) {
      spdlog::warn(
          "farswap client: node {} data plane {} is plaintext: page contents travel in "
          "the clear",
          address, a->data_addr);
    }
  }
  // The main connection, and the loads' own (ClientOptions::
  // load_connection), each opened with a HELLO of the session.
  std::vector<Channel> channels;
  auto close_all = [&] {
    for (Channel c : channels) c->Close();
  };
  std::vector<std::future<absl::StatusOr<IncomingMessage>>> hellos;
  absl::StatusOr<transport::Transport*> node_transport = TransportFor(a->data_addr);
  if (!node_transport.ok()) return fail(node_transport.status());
  for (int k = 0; k < (options_.load_connection ? 2 : 1); ++k) {
    absl::StatusOr<std::unique_ptr<transport::RpcChannel>> ch = transport::RpcChannel::Connect(
        **node_transport, a->data_addr, tls.has_value() ? &*tls : nullptr);
    if (!ch.ok()) {
      close_all();
      return fail(ch.status());
    }
    channels.push_back(ch->get());
    {
      MutexLock l(&mu_);
      owned_channels_.push_back(std::move(*ch));
    }
    std::vector<uint8_t> token(a->session_token.begin(), a->session_token.end());
    hellos.push_back(channels.back()->Call({.opcode = Opcode::kHello}, std::move(token),
                                           options_.attach_timeout));
  }
  absl::Status hello = absl::OkStatus();
  for (auto& h : hellos) hello.Update(h.get().status());
  if (!hello.ok()) {
    close_all();
    return fail(hello);
  }
  absl::Status up = SettleOrphansAndMarkUp(node, channels.front(), channels.back(), &*a);
  if (!up.ok()) {
    close_all();
    return fail(up);
  }
  return absl::OkStatus();
}

absl::Status Client::Impl::SettleOrphansAndMarkUp(int node, Channel channel, Channel load_channel,
                                                  const Attachment* attachment) {
  // Which orphans to invalidate there: slabs whose pages it holds are stale
  // (another replica took newer writes or a verified copy), unless it is a
  // replica of the slab again. Only copies are kept: given back below when
  // nothing was placed over them, else left alone (never deleted).
  std::vector<uint64_t> invalidate;
  size_t settled = 0;
  const std::string carrier = channel->stats().carrier;  // before mu_: a call into the channel
  {
    MutexLock l(&mu_);
    Node& n = nodes_[node];
    if (attachment != nullptr && n.incarnation != 0 && attachment->incarnation != 0 &&
        attachment->incarnation != n.incarnation) {
      // It restarted: whatever it held is gone. Drop it from its slabs now
      // (pages only it held are lost) and forget its orphans.
      if (n.state == NodeState::kSuspect || n.state == NodeState::kUp) {
        MarkDeadLocked(node, "restarted (new incarnation): its pages are gone");
      }
      n.orphans.clear();
      // The corrupt copies it served were its previous life's, and it holds
      // none now: a node restarted on new memory or a new disk need not
      // wait out quarantine_time. If it is still bad it is quarantined
      // again by what it serves next.
      if (n.quarantined) {
        n.quarantined = false;
        spdlog::info(
            "farswap client: node {} restarted (new incarnation): out of quarantine, it "
            "takes new slabs again",
            n.address);
      }
      n.window_bad_copies = 0;
      n.bad_window_start = absl::InfinitePast();
      n.warned_kept = false;
    }
    settled = n.orphans.size();
    for (const Orphan& o : n.orphans) {
      const client_internal::Slab* s = table_.Find(o.slab);
      const bool holds =
          s != nullptr && (s->filling == node || std::find(s->replicas.begin(), s->replicas.end(),
                                                           node) != s->replicas.end());
      if (!o.only_copy && !holds) invalidate.push_back(o.slab);
    }
  }
  std::vector<std::future<absl::StatusOr<IncomingMessage>>> cleanups;
  for (uint64_t slab : invalidate) {
    auto count = transport::EncodeU64Payload(pages_per_slab_);
    cleanups.push_back(
        channel->Call({.opcode = Opcode::kInvalidateRange, .page = slab * pages_per_slab_},
                      std::vector<uint8_t>(count.begin(), count.end()), options_.op_timeout));
  }
  for (auto& f : cleanups) {
    absl::Status s = f.get().status();
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cleaning up moved slabs: ", s.message()));
    }
  }
  MutexLock l(&mu_);
  Node& n = nodes_[node];
  if (stopping_ || n.state == NodeState::kRemoved) {
    if (attachment != nullptr) {
      retired_.push_back(channel);
      if (load_channel != channel) retired_.push_back(load_channel);
    }
    return absl::CancelledError("node removed while attaching");
  }
  // Only copies come back when the slab is as the drop left it: no replica
  // placed since (same epoch), so its lost pages are exactly what it holds.
  for (size_t k = 0; k < settled; ++k) {
    const Orphan& o = n.orphans[k];
    client_internal::Slab* s = table_.Find(o.slab);
    if (!o.only_copy || s == nullptr || s->epoch != o.epoch || !s->replicas.empty() ||
        s->filling >= 0 || !s->lost.Any()) {
      continue;
    }
    s->replicas.push_back(node);
    s->epoch++;
    for (uint32_t i : s->lost.Indices()) {
      s->present.Set(i);
      recovered_pages_++;
    }
    s->lost.ClearAll();
    spdlog::info("farswap client: node {} returned with the only copy of slab {}", n.address,
                 o.slab);
  }
  n.orphans.erase(n.orphans.begin(), n.orphans.begin() + settled);
  if (n.channel != channel) RetireChannelsLocked(n);
  n.channel = channel;
  n.load_channel = load_channel;
  n.state = NodeState::kUp;
  n.suspect_since = absl::InfinitePast();
  n.full = n.draining = false;
  n.carrier = carrier;
  if (attachment != nullptr) {
    n.data_addr = attachment->data_addr;
    n.node_id = attachment->node_id;
    n.incarnation = attachment->incarnation;
    n.conditional_invalidate = attachment->conditional_invalidate;
    n.scrub_loads = attachment->scrub_loads;
  }
  n.last_error.clear();
  spdlog::info("farswap client: node {} ({}, data plane {} over {}) is up", n.address, n.node_id,
               n.data_addr, n.carrier);
  wake_ = true;
  changed_.SignalAll();
  parked_cv_.SignalAll();
  return absl::OkStatus();
}

void Client::Impl::WakeMaintenance() {
  MutexLock l(&mu_);
  wake_ = true;
  changed_.SignalAll();
}

void Client::Impl::SetDynamicNodes(const std::vector<std::string>& addresses) {
  MutexLock l(&mu_);
  std::set<std::string> want(addresses.begin(), addresses.end());
  for (const std::string& a : want) {
    auto it =
        std::find_if(nodes_.begin(), nodes_.end(), [&](const Node& n) { return n.address == a; });
    if (it == nodes_.end()) {
      AddNodeLocked(a, /*is_static=*/false);
    } else if (it->state == NodeState::kRemoved) {
      it->state = NodeState::kDown;  // back in the membership: re-attach it
    }
  }
  for (int i = 0; i < int(nodes_.size()); ++i) {
    Node& n = nodes_[i];
    if (n.is_static || want.count(n.address) != 0 || n.state == NodeState::kRemoved) continue;
    if (n.state == NodeState::kUp || n.state == NodeState::kSuspect) {
      MarkDeadLocked(i, "removed from the membership");
    }
    n.state = NodeState::kRemoved;
  }
  wake_ = true;
  changed_.SignalAll();
}

void Client::Impl::Resolve() {
  {
    MutexLock l(&mu_);
    next_resolve_ = absl::Now() + options_.resolve_interval;
  }
  const std::string& name = options_.dns_name;
  size_t colon = name.rfind(':');
  if (colon == std::string::npos) {
    spdlog::error("farswap client: dns_name '{}' has no :port", name);
    return;
  }
  std::string host = name.substr(0, colon), port = name.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    // Keep the current membership: a resolver hiccup is not a node failure.
    spdlog::warn("farswap client: resolving {}: {}", name, gai_strerror(rc));
    return;
  }
  std::vector<std::string> addresses;
  for (addrinfo* p = res; p != nullptr; p = p->ai_next) {
    char ip[NI_MAXHOST];
    if (getnameinfo(p->ai_addr, p->ai_addrlen, ip, sizeof ip, nullptr, 0, NI_NUMERICHOST) != 0) {
      continue;
    }
    addresses.push_back(p->ai_family == AF_INET6 ? absl::StrCat("[", ip, "]:", port)
                                                 : absl::StrCat(ip, ":", port));
  }
  freeaddrinfo(res);
  SetDynamicNodes(addresses);
}

void Client::Impl::PingNodes() {
  // Up nodes, and suspect ones still connected: a suspect node that answers
  // again is settled and up (a stall that ended).
  std::vector<Target> targets;
  std::vector<bool> was_suspect;
  {
    MutexLock l(&mu_);
    for (int i = 0; i < int(nodes_.size()); ++i) {
      const Node& n = nodes_[i];
      if (n.channel != nullptr && (n.state == NodeState::kUp || n.state == NodeState::kSuspect)) {
        targets.push_back(TargetLocked(i));
        was_suspect.push_back(n.state == NodeState::kSuspect);
      }
    }
  }
  std::vector<std::future<absl::StatusOr<IncomingMessage>>> replies;
  for (const Target& t : targets) {
    replies.push_back(t.channel->Call({.opcode = Opcode::kPing}, {}, options_.op_timeout));
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    absl::StatusOr<IncomingMessage> r = replies[i].get();
    if (!r.ok()) {
      absl::Status s = r.status();
      HandleFailure(targets[i].node, targets[i].channel, 0, Failure::kNodeDown,
                    absl::Status(s.code(), absl::StrCat("health check: ", s.message())));
    } else if (r->header.status == absl::StatusCode::kOk && !was_suspect[i]) {
      // Every PING reply says whether the node is draining: a drain starts
      // moving slabs off it, its end lets it take new slabs again.
      const bool draining = r->header.node_draining();
      MutexLock l(&mu_);
      Node& n = nodes_[targets[i].node];
      if (n.channel == targets[i].channel && n.state == NodeState::kUp && n.draining != draining) {
        spdlog::info(
            "farswap client: node {} {}", n.address,
            draining ? "is draining: moving its slabs elsewhere" : "is no longer draining");
        n.draining = draining;
        n.flagged_at = absl::Now();
        if (draining) n.last_error = "draining (PING)";
        wake_ = true;
        changed_.SignalAll();
      }
    } else if (r->header.status == absl::StatusCode::kOk && was_suspect[i]) {
      bool still_suspect;
      {
        MutexLock l(&mu_);
        const Node& n = nodes_[targets[i].node];
        still_suspect = n.state == NodeState::kSuspect && n.channel == targets[i].channel;
      }
      if (still_suspect) {
        SettleOrphansAndMarkUp(targets[i].node, targets[i].channel, targets[i].load_channel,
                               nullptr)
            .IgnoreError();
      }
    }
  }
}

void Client::Impl::DeclareDeadNodes() {
  MutexLock l(&mu_);
  const absl::Time now = absl::Now();
  for (int i = 0; i < int(nodes_.size()); ++i) {
    Node& n = nodes_[i];
    if (n.state == NodeState::kSuspect && now - n.suspect_since >= options_.dead_node_timeout) {
      MarkDeadLocked(i, absl::StrCat("no answer for ", absl::FormatDuration(now - n.suspect_since),
                                     " (dead_node_timeout): ", n.last_error));
    }
  }
}

void Client::Impl::ReattachDownNodes() {
  std::vector<int> down;
  {
    MutexLock l(&mu_);
    const absl::Time now = absl::Now();
    for (int i = 0; i < int(nodes_.size()); ++i) {
      Node& n = nodes_[i];
      if (n.state == NodeState::kUp && (n.full || n.draining) &&
          now - n.flagged_at >= kRecheckFlags) {
        n.flagged_at = now;  // next look in kRecheckFlags, whatever this one finds
        down.push_back(i);
      } else if (n.state == NodeState::kDown ||
                 (n.state == NodeState::kSuspect && n.channel == nullptr)) {
        down.push_back(i);
      }
    }
  }
  std::vector<std::thread> attachers;
  for (int i : down)
    attachers.emplace_back([this, i] { AttachNode(i).IgnoreError(); });  // kept in last_error
  for (std::thread& t : attachers) t.join();
}

absl::Status Client::Impl::VerifyCopy(uint64_t slab, uint64_t page, const IncomingMessage& copy) {
  uint8_t scratch[kPageSize];
  absl::Status v = client_internal::DecodeVerified(client_internal::ThreadCodec(codec_options_),
                                                   page, copy.header, copy.payload, scratch);
  if (!v.ok()) return v;
  MutexLock l(&mu_);
  const client_internal::Slab* s = table_.Find(slab);
  const uint32_t i = table_.IndexOf(page);
  // What the client last stored (or has in flight: a newer copy a pass over
  // the dirty pages copies again).
  if (s != nullptr && s->checksums[i] != copy.header.checksum &&
      s->issued[i] != copy.header.checksum) {
    stale_copies_++;
    return absl::DataLossError(absl::StrCat("page ", page, ": stale copy"));
  }
  return absl::OkStatus();
}

absl::StatusOr<IncomingMessage> Client::Impl::GoodCopyElsewhere(uint64_t slab, uint64_t page,
                                                                int except) {
  std::vector<Target> others;
  {
    MutexLock l(&mu_);
    const client_internal::Slab* s = table_.Find(slab);
    if (s != nullptr) {
      for (int r : s->replicas) {
        if (r != except && LiveLocked(r)) others.push_back(TargetLocked(r));
      }
    }
  }
  absl::Status last = absl::DataLossError("no other live replica");
  for (const Target& t : others) {
    absl::StatusOr<IncomingMessage> r =
        t.channel->Call({.opcode = Opcode::kLoad, .page = page}, {}, options_.op_timeout).get();
    if (r.ok()) last = VerifyCopy(slab, page, *r);
    if (r.ok() && last.ok()) return r;
    if (!r.ok()) last = r.status();
  }
  return last;
}

void Client::Impl::MarkPageLost(uint64_t slab, uint64_t page, const std::string& why) {
  {
    MutexLock l(&mu_);
    client_internal::Slab* s = table_.Find(slab);
    if (s == nullptr) return;
    const uint32_t i = table_.IndexOf(page);
    // Rewritten or invalidated since the copy was read: the "stale" copy
    // was an older write that a newer one has replaced, nothing is lost.
    if (!s->present.Get(i) || s->dirty.Get(i)) return;
    s->present.Clear(i);
    s->lost.Set(i);
  }
  spdlog::error("farswap client: page {} has no intact copy: {}", page, why);
}

bool Client::Impl::ReplicateOneSlab(uint64_t slab) {
  Target src, dst;
  std::vector<uint32_t> pages;
  {
    MutexLock l(&mu_);
    client_internal::Slab* s = table_.Find(slab);
    if (s == nullptr || s->filling >= 0) return false;
    // Copy from a live replica, a draining one only when no other has the
    // slab; suspect and draining replicas do not count towards R (they
    // leave the slab once the new copy is committed).
    int source = -1, live = 0;
    for (int r : s->replicas) {
      if (!CountsTowardsRLocked(r)) continue;
      live++;
      if (source < 0) source = r;
    }
    for (int r : s->replicas) {
      if (source < 0 && LiveLocked(r)) source = r;
    }
    if (source < 0 || live >= replicas_) return false;
    std::vector<client_internal::Candidate> c = CandidatesLocked(s->replicas);
    if (c.empty()) return false;
    int target = client_internal::RendezvousRank(slab, c)[0];
    s->filling = target;
    src = TargetLocked(source);
    dst = TargetLocked(target);
    pages = s->present.Indices();
    s->dirty.ClearAll();
  }
  auto give_up = [&](const std::string& why) {
    spdlog::warn("farswap client: re-replicating slab {} to {}: {}", slab, std::string(dst.address),
                 why);
    MutexLock l(&mu_);
    client_internal::Slab* s = table_.Find(slab);
    if (s != nullptr && s->filling == dst.node) s->filling = -1;
    return false;
  };
  uint64_t copied = 0;
  std::vector<Target> evacuated;  // draining replicas the new copy replaces
  uint64_t evacuated_epoch = 0;   // the slab's epoch after they left
  bool committed = false;
  for (int pass = 0; pass < kMaxCopyPasses; ++pass) {
    for (size_t at = 0; at < pages.size(); at += kCopyWindow) {
      size_t n = std::min(kCopyWindow, pages.size() - at);
      std::vector<std::future<absl::StatusOr<IncomingMessage>>> loads, stores;
      for (size_t k = 0; k < n; ++k) {
        uint64_t page = slab * pages_per_slab_ + pages[at + k];
        loads.push_back(
            src.channel->Call({.opcode = Opcode::kLoad, .page = page}, {}, options_.op_timeout));
      }
      for (size_t k = 0; k < n; ++k) {
        uint64_t page = slab * pages_per_slab_ + pages[at + k];
        absl::StatusOr<IncomingMessage> r = loads[k].get();
        if (!r.ok() && r.status().code() == absl::StatusCode::kNotFound) {
          // Invalidated since: make sure the new replica does not keep it.
          stores.push_back(dst.channel->Call({.opcode = Opcode::kInvalidate, .page = page}, {},
                                             options_.op_timeout));
          continue;
        }
        if (!r.ok()) {
          HandleFailure(src.node, src.channel, slab, Classify(r.status()), r.status());
          for (size_t j = k + 1; j < n; ++j) loads[j].wait();
          for (auto& f : stores) f.wait();
          return give_up(absl::StrCat("source ", src.address, ": ", r.status().ToString()));
        }
        if (absl::Status v = VerifyCopy(slab, page, *r); !v.ok()) {
          // One bad page does not stop the slab: take the page from another
          // live replica, or, when none has it intact, it is lost (a load
          // would fail the same way); the rest of the slab is copied.
          checksum_failures_++;
          absl::StatusOr<IncomingMessage> alt = GoodCopyElsewhere(slab, page, src.node);
          if (!alt.ok()) {
            MarkPageLost(
                slab, page,
                absl::StrCat(src.address, ": ", v.message(), "; ", alt.status().message()));
            continue;
          }
          r = std::move(alt);
        }
        // The node's bytes, codec and checksum go over unchanged: no
        // re-encoding on the way.
        FrameHeader h{.opcode = Opcode::kStore,
                      .flags = uint8_t(r->header.flags & transport::kFlagSameFilled),
                      .page = page,
                      .codec = r->header.codec,
                      .checksum = r->header.checksum,
                      .version = r->header.version};
        FARSWAP_SYNC_POINT("Client::Replicate:before-store");
        stores.push_back(dst.channel->Call(h, std::move(r->payload), options_.op_timeout));
      }
      for (auto& f : stores) {
        absl::StatusOr<IncomingMessage> r = f.get();
        // ABORTED: the target already has a newer version (written since
        // the copy started), which is what it should keep.
        if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound &&
            r.status().code() != absl::StatusCode::kAborted) {
          HandleFailure(dst.node, dst.channel, slab, Classify(r.status()), r.status());
          // Let the rest finish before give_up; those already read are
          // no longer valid (waiting on one throws).
          for (auto& g : stores) {
            if (g.valid()) g.wait();
          }
          return give_up(absl::StrCat("target: ", r.status().ToString()));
        }
      }
      copied += n;
    }
    MutexLock l(&mu_);
    client_internal::Slab* s = table_.Find(slab);
    if (s == nullptr || s->filling != dst.node) return false;  // dropped meanwhile
    // Commit only when nothing written since the copy started is missing
    // or stale on the new replica.
    while (!s->dirty.Any() && s->writes_in_flight > 0 && !stopping_) {
      changed_.WaitWithTimeout(&mu_, options_.op_timeout);
      s = table_.Find(slab);
      if (s == nullptr || s->filling != dst.node) return false;
    }
    if (!s->dirty.Any()) {
      s->replicas.push_back(dst.node);
      s->epoch++;
      s->filling = -1;
      // A verified copy now stands in for each suspect or draining replica
      // beyond R: those leave the slab. A suspect one's pages are settled
      // when it returns; a draining one is up, so its copy is invalidated
      // now (below) and the drain sees the node empty.
      std::vector<int> leaving;
      for (int r : s->replicas) {
        if (!CountsTowardsRLocked(r)) leaving.push_back(r);
      }
      for (int r : leaving) {
        if (int(table_.Find(slab)->replicas.size()) <= replicas_) break;
        if (LiveLocked(r) && nodes_[r].channel != nullptr) {
          // Freed below; an orphan only if that fails.
          table_.DropReplica(slab, r);
          evacuated.push_back(TargetLocked(r));
          evacuated_epoch = table_.Find(slab)->epoch;
        } else {
          DropReplicaLocked(slab, r);
        }
      }
      rereplicated_slabs_++;
      rereplicated_pages_ += copied;
      changed_.SignalAll();
      committed = true;
      break;
    }
    pages = s->dirty.Indices();
    s->dirty.ClearAll();
  }
  if (!committed) return give_up("too many pages rewritten during the copy; retrying later");
  // Free the moved slab on the draining or quarantined nodes it left. A failure is only a
  // leak there: an orphan record settles it when the node comes back.
  std::vector<std::future<absl::StatusOr<IncomingMessage>>> cleanups;
  for (const Target& t : evacuated) {
    auto count = transport::EncodeU64Payload(pages_per_slab_);
    cleanups.push_back(
        t.channel->Call({.opcode = Opcode::kInvalidateRange, .page = slab * pages_per_slab_},
                        std::vector<uint8_t>(count.begin(), count.end()), options_.op_timeout));
  }
  for (size_t k = 0; k < cleanups.size(); ++k) {
    absl::Status st = cleanups[k].get().status();
    if (!st.ok()) {
      spdlog::warn("farswap client: freeing moved slab {} on node {} (draining or quarantined): {}",
                   slab, std::string(evacuated[k].address), st.ToString());
      MutexLock l(&mu_);
      nodes_[evacuated[k].node].orphans.push_back(
          {.slab = slab, .epoch = evacuated_epoch, .only_copy = false});
    }
  }
  return true;
}

void Client::Impl::MaintenanceLoop() {
  SetCurrentThreadName("fs-maintenance");
  for (;;) {
    std::vector<Channel> retired;
    bool resolve = false;
    {
      MutexLock l(&mu_);
      absl::Time deadline = absl::Now() + options_.health_interval;
      while (!wake_ && !stopping_) {
        if (changed_.WaitWithDeadline(&mu_, deadline)) break;
      }
      if (stopping_) return;
      wake_ = false;
      retired.swap(retired_);
      resolve = !options_.dns_name.empty() && absl::Now() >= next_resolve_;
    }
    for (Channel c : retired) c->Close();
    if (resolve) Resolve();
    PingNodes();
    DeclareDeadNodes();
    {
      MutexLock l(&mu_);
      EndQuarantinesLocked();
    }
    std::vector<uint64_t> short_slabs;
    {
      MutexLock l(&mu_);
      // counts: replicas towards R; readable: replicas to copy from (a
      // draining node's slabs are copied from it while it still serves).
      std::vector<bool> counts(nodes_.size()), readable(nodes_.size());
      for (int i = 0; i < int(nodes_.size()); ++i) {
        counts[i] = CountsTowardsRLocked(i);
        readable[i] = LiveLocked(i);
      }
      short_slabs = table_.UnderReplicated(
          replicas_, [&counts](int node) { return bool(counts[node]); },
          [&readable](int node) { return bool(readable[node]); });
    }
    for (uint64_t slab : short_slabs) {
      {
        MutexLock l(&mu_);
        if (stopping_) return;
      }
      ReplicateOneSlab(slab);
    }
    ReattachDownNodes();
    ScrubInBackground();
    MutexLock l(&mu_);
    changed_.SignalAll();
  }
}

absl::Status Client::Impl::WaitUntilReplicated(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock l(&mu_);
  wake_ = true;
  changed_.SignalAll();
  for (;;) {
    // A suspect node may come back with its copies or be declared down; until
    // then it still counts among the nodes a slab should be on. (Counting only
    // the up nodes, a moment when every node was suspect needed no replica at
    // all, and this returned OK with slabs whose only copies were on a killed
    // node and a stalled one.)
    int may_count = 0;
    for (int i = 0; i < int(nodes_.size()); ++i) {
      const Node& n = nodes_[i];
      may_count += (n.state == NodeState::kUp || n.state == NodeState::kSuspect) && !n.draining &&
                   !n.quarantined;
    }
    const int need = std::min(replicas_, may_count);
    uint64_t short_slabs = 0;
    for (const auto& [id, s] : table_.slabs()) {
      int live = 0;
      for (int r : s.replicas) live += CountsTowardsRLocked(r) ? 1 : 0;
      short_slabs += s.present.Any() && (live < need || s.filling >= 0);
    }
    if (short_slabs == 0) return absl::OkStatus();
    if (changed_.WaitWithDeadline(&mu_, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(short_slabs, " slabs still have fewer than ",
                                                      need, " replicas after ",
                                                      absl::FormatDuration(timeout)));
    }
  }
}

absl::Status Client::Impl::WaitUntilNodeUp(const std::string& address, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock l(&mu_);
  wake_ = true;
  changed_.SignalAll();
  for (;;) {
    std::string last_error = "not a member";
    for (const Node& n : nodes_) {
      if (n.address != address) continue;
      if (n.state == NodeState::kUp) return absl::OkStatus();
      last_error = n.last_error;
    }
    if (changed_.WaitWithDeadline(&mu_, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "node ", address, " not up after ", absl::FormatDuration(timeout), ": ", last_error));
    }
  }
}

}  // namespace farswap
