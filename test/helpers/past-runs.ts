/**
 * Past runs as run dirs hold them (report.json): a pass, a RED finding whose GREEN broke and kept
 * its VM, a harness fault (exit 4), and a fleet's host. For the tests of `runs`, `report` and the page.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ExitCode } from "../../orchestrator/errors.ts";
import { emptyScenarioReport, type RunReport, type ScenarioReport } from "../../orchestrator/run/report.ts";

/** A report as a run writes it, with what the case needs. */
function report(runsDir: string, name: string, fields: Partial<RunReport>): RunReport {
  const host = name.split("-").at(-1)!;
  return {
    runId: `boma-it-${host}-${name.slice(0, 15)}`,
    profile: host,
    host,
    engine: "direct",
    accel: "tcg",
    certs: "internal",
    egress: { mode: "allowlist", allowed: [], blocked: [] },
    verdict: "pass",
    exitCode: 0,
    message: "",
    scenarios: [],
    readyLagSeconds: [],
    diagnostics: null,
    harness: { peakRssMiB: 80 },
    kept: null,
    error: null,
    startedAt: `${name.slice(0, 4)}-${name.slice(4, 6)}-${name.slice(6, 8)}T${name.slice(9, 11)}:${name.slice(11, 13)}:${name.slice(13, 15)}.000Z`,
    finishedAt: "",
    wallSeconds: 748.2,
    runDir: join(runsDir, name),
    ...fields,
  };
}

function scenario(name: "red" | "green", fields: Partial<ScenarioReport>): ScenarioReport {
  return { ...emptyScenarioReport({ name, expect: name === "red" ? "fail" : "pass" }, `boma-it-askari-${name}`), ...fields };
}

async function writeRun(dir: string, document: RunReport): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "report.json"), `${JSON.stringify(document, null, 2)}\n`);
}

/** Three runs of askari and a fleet's kazi, as run dirs hold them. */
export async function recordedRuns(runsDir: string) {
  const passing = report(runsDir, "20261201-090000-askari", {
    message: "RED is faithful; GREEN survived the reboot",
    vm: { vcpus: 1, memoryMiB: 3072, diskGiB: 20 },
    scenariosAtOnce: 2,
    scenarios: [
      scenario("red", {
        ok: true,
        faithful: true,
        outcome: "RED is faithful: it passed before the reboot and broke after it (web through the published port)",
        commit: "worktree",
        dirty: false,
      }),
      scenario("green", { ok: true, outcome: "GREEN survived the reboot", commit: "worktree", dirty: false }),
    ],
  });
  const finding = report(runsDir, "20261202-100000-askari", {
    verdict: "fail",
    exitCode: ExitCode.systemUnderTestFailed,
    message: "GREEN broke after the reboot: web through the published port",
    diagnostics: join(runsDir, "20261202-100000-askari", "green", "diagnostics"),
    kept: {
      run: "boma-it-askari-20261202-101500",
      ssh: "npm run boma-it -- ssh boma-it-askari-20261202-101500",
      reap: "npm run boma-it -- down boma-it-askari-20261202-101500",
    },
    egress: { mode: "allowlist", allowed: [], blocked: [{ name: "0.debian.pool.ntp.org", count: 600 }] },
    scenarios: [
      scenario("red", { ok: true, faithful: true, outcome: "RED is faithful" }),
      scenario("green", {
        ok: false,
        outcome: "GREEN broke after the reboot: web through the published port",
        ref: "fix-forward",
        commit: "1a2b3c4d5e6f7a8b9c0d",
        bootIds: ["68aeaa18-0000", "b4a817f2-0000"],
        checks: [
          { name: "web through the published port", stage: "pre-reboot", ok: true, detail: "GET http://10.234.7.10:8080/: HTTP 200 (want 200)", seconds: 0.4 },
          {
            name: "web through the published port",
            stage: "post-reboot",
            ok: false,
            detail: "GET http://10.234.7.10:8080/: no answer within 5 s",
            seconds: 20.3,
          },
        ],
        snapshotDiff: {
          "nft ruleset": { added: [], removed: ['iifname "docker0" accept', 'oifname "docker0" accept', "a", "b", "c", "d"] },
          containers: { added: [], removed: [] },
        },
        idempotence: { mode: true, changed: ["Import the image (offline)"], seconds: 61.2 },
        diagnostics: join(runsDir, "20261202-100000-askari", "green", "diagnostics"),
      }),
    ],
  });
  const fault = report(runsDir, "20261203-110000-askari", {
    verdict: "error",
    exitCode: ExitCode.harnessFault,
    message: "after the reboot the VM stalled before its kernel started, twice",
    error: { kind: "BootStallError", message: "after the reboot the VM stalled before its kernel started, twice", causes: ["Error: no kernel within 150 s"] },
    scenarios: [scenario("red", { outcome: "not judged: a fault of the harness or the infrastructure: the VM stalled" })],
  });
  const fleetHost = report(runsDir, "20261203-120500-kazi", {
    message: "GREEN survived the reboot",
    runDir: join(runsDir, "20261203-120000-fleet-mesh", "20261203-120500-kazi"),
  });
  await writeRun(passing.runDir, passing);
  await writeRun(finding.runDir, finding);
  await writeRun(fault.runDir, fault);
  await writeRun(fleetHost.runDir, fleetHost);
  // A run dir without a report (a run still going, or cut short before its first write) is no past run.
  await mkdir(join(runsDir, "20261203-130000-askari"), { recursive: true });
  return { passing, finding, fault, fleetHost };
}
