/**
 * A fleet: each host in turn under one fleet dir, fleet.json and a junit testsuite per host, a
 * failing host that does not stop the others, an interrupt that leaves the rest "not run", and
 * the worst exit code.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BadInputError } from "../../../../orchestrator/errors.ts";
import { fleetTable, runFleet, worstExitCode, type FleetReport } from "../../../../orchestrator/run/fleet.ts";
import type { RunReport } from "../../../../orchestrator/run/report.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

function hostReport(host: string, runsDir: string, ok: boolean): RunReport {
  return {
    runId: `boma-it-${host}-20261201-140000`,
    profile: host,
    host,
    engine: "direct",
    accel: "tcg",
    certs: "internal",
    egress: { mode: "allowlist", allowed: ["deb.debian.org"], blocked: [] },
    verdict: ok ? "pass" : "fail",
    exitCode: ok ? 0 : 1,
    message: ok ? "GREEN survived the reboot" : "GREEN broke after the reboot: survives: tcp 0.0.0.0:8081 (kazi-web.service)",
    readyLagSeconds: [],
    diagnostics: null,
    harness: { peakRssMiB: 0 },
    kept: null,
    error: null,
    startedAt: "",
    finishedAt: "",
    wallSeconds: 300,
    runDir: join(runsDir, `20261201-140000-${host}`),
    scenarios: [
      {
        name: "green",
        expect: "pass",
        ok,
        outcome: "",
        stack: "",
        bootIds: [],
        phases: [],
        readyLagSeconds: [],
        guestBootSeconds: [],
        beforeKernelSeconds: [],
        bootResets: [],
        firstBoot: null,
        apply: null,
        certificate: null,
        snapshotDiff: null,
        diagnostics: null,
        checks: [
          { name: "survives: tcp 0.0.0.0:8081 (kazi-web.service)", stage: "post-reboot", ok, detail: ok ? "listening" : "nothing listens", seconds: 60 },
        ],
      },
    ],
  };
}

describe("a fleet", () => {
  it("runs every host in turn; a failing host or a bad one does not stop the others; the exit code is the worst", async () => {
    const tree = await tempTree();
    try {
      const ran: string[] = [];
      const fleet = await runFleet(
        "docker_hosts",
        [
          { name: "askari", run: async (dir) => (ran.push("askari"), hostReport("askari", dir, false)) },
          {
            name: "kazi",
            run: async () => {
              ran.push("kazi");
              throw new BadInputError({ message: 'host "kazi" has no such thing' });
            },
          },
          { name: "simba", run: async (dir) => (ran.push("simba"), hostReport("simba", dir, true)) },
        ],
        { runsDir: tree.dir, log: silentLog(), signal: new AbortController().signal },
      );
      assert.deepEqual(ran, ["askari", "kazi", "simba"]);
      assert.deepEqual(
        fleet.hosts.map((host) => [host.host, host.verdict, host.exitCode]),
        [
          ["askari", "fail", 1],
          ["kazi", "error", 2],
          ["simba", "pass", 0],
        ],
      );
      assert.equal(fleet.exitCode, 2);
      assert.deepEqual(fleet.hosts[0]!.failed, ["green: survives: tcp 0.0.0.0:8081 (kazi-web.service)"]);
      const written = JSON.parse(await readFile(join(fleet.dir, "fleet.json"), "utf8")) as FleetReport;
      assert.deepEqual(
        written.hosts.map((host) => host.host),
        ["askari", "kazi", "simba"],
      );
      const junit = await readFile(join(fleet.dir, "junit.xml"), "utf8");
      assert.equal(junit.match(/<testsuite /g)?.length, 3, "a testsuite per host");
      assert.match(junit, /<testsuite name="askari" tests="2" failures="2"/);
      assert.match(fleetTable(fleet), /askari +fail +300 s +green: survives: tcp 0\.0\.0\.0:8081/);
    } finally {
      await tree.remove();
    }
  });

  it("an interrupt ends the current host and leaves the rest not run (exit 130)", async () => {
    const tree = await tempTree();
    try {
      const controller = new AbortController();
      const fleet = await runFleet(
        "g",
        [
          { name: "a", run: async (dir) => (controller.abort(), { ...hostReport("a", dir, false), verdict: "error", exitCode: 130 }) },
          { name: "b", run: async (dir) => hostReport("b", dir, true) },
        ],
        { runsDir: tree.dir, log: silentLog(), signal: controller.signal },
      );
      assert.deepEqual(
        fleet.hosts.map((host) => [host.host, host.verdict]),
        [
          ["a", "error"],
          ["b", "not run"],
        ],
      );
      assert.equal(fleet.exitCode, 130);
    } finally {
      await tree.remove();
    }
  });

  it("stops at a host whose VM is kept (one test VM at a time): the rest are not run; the failure stays the verdict", async () => {
    const tree = await tempTree();
    try {
      const ran: string[] = [];
      const kept = { run: "boma-it-a-20261201-140000", ssh: "npm run boma-it -- ssh boma-it-a-20261201-140000", reap: "npm run reap" };
      const fleet = await runFleet(
        "g",
        [
          { name: "a", run: async (dir) => (ran.push("a"), { ...hostReport("a", dir, false), kept }) },
          { name: "b", run: async (dir) => (ran.push("b"), hostReport("b", dir, true)) },
        ],
        { runsDir: tree.dir, log: silentLog(), signal: new AbortController().signal },
      );
      assert.deepEqual(ran, ["a"], "b never started next to a's kept VM");
      assert.deepEqual(
        fleet.hosts.map((host) => [host.host, host.verdict, host.exitCode]),
        [
          ["a", "fail", 1],
          ["b", "not run", null],
        ],
      );
      assert.match(fleet.hosts[1]!.message, /^not run: the VM of a is kept, and boma-it runs one test VM at a time/);
      assert.equal(fleet.exitCode, 1, "a's failure, not a refusal");

      // --keep always and a pass: the hosts left out are what is wrong (refused, exit 3), never a pass.
      const passing = await runFleet(
        "g2",
        [
          { name: "a", run: async (dir) => ({ ...hostReport("a", dir, true), kept }) },
          { name: "b", run: async (dir) => hostReport("b", dir, true) },
        ],
        { runsDir: tree.dir, log: silentLog(), signal: new AbortController().signal },
      );
      assert.equal(passing.exitCode, 3);
    } finally {
      await tree.remove();
    }
  });

  it("ranks exit codes: interrupted, harness, refused, bad input, failed, passed", () => {
    assert.equal(worstExitCode([0, 1, 0]), 1);
    assert.equal(worstExitCode([1, 4, 2]), 4);
    assert.equal(worstExitCode([4, 130]), 130);
    assert.equal(worstExitCode([]), 0);
  });
});
