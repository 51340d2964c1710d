// tls_grpc_js_test.mjs: an independent client of farswap-server's TLS
// control plane (README.md, "TLS on the control plane"). grpc-js (Node's
// own HTTP/2 and TLS, nothing shared with the C++ gRPC and OpenSSL build of
// the node) loads proto/farswap/v1/memory_node.proto and, against a real
// node started with --tls-cert/--tls-key and an admin token:
//   - trusting the node's CA: GetStats with the admin token answers OK
//     with the node's id; Drain without a credential is UNAUTHENTICATED
//     (TLS carries the roles of README.md, "Roles", unchanged);
//   - trusting another CA: UNAVAILABLE, the certificate refused;
//   - plaintext: UNAVAILABLE.
// The CAs and the node's certificate are made here with the openssl
// command line. Usage: node tls_grpc_js_test.mjs REPO_ROOT BUILD_DIR.
// Exit 0 pass, 1 fail.
import { execFileSync, spawn } from "node:child_process";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [root, buildDir] = process.argv.slice(2);
if (!root || !buildDir) {
  console.error("usage: node tls_grpc_js_test.mjs REPO_ROOT BUILD_DIR");
  process.exit(2);
}
const ADMIN_TOKEN = "0123456789abcdef-grpc-js-admin";
const NODE_ID = "tls-grpc-js-node";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "farswap-tls-grpc-js-"));
let server = null;
process.on("exit", () => {
  if (server) server.kill("SIGKILL");
  fs.rmSync(tmp, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));

function which(cmd) {
  for (const d of [...(process.env.PATH ?? "").split(":"), "/usr/bin", "/bin"]) {
    if (d && fs.existsSync(path.join(d, cmd))) return path.join(d, cmd);
  }
  return null;
}

function openssl(...args) {
  execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });
}

// makeCa / issue: a self-signed CA, and a P-256 certificate it signs for
// 127.0.0.1 (what the node is dialled as).
function makeCa(name) {
  const key = path.join(tmp, `${name}.key`), crt = path.join(tmp, `${name}.crt`);
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", key, "-out", crt, "-days", "1", "-subj", `/CN=${name}`);
  return { key, crt };
}
function issue(ca, name) {
  const key = path.join(tmp, `${name}.key`), crt = path.join(tmp, `${name}.crt`);
  const csr = path.join(tmp, `${name}.csr`), ext = path.join(tmp, `${name}.ext`);
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
          key, "-out", csr, "-subj", `/CN=${name}`);
  fs.writeFileSync(ext, "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n" +
                        "extendedKeyUsage=serverAuth\n");
  openssl("x509", "-req", "-in", csr, "-CA", ca.crt, "-CAkey", ca.key, "-set_serial",
          String(Date.now()), "-days", "1", "-extfile", ext, "-out", crt);
  return { key, crt };
}

async function startNode(cert) {
  const ready = path.join(tmp, "ready.json");
  const tokenFile = path.join(tmp, "admin-token");
  fs.writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`);
  const argv = [path.join(buildDir, "server/farswap-server"), "--grpc-addr", "127.0.0.1:0",
                "--data-addr", "127.0.0.1:0", "--pool-limit", "16M", "--allow-anonymous",
                "--admin-token-file", tokenFile, "--node-id", NODE_ID, "--ready-file", ready,
                "--tls-cert", cert.crt, "--tls-key", cert.key];
  // setpriv --pdeathsig: the node dies with this test even if it is killed.
  const setpriv = which("setpriv");
  const full = setpriv ? [setpriv, "--pdeathsig", "SIGKILL", "--", ...argv] : argv;
  const log = fs.openSync(path.join(tmp, "server.log"), "w");
  server = spawn(full[0], full.slice(1), { stdio: ["ignore", log, log] });
  let exited = null;
  server.on("exit", (code) => { exited = code; });
  const deadline = Date.now() + 30_000;
  while (!fs.existsSync(ready)) {
    if (exited !== null || Date.now() > deadline) {
      throw new Error(`farswap-server did not get ready (exit ${exited}):\n` +
                      fs.readFileSync(path.join(tmp, "server.log"), "utf8"));
    }
    await new Promise((r) => setTimeout(r, 50));  // polls the ready file
  }
  return JSON.parse(fs.readFileSync(ready, "utf8")).grpc_addr;
}

const definition = protoLoader.loadSync(path.join(root, "proto/farswap/v1/memory_node.proto"), {
  keepCase: true, longs: String, defaults: true, includeDirs: [path.join(root, "proto")] });
const { MemoryNode } = grpc.loadPackageDefinition(definition).farswap.v1;

// call: one unary call with a 10 s deadline; resolves to {err, resp}.
function call(client, method, request, metadata = new grpc.Metadata()) {
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (err, resp) =>
      resolve({ err, resp }));
  });
}

const ca = makeCa("farswap-test-ca");
const otherCa = makeCa("some-other-ca");
const addr = await startNode(issue(ca, "node"));
console.log(`node on ${addr} (TLS)`);

const trusting = new MemoryNode(addr, grpc.credentials.createSsl(fs.readFileSync(ca.crt)));
const admin = new grpc.Metadata();
admin.set("authorization", `Bearer ${ADMIN_TOKEN}`);
let r = await call(trusting, "GetStats", {}, admin);
assert.equal(r.err, null, `GetStats with the admin token over TLS: ${r.err?.message}`);
assert.equal(r.resp.node_id, NODE_ID);
console.log(`GetStats over TLS with the admin token: OK, node_id ${r.resp.node_id}`);

r = await call(trusting, "Drain", { drain: true });
assert.ok(r.err, "Drain without a credential succeeded");
assert.equal(r.err.code, grpc.status.UNAUTHENTICATED, r.err.message);
console.log(`Drain over TLS without a credential: UNAUTHENTICATED (${r.err.details})`);
r = await call(trusting, "GetStats", {}, admin);
assert.equal(r.resp?.node?.draining, false, "the refused Drain drained the node");
trusting.close();

const wrong = new MemoryNode(addr, grpc.credentials.createSsl(fs.readFileSync(otherCa.crt)));
r = await call(wrong, "GetStats", {}, admin);
assert.ok(r.err, "GetStats trusting another CA succeeded");
assert.equal(r.err.code, grpc.status.UNAVAILABLE, r.err.message);
assert.match(r.err.details, /certificate|handshake|tls|ssl/i);
console.log(`GetStats trusting another CA: UNAVAILABLE (${r.err.details})`);
wrong.close();

const plain = new MemoryNode(addr, grpc.credentials.createInsecure());
r = await call(plain, "GetStats", {}, admin);
assert.ok(r.err, "plaintext GetStats to a TLS port succeeded");
assert.equal(r.err.code, grpc.status.UNAVAILABLE, r.err.message);
console.log(`plaintext GetStats: UNAVAILABLE (${r.err.details})`);
plain.close();
console.log("PASS");
process.exit(0);
