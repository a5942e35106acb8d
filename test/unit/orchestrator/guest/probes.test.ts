/**
 * Every probe kind against a real counterpart where one can exist without a VM: a TLS server on
 * loopback with a CA of its own, an http server, a UDP listener, a DNS stub, real files, sysctl,
 * getent and python3; inside-the-VM kinds through a Machine whose ssh runs the command right here
 * (nft and docker are fakes that answer as the real ones do). A passing and a failing case each,
 * the failing detail asserted.
 */
import assert from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runChecks } from "../../../../orchestrator/guest/checks.ts";
import type { Machine } from "../../../../orchestrator/guest/machine.ts";
import { dnsProbeFromController, insideProbe, tryInside, webProbeFromController } from "../../../../orchestrator/guest/probes.ts";
import { profileSchema, type Check } from "../../../../orchestrator/profile/schema.ts";
import { writeFake } from "../../../helpers/fakes.ts";
import { localGuest } from "../../../helpers/local-guest.ts";
import { tempTree } from "../../../helpers/tmp.ts";
import { makeCa } from "../../../helpers/tls.ts";

/** A check as the profile's schema makes it (defaults filled in). */
function check(fields: Record<string, unknown>): Check {
  const profile = profileSchema.parse({ host: "askari", repo: ".", inventory: "i", playbook: "p", checks: [{ name: "probe", ...fields }] });
  return profile.checks[0]!;
}

/** Listens on loopback; returns the port. */
async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

/**
 * A DNS stub on loopback: A records from `records`, NXDOMAIN for other names, an empty answer
 * for other types.
 */
async function dnsStub(records: Record<string, string>): Promise<{ socket: Socket; port: number }> {
  const socket = createSocket("udp4");
  socket.on("message", (query, peer) => {
    let offset = 12;
    const labels: string[] = [];
    while (query[offset]! > 0) {
      labels.push(query.subarray(offset + 1, offset + 1 + query[offset]!).toString());
      offset += query[offset]! + 1;
    }
    const type = query.readUInt16BE(offset + 1);
    const question = query.subarray(12, offset + 5);
    const address = records[labels.join(".")];
    const answers = address && type === 1 ? [Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...address.split(".").map(Number)])] : [];
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2);
    header.writeUInt16BE(address ? 0x8180 : 0x8183, 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    socket.send(Buffer.concat([header, question, ...answers]), peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { socket, port: socket.address().port };
}

/** A guest that is this host (see local-guest.ts), with fake nft and docker that print what `ruleset` and `container-<name>` hold. */
async function localGuestWithFakes(dir: string): Promise<Machine> {
  const machine = await localGuest(dir);
  const bin = join(dir, "bin");
  await writeFake(
    bin,
    "nft",
    `[ "$1 $2" = "list ruleset" ] || [ "$1 $2 $3 $4" = "list table inet filter" ] || [ "$1 $2 $3 $4 $5" = "list chain inet filter forward" ] || { echo "Error: No such file or directory" >&2; exit 1; }
cat "${join(dir, "ruleset")}"`,
  );
  await writeFake(
    bin,
    "docker",
    `name="\${@: -1}"; [ -f "${dir}/container-$name" ] || { echo "Error: No such object: $name" >&2; exit 1; }
cat "${dir}/container-$name"`,
  );
  return machine;
}

describe("probes", () => {
  let tree: Awaited<ReturnType<typeof tempTree>>;
  let ca: ReturnType<typeof makeCa>;
  let tlsPort: number;
  let httpPort: number;
  let machine: Machine;
  const servers: { close: () => unknown }[] = [];

  before(async () => {
    tree = await tempTree();
    await mkdir(join(tree.dir, "pki"));
    ca = makeCa(join(tree.dir, "pki"));
    const tls = createHttpsServer({ key: ca.key, cert: ca.cert }, (request, response) => response.end(`hello ${request.headers.host}`));
    const http = createHttpServer((request, response) => {
      response.statusCode = request.url === "/missing" ? 404 : 200;
      response.end(`habari from ${request.headers.host}`);
    });
    tlsPort = await listen(tls as unknown as Server);
    httpPort = await listen(http);
    servers.push(tls, http);
    machine = await localGuestWithFakes(tree.dir);
  });
  after(async () => {
    for (const server of servers) server.close();
    await tree.remove();
  });

  it("https from the controller: trusted by the given CA, with its Host and SNI, issuer and validity asserted", async () => {
    const passing = await webProbeFromController(
      check({ https: { port: tlsPort, host: "app.test.example", body: "^hello app\\.test\\.example", issuer: "Boma Test", validFor: "12h" } }),
      "127.0.0.1",
      { kind: "pem", pem: ca.caPem, what: "the test CA" },
    );
    assert.equal(passing.ok, true, passing.detail);
    assert.match(
      passing.detail,
      /^GET https:\/\/app\.test\.example:\d+\/ \(at 127\.0\.0\.1\): HTTP 200 \(want 200\); body matches .*; issuer CN=Boma Test Local Authority; valid 2\d h \d+ min more$/,
    );

    const short = await webProbeFromController(check({ https: { port: tlsPort, host: "app.test.example", validFor: "2d" } }), "127.0.0.1", {
      kind: "pem",
      pem: ca.caPem,
      what: "the test CA",
    });
    assert.equal(short.ok, false);
    assert.match(short.detail, /valid 2\d h \d+ min more \(want at least 2d\)$/);
  });

  it("https from the controller: refused when the CA is not the one trusted, or the name is not the certificate's", async () => {
    const untrusted = await webProbeFromController(check({ https: { port: tlsPort, host: "app.test.example", ca: "system" } }), "127.0.0.1", {
      kind: "system",
    });
    assert.equal(untrusted.ok, false);
    assert.match(untrusted.detail, /: certificate refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE \(trusting the system's roots\)$/);
    const otherName = await webProbeFromController(check({ https: { port: tlsPort, host: "other.test.example" } }), "127.0.0.1", {
      kind: "pem",
      pem: ca.caPem,
      what: "the test CA",
    });
    assert.equal(otherName.ok, false);
    assert.match(otherName.detail, /certificate refused: ERR_TLS_CERT_ALTNAME_INVALID \(trusting the test CA\)$/);
    const insecure = await webProbeFromController(check({ https: { port: tlsPort, host: "other.test.example", ca: "insecure" } }), "127.0.0.1", {
      kind: "insecure",
    });
    assert.equal(insecure.ok, true, insecure.detail);
  });

  it("http from the controller: the Host header sent, the status and the body asserted", async () => {
    const passing = await webProbeFromController(
      check({ http: { port: httpPort, host: "kazi.test.example", body: "habari from kazi" } }),
      "127.0.0.1",
      undefined,
    );
    assert.equal(passing.ok, true, passing.detail);
    const failing = await webProbeFromController(check({ http: { port: httpPort, path: "/missing", body: "karibu" } }), "127.0.0.1", undefined);
    assert.equal(failing.ok, false);
    assert.match(failing.detail, /: HTTP 404 \(want 200\); body does not match \/karibu\/: habari from 127\.0\.0\.1:\d+$/);
  });

  it("dns from the controller: the VM's resolver asked, the address it gives compared", async () => {
    const stub = await dnsStub({ "kazi.test": "10.234.0.10" });
    try {
      const passing = await dnsProbeFromController("127.0.0.1", "kazi.test", "10.234.0.10", stub.port);
      assert.deepEqual(passing, { ok: true, detail: "kazi.test asked of 127.0.0.1's resolver: 10.234.0.10" });
      const wrong = await dnsProbeFromController("127.0.0.1", "kazi.test", "10.234.0.11", stub.port);
      assert.deepEqual(wrong, { ok: false, detail: "kazi.test asked of 127.0.0.1's resolver: 10.234.0.10 (want 10.234.0.11)" });
      const missing = await dnsProbeFromController("127.0.0.1", "nobody.test", undefined, stub.port);
      assert.equal(missing.ok, false);
      assert.match(missing.detail, /^nobody\.test asked of 127\.0\.0\.1's resolver: no address \(ENOTFOUND\)$/);
    } finally {
      stub.socket.close();
    }
  });

  it("udp inside: a listener by port, and by address", async () => {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    const port = socket.address().port;
    try {
      const passing = await tryInside(machine, insideProbe(check({ udp: { port } }), undefined, undefined), 10_000);
      assert.deepEqual(passing, { ok: true, detail: `UDP listening: 127.0.0.1:${port}` });
      const elsewhere = await tryInside(machine, insideProbe(check({ udp: { port, address: "10.234.0.10" } }), undefined, undefined), 10_000);
      assert.deepEqual(elsewhere, { ok: false, detail: `UDP port ${port} listens on 127.0.0.1:${port}, not on 10.234.0.10` });
    } finally {
      socket.close();
    }
    const none = await tryInside(machine, insideProbe(check({ udp: { port } }), undefined, undefined), 10_000);
    assert.deepEqual(none, { ok: false, detail: `nothing listens on UDP port ${port}` });
  });

  it("dns inside: the name resolved the way the host resolves it", async () => {
    const passing = await tryInside(machine, insideProbe(check({ dns: { name: "localhost", address: "127.0.0.1" } }), undefined, undefined), 10_000);
    assert.equal(passing.ok, true, passing.detail);
    const failing = await tryInside(machine, insideProbe(check({ dns: { name: "nobody.invalid" } }), undefined, undefined), 10_000);
    assert.deepEqual(failing, { ok: false, detail: "nobody.invalid does not resolve on the host itself (getent exit 2)" });
  });

  it("command inside: its exit code and its stdout", async () => {
    const passing = await tryInside(
      machine,
      insideProbe(check({ command: { run: "echo habari; echo dunia", stdout: "^habari$" } }), undefined, undefined),
      10_000,
    );
    assert.deepEqual(passing, { ok: true, detail: "exit 0 (want 0); stdout matches /^habari$/" });
    const failing = await tryInside(machine, insideProbe(check({ command: { run: "echo nope >&2; exit 3" } }), undefined, undefined), 10_000);
    assert.deepEqual(failing, { ok: false, detail: "exit 3 (want 0); nope" });
    const wrongOutput = await tryInside(
      machine,
      insideProbe(check({ command: { run: "echo jambo", exit: 0, stdout: "habari" } }), undefined, undefined),
      10_000,
    );
    assert.deepEqual(wrongOutput, { ok: false, detail: "exit 0 (want 0); stdout does not match /habari/: jambo" });
  });

  it("file inside: exists, its mode and its content", async () => {
    const file = join(tree.dir, "nftables.conf");
    await writeFile(file, "table inet filter {\n  chain input { policy drop; }\n}\n");
    await chmod(file, 0o640);
    const passing = await tryInside(machine, insideProbe(check({ file: { path: file, mode: "0640", content: "policy drop" } }), undefined, undefined), 10_000);
    assert.deepEqual(passing, { ok: true, detail: `${file} exists; mode 0640; content matches /policy drop/` });
    const wrongMode = await tryInside(machine, insideProbe(check({ file: { path: file, mode: "644" } }), undefined, undefined), 10_000);
    assert.deepEqual(wrongMode, { ok: false, detail: `${file} exists; mode 0640 (want 0644)` });
    const missing = await tryInside(machine, insideProbe(check({ file: { path: `${file}.gone` } }), undefined, undefined), 10_000);
    assert.equal(missing.ok, false);
    assert.match(missing.detail, /nftables\.conf\.gone: cannot statx? '.*': No such file or directory$/);
  });

  it("sysctl inside: the key's value", async () => {
    const passing = await tryInside(machine, insideProbe(check({ sysctl: { key: "kernel.ostype", value: "Linux" } }), undefined, undefined), 10_000);
    assert.deepEqual(passing, { ok: true, detail: "kernel.ostype = Linux" });
    const failing = await tryInside(machine, insideProbe(check({ sysctl: { key: "kernel.ostype", value: "FreeBSD" } }), undefined, undefined), 10_000);
    assert.deepEqual(failing, { ok: false, detail: "kernel.ostype = Linux (want FreeBSD)" });
  });

  it("nft inside: the ruleset, a table or a chain against a pattern", async () => {
    await writeFile(join(tree.dir, "ruleset"), 'table inet filter {\n  chain forward {\n    iifname "docker0" accept\n  }\n}\n');
    const passing = await tryInside(
      machine,
      insideProbe(check({ nft: { table: "inet filter", chain: "forward", matches: 'iifname "docker0" accept' } }), undefined, undefined),
      10_000,
    );
    assert.deepEqual(passing, { ok: true, detail: 'the chain inet filter forward matches /iifname "docker0" accept/' });
    const failing = await tryInside(machine, insideProbe(check({ nft: { matches: "policy drop" } }), undefined, undefined), 10_000);
    assert.deepEqual(failing, { ok: false, detail: "the ruleset does not match /policy drop/ (6 lines)" });
    const noTable = await tryInside(machine, insideProbe(check({ nft: { table: "ip nat", matches: "masquerade" } }), undefined, undefined), 10_000);
    assert.deepEqual(noTable, { ok: false, detail: "nft list table ip nat: Error: No such file or directory" });
  });

  it("container inside: running, or healthy when it has a healthcheck", async () => {
    await writeFile(join(tree.dir, "container-web"), "running healthy\n");
    await writeFile(join(tree.dir, "container-probe"), "running -\n");
    await writeFile(join(tree.dir, "container-db"), "exited -\n");
    const inside = (fields: Record<string, unknown>) => tryInside(machine, insideProbe(check({ container: fields }), undefined, undefined), 10_000);
    assert.deepEqual(await inside({ name: "web", state: "healthy" }), { ok: true, detail: "container web is running, healthy" });
    assert.deepEqual(await inside({ name: "probe", state: "healthy" }), {
      ok: false,
      detail: "container probe is running and has no healthcheck (want healthy)",
    });
    assert.deepEqual(await inside({ name: "db" }), { ok: false, detail: "container db is exited (want running)" });
    assert.deepEqual(await inside({ name: "ghost" }), { ok: false, detail: "container ghost: No such object: ghost" });
  });

  it("tcp, http and https from the host itself: through its own loopback", async () => {
    const tcp = await tryInside(machine, insideProbe(check({ tcp: { port: httpPort }, from: "askari" }), undefined, undefined), 10_000);
    assert.deepEqual(tcp, { ok: true, detail: `TCP 127.0.0.1:${httpPort} accepts connections (on the host itself)` });
    const http = await tryInside(
      machine,
      insideProbe(check({ http: { port: httpPort, host: "kazi.test.example", body: "habari from kazi" }, from: "askari" }), undefined, undefined),
      10_000,
    );
    assert.deepEqual(http, {
      ok: true,
      detail: `GET http://kazi.test.example:${httpPort}/ (on the host itself): HTTP 200 (want 200); body matches /habari from kazi/`,
    });
    const trust = { kind: "pem" as const, pem: ca.caPem, what: "the test CA" };
    const https = await tryInside(
      machine,
      insideProbe(check({ https: { port: tlsPort, host: "app.test.example", body: "^hello" }, from: "askari" }), trust, undefined),
      10_000,
    );
    assert.equal(https.ok, true, https.detail);
    const refused = await tryInside(
      machine,
      insideProbe(check({ https: { port: tlsPort, host: "app.test.example", ca: "system" }, from: "askari" }), { kind: "system" }, undefined),
      10_000,
    );
    assert.equal(refused.ok, false);
    assert.match(refused.detail, /^GET https:\/\/app\.test\.example:\d+\/ \(on the host itself\): .*CERTIFICATE_VERIFY_FAILED/);
  });

  it("runChecks: ca: a file in the repo, and ca: tier as the internal tier's CA read from the VM", async () => {
    const repo = join(tree.dir, "repo");
    await mkdir(join(repo, "certs"), { recursive: true });
    await writeFile(join(repo, "certs", "lab-ca.pem"), ca.caPem);
    // The internal tier's CA as Caddy keeps it on the VM: the fake guest's cat finds it here.
    await writeFake(
      join(tree.dir, "bin"),
      "cat",
      `[ "$2" = /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt ] && exec /bin/cat "${join(tree.dir, "pki", "ca.crt")}"; exec /bin/cat "$@"`,
    );
    const context = { repoDir: repo, tier: "internal" as const, certCacheDir: join(tree.dir, "cache") };
    const results = await runChecks(
      [
        check({ name: "by file", https: { port: tlsPort, host: "app.test.example", ca: "certs/lab-ca.pem" }, within: 2 }),
        check({ name: "by tier", https: { port: tlsPort, host: "app.test.example", issuer: "Boma Test" }, within: 2 }),
        check({ name: "no such file", https: { port: tlsPort, host: "app.test.example", ca: "certs/none.pem" }, within: 1 }),
      ],
      machine,
      "127.0.0.1",
      "pre-reboot",
      { context },
    );
    assert.deepEqual(
      results.map((result) => [result.name, result.ok]),
      [
        ["by file", true],
        ["by tier", true],
        ["no such file", false],
      ],
    );
    assert.equal(results[2]!.detail, `ca: certs/none.pem: no such file in the repo (${join(repo, "certs", "none.pem")})`);
  });
});

describe("where a check runs (the profile's from:)", () => {
  const parse = (fields: Record<string, unknown>) =>
    profileSchema.safeParse({ host: "askari", repo: ".", inventory: "i", playbook: "p", checks: [{ name: "probe", ...fields }] });

  it("refuses controller for a kind that only runs inside, another host's name, and certificate facts from the host itself", () => {
    const inside = parse({ udp: { port: 51820 }, from: "controller" });
    assert.equal(inside.success, false);
    assert.match(JSON.stringify(inside.error?.issues), /a udp check runs inside the VM, found \\"controller\\"/);
    const stranger = parse({ tcp: { port: 22 }, from: "kazi" });
    assert.match(JSON.stringify(stranger.error?.issues), /expected \\"controller\\" or the host's name \(askari\), found \\"kazi\\"/);
    const facts = parse({ https: { port: 443, issuer: "Caddy" }, from: "askari" });
    assert.match(JSON.stringify(facts.error?.issues), /issuer and validFor only from the controller/);
    assert.equal(parse({ dns: { name: "kazi" }, from: "controller" }).success, true);
    assert.equal(parse({ https: { port: 443, host: "app.test.example" }, from: "askari" }).success, true);
  });

  it("refuses a bad pattern, duration or mode at the edge, naming what it expected", () => {
    assert.match(JSON.stringify(parse({ command: { run: "true", stdout: "(" } }).error?.issues), /expected a regular expression/);
    assert.match(JSON.stringify(parse({ https: { validFor: "12 hours" } }).error?.issues), /expected a duration such as 90s, 30m, 12h or 2d/);
    assert.match(JSON.stringify(parse({ file: { path: "/etc/x", mode: "rw-r--r--" } }).error?.issues), /expected an octal mode/);
    assert.match(JSON.stringify(parse({ nft: { chain: "forward", matches: "x" } }).error?.issues), /a chain needs its table/);
  });
});
