// render.mjs: renders a kustomization the way `kubectl kustomize` does, for
// exactly the subset deploy/kubernetes uses, so CI (a fresh Debian 12 with
// no kustomize or kubectl) checks the manifests that would really be applied.
//
//   node tests/deploy/render.mjs deploy/kubernetes/overlays/dev   # YAML on stdout
//   import { render } from "./render.mjs";  render(dir) -> [objects]
//
// Supported kustomization.yaml fields, applied in kustomize's order:
//   resources:  files (one or more YAML documents) and directories holding a
//               kustomization.yaml (rendered first, recursively)
//   patches:    `- path: FILE` strategic-merge patches, matched to a resource
//               by apiVersion group, kind and metadata.name. Maps merge key
//               by key, `key: null` deletes; lists of objects with a merge
//               key (containers, initContainers, env, volumes: name;
//               volumeMounts: mountPath; ports: containerPort) merge element
//               by element, patch elements first, then the untouched ones
//               (kustomize's kyaml order); every other list is replaced.
//   namespace:  metadata.namespace of every namespaced resource
//   labels:     `- pairs: {...}` added to metadata.labels only
//               (includeSelectors / includeTemplates must be absent or false)
// Anything else (other fields, `$patch` directives, JSON 6902 patches, a
// patch that matches nothing) is an error naming it: this renderer refuses
// what it would get wrong. tests/deploy/check_manifests.mjs compares its
// output with `kubectl kustomize` wherever kubectl exists.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const KNOWN_FIELDS = new Set([
  "apiVersion", "kind", "namespace", "labels", "resources", "patches",
]);

// CLUSTER_SCOPED: kinds the namespace field leaves alone. Every kind the
// manifests use must be in one of these two sets.
const CLUSTER_SCOPED = new Set(["Namespace"]);
const NAMESPACED = new Set([
  "Secret", "ConfigMap", "Service", "DaemonSet", "Deployment",
  "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule",
]);

// MERGE_KEYS: strategic-merge keys of the object lists patches may touch
// (from the Kubernetes API's patchMergeKey annotations).
const MERGE_KEYS = {
  containers: "name",
  initContainers: "name",
  env: "name",
  volumes: "name",
  volumeMounts: "mountPath",
  ports: "containerPort",
  imagePullSecrets: "name",
};

export class RenderError extends Error {}

function fail(where, why) {
  throw new RenderError(`${where}: ${why}`);
}

// parseDocuments reads every YAML document of a file (YAML 1.1 rules for
// numbers, as kubectl's parser: 0440 is octal).
export function parseDocuments(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { version: "1.1" });
  const out = [];
  for (const d of docs) {
    if (d.errors.length) fail(file, d.errors[0].message);
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function group(apiVersion) {
  return apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
}

// strategicMerge returns `base` with `patch` merged in (neither is modified).
export function strategicMerge(base, patch, where, key = "") {
  if (!isObject(patch)) return structuredClone(patch);
  const out = isObject(base) ? structuredClone(base) : {};
  for (const [k, pv] of Object.entries(patch)) {
    if (k.startsWith("$")) fail(where, `directive ${k} is not supported`);
    if (pv === null) {
      delete out[k];
    } else if (Array.isArray(pv) && Array.isArray(out[k]) && pv.some(isObject)) {
      const mk = MERGE_KEYS[k];
      if (!mk) fail(where, `list "${k}" has no merge key known to render.mjs`);
      out[k] = mergeList(out[k], pv, mk, `${where}.${k}`);
    } else {
      out[k] = strategicMerge(out[k], pv, where, k);
    }
  }
  return out;
}

function mergeList(base, patch, mk, where) {
  const merged = [];
  const used = new Set();
  for (const p of patch) {
    if (!isObject(p) || p[mk] === undefined) fail(where, `element without merge key "${mk}"`);
    const i = base.findIndex((b) => isObject(b) && b[mk] === p[mk]);
    if (i >= 0) used.add(i);
    merged.push(i >= 0 ? strategicMerge(base[i], p, where) : structuredClone(p));
  }
  base.forEach((b, i) => {
    if (!used.has(i)) merged.push(structuredClone(b));
  });
  return merged;
}

// render returns the resources a kustomization directory produces.
export function render(dir) {
  const file = path.join(dir, "kustomization.yaml");
  if (!fs.existsSync(file)) fail(dir, "no kustomization.yaml");
  const [k] = parseDocuments(file);
  if (!isObject(k) || k.kind !== "Kustomization") fail(file, "not a Kustomization");
  for (const f of Object.keys(k)) {
    if (!KNOWN_FIELDS.has(f)) fail(file, `field "${f}" is not supported by render.mjs`);
  }

  let resources = [];
  for (const r of k.resources ?? []) {
    const p = path.join(dir, r);
    if (!fs.existsSync(p)) fail(file, `resource ${r} does not exist`);
    resources.push(...(fs.statSync(p).isDirectory() ? render(p) : parseDocuments(p)));
  }
  const seen = new Set();
  for (const r of resources) {
    if (!isObject(r) || !r.apiVersion || !r.kind || !r.metadata?.name) {
      fail(file, "a resource without apiVersion, kind or metadata.name");
    }
    if (!CLUSTER_SCOPED.has(r.kind) && !NAMESPACED.has(r.kind)) {
      fail(file, `kind ${r.kind} is not known to render.mjs (namespaced or not?)`);
    }
    const id = `${r.kind}/${r.metadata.namespace ?? ""}/${r.metadata.name}`;
    if (seen.has(id)) fail(file, `${id} appears twice`);
    seen.add(id);
  }

  for (const p of k.patches ?? []) {
    if (!isObject(p) || typeof p.path !== "string" || Object.keys(p).length !== 1) {
      fail(file, "only `- path: FILE` strategic-merge patches are supported");
    }
    const pfile = path.join(dir, p.path);
    for (const patch of parseDocuments(pfile)) {
      const i = resources.findIndex(
        (r) =>
          group(r.apiVersion) === group(patch.apiVersion ?? "") &&
          r.kind === patch.kind &&
          r.metadata.name === patch.metadata?.name,
      );
      if (i < 0) fail(pfile, `patch matches no resource (${patch.kind}/${patch.metadata?.name})`);
      resources[i] = strategicMerge(resources[i], patch, pfile);
    }
  }

  if (k.namespace !== undefined) {
    resources = resources.map((r) =>
      CLUSTER_SCOPED.has(r.kind)
        ? r
        : { ...r, metadata: { ...r.metadata, namespace: k.namespace } },
    );
  }

  for (const l of k.labels ?? []) {
    if (!isObject(l.pairs) || l.includeSelectors || l.includeTemplates) {
      fail(file, "labels: only `pairs` (no includeSelectors / includeTemplates) are supported");
    }
    for (const f of Object.keys(l)) {
      if (!["pairs", "includeSelectors", "includeTemplates"].includes(f)) {
        fail(file, `labels field "${f}" is not supported`);
      }
    }
    resources = resources.map((r) => ({
      ...r,
      metadata: { ...r.metadata, labels: { ...(r.metadata.labels ?? {}), ...l.pairs } },
    }));
  }
  return resources;
}

// resourceId names a rendered resource: "Kind namespace/name".
export function resourceId(r) {
  return `${r.kind} ${r.metadata.namespace ?? ""}/${r.metadata.name}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.length !== 3) {
    console.error("usage: node render.mjs KUSTOMIZATION_DIR");
    process.exit(2);
  }
  try {
    const out = render(process.argv[2]);
    process.stdout.write(out.map((r) => YAML.stringify(r)).join("---\n"));
  } catch (e) {
    if (!(e instanceof RenderError)) throw e;
    console.error(`render.mjs: ${e.message}`);
    process.exit(1);
  }
}
