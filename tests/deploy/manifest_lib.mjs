// manifest_lib.mjs: helpers shared by check_manifests.mjs and
// daemonset_test.mjs: Kubernetes and farswap byte sizes, the kubelet's $(VAR)
// expansion, flag lookup in an argv, and a reader of deploy/Dockerfile's
// stages.
import fs from "node:fs";

// Quantities: "10Gi", "800Mi", "8G" (Kubernetes) and farswap's "8G"
// (K/M/G = powers of 1024, as common/src/cli.cc parses them).
export function k8sBytes(q) {
  const m = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  if (!m) throw new Error(`memory quantity ${q}: not understood by this check`);
  const mult = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}
export function farswapBytes(q) {
  const m = /^(\d+)([KMG])?$/i.exec(String(q));
  if (!m) throw new Error(`farswap byte size ${q}: not understood by this check`);
  return Number(m[1]) * { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[(m[2] ?? "").toUpperCase()];
}

// expandEnv applies the kubelet's $(VAR) expansion to a container argument
// with the container's literal env values (valueFrom ones stay as written).
export function expandEnv(arg, env) {
  return arg.replace(/\$\((\w+)\)/g, (whole, name) => {
    const e = (env ?? []).find((x) => x.name === name);
    return e && e.value !== undefined ? e.value : whole;
  });
}

// flag returns the value of --name=VALUE or --name VALUE in argv.
export function flag(argv, name) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${name}`) return argv[i + 1];
    if (argv[i].startsWith(`--${name}=`)) return argv[i].slice(name.length + 3);
  }
  return undefined;
}

// Dockerfile stages: {name: {from, copies: [{src, dst}], entrypoint}}.
export function parseDockerfile(file) {
  const text = fs.readFileSync(file, "utf8").replace(/\\\n/g, " ");
  const stages = {};
  let cur = null;
  let last = null;
  for (const line of text.split("\n").map((l) => l.trim())) {
    let m;
    if ((m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line))) {
      cur = { name: m[2] ?? `stage${Object.keys(stages).length}`, from: m[1], copies: [], run: "" };
      stages[cur.name] = cur;
      last = cur.name;
    } else if ((m = /^COPY\s+--from=(\S+)\s+(.+)$/i.exec(line))) {
      const parts = m[2].split(/\s+/);
      const dst = parts.pop();
      for (const src of parts) cur.copies.push({ src, dst });
    } else if ((m = /^ENTRYPOINT\s+(\[.*\])/i.exec(line))) {
      cur.entrypoint = JSON.parse(m[1]);
    } else if ((m = /^RUN\s+(.+)$/i.exec(line))) {
      cur.run += ` ${m[1]}`;
    }
  }
  return { stages, last };
}

// matches: whether `labels` carry every key/value of a matchLabels selector.
export function matches(selector, labels) {
  return Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
}

// openedPortRanges: the TCP port ranges, [first, last], that the rendered
// NetworkPolicies selecting the pod of `template` open; a named port is
// resolved through `container`'s ports. With `from` (a rule's peer -> bool),
// only rules that admit such a peer count.
export function openedPortRanges(resources, template, container, from = () => true) {
  const named = Object.fromEntries((container.ports ?? []).map((p) => [p.name, p.containerPort]));
  const number = (p) => (typeof p === "string" ? named[p] : p);
  return resources
    .filter((r) => r.kind === "NetworkPolicy" && matches(r.spec.podSelector.matchLabels, template.metadata.labels))
    .flatMap((r) => r.spec.ingress ?? [])
    .filter((rule) => !rule.from || rule.from.some(from))  // no `from`: every peer
    .flatMap((rule) => rule.ports ?? [])
    .map((p) => [number(p.port), p.endPort ?? number(p.port)]);
}
