/**
 * Survival checks derived from recorded states: each kind of difference fails its check (a
 * listener gone, a unit not active, a newly failed unit, a published port that stopped answering,
 * a changed ruleset only when strict), and the noise rules leave out what changes across any boot,
 * each saying why.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deriveSurvivalChecks, parseSurvival, type SurvivalState } from "../../../../orchestrator/guest/survival.ts";

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

describe("survival checks", () => {
  const before = parseSurvival(BEFORE_TEXT);

  it("read listeners with their units, active and failed units, published ports and the ruleset", () => {
    assert.deepEqual(before.listeners[0], { proto: "tcp", address: "0.0.0.0", port: 22, unit: "ssh.service" });
    assert.deepEqual(before.active.find((unit) => unit.unit === "systemd-hostnamed.service"), { unit: "systemd-hostnamed.service", onDemand: true });
    assert.deepEqual(before.failed, ["systemd-networkd-wait-online.service"]);
    assert.deepEqual(before.published, [{ port: 8080, proto: "tcp", container: "web" }, { port: 5353, proto: "udp", container: "dns" }]);
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
    assert.deepEqual(leftOut.map((entry) => [entry.item, entry.why.split(" (")[0]!.split(":")[0]]), [
      ["tcp 127.0.0.1:41327 (containerd.service)", "an ephemeral port"],
      ["tcp 127.0.0.1:5555 (user@1000.service)", "the harness's own SSH login runs it"],
      ["systemd-hostnamed.service", "started on demand"],
      ["user@1000.service", "the harness's own SSH login runs it"],
      ["published port 5353/udp (dns)", "UDP"],
    ]);
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
      assert.deepEqual(failing.map((result) => [result.name, result.detail]), [
        ["survives: tcp 0.0.0.0:8080 (docker.service)", "nothing listens on tcp 0.0.0.0:8080"],
        ["survives: nftables.service active", "nftables.service failed"],
        ["survives: no unit failed that had not failed before", "failed now: nftables.service"],
        ["survives: published port 8080/tcp (web) answers from the host", "TCP 8080 does not answer from the host"],
        ...(strict ? [["survives: the nftables ruleset in force", 'differs: - iifname "docker0" accept']] : []),
      ]);
    }
    const same = deriveSurvivalChecks(before, new Set([8080]), true).checks.map((check) => check.holds(before, new Set([8080])));
    assert.ok(same.every((result) => result.ok), "the same state survives every check");
  });

  it("a port that did not answer before the reboot is not expected to after it", () => {
    const { checks, leftOut } = deriveSurvivalChecks(before, new Set(), false);
    assert.ok(!names(checks).some((name) => name.includes("published port 8080")));
    assert.ok(leftOut.some((entry) => entry.item.startsWith("published port 8080/tcp") && /did not answer from the host before the reboot either/.test(entry.why)));
  });
});
