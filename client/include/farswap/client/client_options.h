// client_options.h: the value types of farswap::Client's API — options,
// snapshot mode, statistics and the latency histogram (client.h has the
// class and an example).
#ifndef FARSWAP_CLIENT_CLIENT_OPTIONS_H_
#define FARSWAP_CLIENT_CLIENT_OPTIONS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "farswap/client/page_codec.h"
#include "farswap/common/latency_histogram.h"

namespace farswap {

// SnapshotMode says whether Store must copy the page before reading it.
enum class SnapshotMode : uint8_t {
  // kCopy (default): the page is copied into a private buffer first, so a
  // concurrent writer can never make the checksum and the compressed bytes
  // describe different contents (docs/invariants.md rule 3).
  kCopy,
  // kStable: the caller guarantees the page does not change until Store (or
  // StoreAsync) returns — e.g. the region has write-protected it. Skips one
  // 4 KiB copy.
  kStable,
};

struct ClientOptions {
  // nodes: gRPC control-plane addresses ("host:port") of the memory nodes.
  std::vector<std::string> nodes;
  // dns_name: "name:port" resolving to several addresses (a Kubernetes
  // headless Service); used in addition to `nodes`, re-resolved every
  // resolve_interval. Addresses that disappear are treated as failed nodes.
  std::string dns_name;
  absl::Duration resolve_interval = absl::Seconds(10);

  // TLS on the control plane (Attach), for nodes started with
  // farswap-server --tls-cert (README.md, "TLS on the control plane"). All
  // empty: plaintext. tls_ca_file: PEM bundle of the CAs the nodes'
  // certificates must chain to (required for TLS). tls_cert_file and
  // tls_key_file: this client's PEM certificate chain and key, for nodes
  // that require client certificates (--tls-client-ca); both or neither.
  // tls_server_name: the name the nodes' certificates carry, when it is not
  // the host dialled (e.g. pod IPs behind dns_name). The files are read at
  // every Attach, so rotated files are picked up; Connect fails with
  // INVALID_ARGUMENT or NOT_FOUND when they do not go together or cannot
  // be read.
  //
  // The data plane: a node started with --data-tls says so in its Attach
  // reply, and the client then connects to its data plane with TLS using
  // the same files (the node's certificate verified against tls_ca_file and
  // tls_server_name, or the host of the data address; tls_cert_file and
  // tls_key_file presented when the node asks), never in plaintext; with no
  // tls_ca_file that node fails to attach (FAILED_PRECONDITION). A node
  // without --data-tls is reached in plaintext (logged once per node) unless
  // require_data_tls refuses it (FAILED_PRECONDITION). Trusting the node's
  // word is safe when the control plane is TLS: nobody else can change it.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  bool require_data_tls = false;

  std::string tenant_id = "default";
  std::string secret;
  std::string client_name = "farswap-client";

  // replicas: copies of every slab (R). 0 picks 2 when at least two nodes
  // are known at Connect, else 1.
  int replicas = 0;
  // pages_per_slab: placement unit. 1024 pages = 4 MiB: few enough slabs
  // that the table is small (a few hundred bytes per slab), large enough
  // that re-replication moves useful runs, small enough that a failed node's
  // slabs spread over every survivor.
  uint32_t pages_per_slab = 1024;

  Codec codec = Codec::kLz4;
  int zstd_level = 1;
  // raw_threshold: encodings this long or longer are sent raw. 3633 is the
  // zspool's huge-class boundary: such a payload costs a whole 4 KiB page on
  // the node anyway, so compressing it only costs CPU on every load.
  uint32_t raw_threshold = 3633;

  // op_timeout: per data-plane request. A node that does not answer within
  // it becomes *suspect*: it takes no new slabs and loads go to its other
  // replicas first, but its copies stay authoritative. A page with no other
  // copy waits for it (never waited on forever: see dead_node_timeout).
  absl::Duration op_timeout = absl::Seconds(2);
  // dead_node_timeout: how long a node may stay suspect (no answer, no
  // successful re-attach) before it is declared dead: only then are its
  // slabs dropped, and a page whose only copy it held is lost (DATA_LOSS,
  // SIGBUS in a region). Slabs with another verified copy are moved off a
  // suspect node at once, by re-replication. A node that comes back with
  // its memory intact (same incarnation) after being declared dead gives
  // back the pages only it held, when nothing has been placed over them.
  absl::Duration dead_node_timeout = absl::Seconds(20);
  // attach_timeout: gRPC Attach and the data-plane connect + HELLO.
  absl::Duration attach_timeout = absl::Seconds(5);
  // health_interval: period of the background PING of every node, of
  // re-attach attempts to down nodes, and of re-replication passes.
  absl::Duration health_interval = absl::Milliseconds(500);
  // io_threads: transport event-loop threads.
  int io_threads = 2;
  // load_connection: open a second data-plane connection to every node and
  // send loads on it, stores, invalidations and pings on the first. A node
  // runs each connection's requests in order, so on one shared connection a
  // fault's load waits behind every store queued before it — and a store
  // that waits for writeback room holds them all. On its own connection a
  // load waits only for other loads. Nothing the client does relies on an
  // order between a load and an unacknowledged store or invalidation (a
  // page is loaded only after its store was acknowledged). false: one
  // connection per node.
  bool load_connection = true;
  // spin_wait: how long a synchronous call (Store, Load, the batches) spins
  // on its completion, yielding the CPU, before it sleeps. About one
  // loopback-to-LAN round trip: a reply that comes within it costs no
  // wake-up of the caller. 0: always sleep.
  absl::Duration spin_wait = absl::Microseconds(100);
  // spin_wait_per_page: a batch call (StoreBatch, LoadBatch) of n pages
  // spins spin_wait + (n - 1) x this, at most kMaxBatchSpinWait: a node
  // answers a BATCH frame after it has handled every page in it, so a
  // 32-page batch's reply comes later than one page's. Measured on the
  // 2-vCPU development VM (client/README, "Waiting for a batch"). Ignored
  // where spin_wait is 0.
  absl::Duration spin_wait_per_page = absl::Microseconds(6);
  static constexpr absl::Duration kMaxBatchSpinWait = absl::Milliseconds(1);
  // poll_while_waiting: while a synchronous call spins (spin_wait), it
  // reads replies itself: it runs the transport's ready I/O on the calling
  // thread (Transport::HelpPoll; TCP only, other backends just spin)
  // instead of waiting for an I/O thread the kernel must wake, which on a
  // small machine is most of a remote page's latency. The price: callbacks
  // of other operations (StoreAsync's, LoadAsync's and InvalidateAsync's
  // `done` included) may then run on a thread inside a synchronous call, so
  // turn it on only where no thread makes a synchronous call while holding
  // a lock such a callback takes. A region's client may (the region makes
  // only synchronous calls); farswap-bench, the demo and the examples do.
  // It also makes the client's transport with quiet_helping, so a batch's
  // waiter keeps the I/O threads from being woken for the replies it reads.
  bool poll_while_waiting = false;
  // busy_poll: the transport's I/O threads keep polling this long after
  // traffic before they sleep (TransportOptions::busy_poll), so a reply is
  // read without waking a thread. Costs a core while pages flow; 0 sleeps
  // at once.
  absl::Duration busy_poll = absl::ZeroDuration();
  // transport: the data-plane backend, "tcp" (default), "ucx" or "rdma",
  // for node data addresses without a scheme. A node's address says its
  // own ("ucx://10.0.0.5:7000", from Attach): the client then uses that
  // backend for it, made on first use with these same options.
  std::string transport = "tcp";
  // data_transport: which of a node's data-plane addresses to dial when it
  // serves several (farswap-server --ucx-data-addr beside TCP; Attach hands
  // out all of them). "auto" (default): UCX when both the node's host and
  // this one have an RDMA device (UCX then runs over verbs), else the node's
  // primary address — over plain TCP our TCP backend is the faster one.
  // "tcp" / "ucx": that backend when the node serves it, else the primary
  // (e.g. "ucx" to reach a node on this machine over shared memory).
  // NodeStats::data_addr and ::carrier say what was picked and what carries it.
  std::string data_transport = "auto";
  // scrub_pages_per_second: a background scrub (Client::Scrub) walks every
  // stored page at this rate, reading each up replica's copy (about
  // `replicas` loads a page) and repairing the bad ones, pass after pass
  // (ClientStats::scrub_*). It finds copies no load reads (the second
  // replica of a page whose first is good) before the good copy is lost.
  // 0 (the default): off. 100 checks 1 GiB of pages (262,144) about every
  // 45 minutes, at R=2 200 page loads a second beside the program's.
  uint64_t scrub_pages_per_second = 0;
  // quarantine_after_bad_copies: a node that serves this many corrupt
  // copies (failing the client's verification, or DATA_LOSS from its own
  // disk check) within quarantine_window is quarantined for
  // quarantine_time: it takes no new slabs, its slabs are re-replicated
  // onto healthy nodes and then freed on it (as for a drain), loads try it
  // last, and read repair stops writing to it. Bad memory or a bad disk
  // would otherwise be repaired over and over while every page it holds has
  // one good copy fewer. Never when fewer than `replicas` other nodes are
  // up and can take slabs (a client whose own memory corrupts what it reads
  // must not shut out the cluster): that node is kept, and a warning logged
  // once per window. Stale copies (an older intact version) and missing
  // ones do not count. 0: never.
  uint64_t quarantine_after_bad_copies = 16;
  absl::Duration quarantine_window = absl::Minutes(1);
  // quarantine_time: how long a quarantined node stays out; then it takes
  // new slabs again (and is quarantined again if it keeps failing). A
  // node that restarts (re-attaches with a new incarnation) leaves
  // quarantine at once: it holds none of the copies it was judged by.
  absl::Duration quarantine_time = absl::Minutes(10);
};

struct NodeStats {
  std::string address;    // gRPC address
  std::string data_addr;  // data plane, from Attach
  // carrier: what carries its frames: "tcp" (TCP backend), or UCX's
  // transport/device, e.g. "tcp/lo.0", "rc_mlx5/mlx5_0:1" (ConnectionStats).
  std::string carrier;
  std::string node_id;
  // state: "up"; "suspect" (stopped answering: no new slabs, copies kept);
  // "down" (declared dead after dead_node_timeout, or restarted empty);
  // "removed" (left the membership).
  std::string state;
  bool full = false;      // answered RESOURCE_EXHAUSTED: no new slabs
  bool draining = false;  // answered FAILED_PRECONDITION: no new slabs
  // quarantined: served too many corrupt copies (ClientOptions::
  // quarantine_after_bad_copies): no new slabs, its slabs moved off.
  bool quarantined = false;
  uint64_t bad_copies = 0;   // corrupt copies it served (loads and scrubs)
  uint64_t quarantines = 0;  // times it was quarantined
  uint64_t slabs = 0;        // slabs with a complete copy here
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t times_down = 0;     // times declared dead
  uint64_t times_suspect = 0;  // times it stopped answering
  uint64_t incarnation = 0;    // the node process's identity (changes on restart)
  std::array<uint64_t, LatencyHistogram::kBuckets> latency_us{};  // request latency
  uint64_t latency_sum_ns = 0;  // sum of the latencies in latency_us
};

struct ClientStats {
  uint64_t stores = 0;  // completed OK
  uint64_t loads = 0;   // completed OK (verified)
  uint64_t invalidates = 0;
  uint64_t store_errors = 0;
  uint64_t load_errors = 0;
  uint64_t bytes_before_compression = 0;  // 4096 per stored page
  uint64_t bytes_after_compression = 0;   // payload bytes per stored page (once, not per replica)
  uint64_t same_pages = 0;
  uint64_t raw_pages = 0;
  uint64_t checksum_failures = 0;  // loads whose payload failed verification on some replica
  // stale_copies: verified copies that were not what this client last
  // stored there (an older version): refused like a corrupt copy.
  uint64_t stale_copies = 0;
  // Read repair: when a load meets a bad, stale or missing copy and another
  // replica serves a verified one, that copy (the same bytes and version)
  // is stored back to the bad replica. copies_repaired: stores the node
  // acknowledged; copy_repairs_failed: refused or unanswered (ABORTED
  // "stale version" when a newer store got there first); copy_repairs_skipped:
  // not tried because the page or its slab changed meanwhile, or the node
  // is no longer an up replica of it (the next load that meets the bad copy
  // tries again).
  uint64_t copies_repaired = 0;
  uint64_t copy_repairs_failed = 0;
  uint64_t copy_repairs_skipped = 0;
  // repair_leftovers_dropped: acknowledged repairs of pages invalidated in
  // the meantime, whose copy the client then dropped from that node with a
  // conditional INVALIDATE (that version or older only).
  uint64_t repair_leftovers_dropped = 0;
  // Scrubbing (Client::Scrub, ClientOptions::scrub_pages_per_second):
  // scrubbed_copies: copies read by scrubs (not in `loads`);
  // scrub_bad_copies: of those, corrupt, stale or missing (repairs are
  // counted above); scrub_unreadable_pages: pages a scrub found no intact
  // copy of; scrub_passes: background passes over every stored page
  // completed.
  uint64_t scrubbed_copies = 0;
  uint64_t scrub_bad_copies = 0;
  uint64_t scrub_unreadable_pages = 0;
  uint64_t scrub_passes = 0;
  // parked_retries: operations that waited for a suspect node or for
  // back-pressure to clear, then were sent again (never failed for it).
  uint64_t parked_retries = 0;
  // recovered_pages: pages whose only copy was on a node declared dead,
  // given back when it returned with its memory intact.
  uint64_t recovered_pages = 0;
  uint64_t failovers = 0;  // loads answered by a replica other than the first tried
  uint64_t rereplicated_slabs = 0;
  uint64_t rereplicated_pages = 0;
  uint64_t lost_pages = 0;         // pages whose every replica was lost (now)
  uint64_t unavailable_loads = 0;  // loads refused: no surviving replica
  uint64_t slabs = 0;
  uint64_t under_replicated_slabs = 0;
  // Where a load's time goes (sums over verified loads, in nanoseconds;
  // divide by `loads` for the mean): load_network_ns from the request
  // leaving to its reply being read (the network and the node),
  // load_decode_ns decoding and verifying it.
  uint64_t load_network_ns = 0;
  uint64_t load_decode_ns = 0;
  int replicas = 0;
  // nodes: one entry per node the client knows: ClientOptions::nodes in
  // their order, then nodes found through dns_name in the order found.
  std::vector<NodeStats> nodes;
};

}  // namespace farswap

#endif  // FARSWAP_CLIENT_CLIENT_OPTIONS_H_
