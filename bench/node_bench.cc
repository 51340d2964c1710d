// farswap-bench node: STORE then LOAD of a corpus' compressed pages against
// one memory node, over N data-plane connections with D requests in flight
// on each, then a churn phase (INVALIDATE every odd page, STORE them again,
// LOAD them back) after which it reads the node's backing-store figures.
// Prints one JSON object (see README.md).
//
// --spawn starts a farswap-server (--server-bin, or the one found beside
// this program, in the build tree or on PATH: tests/util/server_binary.h) on
// loopback port 0 with --pool-limit and a temporary backing file (or
// --backing-file), and stops it at exit; --node names a running node's gRPC
// address instead.
//
// Writeback bandwidth: during the STORE phase a thread reads the node's
// stats every 20 ms; writeback_bytes_per_s is the backing-store bytes
// written from the first read that saw any (writeback started) to the end of
// the phase, over that time. With a pool limit well below the corpus'
// compressed size, writeback is what paces the stores then, so this is the
// rate writeback sustains while stores come in: on a small machine it is
// bounded by the store rate itself (client, I/O threads and writeback share
// the cores). So with --spawn a last phase measures writeback alone: it sets
// the node's pool limit to a quarter of what the pool's objects hold and
// reads the stats every 10 ms until writeback has brought the pool down to
// the new low watermark (or stops making progress for a second);
// writeback_drain_bytes_per_s is the backing-store bytes written over that
// time (bench/compare-fio sets both beside fio's). The end is interpolated
// between the last two reads (where the pool crossed the watermark, and the
// bytes written by then), so the period bounds no figure. It was 1 ms: a
// node-wide GetStats costs the node's gRPC threads ~200 us of CPU and the
// bench ~90, so reading every millisecond took ~15% of a 2-core machine
// from the drain it timed.
#include <grpcpp/grpcpp.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <thread>

#include "bench_args.h"
#include "farswap/client/page_codec.h"
#include "farswap/common/mutex.h"
#include "farswap/common/page_file.h"
#include "farswap/common/status_macros.h"
#include "farswap/transport/rpc_channel.h"
#include "farswap/v1/memory_node.grpc.pb.h"
#include "server_binary.h"
#include "server_process.h"

namespace farswap::bench {
namespace {

using Clock = std::chrono::steady_clock;
using transport::FrameHeader;
using transport::IncomingMessage;
using transport::Opcode;

struct Prepared {
  FrameHeader header;  // STORE header (page, codec, checksum, flags)
  std::vector<uint8_t> payload;
};

// RunPhase sends one request per page i in [0, n): connection c takes
// pages c, c+N, ..., from its own thread, with at most `depth` in flight.
// on_reply(i, sent_at, reply) runs on a transport I/O thread.
void RunPhase(const std::vector<std::unique_ptr<transport::RpcChannel>>& channels, size_t n,
              uint64_t depth, absl::Duration timeout,
              const std::function<transport::OutgoingMessage(size_t)>& make,
              const std::function<void(size_t, Clock::time_point, absl::StatusOr<IncomingMessage>)>&
                  on_reply) {
  std::vector<std::thread> threads;
  const size_t connections = channels.size();
  for (size_t c = 0; c < connections; ++c) {
    threads.emplace_back([&, c] {
      InFlightWindow window(depth);
      for (size_t i = c; i < n; i += connections) {
        window.Acquire();
        auto sent = Clock::now();
        channels[c]->Call(make(i), timeout, [&, i, sent](absl::StatusOr<IncomingMessage> r) {
          on_reply(i, sent, std::move(r));
          window.Release();
        });
      }
      window.Drain();
    });
  }
  for (auto& t : threads) t.join();
}

absl::StatusOr<v1::GetStatsResponse> NodeStats(v1::MemoryNode::Stub& stub) {
  grpc::ClientContext ctx;
  v1::GetStatsResponse resp;
  grpc::Status s = stub.GetStats(&ctx, v1::GetStatsRequest(), &resp);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return resp;
}

// WaitForRestingLog: the node cleans dead bytes for space only once its
// writeback has been quiet (--cleaner-idle-ms), so the log's space figures
// right after the churn are those of a busy node. Reads the stats every
// 20 ms until the cleaner has freed no segment for a second (or 60 s have
// passed) and returns the last read.
absl::StatusOr<v1::GetStatsResponse> WaitForRestingLog(v1::MemoryNode::Stub& stub) {
  FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse last, NodeStats(stub));
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(60);
  Clock::time_point changed = Clock::now();
  while (Clock::now() < give_up && Clock::now() - changed < std::chrono::seconds(1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse now, NodeStats(stub));
    if (now.node().backing().cleaner_segments() != last.node().backing().cleaner_segments()) {
      changed = Clock::now();
    }
    last = std::move(now);
  }
  return last;
}

// DrainResult: the writeback-alone phase (file comment).
struct DrainResult {
  uint64_t bytes = 0;  // backing-store bytes written, cleaning and padding included
  double seconds = 0;
};

// MeasureWritebackDrain lowers the node's pool limit to a quarter of what
// its objects hold and times writeback down to the new low watermark.
absl::StatusOr<DrainResult> MeasureWritebackDrain(v1::MemoryNode::Stub& stub) {
  FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse before, NodeStats(stub));
  const v1::PoolStats& pool = before.node().pool();
  const uint64_t in_use = pool.mem_used_total() - pool.mem_cached();
  constexpr uint64_t kMinLimit = uint64_t{1} << 20;
  if (in_use < 4 * kMinLimit) return DrainResult{};  // too little to time
  const uint64_t limit = in_use / 4;
  constexpr double kLowWatermark = 0.5;
  const uint64_t target = uint64_t(double(limit) * kLowWatermark) + (256 << 10);
  const auto start = Clock::now();
  {
    grpc::ClientContext ctx;
    v1::SetLimitsRequest req;
    req.set_pool_limit_bytes(limit);
    req.set_high_watermark(0.6);
    req.set_low_watermark(kLowWatermark);
    v1::SetLimitsResponse resp;
    grpc::Status s = stub.SetLimits(&ctx, req, &resp);
    if (!s.ok()) return absl::UnavailableError("SetLimits: " + s.error_message());
  }
  // A read costs the node CPU the drain would use (file comment): read no
  // more often than this, and interpolate the end.
  constexpr auto kSamplePeriod = std::chrono::milliseconds(10);
  const uint64_t bytes_before = before.node().backing().bytes_written();
  uint64_t last_bytes = bytes_before;
  auto last_progress = Clock::now();
  Clock::time_point prev_t = start;
  uint64_t prev_used = in_use, prev_bytes = bytes_before;
  for (;;) {
    std::this_thread::sleep_for(kSamplePeriod);
    FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse now, NodeStats(stub));
    const Clock::time_point t = Clock::now();
    const uint64_t bytes = now.node().backing().bytes_written();
    if (bytes != last_bytes) {
      last_bytes = bytes;
      last_progress = t;
    }
    const v1::PoolStats& p = now.node().pool();
    const uint64_t used = p.mem_used_total() - p.mem_cached();
    if (used <= target) {
      // The pool went from prev_used to used between the two reads: at the
      // same rate throughout, it reached the target this far into them.
      const double f = prev_used > used && prev_used > target
                           ? double(prev_used - target) / double(prev_used - used)
                           : 1.0;
      const auto done_at = prev_t + std::chrono::duration_cast<Clock::duration>((t - prev_t) * f);
      const uint64_t done_bytes =
          bytes >= prev_bytes ? prev_bytes + uint64_t(double(bytes - prev_bytes) * f) : bytes;
      return DrainResult{.bytes = done_bytes - bytes_before,
                         .seconds = std::chrono::duration<double>(done_at - start).count()};
    }
    if (t - last_progress > std::chrono::seconds(1)) {  // stopped short: count to its last write
      return DrainResult{.bytes = last_bytes - bytes_before,
                         .seconds = std::chrono::duration<double>(last_progress - start).count()};
    }
    prev_t = t;
    prev_used = used;
    prev_bytes = bytes;
  }
}

struct NodeFlags {
  std::string corpus;
  std::string node;
  bool spawn = false;
  std::string server_bin;
  std::string pool_limit = "256M";
  std::string backing_size = "1G";
  std::string segment_size;       // the spawned node's --segment-size; empty = its default
  std::string cleaner_threshold;  // the spawned node's --cleaner-threshold; empty = its default
  std::string backing_file;       // the spawned node's backing file; empty = a temporary one
  std::string cleaner_max_dead;   // the spawned node's --cleaner-max-dead; empty = its default
  std::string cleaner_idle_ms;    // the spawned node's --cleaner-idle-ms; empty = its default
  std::string writeback_threads;  // the spawned node's --writeback-threads; empty = its default
  std::string disk_read_cache;    // the spawned node's --disk-read-cache; empty = its default
  std::string transport = "tcp";  // the spawned node's --transport
  uint64_t connections = 2;
  uint64_t depth = 16;
  uint64_t busy_poll_us = 0;  // the bench's transport and the spawned node's --busy-poll-us
  std::string codec = "lz4";
  std::string tenant = "default";
  std::string secret;
  bool json = false;
};

absl::Status Run(const NodeFlags& f) {
  if (f.node.empty() == !f.spawn) {
    return absl::InvalidArgumentError("give exactly one of --node GRPC_ADDR or --spawn");
  }
  const uint64_t connections = f.connections, depth = f.depth;
  FARSWAP_ASSIGN_OR_RETURN(Codec codec_kind, ParseCodec(f.codec));
  FARSWAP_ASSIGN_OR_RETURN(PageFile pages, ReadPageFiles(f.corpus));

  std::unique_ptr<testing::ServerProcess> spawned;
  std::string grpc_addr = f.node;
  if (f.spawn) {
    FARSWAP_ASSIGN_OR_RETURN(std::string server, testing::FindServerBinary(f.server_bin));
    std::vector<std::string> extra = {"--log-level", "warn"};
    if (!f.segment_size.empty()) extra.insert(extra.end(), {"--segment-size", f.segment_size});
    if (!f.cleaner_threshold.empty()) {
      extra.insert(extra.end(), {"--cleaner-threshold", f.cleaner_threshold});
    }
    if (!f.cleaner_max_dead.empty()) {
      extra.insert(extra.end(), {"--cleaner-max-dead", f.cleaner_max_dead});
    }
    if (!f.writeback_threads.empty()) {
      extra.insert(extra.end(), {"--writeback-threads", f.writeback_threads});
    }
    if (!f.cleaner_idle_ms.empty()) {
      extra.insert(extra.end(), {"--cleaner-idle-ms", f.cleaner_idle_ms});
    }
    if (!f.disk_read_cache.empty()) {
      extra.insert(extra.end(), {"--disk-read-cache", f.disk_read_cache});
    }
    if (f.busy_poll_us > 0) {
      extra.insert(extra.end(), {"--busy-poll-us", absl::StrCat(f.busy_poll_us)});
    }
    FARSWAP_ASSIGN_OR_RETURN(spawned, testing::ServerProcess::Start({.pool_limit = f.pool_limit,
                                                                     .backing_size = f.backing_size,
                                                                     .extra_args = extra,
                                                                     .binary = server,
                                                                     .backing_file = f.backing_file,
                                                                     .transport = f.transport}));
    grpc_addr = spawned->grpc_addr();
  }
  auto stub =
      v1::MemoryNode::NewStub(grpc::CreateChannel(grpc_addr, grpc::InsecureChannelCredentials()));
  v1::AttachResponse session;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::AttachRequest req;
    req.set_tenant_id(f.tenant);
    req.set_secret(f.secret);
    req.set_client_name("farswap-bench node");
    grpc::Status s = stub->Attach(&ctx, req, &session);
    if (!s.ok()) {
      return absl::Status(absl::StatusCode(s.error_code()),
                          absl::StrCat("attach to ", grpc_addr, ": ", s.error_message()));
    }
  }

  // Encode every page once, up front: the benchmark measures the node.
  const size_t n = pages.page_count();
  std::vector<Prepared> prepared(n);
  {
    PageCodec codec({.codec = codec_kind, .raw_threshold = 3633});
    std::vector<uint8_t> buf(kPageSize);
    for (size_t i = 0; i < n; ++i) {
      EncodedPage e = codec.Encode(pages.page(i), buf.data());
      Prepared& p = prepared[i];
      p.header = FrameHeader{.opcode = Opcode::kStore,
                             .page = i,
                             .codec = transport::Codec(e.codec),
                             .checksum = XXH3_64bits(pages.page(i), kPageSize)};
      if (e.kind == EncodedPage::Kind::kSameFilled) {
        p.header.flags = transport::kFlagSameFilled;
        p.header.codec = transport::Codec::kNone;
        auto fill = transport::EncodeU64Payload(e.fill);
        p.payload.assign(fill.begin(), fill.end());
      } else {
        p.payload.assign(buf.begin(), buf.begin() + e.length);
      }
    }
  }

  // The node's data address says its backend ("ucx://..." or a bare TCP one).
  FARSWAP_ASSIGN_OR_RETURN(
      auto transport,
      transport::CreateTransport(session.data_addr(),
                                 {.io_threads = int(connections),
                                  .busy_poll = absl::Microseconds(int64_t(f.busy_poll_us))}));
  std::vector<std::unique_ptr<transport::RpcChannel>> channels;
  for (uint64_t c = 0; c < connections; ++c) {
    FARSWAP_ASSIGN_OR_RETURN(auto ch,
                             transport::RpcChannel::Connect(*transport, session.data_addr()));
    std::string token = session.session_token();
    absl::StatusOr<IncomingMessage> hello =
        ch->Call({.opcode = Opcode::kHello}, std::vector<uint8_t>(token.begin(), token.end()),
                 absl::Seconds(10))
            .get();
    if (!hello.ok()) return hello.status();
    channels.push_back(std::move(ch));
  }
  const absl::Duration timeout = absl::Seconds(60);
  std::atomic<uint64_t> store_errors{0}, load_errors{0};
  absl::Status first_error;
  Mutex error_mu;
  auto note_error = [&](const absl::Status& s) {
    MutexLock l(&error_mu);
    if (first_error.ok()) first_error = s;
  };

  // Phase 1: STORE every page; connection c takes pages c, c+N, c+2N, ...
  // A watcher notes when writeback starts writing (file comment).
  std::atomic<bool> store_phase_over{false};
  Clock::time_point writeback_seen_at{};
  uint64_t writeback_seen_bytes = 0;
  std::thread writeback_watch([&] {
    while (!store_phase_over.load()) {
      absl::StatusOr<v1::GetStatsResponse> s = NodeStats(*stub);
      const Clock::time_point now = Clock::now();
      if (s.ok() && s->node().backing().bytes_written() > 0) {
        writeback_seen_at = now;
        writeback_seen_bytes = s->node().backing().bytes_written();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a sampling period
    }
  });
  auto t0 = Clock::now();
  RunPhase(
      channels, n, depth, timeout,
      [&](size_t i) {
        transport::OutgoingMessage m;
        m.header = prepared[i].header;
        m.payload.push_back(prepared[i].payload);
        return m;
      },
      [&](size_t, Clock::time_point, absl::StatusOr<IncomingMessage> r) {
        if (!r.ok()) {
          store_errors++;
          note_error(r.status());
        }
      });
  auto t1 = Clock::now();
  store_phase_over = true;
  writeback_watch.join();
  FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse after_store, NodeStats(*stub));
  // The rate from when writeback was first seen writing to the phase's end
  // (0 when it never wrote during the phase).
  double writeback_bytes_per_s = 0;
  if (writeback_seen_bytes > 0 && t1 > writeback_seen_at) {
    writeback_bytes_per_s =
        double(after_store.node().backing().bytes_written() - writeback_seen_bytes) /
        std::chrono::duration<double>(t1 - writeback_seen_at).count();
  }
  // Phase 2: LOAD every page back, timing each.
  std::vector<std::vector<uint8_t>> loaded(n);
  std::vector<FrameHeader> loaded_headers(n);
  std::vector<double> load_us(n);
  RunPhase(
      channels, n, depth, timeout,
      [&](size_t i) {
        transport::OutgoingMessage m;
        m.header = FrameHeader{.opcode = Opcode::kLoad, .page = i};
        return m;
      },
      [&](size_t i, Clock::time_point sent, absl::StatusOr<IncomingMessage> r) {
        load_us[i] = std::chrono::duration<double, std::micro>(Clock::now() - sent).count();
        if (r.ok()) {
          loaded_headers[i] = r->header;
          loaded[i] = std::move(r->payload);
        } else {
          load_errors++;
          note_error(r.status());
        }
      });
  auto t2 = Clock::now();

  // Verify every page against the corpus (after decompression).
  bool verified = store_errors == 0 && load_errors == 0;
  {
    PageCodec codec({.codec = codec_kind});
    std::vector<uint8_t> out(kPageSize);
    for (size_t i = 0; i < n && verified; ++i) {
      const FrameHeader& h = loaded_headers[i];
      if (h.same_filled()) {
        absl::StatusOr<uint64_t> fill = transport::DecodeU64Payload(loaded[i]);
        if (!fill.ok()) verified = false;
        PageCodec::DecodeSameFilled(fill.value_or(0), out.data());
      } else if (!codec.Decode(Codec(h.codec), loaded[i].data(), loaded[i].size(), out.data())
                      .ok()) {
        verified = false;
      }
      verified = verified && XXH3_64bits(out.data(), kPageSize) == h.checksum &&
                 std::memcmp(out.data(), pages.page(i), kPageSize) == 0;
    }
  }
  FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse stats, NodeStats(*stub));

  // Churn: INVALIDATE every odd page, STORE them again and LOAD them back,
  // so the backing store's log holds dead bytes the cleaner may reclaim;
  // its figures are read after this.
  const size_t half = n / 2;  // pages 1, 3, 5, ...
  auto odd = [](size_t j) { return 2 * j + 1; };
  RunPhase(
      channels, half, depth, timeout,
      [&](size_t j) {
        transport::OutgoingMessage m;
        m.header = FrameHeader{.opcode = Opcode::kInvalidate, .page = odd(j)};
        return m;
      },
      [&](size_t, Clock::time_point, absl::StatusOr<IncomingMessage> r) {
        if (!r.ok()) {
          store_errors++;
          note_error(r.status());
        }
      });
  auto t3 = Clock::now();
  RunPhase(
      channels, half, depth, timeout,
      [&](size_t j) {
        transport::OutgoingMessage m;
        m.header = prepared[odd(j)].header;
        m.payload.push_back(prepared[odd(j)].payload);
        return m;
      },
      [&](size_t, Clock::time_point, absl::StatusOr<IncomingMessage> r) {
        if (!r.ok()) {
          store_errors++;
          note_error(r.status());
        }
      });
  auto t4 = Clock::now();
  std::atomic<uint64_t> churn_mismatches{0};
  RunPhase(
      channels, half, depth, timeout,
      [&](size_t j) {
        transport::OutgoingMessage m;
        m.header = FrameHeader{.opcode = Opcode::kLoad, .page = odd(j)};
        return m;
      },
      [&](size_t j, Clock::time_point, absl::StatusOr<IncomingMessage> r) {
        if (!r.ok()) {
          load_errors++;
          note_error(r.status());
        } else if (r->payload != prepared[odd(j)].payload ||
                   r->header.checksum != prepared[odd(j)].header.checksum) {
          churn_mismatches++;
        }
      });
  verified = verified && store_errors == 0 && load_errors == 0 && churn_mismatches == 0;
  FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse after_churn, NodeStats(*stub));
  FARSWAP_ASSIGN_OR_RETURN(v1::GetStatsResponse after, WaitForRestingLog(*stub));
  DrainResult drain;
  if (f.spawn) {  // never change the limits of a node the bench was pointed at
    FARSWAP_ASSIGN_OR_RETURN(drain, MeasureWritebackDrain(*stub));
  }
  for (auto& ch : channels) ch->Close();
  transport->Shutdown();

  const double store_s = std::chrono::duration<double>(t1 - t0).count();
  const double load_s = std::chrono::duration<double>(t2 - t1).count();
  const v1::BackingStats& b = after.node().backing();
  const uint64_t on_disk = after.node().pages_on_backing();
  const uint64_t churn_on_disk = after_churn.node().pages_on_backing();
  Json out;
  out.Int("pages", n)
      .Str("transport", std::string(transport->scheme()))
      .Int("busy_poll_us", f.busy_poll_us)
      .Int("connections", connections)
      .Int("depth", depth)
      .Str("codec", CodecName(codec_kind))
      .Num("store_pages_per_s", double(n) / store_s)
      .Num("load_pages_per_s", double(n) / load_s)
      .Num("load_us_p50", Percentile(load_us, 50))
      .Num("load_us_p99", Percentile(load_us, 99))
      .Num("writeback_bytes_per_s", writeback_bytes_per_s)
      .Int("store_phase_disk_bytes_written", after_store.node().backing().bytes_written())
      .Num("writeback_drain_bytes_per_s",
           drain.seconds > 0 ? double(drain.bytes) / drain.seconds : 0)
      .Int("writeback_drain_bytes", drain.bytes)
      .Num("churn_store_pages_per_s", double(half) / std::chrono::duration<double>(t4 - t3).count())
      .Int("written_back_pages", stats.node().written_back_pages())
      .Int("writeback_threads", b.writeback_threads())
      .Int("backing_reads", stats.node().backing().reads())
      .Int("load_phase_disk_read_requests", stats.node().backing().disk_read_requests() -
                                                after_store.node().backing().disk_read_requests())
      .Int("load_phase_disk_reads_coalesced",
           stats.node().backing().disk_reads_coalesced() -
               after_store.node().backing().disk_reads_coalesced())
      .Int("load_phase_read_cache_hits", stats.node().backing().read_cache_hits() -
                                             after_store.node().backing().read_cache_hits())
      .Int("read_cache_limit_bytes", stats.node().backing().read_cache_limit_bytes())
      .Int("pages_on_disk", on_disk)
      .Int("disk_used_bytes", b.used_bytes())
      .Int("disk_live_bytes", b.live_bytes())
      .Num("disk_bytes_per_page_after_churn",
           churn_on_disk ? double(after_churn.node().backing().used_bytes()) / double(churn_on_disk)
                         : 0)
      .Num("disk_write_amplification_after_churn",
           after_churn.node().backing().written_back_bytes()
               ? double(after_churn.node().backing().bytes_written()) /
                     double(after_churn.node().backing().written_back_bytes())
               : 0)
      .Num("disk_bytes_per_page", on_disk ? double(b.used_bytes()) / double(on_disk) : 0)
      .Num("disk_compressed_bytes_per_page", on_disk ? double(b.live_bytes()) / double(on_disk) : 0)
      .Num("disk_write_amplification",
           b.written_back_bytes() ? double(b.bytes_written()) / double(b.written_back_bytes()) : 0)
      .Int("disk_bytes_written", b.bytes_written())
      .Int("written_back_bytes", b.written_back_bytes())
      .Int("cleaner_moves", b.cleaner_moves())
      .Int("cleaner_segments", b.cleaner_segments())
      .Int("segments", b.segments())
      .Int("free_segments", b.free_segments())
      .Int("pool_limit", stats.node().pool().mem_limit())
      .Int("mem_used_max", stats.node().pool().mem_used_max())
      .Int("store_errors", store_errors.load())
      .Int("load_errors", load_errors.load())
      .Bool("verified", verified);
  std::cout << out.ToString() << std::endl;
  if (!first_error.ok()) std::cerr << "farswap-bench node: first error: " << first_error << "\n";
  if (!verified) return absl::DataLossError("not every page loaded back equal");
  return absl::OkStatus();
}

}  // namespace

CommandRunner AddNodeCommand(CLI::App& app) {
  auto f = std::make_shared<NodeFlags>();
  CLI::App* cmd = app.add_subcommand("node", "a page corpus through one memory node's data plane");
  cmd->add_option("--corpus", f->corpus, "page corpora (*.pages.zst)")
      ->type_name("FILE[,FILE...]")
      ->required();
  cmd->add_option("--node", f->node, "a running node's gRPC address (or --spawn)")
      ->type_name("GRPC_ADDR");
  cmd->add_flag("--spawn", f->spawn, "start a farswap-server on loopback for the run");
  cmd->add_option("--server-bin", f->server_bin,
                  "the farswap-server --spawn runs (default: beside this program, then the "
                  "build tree, then PATH)")
      ->type_name("PATH");
  cmd->add_option("--transport", f->transport,
                  "the spawned node's data-plane backend (farswap-server --transport); with "
                  "--node, the node's own is used")
      ->check(CLI::IsMember({"tcp", "ucx"}))
      ->capture_default_str();
  cmd->add_option("--pool-limit", f->pool_limit, "the spawned node's --pool-limit")
      ->check(cli::Bytes())
      ->capture_default_str();
  cmd->add_option("--backing-size", f->backing_size, "the spawned node's --backing-size")
      ->check(cli::Bytes())
      ->capture_default_str();
  cmd->add_option("--segment-size", f->segment_size,
                  "the spawned node's --segment-size (default: the node's, 1M)")
      ->check(cli::Bytes());
  cmd->add_option("--cleaner-threshold", f->cleaner_threshold,
                  "the spawned node's --cleaner-threshold (default: the node's, 0.5)")
      ->check(cli::Fraction());
  cmd->add_option("--backing-file", f->backing_file,
                  "where the spawned node keeps its backing file (default: a temporary folder); "
                  "bench/compare-fio puts it beside fio's test file")
      ->type_name("PATH");
  cmd->add_option("--cleaner-max-dead", f->cleaner_max_dead,
                  "the spawned node's --cleaner-max-dead (default: the node's, 0.08)")
      ->check(cli::Fraction());
  cmd->add_option("--writeback-threads", f->writeback_threads,
                  "the spawned node's --writeback-threads (default: the node's own default)");
  cmd->add_option("--cleaner-idle-ms", f->cleaner_idle_ms,
                  "the spawned node's --cleaner-idle-ms (default: the node's, 100)");
  cmd->add_option("--disk-read-cache", f->disk_read_cache,
                  "the spawned node's --disk-read-cache (default: the node's, 4M; 0: off)")
      ->check(cli::Bytes());
  cmd->add_option("--connections", f->connections, "data-plane connections")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--depth", f->depth, "requests in flight per connection")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  cmd->add_option("--busy-poll-us", f->busy_poll_us,
                  "busy-poll the bench's transport loops and the spawned node's this long "
                  "after traffic (TransportOptions::busy_poll; 0: off)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  cmd->add_option("--codec", f->codec, "page codec")
      ->check(CLI::IsMember({"lz4", "zstd", "none"}))
      ->capture_default_str();
  cmd->add_option("--tenant", f->tenant, "tenant to attach as")->capture_default_str();
  cmd->add_option("--secret", f->secret, "the tenant's secret");
  cmd->add_flag("--json", f->json, "accepted for compatibility (the output is always JSON)");
  return [f] {
    absl::Status s = Run(*f);
    return s.ok() ? 0 : ExitStatusFor("node", s);
  };
}

}  // namespace farswap::bench
