#!/usr/bin/python3
"""node_metrics_test: scrapes a real farswap-server's Prometheus /metrics.

Starts `farswap-server --metrics-addr 127.0.0.1:0` (a 512 KiB pool over a
backing file, so writeback really happens), reads the bound address from its
--ready-file, and parses every scrape with the Prometheus project's own
exposition-format parser (python3-prometheus-client,
prometheus_client.parser.text_string_to_metric_families). It checks that the
families README.md lists exist with the right types and labels, then drives
the node with a real farswap::Client (tests/server/metrics_probe) and checks
that the figures move as they must: after storing N corpus pages the store
counters, the store latency histogram, the pool and writeback figures and the
per-tenant pages; after loading them back the load counters and histogram,
while the store counters stay put. `farswapctl stats --json` must report
uptime, version, connections and bytes in/out consistent with the scrape.

With --client it checks the client library's collectable instead: the text
exposition of ClientMetrics is parsed and its values compared with the
Client's stats() snapshot.

With --alerts it also checks deploy/prometheus/farswap-alerts.yaml against the
scrape: every series a rule of the node's group (with --client, the client's
group) names is served, with every label its matchers, its `by (...)` and its
annotations' $labels use (instance and job come from Prometheus). Rules on
RegionMetrics' farswap_region_* series are left to deploy_alerts_test, which
checks that they are documented: no region runs here.

Every process is started with PR_SET_PDEATHSIG, so nothing outlives the test.
"""
import argparse
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml
from prometheus_client.parser import text_string_to_metric_families

PR_SET_PDEATHSIG = 1
PAGES = 1024  # corpus pages stored and loaded


def die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def start_node(server, tmp):
    ready = os.path.join(tmp, "ready.json")
    log = open(os.path.join(tmp, "server.log"), "w")
    proc = subprocess.Popen(
        [server, "--metrics-addr", "127.0.0.1:0", "--ready-file", ready, "--pool-limit", "512K",
         "--backing-file", os.path.join(tmp, "backing"), "--backing-size", "64M",
         "--node-id", "metrics-test", "--allow-anonymous"],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    # The ready file appears (atomically renamed) once every listener is
    # bound; a bounded wait for another process's condition.
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        check(proc.poll() is None, f"farswap-server exited with {proc.returncode}")
        check(time.monotonic() < deadline, "farswap-server not ready after 30 s")
        time.sleep(0.02)
    with open(ready) as f:
        return proc, json.load(f)


def parse(text):
    """Families by name: {name: (type, [(sample_name, labels, value)])}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        check(fam.name not in out, f"family {fam.name} exposed twice")
        out[fam.name] = (fam.type, [(s.name, s.labels, s.value) for s in fam.samples])
    return out


def scrape(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        check(r.status == 200, f"GET /metrics: HTTP {r.status}")
        return parse(r.read().decode())


def value(fams, family, sample=None, **labels):
    """The one sample of `family` (sample name defaults to the family's) with `labels`."""
    check(family in fams, f"family {family} missing")
    want = sample or family
    hits = [v for (n, l, v) in fams[family][1]
            if n == want and all(l.get(k) == str(x) for k, x in labels.items())]
    check(len(hits) == 1, f"{want}{labels}: {len(hits)} samples, want 1")
    return hits[0]


def hist_count(fams, family, **labels):
    return value(fams, family, family + "_count", **labels)


def halt_polling_off():
    """1 where this host (the node's: the same) is a haltpoll guest that never polls."""
    def read(path):
        try:
            with open(path) as f:
                return f.readline().strip()
        except OSError:
            return ""
    driver = read("/sys/devices/system/cpu/cpuidle/current_driver")
    window = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    return 1 if driver == "haltpoll" and window == "0" else 0


# The node's families: name (as the parser reports it, counters without
# _total) -> (type, label names every sample carries).
NODE_FAMILIES = {
    "farswap_node_info": ("gauge", {"node_id", "version"}),
    "farswap_node_uptime_seconds": ("gauge", set()),
    "farswap_node_halt_polling_off": ("gauge", set()),
    "farswap_pool_orig_data_size_bytes": ("gauge", set()),
    "farswap_pool_compr_data_size_bytes": ("gauge", set()),
    "farswap_pool_mem_used_total_bytes": ("gauge", set()),
    "farswap_pool_mem_limit_bytes": ("gauge", set()),
    "farswap_pool_mem_used_max_bytes": ("gauge", set()),
    "farswap_pool_same_pages": ("gauge", set()),
    "farswap_pool_pages_compacted": ("counter", set()),
    "farswap_pool_huge_pages": ("gauge", set()),
    "farswap_pool_metadata_bytes": ("gauge", set()),
    "farswap_node_stored_pages": ("gauge", set()),
    "farswap_node_pages_on_backing": ("gauge", set()),
    "farswap_node_draining": ("gauge", set()),
    "farswap_store_load_misses": ("counter", set()),
    "farswap_store_stale_stores": ("counter", set()),
    "farswap_store_rejects": ("counter", {"reason"}),
    "farswap_backing_written_back_pages": ("counter", set()),
    "farswap_backing_written_back_bytes": ("counter", set()),
    "farswap_backing_reads": ("counter", set()),
    "farswap_backing_writes": ("counter", set()),
    "farswap_backing_registered_writes": ("counter", set()),
    "farswap_backing_read_requests": ("counter", set()),
    "farswap_backing_reads_coalesced": ("counter", set()),
    "farswap_backing_reads_in_flight": ("gauge", set()),
    "farswap_backing_promotions": ("counter", set()),
    "farswap_backing_errors": ("counter", {"op"}),
    "farswap_backing_size_bytes": ("gauge", set()),
    "farswap_backing_free_bytes": ("gauge", set()),
    "farswap_backing_io_error": ("gauge", set()),
    "farswap_backing_bytes_written": ("counter", set()),
    "farswap_backing_segments": ("gauge", set()),
    "farswap_backing_free_segments": ("gauge", set()),
    "farswap_backing_live_bytes": ("gauge", set()),
    "farswap_backing_used_bytes": ("gauge", set()),
    "farswap_cleaner_moves": ("counter", set()),
    "farswap_cleaner_segments": ("counter", set()),
    "farswap_cleaner_space_segments": ("counter", set()),
    "farswap_writeback_aborted": ("counter", set()),
    "farswap_writeback_second_chances": ("counter", set()),
    "farswap_writeback_duration_seconds": ("histogram", set()),
    "farswap_cold_passes": ("counter", set()),
    "farswap_cold_recompressed_pages": ("counter", set()),
    "farswap_cold_saved_bytes": ("counter", set()),
    "farswap_cold_kept_pages": ("counter", set()),
    "farswap_cold_aborted": ("counter", set()),
    "farswap_cold_loads": ("counter", set()),
    "farswap_node_connections": ("gauge", set()),
    "farswap_node_connections_by_carrier": ("gauge", {"backend", "carrier"}),
    "farswap_node_connections_accepted": ("counter", set()),
    "farswap_node_hello_refused": ("counter", set()),
    "farswap_node_received_bytes": ("counter", set()),
    "farswap_node_sent_bytes": ("counter", set()),
    "farswap_node_requests_to_workers": ("counter", set()),
    "farswap_node_queued_requests": ("gauge", set()),
    "farswap_node_read_pauses": ("counter", set()),
    "farswap_node_ops": ("counter", {"op", "status"}),
    "farswap_node_op_duration_seconds": ("histogram", {"op"}),
    "farswap_node_sessions": ("gauge", set()),
    "farswap_tenant_stored_pages": ("gauge", {"tenant"}),
    "farswap_tenant_stored_bytes": ("gauge", {"tenant"}),
    "farswap_tenant_quota_bytes": ("gauge", {"tenant"}),
    "farswap_tenant_rejects": ("counter", {"tenant", "reason"}),
    "farswap_auth_refusals": ("counter", {"reason"}),
    "farswap_tenant_reloads": ("counter", {"result"}),
    "farswap_admin_token_reloads": ("counter", {"result"}),
}


def check_families(fams, expected):
    for name, (typ, labels) in expected.items():
        check(name in fams, f"family {name} missing")
        check(fams[name][0] == typ, f"{name}: type {fams[name][0]}, want {typ}")
        for (sample, got, _) in fams[name][1]:
            got_names = set(got) - {"le"}  # histogram buckets add le
            check(got_names == labels, f"{sample}: labels {sorted(got_names)}, want {sorted(labels)}")


# Labels Prometheus itself puts on every scraped series.
TARGET_LABELS = {"instance", "job"}
SERIES = re.compile(r"\b(farswap_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")


def check_alert_rules(rules_path, group, scrapes, skip_prefix=None):
    """Every series the group's rules name is in one of `scrapes`, with the labels they use."""
    served = {}  # sample name -> label names (le aside)
    for fams in scrapes:
        for (_, samples) in fams.values():
            for (name, labels, _) in samples:
                served.setdefault(name, set()).update(set(labels) - {"le"})
    with open(rules_path) as f:
        doc = yaml.safe_load(f)
    groups = {g["name"]: g for g in doc["groups"]}
    check(group in groups, f"{rules_path}: no group {group}")
    checked = 0
    for rule in groups[group]["rules"]:
        name, expr = rule["alert"], rule["expr"]
        series = SERIES.findall(expr)
        check(series, f"alert {name}: names no farswap series")
        used = set(TEMPLATE_LABEL.findall(" ".join(rule.get("annotations", {}).values())))
        for clause in BY_CLAUSE.findall(expr):
            used |= {l.strip() for l in clause.split(",") if l.strip()}
        for (metric, matchers) in series:
            if skip_prefix and metric.startswith(skip_prefix):
                continue
            check(metric in served, f"alert {name}: {metric} is not served")
            wanted = set(MATCHER_LABEL.findall(matchers)) | used
            missing = wanted - served[metric] - TARGET_LABELS
            check(not missing, f"alert {name}: {metric} has no label {sorted(missing)}")
            checked += 1
    check(checked > 0, f"group {group}: no series checked")
    return checked


class Probe:
    def __init__(self, probe, grpc_addr, corpus):
        self.proc = subprocess.Popen([probe, "--node", grpc_addr, "--corpus", corpus],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=die_with_parent)

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def line(self):
        line = self.proc.stdout.readline()
        check(line, f"metrics_probe exited ({self.proc.poll()})")
        return line

    def run(self, command):
        self.send(command)
        reply = json.loads(self.line())
        check(reply.get("ok"), f"metrics_probe '{command}': {reply}")
        return reply

    def client_metrics(self):
        self.send("client-metrics")
        parts, current = [], []
        while len(parts) < 2:
            line = self.line()
            if line.startswith("# END"):
                parts.append("".join(current))
                current = []
            else:
                current.append(line)
        return parts[0], parts[1], json.loads(self.line())

    def quit(self):
        self.send("quit")
        check(self.proc.wait(timeout=30) == 0, f"metrics_probe exit {self.proc.returncode}")


def node_test(args, node, ready):
    addr = ready["metrics_addr"]
    check(addr.startswith("127.0.0.1:") and not addr.endswith(":0"),
          f"ready file metrics_addr {addr}: want the bound port")
    before = scrape(addr)
    check_families(before, NODE_FAMILIES)
    check(value(before, "farswap_node_info", node_id="metrics-test") == 1, "node_info")
    check(value(before, "farswap_node_halt_polling_off") == halt_polling_off(),
          "halt_polling_off: not what this host's sysfs says")
    check(value(before, "farswap_pool_mem_limit_bytes") == 512 * 1024, "mem_limit")
    check(value(before, "farswap_backing_size_bytes") == 64 << 20, "backing size")
    check(value(before, "farswap_tenant_stored_pages", tenant="default") == 0, "tenant pages")
    for op in ("store", "load"):
        check(hist_count(before, "farswap_node_op_duration_seconds", op=op) == 0, f"{op} count")
    for reason in ("unauthenticated", "permission_denied"):
        check(value(before, "farswap_auth_refusals", "farswap_auth_refusals_total",
                    reason=reason) == 0, f"auth refusals {reason} before any")

    probe = Probe(args.probe, ready["grpc_addr"], args.corpus)
    probe.run(f"store {PAGES}")
    stored = scrape(addr)
    store_ok = value(stored, "farswap_node_ops", "farswap_node_ops_total", op="store", status="OK")
    check(store_ok >= PAGES, f"store ops {store_ok} < {PAGES}")
    check(hist_count(stored, "farswap_node_op_duration_seconds", op="store") >= PAGES,
          "store histogram count did not move by the pages stored")
    check(value(stored, "farswap_node_op_duration_seconds", "farswap_node_op_duration_seconds_sum",
                op="store") > 0, "store histogram sum")
    check(value(stored, "farswap_node_ops", "farswap_node_ops_total", op="hello", status="OK") >= 1,
          "hello")
    check(value(stored, "farswap_node_ops", "farswap_node_ops_total", op="load", status="OK") == 0,
          "loads before any load")
    check(value(stored, "farswap_node_stored_pages") == PAGES, "node stored pages")
    check(value(stored, "farswap_tenant_stored_pages", tenant="default") == PAGES, "tenant pages")
    check(value(stored, "farswap_tenant_stored_bytes", tenant="default") > 0, "tenant bytes")
    check(value(stored, "farswap_pool_orig_data_size_bytes") > 0, "orig_data_size")
    check(value(stored, "farswap_pool_mem_used_max_bytes") > 0, "mem_used_max")
    written = value(stored, "farswap_backing_written_back_pages",
                    "farswap_backing_written_back_pages_total")
    check(written > 0, "no writeback with a 512 KiB pool")
    # Packed: a written-back page costs its compressed bytes, not a block.
    written_bytes = value(stored, "farswap_backing_written_back_bytes",
                          "farswap_backing_written_back_bytes_total")
    check(0 < written_bytes < written * 4096, f"written back bytes {written_bytes}")
    check(value(stored, "farswap_backing_bytes_written", "farswap_backing_bytes_written_total") >=
          written_bytes, "bytes written below the compressed bytes written back")
    check(value(stored, "farswap_backing_segments") == 64, "64 segments of 1 MiB")
    check(value(stored, "farswap_backing_free_segments") < 64, "no segment in use")
    live = value(stored, "farswap_backing_live_bytes")
    check(0 < live <= value(stored, "farswap_backing_used_bytes"), f"live bytes {live}")
    writeback_timed = hist_count(stored, "farswap_writeback_duration_seconds")
    check(writeback_timed > 0, "writeback histogram empty after writeback")
    check(value(stored, "farswap_backing_free_bytes") < 64 << 20, "backing free bytes")
    check(value(stored, "farswap_node_received_bytes", "farswap_node_received_bytes_total") >
          value(stored, "farswap_tenant_stored_bytes", tenant="default"),
          "received bytes below the payloads stored")
    check(value(stored, "farswap_node_sent_bytes", "farswap_node_sent_bytes_total") > 0, "sent")
    check(value(stored, "farswap_node_connections") >= 1, "connections")
    check(value(stored, "farswap_node_connections_by_carrier", backend="tcp", carrier="tcp") ==
          value(stored, "farswap_node_connections"), "connections by carrier")
    check(value(stored, "farswap_node_sessions") >= 1, "sessions")
    # Bucket counts are cumulative and end with +Inf = _count.
    buckets = [(float(l["le"]), v) for (n, l, v) in stored["farswap_node_op_duration_seconds"][1]
               if n.endswith("_bucket") and l["op"] == "store"]
    check(buckets == sorted(buckets), "buckets not cumulative")
    check(buckets[-1][0] == float("inf") and buckets[-1][1] ==
          hist_count(stored, "farswap_node_op_duration_seconds", op="store"), "+Inf bucket")

    probe.run(f"load {PAGES}")
    loaded = scrape(addr)
    load_ok = value(loaded, "farswap_node_ops", "farswap_node_ops_total", op="load", status="OK")
    check(load_ok >= PAGES, f"load ops {load_ok} < {PAGES}")
    check(hist_count(loaded, "farswap_node_op_duration_seconds", op="load") >= PAGES,
          "load histogram count")
    check(value(loaded, "farswap_node_ops", "farswap_node_ops_total", op="store", status="OK") ==
          store_ok, "store ops moved during loads")
    # Writeback may still run between scrapes: a write is counted before it
    # is timed, so a later count of writes covers every write timed earlier.
    check(writeback_timed <= value(loaded, "farswap_backing_writes", "farswap_backing_writes_total"),
          "writeback histogram counts more writes than were made")
    check(value(loaded, "farswap_backing_reads", "farswap_backing_reads_total") > 0,
          "loads of written-back pages read the backing store")
    check(value(loaded, "farswap_node_sent_bytes", "farswap_node_sent_bytes_total") >
          value(stored, "farswap_node_sent_bytes", "farswap_node_sent_bytes_total") +
          value(stored, "farswap_tenant_stored_bytes", tenant="default") // 2,
          "sent bytes did not grow with the pages loaded")

    ctl = subprocess.run([args.farswapctl, "--node", ready["grpc_addr"], "stats", "--json"],
                         capture_output=True, text=True, timeout=30, preexec_fn=die_with_parent)
    check(ctl.returncode == 0, f"farswapctl stats: {ctl.stderr}")
    n = json.loads(ctl.stdout)["node"]
    info_version = [l["version"] for (_, l, _) in loaded["farswap_node_info"][1]][0]
    check(n["version"] == info_version, f"version {n['version']} vs {info_version}")
    # Through io_uring, segment writes go from the registered arena; a pass
    # counts its registered writes when it ends, so they trail the writes.
    registered = int(n["backing"].get("registered_writes", 0))
    check(registered <= int(n["backing"]["writes"]),
          f"registered writes {registered} > writes {n['backing']['writes']}")
    if n["backing"]["write_engine"] == "io_uring":
        check(registered > 0, "no segment write went from the registered buffers")
    # The node runs with the default --writeback-threads: 2 where it may run
    # on two CPUs or more (it inherits this process's affinity), else 1.
    default_threads = 2 if len(os.sched_getaffinity(0)) >= 2 else 1
    check(int(n["backing"].get("writeback_threads", 0)) == default_threads,
          f"writeback_threads {n['backing'].get('writeback_threads')}, "
          f"expected {default_threads}")
    check(int(n["uptime_seconds"]) >= 0, "uptime")
    check(n["connections"] >= 1 and int(n["connections_accepted"]) >= 1, "ctl connections")
    # Later than the scrape: at least what it saw (the client pings meanwhile).
    check(int(n["bytes_received"]) >=
          value(loaded, "farswap_node_received_bytes", "farswap_node_received_bytes_total"),
          "ctl bytes_received")
    check(int(n["bytes_sent"]) >=
          value(loaded, "farswap_node_sent_bytes", "farswap_node_sent_bytes_total"),
          "ctl bytes_sent")
    check(n["auth_refusals"] == {"unauthenticated": "0", "permission_denied": "0"},
          f"ctl auth_refusals {n['auth_refusals']}")

    # A credential that is not this node's admin token (it has none; with
    # --allow-anonymous only no credential is anonymous) is refused, counted
    # once, in /metrics as in the stats.
    wrong = os.path.join(args.tmp, "wrong-token")
    with open(wrong, "w") as f:
        f.write("not-an-admin-token-0123456789\n")
    ctl = subprocess.run([args.farswapctl, "--node", ready["grpc_addr"], "--admin-token-file", wrong,
                          "compact"],
                         capture_output=True, text=True, timeout=30, preexec_fn=die_with_parent)
    check(ctl.returncode == 1 and "UNAUTHENTICATED" in ctl.stderr,
          f"compact with a wrong token: exit {ctl.returncode}, {ctl.stderr}")
    refused = scrape(addr)
    check(value(refused, "farswap_auth_refusals", "farswap_auth_refusals_total",
                reason="unauthenticated") == 1, "unauthenticated refusal not counted")
    check(value(refused, "farswap_auth_refusals", "farswap_auth_refusals_total",
                reason="permission_denied") == 0, "permission_denied moved")
    if args.alerts:
        n = check_alert_rules(args.alerts, "farswap-memory-node", [before, stored, refused])
        print(f"alert rules: {n} series of group farswap-memory-node served")
    probe.quit()


CLIENT_FAMILIES = {
    "farswap_client_ops": ("counter", {"op", "result"}),
    "farswap_client_stored_bytes": ("counter", set()),
    "farswap_client_stored_compressed_bytes": ("counter", set()),
    "farswap_client_same_pages": ("counter", set()),
    "farswap_client_raw_pages": ("counter", set()),
    "farswap_client_checksum_failures": ("counter", set()),
    "farswap_client_failovers": ("counter", set()),
    "farswap_client_copy_repairs": ("counter", {"result"}),
    "farswap_client_scrubbed_copies": ("counter", {"result"}),
    "farswap_client_scrub_unreadable_pages": ("counter", set()),
    "farswap_client_scrub_passes": ("counter", set()),
    "farswap_client_lost_pages": ("gauge", set()),
    "farswap_client_slabs": ("gauge", set()),
    "farswap_client_replicas": ("gauge", set()),
    "farswap_client_node_state": ("gauge", {"node", "state"}),
    "farswap_client_node_info": ("gauge", {"node", "node_id", "data_addr", "carrier", "incarnation"}),
    "farswap_client_node_slabs": ("gauge", {"node"}),
    "farswap_client_node_quarantined": ("gauge", {"node"}),
    "farswap_client_node_bad_copies": ("counter", {"node"}),
    "farswap_client_node_quarantines": ("counter", {"node"}),
    "farswap_client_node_requests": ("counter", {"node"}),
    "farswap_client_node_request_duration_seconds": ("histogram", {"node"}),
}


def client_test(args, node, ready):
    probe = Probe(args.probe, ready["grpc_addr"], args.corpus)
    probe.run(f"store {PAGES}")
    probe.run(f"load {PAGES}")
    probe.run(f"scrub {PAGES}")
    live_text, snap_text, stats = probe.client_metrics()
    live, snap = parse(live_text), parse(snap_text)
    check_families(live, CLIENT_FAMILIES)
    check_families(snap, CLIENT_FAMILIES)
    ops = "farswap_client_ops_total"
    # The snapshot's exposition carries exactly the snapshot's figures.
    for fams in (snap, live):
        for (op, result, key) in (("store", "ok", "stores"), ("load", "ok", "loads"),
                                  ("store", "error", "store_errors"),
                                  ("load", "error", "load_errors")):
            check(value(fams, "farswap_client_ops", ops, op=op, result=result) == stats[key],
                  f"client ops {op}/{result} != stats {key}")
        for (fam, key) in (("farswap_client_stored_bytes", "bytes_before_compression"),
                           ("farswap_client_stored_compressed_bytes", "bytes_after_compression"),
                           ("farswap_client_same_pages", "same_pages"),
                           ("farswap_client_raw_pages", "raw_pages")):
            check(value(fams, fam, fam + "_total") == stats[key], f"{fam} != stats {key}")
        for (result, key) in (("ok", "copies_repaired"), ("failed", "copy_repairs_failed"),
                              ("skipped", "copy_repairs_skipped")):
            check(value(fams, "farswap_client_copy_repairs", "farswap_client_copy_repairs_total",
                        result=result) == stats[key], f"copy repairs {result} != stats {key}")
        scrubbed = "farswap_client_scrubbed_copies"
        check(value(fams, scrubbed, scrubbed + "_total", result="ok") ==
              stats["scrubbed_copies"] - stats["scrub_bad_copies"], "scrubbed ok != stats")
        check(value(fams, scrubbed, scrubbed + "_total", result="bad") ==
              stats["scrub_bad_copies"], "scrubbed bad != stats")
        for (fam, key) in (("farswap_client_scrub_unreadable_pages", "scrub_unreadable_pages"),
                           ("farswap_client_scrub_passes", "scrub_passes")):
            check(value(fams, fam, fam + "_total") == stats[key], f"{fam} != stats {key}")
        check(value(fams, "farswap_client_slabs") == stats["slabs"], "slabs")
        check(value(fams, "farswap_client_replicas") == stats["replicas"] == 1, "replicas")
    check(stats["stores"] >= PAGES and stats["loads"] >= PAGES, f"client stats {stats}")
    # R = 1: the scrub read each stored page's one copy, all intact.
    check(stats["scrubbed_copies"] == PAGES and stats["scrub_bad_copies"] == 0,
          f"scrub stats {stats}")
    check(stats["bytes_before_compression"] == PAGES * 4096, "bytes before compression")
    (n,) = stats["nodes"]
    check(n["address"] == ready["grpc_addr"], "node address")
    check(value(snap, "farswap_client_node_state", node=n["address"], state="up") == 1, "state up")
    check(value(snap, "farswap_client_node_state", node=n["address"], state="down") == 0, "down")
    check(value(snap, "farswap_client_node_requests", "farswap_client_node_requests_total",
                node=n["address"]) == n["requests"], "node requests")
    check(value(snap, "farswap_client_node_quarantined", node=n["address"]) ==
          (1 if n["quarantined"] else 0), "node quarantined")
    for (fam, key) in (("farswap_client_node_bad_copies", "bad_copies"),
                       ("farswap_client_node_quarantines", "quarantines")):
        check(value(snap, fam, fam + "_total", node=n["address"]) == n[key], f"node {key}")
    check(not n["quarantined"] and n["bad_copies"] == 0, f"a healthy node's copies: {n}")
    hist = "farswap_client_node_request_duration_seconds"
    check(value(snap, hist, hist + "_count", node=n["address"]) == n["latency_count"], "count")
    check(abs(value(snap, hist, hist + "_sum", node=n["address"]) - n["latency_sum_ns"] * 1e-9)
          < 1e-6, "sum")
    check(n["latency_count"] >= 2 * PAGES // 256, "latency histogram empty")
    # Live: taken after the snapshot, so at least as far along.
    check(value(live, "farswap_client_node_requests", "farswap_client_node_requests_total",
                node=n["address"]) >= n["requests"], "live node requests")
    if args.alerts:
        n = check_alert_rules(args.alerts, "farswap-client", [snap, live],
                              skip_prefix="farswap_region_")
        print(f"alert rules: {n} series of group farswap-client served")
    probe.quit()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--farswapctl", required=True)
    p.add_argument("--probe", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--client", action="store_true", help="check the client library's metrics")
    p.add_argument("--alerts", help="deploy/prometheus/farswap-alerts.yaml: check its series too")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="farswap-metrics-") as tmp:
        args.tmp = tmp  # where the test writes its files
        node, ready = start_node(args.server, tmp)
        try:
            (client_test if args.client else node_test)(args, node, ready)
        except Failure as e:
            print(f"FAIL: {e}", file=sys.stderr)
            with open(os.path.join(tmp, "server.log")) as f:
                sys.stderr.write(f.read()[-4000:])
            return 1
        finally:
            node.kill()
            node.wait()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
