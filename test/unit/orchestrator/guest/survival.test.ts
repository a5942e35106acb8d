/**
 * Survival checks derived from recorded states: each kind of difference fails its check (a
 * listener gone, a unit not active, a newly failed unit, a published port that stopped answering,
 * a changed ruleset only when strict), and the noise rules leave out what changes across any boot,
 * each saying why.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer, type AddressInfo, type Server } from "node:net";
import { createSecureContext, createServer as createTlsServer } from "node:tls";
import {
  deriveSurvivalChecks,
  OBSERVE_SURVIVAL,
  parseSurvival,
  tlsCandidates,
  tlsPortsAnswering,
  type SurvivalState,
} from "../../../../orchestrator/guest/survival.ts";
import { makeCa } from "../../../helpers/tls.ts";
import { writeFake } from "../../../helpers/fakes.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/**
 * A guest's programs as the observation script meets them on Debian 13: systemctl's plain
 * listings (a failed unit's line starts with a bullet) and its `show` blocks for several units
 * at once, ss, ps, docker, nft.
 */
const GUEST_PROGRAMS: Record<string, string> = {
  systemctl: String.raw`
case "$1" in
  list-units)
    case "$*" in
      *--failed*) printf '● nftables.service loaded failed failed nftables\n' ;;
      *--state=active*) printf '%s\n' 'ssh.service loaded active running OpenBSD Secure Shell server' 'systemd-hostnamed.service loaded active running Hostname Service' 'docker.socket loaded active running Docker Socket for the API' ;;
      *--state=inactive*) printf '%s\n' 'systemd-machine-id-commit.service loaded inactive dead Save Transient machine-id to Disk' 'apt-daily.service loaded inactive dead Daily apt download activities' '● NetworkManager.service not-found inactive dead NetworkManager.service' ;;
    esac ;;
  show)
    first=1
    for unit in "$@"; do
      case "$unit" in show|--no-pager|-p|Id|TriggeredBy|BusName|ConditionResult|ConditionTimestampMonotonic) continue ;; esac
      [ "$first" = 1 ] || echo; first=0
      echo "Id=$unit"
      case "$unit" in
        systemd-hostnamed.service) printf '%s\n' 'BusName=org.freedesktop.hostname1' 'TriggeredBy=' ;;
        systemd-machine-id-commit.service) printf '%s\n' 'ConditionResult=no' 'ConditionTimestampMonotonic=4511230' ;;
        apt-daily.service|NetworkManager.service) printf '%s\n' 'ConditionResult=no' 'ConditionTimestampMonotonic=0' ;;
        *) printf '%s\n' 'TriggeredBy=' 'BusName=' ;;
      esac
    done ;;
esac`,
  ss: String.raw`printf '%s\n' 'tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=600,fd=3))' 'udp UNCONN 0 0 127.0.0.54:53 0.0.0.0:* users:(("systemd-resolve",pid=300,fd=20))'`,
  ps: String.raw`case "$*" in *600*) echo ' ssh.service' ;; *300*) echo 'systemd-resolved.service' ;; esac`,
  docker: String.raw`printf '%s\n' 'web|0.0.0.0:8080->80/tcp, [::]:8080->80/tcp'`,
  nft: String.raw`printf '%s\n' 'table inet filter {' '  chain input {' '    tcp dport 22 counter packets 12 bytes 720 accept' '  }' '}'`,
};

/** What the observation command prints on a healthy askari. */
const BEFORE_TEXT = `listen|tcp|0.0.0.0:22|ssh.service
listen|tcp|0.0.0.0:8080|docker.service
listen|tcp|127.0.0.1:41327|containerd.service
listen|udp|0.0.0.0:68|systemd-networkd.service
listen|tcp|127.0.0.1:5555|user@1000.service
active|ssh.service||
active|docker.service||
active|docker.socket||
active|systemd-hostnamed.service||org.freedesktop.hostname1
active|user@1000.service||
active|nftables.service||
failed|systemd-networkd-wait-online.service
published|web|0.0.0.0:8080->80/tcp, [::]:8080->80/tcp
published|dns|0.0.0.0:5353->53/udp
ruleset-begin
table inet filter {
  chain forward {
    iifname "docker0" accept
  }
}
`;

function names(checks: { name: string }[]): string[] {
  return checks.map((check) => check.name);
}

/** Listens on loopback; returns the port. */
async function listenOnLoopback(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

describe("survival checks", () => {
  const before = parseSurvival(BEFORE_TEXT);

  it("read listeners with their units, active and failed units, published ports and the ruleset", () => {
    assert.deepEqual(before.listeners[0], { proto: "tcp", address: "0.0.0.0", port: 22, unit: "ssh.service" });
    assert.deepEqual(
      before.active.find((unit) => unit.unit === "systemd-hostnamed.service"),
      { unit: "systemd-hostnamed.service", onDemand: true },
    );
    assert.deepEqual(before.failed, ["systemd-networkd-wait-online.service"]);
    assert.deepEqual(before.published, [
      { port: 8080, proto: "tcp", container: "web" },
      { port: 5353, proto: "udp", container: "dns" },
    ]);
    assert.match(before.ruleset, /iifname "docker0" accept/);
  });

  it("are named so a user knows what they are, and leave out the noise of every boot, saying why", () => {
    const { checks, leftOut } = deriveSurvivalChecks(before, new Set([8080]), false);
    assert.deepEqual(names(checks), [
      "survives: tcp 0.0.0.0:22 (ssh.service)",
      "survives: tcp 0.0.0.0:8080 (docker.service)",
      "survives: udp 0.0.0.0:68 (systemd-networkd.service)",
      "survives: ssh.service active",
      "survives: docker.service active",
      "survives: docker.socket active",
      "survives: nftables.service active",
      "survives: no unit failed that had not failed before",
      "survives: published port 8080/tcp (web) answers from the host",
      "survives: the nftables ruleset in force (reported, fails only with survival: strict)",
    ]);
    assert.deepEqual(
      leftOut.map((entry) => [entry.item, entry.why.split(" (")[0]!.split(":")[0]]),
      [
        ["tcp 127.0.0.1:41327 (containerd.service)", "an ephemeral port"],
        ["tcp 127.0.0.1:5555 (user@1000.service)", "the harness's own SSH login runs it"],
        ["systemd-hostnamed.service", "started on demand"],
        ["user@1000.service", "the harness's own SSH login runs it"],
        ["published port 5353/udp (dns)", "UDP"],
      ],
    );
  });

  it("fail on each kind of difference after the reboot; a changed ruleset only when strict", () => {
    const after: SurvivalState = {
      ...before,
      listeners: before.listeners.filter((listener) => listener.port !== 8080),
      active: before.active.filter((unit) => unit.unit !== "nftables.service"),
      failed: [...before.failed, "nftables.service"],
      ruleset: before.ruleset.replace('    iifname "docker0" accept\n', ""),
    };
    for (const strict of [false, true]) {
      const { checks } = deriveSurvivalChecks(before, new Set([8080]), strict);
      const failing = checks.map((check) => ({ name: check.name, ...check.holds(after, new Set()) })).filter((result) => !result.ok);
      assert.deepEqual(
        failing.map((result) => [result.name, result.detail]),
        [
          ["survives: tcp 0.0.0.0:8080 (docker.service)", "nothing listens on tcp 0.0.0.0:8080"],
          ["survives: nftables.service active", "nftables.service failed"],
          ["survives: no unit failed that had not failed before", "failed now: nftables.service"],
          ["survives: published port 8080/tcp (web) answers from the host", "TCP 8080 does not answer from the host"],
          ...(strict ? [["survives: the nftables ruleset in force", 'differs: - iifname "docker0" accept']] : []),
        ],
      );
    }
    const same = deriveSurvivalChecks(before, new Set([8080]), true).checks.map((check) => check.holds(before, new Set([8080])));
    assert.ok(
      same.every((result) => result.ok),
      "the same state survives every check",
    );
  });

  it("a unit systemd skipped after the reboot by a start condition of its own is reported, and fails only when strict", () => {
    const firstBoot = parseSurvival(
      BEFORE_TEXT.replace("active|nftables.service||\n", "active|nftables.service||\nactive|systemd-machine-id-commit.service||\n"),
    );
    const afterText = BEFORE_TEXT.replace(
      "active|nftables.service||\n",
      "active|nftables.service||\nskipped|systemd-machine-id-commit.service\nskipped|apt-daily.service\n",
    );
    const after = parseSurvival(afterText);
    assert.deepEqual(after.skipped, ["systemd-machine-id-commit.service", "apt-daily.service"]);
    for (const strict of [false, true]) {
      const check = deriveSurvivalChecks(firstBoot, new Set([8080]), strict).checks.find(
        (candidate) => candidate.name === "survives: systemd-machine-id-commit.service active",
      )!;
      const result = check.holds(after, new Set([8080]));
      assert.equal(result.ok, !strict);
      assert.match(
        result.detail,
        /^systemd-machine-id-commit\.service was skipped on this boot: a start condition of its own did not hold \(ConditionResult=no\)/,
      );
      assert.equal(/fails only with survival: strict/.test(result.detail), !strict);
    }
    // A unit that simply did not start after the reboot is not "skipped": it fails.
    const notStarted = deriveSurvivalChecks(firstBoot, new Set([8080]), false).checks.find(
      (candidate) => candidate.name === "survives: nftables.service active",
    )!;
    assert.deepEqual(notStarted.holds({ ...after, active: after.active.filter((unit) => unit.unit !== "nftables.service") }, new Set([8080])), {
      ok: false,
      detail: "nftables.service is not active",
    });
  });

  it("the observation script reads the guest's programs as they answer, in one systemctl show per kind of unit", async () => {
    const tree = await tempTree();
    try {
      const bin = join(tree.dir, "bin");
      for (const [name, body] of Object.entries(GUEST_PROGRAMS)) await writeFake(bin, name, body);
      const log = join(tree.dir, "calls.log");
      const printed = execFileSync("sh", ["-c", OBSERVE_SURVIVAL], { encoding: "utf8", env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: log } });
      const state = parseSurvival(printed);
      assert.deepEqual(state.listeners, [
        { proto: "tcp", address: "0.0.0.0", port: 22, unit: "ssh.service" },
        { proto: "udp", address: "127.0.0.54", port: 53, unit: "systemd-resolved.service" },
      ]);
      assert.deepEqual(state.active, [
        { unit: "ssh.service", onDemand: false },
        { unit: "systemd-hostnamed.service", onDemand: true },
        { unit: "docker.socket", onDemand: false },
      ]);
      assert.deepEqual(state.failed, ["nftables.service"], "the bullet is not a unit");
      assert.deepEqual(state.skipped, ["systemd-machine-id-commit.service"], "a unit whose conditions were never checked is not skipped");
      assert.deepEqual(state.published, [{ port: 8080, proto: "tcp", container: "web" }]);
      assert.equal(state.ruleset, "table inet filter {\n  chain input {\n    tcp dport 22 accept\n  }\n}");
      const shows = (await readFile(log, "utf8")).split("\n").filter((line) => line.startsWith('["systemctl", "show"'));
      assert.equal(shows.length, 2, "one show for the active units, one for the inactive");
    } finally {
      await tree.remove();
    }
  });

  it("a port that did not answer before the reboot is not expected to after it", () => {
    const { checks, leftOut } = deriveSurvivalChecks(before, new Set(), false);
    assert.ok(!names(checks).some((name) => name.includes("published port 8080")));
    assert.ok(
      leftOut.some((entry) => entry.item.startsWith("published port 8080/tcp") && /did not answer from the host before the reboot either/.test(entry.why)),
    );
  });

  it("an https endpoint that answered a TLS handshake before the reboot must answer one after it; a server that wants a name still speaks TLS; plain HTTP, a closed port and loopback-only listeners are not endpoints", async () => {
    const tree = await tempTree({ "pki/.keep": "" });
    const ca = makeCa(join(tree.dir, "pki"));
    const serving = createTlsServer({ key: ca.key, cert: ca.cert }, (socket) => socket.end());
    // No certificate but for a name: a handshake without SNI gets an alert, as from Caddy.
    const namesOnly = createTlsServer({ SNICallback: (_name, done) => done(null, createSecureContext({ key: ca.key, cert: ca.cert })) }, (socket) =>
      socket.end(),
    );
    const plain = createHttpServer((_request, response) => response.end("plain"));
    const closed = createNetServer();
    try {
      const [tls, sni, http, shut] = await Promise.all([serving, namesOnly, plain, closed].map((server) => listenOnLoopback(server)));
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      assert.deepEqual([...(await tlsPortsAnswering("127.0.0.1", [tls!, sni!, http!, shut!]))].sort(), [tls!, sni!].sort());

      const state: SurvivalState = {
        ...before,
        listeners: [
          { proto: "tcp", address: "0.0.0.0", port: 443, unit: "caddy.service" },
          { proto: "tcp", address: "[::]", port: 8443, unit: "" },
          { proto: "tcp", address: "*", port: 22, unit: "ssh.service" },
          { proto: "tcp", address: "127.0.0.1", port: 2019, unit: "caddy.service" },
          { proto: "tcp", address: "[::1]", port: 631, unit: "cups.service" },
          { proto: "tcp", address: "0.0.0.0", port: 40000, unit: "" },
          { proto: "udp", address: "0.0.0.0", port: 51820, unit: "" },
        ],
      };
      assert.deepEqual(tlsCandidates(state), [443, 8443], "sshd's port is no endpoint");
      const { checks } = deriveSurvivalChecks(state, new Set(), false, new Set([443]));
      const endpoint = checks.find((check) => check.tlsPort === 443);
      assert.equal(endpoint?.name, "survives: TLS on port 443 (caddy.service) answers from the host");
      assert.deepEqual(endpoint.holds(state, new Set(), new Set([443])), { ok: true, detail: "port 443 answers a TLS handshake" });
      assert.deepEqual(endpoint.holds(state, new Set([443]), new Set()), {
        ok: false,
        detail: "port 443 does not answer a TLS handshake from the host (it did before the reboot)",
      });
      assert.equal(checks.filter((check) => check.tlsPort !== undefined).length, 1, "only the ports that spoke TLS before");
    } finally {
      for (const server of [serving, namesOnly, plain]) server.close();
      await tree.remove();
    }
  });
});
