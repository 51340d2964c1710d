// check_alerts.mjs: the offline checks of deploy/prometheus/farswap-alerts.yaml
// (ctest deploy_alerts_test; deploy/README.md, "Alerts").
//
//   node check_alerts.mjs REPO_ROOT
//
//  1. the file's shape: groups farswap-memory-node and farswap-client, each
//     rule an alert with a unique Farswap* name, an expression, a `for` of
//     the form 10m (where given), a severity of critical, warning or info,
//     and a summary and a description;
//  2. every expression parses as PromQL, with the Prometheus project's own
//     grammar (@prometheus-io/lezer-promql, pinned in package-lock.json);
//  3. every series an expression names is a farswap metric documented in
//     README.md ("Metrics", the node's) or client/README.md ("Metrics", the
//     client library's): the node group only the node's, the client group
//     only farswap_client_* and farswap_region_*.
// That each series and label is really served is checked against real
// processes by node_metrics_test and client_metrics_test (--alerts).
// Prints one line per check; exits 1 if any failed.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { parser } from "@prometheus-io/lezer-promql";
import YAML from "yaml";

const root = process.argv[2];
const rulesPath = root && path.join(root, "deploy/prometheus/farswap-alerts.yaml");
if (!rulesPath || !fs.existsSync(rulesPath)) {
  console.error("usage: node check_alerts.mjs REPO_ROOT");
  process.exit(2);
}

let failures = 0;
function check(name, fn) {
  try {
    fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${String(e.message).split("\n").join("\n     ")}`);
  }
}

// documentedMetrics: the farswap_* names in the first cell of a README's
// metric table rows ("| `farswap_a`, `farswap_b` | counter | ...").
function documentedMetrics(file) {
  const names = new Set();
  for (const line of fs.readFileSync(path.join(root, file), "utf8").split("\n")) {
    if (!line.startsWith("| `farswap_")) continue;
    const firstCell = line.split("|")[1];
    for (const m of firstCell.matchAll(/`(farswap_[a-z0-9_]+)`/g)) names.add(m[1]);
  }
  return names;
}
const NODE_METRICS = documentedMetrics("README.md");
const CLIENT_METRICS = documentedMetrics("client/README.md");

// A histogram is documented by its family name; PromQL names its series.
function family(name, documented) {
  if (documented.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, "");
  return documented.has(base) ? base : null;
}

// seriesNames parses a PromQL expression and returns the metric names its
// selectors use; throws, with the position, where the grammar finds an error.
function seriesNames(expr) {
  const tree = parser.parse(expr);
  const names = [];
  tree.iterate({
    enter(node) {
      if (node.type.isError) {
        throw new Error(`PromQL syntax error at ${node.from}: ...${expr.slice(node.from, node.from + 40)}`);
      }
      if (node.name === "Identifier") names.push(expr.slice(node.from, node.to));
    },
  });
  return names;
}

const doc = YAML.parse(fs.readFileSync(rulesPath, "utf8"));
const GROUPS = {
  "farswap-memory-node": { documented: NODE_METRICS, prefixes: null },
  "farswap-client": { documented: CLIENT_METRICS, prefixes: ["farswap_client_", "farswap_region_"] },
};

check("the rules' documented metrics were found", () => {
  assert.ok(NODE_METRICS.size > 50, `README.md: ${NODE_METRICS.size} metrics`);
  assert.ok(CLIENT_METRICS.size > 30, `client/README.md: ${CLIENT_METRICS.size} metrics`);
});
check("groups", () => {
  assert.ok(Array.isArray(doc?.groups), "no groups list");
  assert.deepEqual(doc.groups.map((g) => g.name).sort(), Object.keys(GROUPS).sort());
});
const seen = new Set();
for (const group of doc.groups ?? []) {
  const want = GROUPS[group.name];
  if (!want) continue;
  check(`${group.name}: has rules`, () => assert.ok(group.rules?.length > 0));
  for (const rule of group.rules ?? []) {
    check(`${group.name}: ${rule.alert ?? JSON.stringify(rule)}`, () => {
      assert.match(String(rule.alert), /^Farswap[A-Z][A-Za-z]+$/, "alert name");
      assert.ok(!seen.has(rule.alert), `${rule.alert} defined twice`);
      seen.add(rule.alert);
      assert.equal(typeof rule.expr, "string", "expr");
      if (rule.for !== undefined) assert.match(String(rule.for), /^[0-9]+[smh]$/, "for");
      assert.ok(["critical", "warning", "info"].includes(rule.labels?.severity), "labels.severity");
      assert.ok(rule.annotations?.summary?.trim(), "annotations.summary");
      assert.ok(rule.annotations?.description?.trim(), "annotations.description");
      const names = seriesNames(rule.expr);
      assert.ok(names.length > 0, "names no series");
      for (const name of names) {
        assert.ok(family(name, want.documented), `${name} is not a documented metric`);
        if (want.prefixes) {
          assert.ok(want.prefixes.some((p) => name.startsWith(p)), `${name}: not a client metric`);
        }
      }
    });
  }
}

if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log(`all alert checks passed (${seen.size} alerts)`);
