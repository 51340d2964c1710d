// daemonset_test.mjs: the rendered memory-node DaemonSet run the way a
// kubelet would run it, on real processes (ctest deploy_daemonset_test;
// deploy/README.md, "Checks").
//
//   node daemonset_test.mjs REPO_ROOT BUILD_DIR [OVERLAY]   (root: network namespaces)
//
// It renders OVERLAY (default deploy/kubernetes/overlays/dev; render.mjs) and, for two pods
// of the DaemonSet, each in its own network namespace with a pod IP on a
// bridge in a third ("host") namespace, where the kubelet's probes and the
// client run:
//  1. creates the hostPath folder as the kubelet does (DirectoryOrCreate:
//     root-owned, 0755) and the Secret volume (files of defaultMode, group
//     fsGroup);
//  2. runs each init container, then the container: its exact command line
//     (image ENTRYPOINT from deploy/Dockerfile + args), with the kubelet's
//     $(VAR) expansion of env and downward-API values (status.podIP,
//     spec.nodeName, metadata.name/namespace), as the securityContext's user,
//     groups (fsGroup) and capabilities (setpriv), no new privileges. Paths
//     under a volume's mountPath become the test's folders; the image's
//     binaries (COPY --from=build /build/X) become BUILD_DIR/X;
//  3. waits for the readiness probe and runs the liveness probe, each the
//     manifest's own probe: a grpc probe (port and service) through
//     grpc_health_probe against the pod IP, from the host namespace; an
//     exec probe as its command in the pod, as the container's user;
//  4. starts a client (drain_client, R=1) with the tenant of the rendered
//     Secret that stores pages on both nodes (checked in each node's stats);
//     The farswap-admin-token Secret, shipped empty, gets a random token,
//     as an operator must fill it; the node-wide stats are read with it;
//  5. rotates the admin token as an operator does (a new token in the Secret;
//     the kubelet replaces the mounted file) and requires both nodes to put
//     it in force without a restart and to refuse the old one: preStop
//     reads the same file;
//  6. runs pod A's preStop command in pod A as the container's user, bounded
//     by terminationGracePeriodSeconds, and requires: exit 0, pod A holds no
//     pages when it returns, pod A's readiness probe fails (draining);
//  7. sends pod A SIGTERM, as the kubelet does next (clean exit required),
//     and has the client read every page back, now from pod B only.
// In every overlay, each TCP port the node listens on beyond loopback must
// be opened by a rendered NetworkPolicy. With --ucx-data-addr (overlay
// dev-ucx) the client dials UCX and each node must carry its connections
// over UCX (node stats, connections by carrier).
// With a TLS control plane (--tls-cert in the container's args, overlay
// dev-tls) the test fills the farswap-tls Secret, shipped empty, with a CA
// and a node certificate for the name the probes verify (openssl CLI), and
// also requires that a plaintext health check of the gRPC port fails; the
// client, the stats reads and preStop speak TLS.
// It fails for a readiness probe asking for the wrong service, a node that
// hands clients 0.0.0.0, a backing folder the server cannot write, a node
// that keeps its old admin token after a rotation, and a preStop that
// returns before the pages have moved.
//
// Exit 0 pass, 1 fail, 77 cannot run here (not root, no `ip`/`setpriv`, no
// network namespaces): ctest reports it skipped.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expandEnv, flag, openedPortRanges, parseDockerfile } from "./manifest_lib.mjs";
import { render } from "./render.mjs";

const [root, buildDir, overlayArg] = process.argv.slice(2);
if (!root || !buildDir) {
  console.error("usage: node daemonset_test.mjs REPO_ROOT BUILD_DIR [OVERLAY]");
  process.exit(2);
}
const OVERLAY = overlayArg ?? "deploy/kubernetes/overlays/dev";
const TEST = `deploy_daemonset_test (${path.basename(OVERLAY)})`;
const PAGES = 512;
const TAG = `fswk-${process.pid}`;
const HOST_NS = `${TAG}-h`;
const SUBNET = "10.215.0";

function log(msg) {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${msg}`);
}

function skip(why) {
  console.log(`SKIPPED: ${why}`);
  process.exit(77);
}

function which(cmd) {
  for (const d of ["/usr/sbin", "/sbin", "/usr/bin", "/bin", ...(process.env.PATH ?? "").split(":")]) {
    if (d && fs.existsSync(path.join(d, cmd))) return path.join(d, cmd);
  }
  return null;
}

function run(argv, opts = {}) {
  return execFileSync(argv[0], argv.slice(1), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...opts });
}

// ---- preconditions -------------------------------------------------------
if (process.getuid() !== 0) skip("needs root (network namespaces, setpriv)");
const IP = which("ip");
const SS = which("ss");
const SETPRIV = which("setpriv");
const UNSHARE = which("unshare");
const ENV = which("env");
if (!IP || !SS || !SETPRIV || !UNSHARE || !ENV) {
  skip("needs `ip` and `ss` (iproute2), `setpriv` and `unshare` (util-linux), `env` (coreutils)");
}

// ---- cleanup, also of runs killed before they could clean up -------------
const children = new Set();
const namespaces = [];
let tmp = null;
function cleanup() {
  for (const c of children) {
    try {
      process.kill(c.pid, "SIGKILL");
    } catch {}
  }
  for (const ns of namespaces.reverse()) {
    try {
      run([IP, "netns", "del", ns]);
    } catch {}
  }
  if (tmp && !process.env.FARSWAP_DEPLOY_TEST_KEEP) fs.rmSync(tmp, { recursive: true, force: true });
}
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
for (const ns of fs.existsSync("/run/netns") ? fs.readdirSync("/run/netns") : []) {
  const m = /^fswk-(\d+)-/.exec(ns);
  if (!m || alive(Number(m[1]))) continue;
  try {
    run([IP, "netns", "del", ns]);
  } catch {}
}
for (const d of fs.readdirSync(os.tmpdir())) {
  const m = /^farswap-daemonset-(\d+)-/.exec(d);
  if (m && !alive(Number(m[1]))) fs.rmSync(path.join(os.tmpdir(), d), { recursive: true, force: true });
}

// ---- the manifests --------------------------------------------------------
const resources = render(path.join(root, OVERLAY));
const ds = resources.find((r) => r.kind === "DaemonSet" && r.metadata.name === "farswap-memory-node");
assert.ok(ds, `${OVERLAY} renders no DaemonSet farswap-memory-node`);
const podSpec = ds.spec.template.spec;
const container = podSpec.containers.find((c) => c.name === "memory-node");
assert.ok(container, "no container memory-node");
const grace = podSpec.terminationGracePeriodSeconds ?? 30;
const { stages, last } = parseDockerfile(path.join(root, "deploy/Dockerfile"));

// imageFiles: what the memory-node image holds at each path, on this
// machine: the build stage's /build/X is BUILD_DIR/X. An entry of
// FARSWAP_DEPLOY_TEST_BIN_DIR (optional) replaces a binary of the same name.
function imageFiles() {
  const files = new Map();
  let entrypoint;
  for (let s = stages[last]; s; s = stages[s.from]) {
    for (const { src, dst } of s.copies) {
      const to = dst.endsWith("/") ? dst + path.basename(src) : dst;
      let local = path.join(buildDir, src.replace(/^\/build\/?/, ""));
      const override = process.env.FARSWAP_DEPLOY_TEST_BIN_DIR;
      if (override && fs.existsSync(path.join(override, path.basename(src)))) {
        local = path.join(override, path.basename(src));
      }
      if (!files.has(to)) files.set(to, local);
    }
    entrypoint ??= s.entrypoint;
  }
  return { files, entrypoint };
}
const image = imageFiles();

// ADMIN_TOKEN: what the operator puts in the farswap-admin-token Secret,
// which the manifests ship empty (a node refuses to start with it as it is).
const ADMIN_TOKEN = crypto.randomBytes(32).toString("hex");

// TLS: whether the node serves its control plane over TLS, and the name its
// certificate must carry: the one the readiness probe verifies.
const nodeArgs = container.args ?? [];
const TLS = flag(nodeArgs, "tls-cert") !== undefined;
// UCX: whether the node serves the data plane over UCX too (overlay
// dev-ucx); the client then dials UCX (--data-transport ucx).
const UCX = flag(nodeArgs, "ucx-data-addr") !== undefined;
const TLS_NAME = TLS ? flag(container.readinessProbe?.exec?.command ?? [], "tls-server-name") : undefined;
let tlsMaterial = null;

// makeTlsMaterial: what the operator (or cert-manager) puts in the
// farswap-tls Secret: a throwaway CA and a node certificate for TLS_NAME.
function makeTlsMaterial() {
  if (tlsMaterial) return tlsMaterial;
  assert.ok(TLS_NAME, "the TLS readiness probe names no --tls-server-name to issue the certificate for");
  const dir = path.join(tmp, "tls");
  fs.mkdirSync(dir, { recursive: true });
  const f = (n) => path.join(dir, n);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(["openssl", "req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.crt"), "-days", "2",
    "-subj", "/CN=farswap-test-ca"]);
  run(["openssl", "req", ...ec, "-keyout", f("tls.key"), "-out", f("node.csr"), "-subj", "/CN=farswap-node"]);
  fs.writeFileSync(f("node.ext"), `subjectAltName=DNS:${TLS_NAME}\nextendedKeyUsage=serverAuth\n`);
  run(["openssl", "x509", "-req", "-in", f("node.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"),
    "-CAcreateserial", "-days", "2", "-extfile", f("node.ext"), "-out", f("tls.crt")]);
  tlsMaterial = { dir, ca: f("ca.crt"), files: {} };
  for (const k of ["tls.crt", "tls.key", "ca.crt"]) tlsMaterial.files[k] = fs.readFileSync(f(k), "utf8");
  return tlsMaterial;
}

// tlsClientFlags: what a client outside the pod passes to verify a node.
function tlsClientFlags() {
  return TLS ? ["--tls-ca", makeTlsMaterial().ca, "--tls-server-name", TLS_NAME] : [];
}

function secretFiles(name) {
  const s = resources.find((r) => r.kind === "Secret" && r.metadata.name === name);
  assert.ok(s, `no Secret ${name}`);
  const out = { ...(s.stringData ?? {}) };
  for (const [k, v] of Object.entries(s.data ?? {})) out[k] = Buffer.from(v, "base64").toString();
  if (name === "farswap-admin-token") {
    assert.equal(out.token, "", "the shipped admin token must be empty (unusable)");
    out.token = ADMIN_TOKEN;
  }
  if (name === "farswap-tls") {
    for (const k of ["tls.crt", "tls.key", "ca.crt"]) {
      assert.equal(out[k], "", `the shipped farswap-tls Secret must be empty (${k})`);
    }
    Object.assign(out, makeTlsMaterial().files);
  }
  return out;
}

// ---- a pod ---------------------------------------------------------------
class Pod {
  constructor(name, index) {
    this.name = name;
    this.ns = `${TAG}-${name}`;
    this.ip = `${SUBNET}.${10 + index}`;
    this.node = `worker-${name}`;
    this.dir = path.join(tmp, name);
    this.volumes = new Map();  // volume name -> folder on this machine
    this.log = path.join(this.dir, "memory-node.log");
  }

  setUpNetwork() {
    run([IP, "netns", "add", this.ns]);
    namespaces.push(this.ns);
    const veth = `v${this.name}`;
    run([IP, "-n", HOST_NS, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", this.ns]);
    run([IP, "-n", HOST_NS, "link", "set", veth, "master", "br0", "up"]);
    run([IP, "-n", this.ns, "addr", "add", `${this.ip}/24`, "dev", "eth0"]);
    run([IP, "-n", this.ns, "link", "set", "eth0", "up"]);
    run([IP, "-n", this.ns, "link", "set", "lo", "up"]);
  }

  // setUpVolumes: hostPath DirectoryOrCreate as the kubelet creates it
  // (root, 0755), Secret volumes as files of defaultMode owned by fsGroup.
  setUpVolumes() {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    for (const v of podSpec.volumes ?? []) {
      const dir = path.join(this.dir, "volumes", v.name);
      if (v.hostPath) {
        assert.equal(v.hostPath.type, "DirectoryOrCreate", `volume ${v.name}: hostPath type`);
        fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
        fs.chmodSync(dir, 0o755);
      } else if (v.secret) {
        fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
        const mode = v.secret.defaultMode ?? 0o644;
        for (const [k, text] of Object.entries(secretFiles(v.secret.secretName))) {
          const f = path.join(dir, k);
          fs.writeFileSync(f, text);
          fs.chmodSync(f, mode);
          fs.chownSync(f, 0, podSpec.securityContext?.fsGroup ?? 0);
        }
      } else {
        throw new Error(`volume ${v.name}: only hostPath and secret volumes are emulated`);
      }
      this.volumes.set(v.name, dir);
    }
    for (let d = this.dir; d !== path.dirname(d) && d.startsWith(tmp); d = path.dirname(d)) {
      fs.chmodSync(d, 0o755);
    }
  }

  // env: the container's environment, downward-API values substituted.
  env(c) {
    const out = [];
    for (const e of c.env ?? []) {
      if (e.value !== undefined) {
        out.push({ name: e.name, value: expandEnv(e.value, out) });
        continue;
      }
      const field = e.valueFrom?.fieldRef?.fieldPath;
      const values = {
        "status.podIP": this.ip,
        "spec.nodeName": this.node,
        "metadata.name": `farswap-memory-node-${this.name}`,
        "metadata.namespace": ds.metadata.namespace,
      };
      assert.ok(field in values, `env ${e.name}: valueFrom ${JSON.stringify(e.valueFrom)} is not emulated`);
      out.push({ name: e.name, value: values[field] });
    }
    return out;
  }

  // localPath maps a path inside the container to this machine.
  localPath(c, s) {
    for (const m of c.volumeMounts ?? []) {
      s = s.split(m.mountPath).join(this.volumes.get(m.name));
    }
    for (const [inImage, local] of image.files) {
      if (s === inImage) return local;
    }
    return s;
  }

  // argv: setpriv with the container's identity, then its command line.
  argv(c, command) {
    const env = this.env(c);
    const sc = { ...(podSpec.securityContext ?? {}), ...(c.securityContext ?? {}) };
    const uid = sc.runAsUser ?? 0;
    const gid = sc.runAsGroup ?? 0;
    const groups = podSpec.securityContext?.fsGroup !== undefined ? [podSpec.securityContext.fsGroup] : [];
    const add = (sc.capabilities?.add ?? []).map((x) => `+${x.toLowerCase()}`);
    assert.deepEqual(sc.capabilities?.drop, ["ALL"], `${c.name}: emulation assumes capabilities.drop [ALL]`);
    const priv = [SETPRIV, "--reuid", String(uid), "--regid", String(gid)];
    priv.push(...(groups.length ? ["--groups", groups.join(",")] : ["--clear-groups"]));
    priv.push("--inh-caps", "-all", "--bounding-set", ["-all", ...add].join(","));
    if (sc.allowPrivilegeEscalation === false) priv.push("--no-new-privs");
    // Dies with this test, even when it is killed (set after the uid change).
    priv.push("--pdeathsig", "SIGKILL");
    const cmd = command.map((a) => this.localPath(c, expandEnv(a, env)));
    // The container's environment, as the kubelet sets it (on top of this
    // test's own, which the processes inherit). `env` runs before setpriv,
    // as root: the program's path may lie in folders only root may search
    // (a build tree under mktemp -d), which setpriv, still privileged when
    // it executes the program, can reach and the container's user cannot.
    const vars = env.map((e) => `${e.name}=${e.value}`);
    return [IP, "netns", "exec", this.ns, ENV, ...vars, ...priv, "--", ...cmd];
  }

  containerCommand(c) {
    return [...(c.command ?? image.entrypoint), ...(c.args ?? [])];
  }

  runInitContainers() {
    for (const c of podSpec.initContainers ?? []) {
      const argv = this.argv(c, this.containerCommand(c));
      try {
        run(argv, { timeout: 30000 });
      } catch (e) {
        throw new Error(`${this.name}: init container ${c.name} failed: ${e.stderr ?? e.message}`);
      }
      log(`${this.name}: init container ${c.name} done`);
    }
  }

  start() {
    const argv = this.argv(container, this.containerCommand(container));
    log(`${this.name}: ${argv.slice(argv.indexOf("--") + 1).join(" ")}`);
    const out = fs.openSync(this.log, "a");
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ["ignore", out, out] });
    children.add(this.proc);
    this.exit = new Promise((resolve) =>
      this.proc.on("exit", (code, signal) => {
        children.delete(this.proc);
        resolve({ code, signal });
      }),
    );
    this.exited = null;
    this.exit.then((e) => (this.exited = e));
  }

  serverLog() {
    return fs.existsSync(this.log) ? fs.readFileSync(this.log, "utf8") : "";
  }

  grpcPort() {
    return container.ports.find((p) => p.name === "grpc").containerPort;
  }
}

// probe runs a probe of the manifest against a pod with the probe's
// timeoutSeconds (default 1): a grpc probe from the host namespace (the
// kubelet's), an exec probe in the pod as the container's user.
async function probe(pod, p) {
  if (p?.exec) {
    try {
      const out = run(pod.argv(container, p.exec.command), { timeout: (p.timeoutSeconds ?? 1) * 1000 });
      return { ok: true, out: out.trim() };
    } catch (e) {
      return { ok: false, out: `${e.stdout ?? ""}${e.stderr ?? e.message}`.trim() };
    }
  }
  assert.ok(p?.grpc, "only grpc and exec probes are emulated");
  return plaintextHealthCheck(pod, p.grpc.port, p.grpc.service ?? "", p.timeoutSeconds ?? 1);
}

// plaintextHealthCheck: the kubelet's grpc probe (plaintext gRPC) of a pod.
function plaintextHealthCheck(pod, port, service, timeoutSeconds) {
  const argv = [
    IP, "netns", "exec", HOST_NS, path.join(buildDir, "tests/deploy/grpc_health_probe"),
    `${pod.ip}:${port}`, service, String(timeoutSeconds * 1000),
  ];
  try {
    return { ok: true, out: run(argv).trim() };
  } catch (e) {
    return { ok: false, out: (e.stdout ?? e.message).trim() };
  }
}

async function waitFor(what, seconds, fn) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s (last: ${last.out})`);
    // A probe period, shortened: the condition is in another process.
    await new Promise((r) => setTimeout(r, 200));
  }
}

// nodeStats: node-wide stats (operator work) with the admin token as the pod
// has it, or with the token in `tokenFile`.
function nodeStats(pod, tokenFile = path.join(pod.volumes.get("admin-token"), "token")) {
  const ctl = image.files.get("/usr/local/bin/farswapctl");
  const out = run([IP, "netns", "exec", HOST_NS, ctl, "--node", `${pod.ip}:${pod.grpcPort()}`,
    "--admin-token-file", tokenFile, ...tlsClientFlags(), "stats", "--json"]);
  return JSON.parse(out);
}

// rotateAdminToken: the operator puts `token` in the farswap-admin-token
// Secret and the kubelet replaces the pod's mounted file. A new file renamed
// over the old one is what a reader of the path sees of the kubelet's own
// swap of its "..data" link: a new inode. Mode and group as setUpVolumes.
function rotateAdminToken(pod, token) {
  const volume = podSpec.volumes.find((v) => v.name === "admin-token");
  const next = path.join(pod.volumes.get("admin-token"), "..token.new");
  fs.writeFileSync(next, token);
  fs.chmodSync(next, volume.secret.defaultMode ?? 0o644);
  fs.chownSync(next, 0, podSpec.securityContext?.fsGroup ?? 0);
  fs.renameSync(next, path.join(pod.volumes.get("admin-token"), "token"));
}

// checkListenersOpened: every TCP port the node listens on beyond loopback
// (`ss` in its network namespace) is one a NetworkPolicy opens: a listener
// clients are handed but the policy closes (e.g. UCX's TCP listeners on
// random ports) works here, where no policy is enforced, and nowhere else.
function checkListenersOpened(pod) {
  const out = run([IP, "netns", "exec", pod.ns, SS, "-ltnH"]);
  const ports = new Set();
  for (const line of out.split("\n").filter(Boolean)) {
    const local = line.trim().split(/\s+/)[3];
    const host = local.slice(0, local.lastIndexOf(":"));
    if (host.startsWith("127.") || host === "[::1]") continue;
    ports.add(Number(local.slice(local.lastIndexOf(":") + 1)));
  }
  const ranges = openedPortRanges(resources, ds.spec.template, container);
  const closed = [...ports].filter((p) => !ranges.some(([lo, hi]) => lo <= p && p <= hi));
  assert.deepEqual(closed, [], `${pod.name}: listens on ports no NetworkPolicy opens ` +
    `(opened: ${JSON.stringify(ranges)}; listening: ${[...ports].join(" ")})`);
  return [...ports].sort((x, y) => x - y);
}

function storedPages(pod) {
  return Number(nodeStats(pod).node?.stored_pages ?? 0);
}

// ---- the client -----------------------------------------------------------
class DrainClient {
  constructor(pods) {
    const [line] = secretFiles("farswap-tenants").tenants.split("\n").filter((l) => l && !l.startsWith("#"));
    const [tenant, secret] = line.split(":");
    // A client pod has IPC and PID namespaces of its own, as every pod
    // does: so UCX, which offers its shared-memory transports only to peers
    // in the same ones, does not pick them across "pods" here either.
    const argv = [
      IP, "netns", "exec", HOST_NS, UNSHARE, "--ipc", "--pid", "--fork", "--kill-child",
      SETPRIV, "--pdeathsig", "SIGKILL", "--",
      path.join(buildDir, "tests/deploy/drain_client"),
      "--nodes", pods.map((p) => `${p.ip}:${p.grpcPort()}`).join(","),
      "--tenant", tenant, "--secret", secret, "--pages", String(PAGES), ...tlsClientFlags(),
      ...(UCX ? ["--data-transport", "ucx"] : []),
    ];
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    children.add(this.proc);
    this.lines = [];
    this.stderr = "";
    this.waiters = [];
    let buf = "";
    this.proc.stdout.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        // The client library may log to stdout too: results are the JSON lines.
        if (line.startsWith("{")) this.lines.push(JSON.parse(line));
        else this.stderr += `${line}\n`;
        buf = buf.slice(i + 1);
        this.waiters.splice(0).forEach((w) => w());
      }
    });
    this.proc.stderr.on("data", (d) => (this.stderr += d));
    this.proc.on("exit", (code) => {
      this.code = code;
      children.delete(this.proc);
      this.waiters.splice(0).forEach((w) => w());
    });
  }

  async next(seconds) {
    const deadline = Date.now() + seconds * 1000;
    while (this.lines.length === 0) {
      if (this.code !== undefined) throw new Error(`drain_client exited ${this.code}: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`drain_client said nothing within ${seconds} s: ${this.stderr}`);
      await new Promise((r) => {
        this.waiters.push(r);
        setTimeout(r, 1000);
      });
    }
    return this.lines.shift();
  }
}

// ---- the test -------------------------------------------------------------
async function main() {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), `farswap-daemonset-${process.pid}-`));
  fs.chmodSync(tmp, 0o755);
  try {
    run([IP, "netns", "add", HOST_NS]);
  } catch (e) {
    skip(`cannot create a network namespace: ${e.stderr ?? e.message}`);
  }
  namespaces.push(HOST_NS);
  run([IP, "-n", HOST_NS, "link", "set", "lo", "up"]);
  run([IP, "-n", HOST_NS, "link", "add", "br0", "type", "bridge"]);
  run([IP, "-n", HOST_NS, "addr", "add", `${SUBNET}.1/24`, "dev", "br0"]);
  run([IP, "-n", HOST_NS, "link", "set", "br0", "up"]);

  const pods = [new Pod("a", 1), new Pod("b", 2)];
  for (const pod of pods) {
    pod.setUpNetwork();
    pod.setUpVolumes();
    pod.runInitContainers();
    pod.start();
  }
  for (const pod of pods) {
    try {
      await waitFor(`${pod.name}: readiness probe`, 30, async () => {
        if (pod.exited) throw new Error(`exited ${JSON.stringify(pod.exited)}`);
        return probe(pod, container.readinessProbe);
      });
    } catch (e) {
      throw new Error(`${e.message}\n--- ${pod.name} log ---\n${pod.serverLog()}`);
    }
    const live = await probe(pod, container.livenessProbe);
    assert.ok(live.ok, `${pod.name}: liveness probe: ${live.out}`);
    if (TLS) {
      const plain = plaintextHealthCheck(pod, pod.grpcPort(), "", 2);
      assert.ok(!plain.ok, `${pod.name}: a plaintext health check of the TLS port passed (${plain.out})`);
    }
    log(`${pod.name} (${pod.ip}): ready and live${TLS ? ", TLS only" : ""}`);
  }

  const client = new DrainClient(pods);
  assert.deepEqual(await client.next(60), { stored: PAGES }, "client stored its pages");
  const before = pods.map(storedPages);
  log(`pages stored: a ${before[0]}, b ${before[1]}`);
  assert.equal(before[0] + before[1], PAGES, "the nodes hold every page, once");
  assert.ok(before[0] > 0 && before[1] > 0, "the client stored pages on both nodes");
  for (const pod of pods) log(`${pod.name}: listening on ${checkListenersOpened(pod).join(" ")}, each opened by a NetworkPolicy`);
  if (UCX) {
    for (const pod of pods) {
      const byCarrier = nodeStats(pod).node?.data_transport?.connections_by_carrier ?? {};
      const ucx = Object.entries(byCarrier).filter(([k, n]) => k !== "tcp" && k !== "" && Number(n) > 0);
      assert.ok(ucx.length > 0, `${pod.name}: --ucx-data-addr, but no connection is carried by UCX ` +
        `(connections by carrier: ${JSON.stringify(byCarrier)})`);
      log(`${pod.name}: connections by carrier ${JSON.stringify(byCarrier)}`);
    }
  }
  if (nodeArgs.includes("--data-tls")) {
    for (const pod of pods) {
      assert.equal(nodeStats(pod).node?.data_tls, true, `${pod.name}: --data-tls but the node says its data plane is not TLS`);
    }
    log("both nodes: data plane TLS (node.data_tls), pages stored through it");
  }

  // The operator rotates the admin token. Each node must put the new one in
  // force without a restart, and refuse the old one: preStop (below) reads
  // the rotated file, and a node still on the old token would refuse its
  // drain, losing the pages of every client without another replica.
  const oldToken = path.join(tmp, "old-admin-token");
  fs.writeFileSync(oldToken, ADMIN_TOKEN);
  const rotated = crypto.randomBytes(32).toString("hex");
  for (const pod of pods) rotateAdminToken(pod, rotated);
  for (const pod of pods) {
    await waitFor(`${pod.name}: the rotated admin token in force`, 15, async () => {
      try {
        const reloads = Number(nodeStats(pod).node?.admin_token_reloads ?? 0);
        return { ok: reloads >= 1, out: `admin_token_reloads ${reloads}` };
      } catch (e) {
        return { ok: false, out: String(e.stderr ?? e.message).trim() };
      }
    });
    assert.throws(() => nodeStats(pod, oldToken), /UNAUTHENTICATED/,
      `${pod.name}: the old admin token still works after the rotation`);
  }
  log("both nodes: admin token rotated without a restart, the old one refused");

  // The kubelet stops pod a: preStop first, bounded by the grace period.
  const [a, b] = pods;
  const preStop = container.lifecycle.preStop.exec.command;
  const argv = a.argv(container, preStop);
  log(`a: preStop ${preStop.join(" ")}`);
  const t0 = Date.now();
  let preStopOut;
  try {
    preStopOut = run(argv, { timeout: grace * 1000 });
  } catch (e) {
    throw new Error(
      `a: preStop failed after ${((Date.now() - t0) / 1000).toFixed(1)} s ` +
        `(status ${e.status}, signal ${e.signal}): ${e.stdout ?? ""}${e.stderr ?? e.message}`,
    );
  }
  const preStopSeconds = (Date.now() - t0) / 1000;
  log(`a: preStop returned after ${preStopSeconds.toFixed(1)} s: ${preStopOut.trim()}`);
  const left = storedPages(a);
  assert.equal(left, 0, `a: preStop returned with ${left} pages still on the node (they would be lost)`);
  const ready = await probe(a, container.readinessProbe);
  assert.ok(!ready.ok, `a: readiness probe still passes while draining (${ready.out})`);

  // Then SIGTERM, and what is left of the grace period to exit.
  a.proc.kill("SIGTERM");
  const remaining = Math.max(2, grace - preStopSeconds);
  const exit = await Promise.race([a.exit, new Promise((r) => setTimeout(() => r(null), remaining * 1000))]);
  assert.ok(exit, `a: still running ${remaining.toFixed(0)} s after SIGTERM`);
  assert.deepEqual(exit, { code: 0, signal: null }, `a: exit after SIGTERM\n${a.serverLog()}`);
  log("a: stopped cleanly");

  const afterB = storedPages(b);
  assert.ok(afterB >= PAGES, `b holds ${afterB} pages, fewer than the ${PAGES} stored`);
  client.proc.stdin.write("verify\n");
  const result = await client.next(120);
  assert.deepEqual(
    { verified: result.verified, lost: result.lost, wrong: result.wrong },
    { verified: PAGES, lost: 0, wrong: 0 },
    `client read-back (${result.first_error})`,
  );
  log(`client: all ${PAGES} pages read back intact from b`);
}

try {
  await main();
  console.log(`PASS ${TEST}`);
  process.exit(0);
} catch (e) {
  console.log(`FAIL ${TEST}: ${e.message}`);
  process.exit(1);
}
