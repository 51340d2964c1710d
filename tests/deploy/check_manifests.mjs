// check_manifests.mjs: the offline checks of deploy/kubernetes (ctest
// deploy_manifests_test; deploy/README.md, "Checks").
//
//   node check_manifests.mjs REPO_ROOT
//
// For the base, each overlay and each example:
//  1. render it (render.mjs, the kustomize subset) and, where `kubectl`
//     exists, check that `kubectl kustomize` renders exactly the same
//     resources;
//  2. validate every resource against the Kubernetes OpenAPI schemas
//     (the kubernetes-models package, pinned in package-lock.json);
//  3. check what the schemas cannot: every pod is hardened (no service
//     account token, RuntimeDefault seccomp, non-root, read-only root file
//     system, no privilege escalation, all capabilities dropped; an init
//     container may be root with CAP_CHOWN only), has memory limits, and
//     its Services, PodDisruptionBudgets and NetworkPolicies select it and
//     name ports it has; the memory node advertises its pod IP when it
//     listens on 0.0.0.0, its readiness probe asks for
//     farswap.v1.MemoryNode on its gRPC port, its memory limit follows the
//     sizing rule (pool limit x 1.1 + 512Mi, request = limit), and its
//     preStop drain waits for less than the termination grace period;
//  4. check that deploy/Dockerfile builds and copies every binary the
//     manifests run, to the path they run it from;
//  5. monitoring (Prometheus Operator objects, schemas from
//     @kubernetes-models/prometheus-operator): the ServiceMonitor selects
//     the base's memory-node Service, in its namespace, by a port name it
//     has, and the PrometheusRule's groups are exactly those of
//     deploy/prometheus/farswap-alerts.yaml.
// Prints one line per check; exits 1 on the first failed group, naming it.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import {
  expandEnv, farswapBytes, flag, k8sBytes, matches, openedPortRanges, parseDockerfile,
} from "./manifest_lib.mjs";
import { render, resourceId } from "./render.mjs";

const root = process.argv[2];
if (!root || !fs.existsSync(path.join(root, "deploy/kubernetes"))) {
  console.error("usage: node check_manifests.mjs REPO_ROOT");
  process.exit(2);
}
const k8s = path.join(root, "deploy/kubernetes");
const KUSTOMIZATIONS = [
  "base",
  "overlays/dev",
  "overlays/production",
  "overlays/dev-tls",
  "overlays/dev-ucx",
  "examples/demo-client",
  "monitoring",
];

// MODULES: the kubernetes-models module of each apiVersion the manifests use.
const MODULES = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "networking.k8s.io/v1": "kubernetes-models/networking.k8s.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${String(e.message).split("\n").join("\n     ")}`);
  }
}

function podSpecs(resources) {
  return resources
    .filter((r) => ["DaemonSet", "Deployment"].includes(r.kind))
    .map((r) => ({ owner: r, template: r.spec.template, spec: r.spec.template.spec }));
}


function checkHardened({ owner, spec }) {
  const id = resourceId(owner);
  assert.equal(spec.automountServiceAccountToken, false, `${id}: automountServiceAccountToken`);
  assert.equal(spec.securityContext?.runAsNonRoot, true, `${id}: pod runAsNonRoot`);
  assert.ok(spec.securityContext?.runAsUser > 0, `${id}: pod runAsUser must not be root`);
  assert.equal(spec.securityContext?.seccompProfile?.type, "RuntimeDefault", `${id}: seccomp`);
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    const init = (spec.initContainers ?? []).includes(c);
    const sc = c.securityContext ?? {};
    const where = `${id} container ${c.name}`;
    assert.equal(sc.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation`);
    assert.equal(sc.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`);
    assert.deepEqual(sc.capabilities?.drop, ["ALL"], `${where}: capabilities.drop [ALL]`);
    const added = sc.capabilities?.add ?? [];
    const uid = sc.runAsUser ?? spec.securityContext.runAsUser;
    if (init) {
      assert.ok(added.every((cap) => cap === "CHOWN"), `${where}: may add CHOWN only`);
    } else {
      assert.deepEqual(added, [], `${where}: adds capabilities`);
      assert.ok(uid > 0 && sc.runAsNonRoot !== false, `${where}: runs as root`);
    }
    assert.ok(c.resources?.limits?.memory, `${where}: no memory limit`);
  }
}

function checkSelectors(resources) {
  const pods = podSpecs(resources);
  for (const r of resources) {
    let selector;
    if (r.kind === "Service") selector = r.spec.selector;
    else if (r.kind === "PodDisruptionBudget") selector = r.spec.selector.matchLabels;
    else if (r.kind === "NetworkPolicy") selector = r.spec.podSelector.matchLabels;
    else continue;
    const selected = pods.filter(
      (p) => p.owner.metadata.namespace === r.metadata.namespace && matches(selector, p.template.metadata.labels),
    );
    assert.ok(selected.length > 0, `${resourceId(r)} selects no pod`);
    const portNames = new Set(
      selected.flatMap((p) => p.spec.containers.flatMap((c) => (c.ports ?? []).map((x) => x.name))),
    );
    const named =
      r.kind === "Service"
        ? r.spec.ports.map((p) => p.targetPort)
        : r.kind === "NetworkPolicy"
          ? r.spec.ingress.flatMap((i) => i.ports.map((p) => p.port))
          : [];
    for (const n of named) {
      assert.ok(typeof n !== "string" || portNames.has(n), `${resourceId(r)}: port ${n} is no container port`);
    }
  }
  for (const p of pods) {
    assert.ok(
      matches(p.owner.spec.selector.matchLabels, p.template.metadata.labels),
      `${resourceId(p.owner)}: selector does not match its template`,
    );
  }
}

function port(addr) {
  return Number(addr.slice(addr.lastIndexOf(":") + 1));
}

function memoryNodeContainer(resources) {
  const ds = resources.find((r) => r.kind === "DaemonSet" && r.metadata.name === "farswap-memory-node");
  assert.ok(ds, "no DaemonSet farswap-memory-node");
  const c = ds.spec.template.spec.containers.find((x) => x.name === "memory-node");
  assert.ok(c, "no container memory-node");
  return { ds, c };
}

function checkMemoryNode(resources) {
  const { ds, c } = memoryNodeContainer(resources);
  const argv = c.args.map((a) => expandEnv(a, c.env));
  const grpc = flag(argv, "grpc-addr");
  const data = flag(argv, "data-addr");
  assert.ok(grpc && data, "--grpc-addr and --data-addr must be given");
  const named = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
  assert.equal(named.grpc, port(grpc), "port grpc != --grpc-addr's port");
  assert.equal(named.data, port(data), "port data != --data-addr's port");
  const metrics = flag(argv, "metrics-addr");
  assert.equal(named.metrics, metrics && port(metrics), "port metrics != --metrics-addr's port");

  // Clients are handed --advertise-addr; on 0.0.0.0 it must be the pod IP.
  if (/^(0\.0\.0\.0|\[::\]|::|):/.test(data)) {
    const adv = flag(argv, "advertise-addr");
    assert.ok(adv, "--data-addr listens on every address but no --advertise-addr");
    const m = /^\$\((\w+)\):(\d+)$/.exec(adv);
    assert.ok(m, `--advertise-addr ${adv}: expected $(POD_IP_VAR):PORT`);
    const v = c.env.find((e) => e.name === m[1]);
    assert.equal(v?.valueFrom?.fieldRef?.fieldPath, "status.podIP", `${m[1]} is not the pod IP`);
    assert.equal(Number(m[2]), port(data), "--advertise-addr's port != --data-addr's port");
  }

  const ucx = flag(argv, "ucx-data-addr");
  if (ucx) checkUcxPorts(resources, ds, c, named, port(ucx));

  if (flag(argv, "tls-cert")) {
    checkTlsProbes(ds, c, argv, port(grpc));
  } else {
    assert.deepEqual(c.readinessProbe?.grpc, { port: port(grpc), service: "farswap.v1.MemoryNode" });
    assert.equal(c.livenessProbe?.grpc?.port, port(grpc), "liveness probe port");
  }

  // Sizing: memory limit >= pool x 1.1 + 512Mi; request = limit.
  const pool = farswapBytes(flag(argv, "pool-limit"));
  const limit = k8sBytes(c.resources.limits.memory);
  const need = pool * 1.1 + 512 * 2 ** 20;
  assert.ok(limit >= need, `memory limit ${c.resources.limits.memory} < pool x 1.1 + 512Mi (${Math.ceil(need / 2 ** 20)}Mi)`);
  assert.ok(limit <= need * 1.1, `memory limit ${c.resources.limits.memory} is oversized for the pool`);
  assert.equal(c.resources.requests?.memory, c.resources.limits.memory, "memory request != limit");

  // preStop: drain --wait, bounded below the grace period.
  const pre = c.lifecycle?.preStop?.exec?.command ?? [];
  assert.ok(pre[0]?.endsWith("/farswapctl") && pre.includes("drain") && pre.includes("--wait"),
    `preStop must be farswapctl ... drain --wait (is ${JSON.stringify(pre)})`);
  const timeout = Number(flag(pre, "timeout"));
  const grace = ds.spec.template.spec.terminationGracePeriodSeconds;
  assert.ok(timeout > 0 && timeout + 10 <= grace,
    `preStop --timeout ${timeout} must leave >= 10 s of terminationGracePeriodSeconds ${grace}`);
}

// checkUcxPorts: a node that serves UCX beside TCP (--ucx-data-addr) names
// that port data-ucx. Over UCX's TCP transport each UCX worker also listens
// on a port of its own, at random unless UCX_TCP_PORT_RANGE bounds it, and
// clients connect to those ports too: a NetworkPolicy that lets client pods
// in must open the connection port and that whole range, or UCX over TCP
// is cut off behind the policy (deploy_daemonset_ucx_test checks the ports
// the node really listens on).
function checkUcxPorts(resources, ds, c, named, ucxPort) {
  assert.equal(named["data-ucx"], ucxPort, "port data-ucx != --ucx-data-addr's port");
  const range = (c.env ?? []).find((e) => e.name === "UCX_TCP_PORT_RANGE")?.value;
  const m = /^(\d+)-(\d+)$/.exec(range ?? "");
  assert.ok(m, `--ucx-data-addr without env UCX_TCP_PORT_RANGE=FIRST-LAST (is ${range}): ` +
    "UCX's TCP listeners would take random ports that no NetworkPolicy opens");
  const [first, last] = [Number(m[1]), Number(m[2])];
  const clientRanges = openedPortRanges(resources, ds.spec.template, c,
    (peer) => peer.podSelector?.matchLabels?.["farswap.io/client"] === "true");
  const opens = (lo, hi) => clientRanges.some(([a, b]) => a <= lo && b >= hi);
  assert.ok(opens(ucxPort, ucxPort), `no NetworkPolicy lets client pods reach data-ucx (${ucxPort})`);
  assert.ok(opens(first, last),
    `no NetworkPolicy lets client pods reach UCX_TCP_PORT_RANGE ${first}-${last} (one rule, port..endPort)`);
}

// secretMountOf: the read-only Secret volume mount `file` lies in, or fails.
function secretMountOf(ds, c, file, what) {
  const m = (c.volumeMounts ?? []).find((v) => file.startsWith(`${v.mountPath}/`));
  assert.ok(m, `${what} ${file} is on no volume`);
  const v = ds.spec.template.spec.volumes.find((x) => x.name === m.name);
  assert.ok(v?.secret, `${what} ${file}: volume ${m.name} is not a Secret`);
  assert.equal(m.readOnly, true, `${what} ${file}: volume ${m.name} is not mounted read-only`);
  return v.secret.secretName;
}

// checkTlsProbes: a node with a TLS control plane (--tls-cert) cannot be
// probed by the kubelet's grpc probe (plaintext only): readiness and
// liveness run farswapctl with the CA, on the gRPC port, within the probe's
// timeout; readiness asks for farswap.v1.MemoryNode (NOT_SERVING while
// draining), liveness for the whole node (a draining node is alive); the
// preStop drain speaks TLS too; the TLS files come from read-only Secrets.
function checkTlsProbes(ds, c, argv, grpcPort) {
  assert.ok(flag(argv, "tls-key"), "--tls-cert without --tls-key");
  secretMountOf(ds, c, flag(argv, "tls-cert"), "--tls-cert");
  secretMountOf(ds, c, flag(argv, "tls-key"), "--tls-key");
  if (flag(argv, "tls-client-ca")) secretMountOf(ds, c, flag(argv, "tls-client-ca"), "--tls-client-ca");
  const probes = { readiness: c.readinessProbe, liveness: c.livenessProbe };
  for (const [name, p] of Object.entries(probes)) {
    assert.ok(!p?.grpc, `${name} probe: a grpc probe cannot speak TLS`);
    const cmd = p?.exec?.command ?? [];
    assert.ok(cmd[0]?.endsWith("/farswapctl") && cmd.includes("health"),
      `${name} probe must be farswapctl ... health (is ${JSON.stringify(cmd)})`);
    assert.equal(port(flag(cmd, "node") ?? ""), grpcPort, `${name} probe: --node's port`);
    const ca = flag(cmd, "tls-ca");
    assert.ok(ca, `${name} probe: no --tls-ca (it would dial the TLS port in plaintext)`);
    secretMountOf(ds, c, ca, `${name} probe --tls-ca`);
    const callTimeout = Number(flag(cmd, "timeout") ?? 10);
    assert.ok(callTimeout < (p.timeoutSeconds ?? 1),
      `${name} probe: farswapctl --timeout ${callTimeout} must end within timeoutSeconds ${p.timeoutSeconds ?? 1}`);
  }
  const service = (cmd) => flag(cmd, "service") ?? "farswap.v1.MemoryNode";
  assert.equal(service(c.readinessProbe.exec.command), "farswap.v1.MemoryNode",
    "readiness probe must ask for farswap.v1.MemoryNode");
  assert.equal(service(c.livenessProbe.exec.command), "",
    "liveness probe must ask for the whole node (--service \"\"): a draining node is alive");
  const pre = c.lifecycle?.preStop?.exec?.command ?? [];
  assert.ok(flag(pre, "tls-ca"), "preStop drain has no --tls-ca");
}

// filesOfStage: path in the image -> copied from (following FROM chains).
function filesOfStage(stages, name) {
  const files = new Map();
  for (let s = stages[name]; s; s = stages[s.from]) {
    for (const { src, dst } of s.copies) {
      const to = dst.endsWith("/") ? dst + path.basename(src) : dst;
      if (!files.has(to)) files.set(to, src);
    }
    if (!files.has("entrypoint") && s.entrypoint) files.set("entrypoint", s.entrypoint);
  }
  return files;
}

function checkDockerfile(all) {
  const { stages, last } = parseDockerfile(path.join(root, "deploy/Dockerfile"));
  // Which stage builds which image: farswap:TAG is the default (last)
  // stage, farswap-demo:TAG the demo-client stage.
  const stageOf = { farswap: last, "farswap-demo": "demo-client" };
  const built = /--target\s+([^&]+)/.exec(stages.build?.run ?? "")?.[1].trim().split(/\s+/) ?? [];
  // A stage that installs with --no-install-recommends gets no package a
  // library only recommends. rdma-core's libibverbs1 finds no device
  // without its provider drivers (ibverbs-providers: mlx5, efa, rxe, ...),
  // so UCX in that image would never see RDMA and fall back to TCP.
  const NEEDS = { libibverbs1: "ibverbs-providers" };
  for (const [name, s] of Object.entries(stages)) {
    const words = new Set(s.run.split(/\s+/));
    for (const [lib, companion] of Object.entries(NEEDS)) {
      assert.ok(!words.has(lib) || words.has(companion),
        `Dockerfile stage ${name} installs ${lib} without ${companion}`);
    }
  }
  for (const { owner, spec } of podSpecs(all)) {
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      const image = c.image.split(":")[0];
      const stage = stageOf[image];
      assert.ok(stage && stages[stage], `${resourceId(owner)}: image ${c.image} has no Dockerfile stage`);
      const files = filesOfStage(stages, stage);
      const run = [c.command?.[0] ?? files.get("entrypoint")?.[0]];
      if (c.lifecycle?.preStop?.exec) run.push(c.lifecycle.preStop.exec.command[0]);
      for (const bin of run) {
        assert.ok(bin, `${resourceId(owner)} ${c.name}: runs nothing`);
        if (bin.startsWith("/bin/")) continue;  // from the Debian base image
        const src = files.get(bin);
        assert.ok(src, `${resourceId(owner)} ${c.name}: ${bin} is not in stage ${stage}`);
        assert.ok(built.includes(path.basename(src)),
          `${bin}: ${path.basename(src)} is not among the build stage's --target ${built.join(" ")}`);
        // The CMake target lives in the folder its build path names.
        const dir = path.dirname(src).replace(/^\/build\/?/, "");
        const cml = fs.readFileSync(path.join(root, dir, "CMakeLists.txt"), "utf8");
        assert.ok(cml.includes(`add_executable(${path.basename(src)}`),
          `${src}: ${dir}/CMakeLists.txt defines no executable ${path.basename(src)}`);
      }
    }
  }
}

function kubectlAvailable() {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

// checkMonitoring: the monitoring kustomization against the base it watches
// and the rule file it carries.
function checkMonitoring(resources) {
  const monitors = resources.filter((r) => r.kind === "ServiceMonitor");
  assert.equal(monitors.length, 1, "one ServiceMonitor");
  const base = render(path.join(k8s, "base"));
  for (const m of monitors) {
    const services = base.filter(
      (s) => s.kind === "Service" && s.metadata.namespace === m.metadata.namespace &&
        matches(m.spec.selector.matchLabels, s.metadata.labels ?? {}),
    );
    assert.ok(services.length > 0, `${resourceId(m)} selects no Service of the base`);
    for (const e of m.spec.endpoints) {
      for (const s of services) {
        assert.ok(s.spec.ports.some((p) => p.name === e.port), `${resourceId(s)} has no port ${e.port}`);
      }
    }
  }
  const rules = resources.filter((r) => r.kind === "PrometheusRule");
  assert.equal(rules.length, 1, "one PrometheusRule");
  const file = YAML.parse(fs.readFileSync(path.join(root, "deploy/prometheus/farswap-alerts.yaml"), "utf8"));
  assert.deepEqual(rules[0].spec.groups, file.groups,
    "the PrometheusRule's groups differ from deploy/prometheus/farswap-alerts.yaml's");
}

const all = [];
const hasKubectl = kubectlAvailable();
for (const k of KUSTOMIZATIONS) {
  const dir = path.join(k8s, k);
  let resources = [];
  await check(`${k}: renders`, () => {
    resources = render(dir);
    assert.ok(resources.length > 0);
  });
  if (hasKubectl) {
    await check(`${k}: same as kubectl kustomize`, () => {
      const out = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
      const theirs = new Map(
        YAML.parseAllDocuments(out, { version: "1.1" }).map((d) => d.toJS()).map((r) => [resourceId(r), r]),
      );
      const mine = new Map(resources.map((r) => [resourceId(r), r]));
      assert.deepEqual([...mine.keys()].sort(), [...theirs.keys()].sort());
      for (const [id, r] of mine) assert.deepEqual(r, theirs.get(id), id);
    });
  } else {
    console.log(`skip ${k}: kubectl not found, rendering not compared with kubectl kustomize`);
  }
  await check(`${k}: schemas (kubernetes-models)`, async () => {
    for (const r of resources) {
      const mod = MODULES[r.apiVersion];
      assert.ok(mod, `${resourceId(r)}: apiVersion ${r.apiVersion} not known to this check`);
      const Model = (await import(mod))[r.kind];
      assert.ok(Model, `${resourceId(r)}: no model for ${r.apiVersion} ${r.kind}`);
      try {
        new Model(r).validate();
      } catch (e) {
        throw new Error(`${resourceId(r)}: ${e.message}`);
      }
    }
  });
  await check(`${k}: every namespaced resource has a namespace`, () => {
    // A resource an overlay adds does not get the base's namespace: without
    // one of its own it lands in kubectl's current namespace, where the pods
    // that mount or select it never see it.
    for (const r of resources) {
      if (r.kind !== "Namespace") assert.ok(r.metadata.namespace, `${resourceId(r)}: no namespace`);
    }
  });
  await check(`${k}: pods hardened`, () => podSpecs(resources).forEach(checkHardened));
  await check(`${k}: selectors and port names`, () => checkSelectors(resources));
  if (k === "monitoring") {
    await check(`${k}: ServiceMonitor and PrometheusRule`, () => checkMonitoring(resources));
  } else if (!k.startsWith("examples/")) {
    await check(`${k}: memory node flags, probes, sizing, preStop`, () => checkMemoryNode(resources));
  }
  all.push(...resources);
}
await check("Dockerfile builds and copies what the manifests run", () => checkDockerfile(all));

if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log("all manifest checks passed");
