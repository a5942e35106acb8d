/**
 * A whole group (or several profiles) in turn, one VM at a time: each host is a run of its own
 * under one fleet dir (`<runs-dir>/<stamp>-fleet-<name>/`), which gets fleet.json and one
 * junit.xml with a testsuite per host. A host that fails does not stop the others; an interrupt
 * ends the current host cleanly and leaves the rest "not run", and so does a host whose VM is
 * kept (asked for with --keep): one test VM at a time, so the next could not start. The exit
 * code is the worst.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { XMLBuilder } from "fast-xml-parser";
import { newRunIdentity } from "../../infra/spec.ts";
import { asBomaError, BomaError, ExitCode, InterruptedError } from "../errors.ts";
import type { Log } from "../log.ts";
import type { RunReport } from "./report.ts";

/** One host of a fleet. */
export interface FleetTarget {
  /** The host (or profile) name, for the table. */
  name: string;
  /** Runs it with `runsDir` as its runs dir; returns its report. */
  run(runsDir: string): Promise<RunReport>;
}

/** A host's line of fleet.json. */
export interface FleetEntry {
  host: string;
  verdict: "pass" | "fail" | "error" | "not run";
  exitCode: number | null;
  /** What failed: checks by name, or the error. */
  failed: string[];
  message: string;
  wallSeconds: number;
  runDir: string | null;
}

/** fleet.json. */
export interface FleetReport {
  fleet: string;
  dir: string;
  exitCode: number;
  hosts: FleetEntry[];
  startedAt: string;
  finishedAt: string;
}

/** The worst of exit codes: an interrupt, then a harness fault, a refusal, bad input, a failure, a pass. */
export function worstExitCode(codes: readonly number[]): number {
  const rank = (code: number) => (code === ExitCode.interrupted ? 100 : code);
  return codes.reduce((worst, code) => (rank(code) > rank(worst) ? code : worst), ExitCode.pass);
}

/** Runs every target in turn; returns the fleet's report (written with its junit.xml). */
export async function runFleet(
  name: string,
  targets: readonly FleetTarget[],
  context: { runsDir: string; log: Log; signal: AbortSignal },
): Promise<FleetReport> {
  const started = new Date();
  const dir = join(context.runsDir, `${newRunIdentity(name, started).stamp}-fleet-${name}`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const report: FleetReport = { fleet: name, dir, exitCode: ExitCode.pass, hosts: [], startedAt: started.toISOString(), finishedAt: "" };
  const reports: RunReport[] = [];
  context.log.info(`fleet ${name}: ${targets.length} host(s) in turn (${targets.map((target) => target.name).join(", ")}); fleet dir ${dir}`);
  let keptBy: string | undefined;
  for (const target of targets) {
    if (context.signal.aborted || keptBy) {
      const why = keptBy
        ? `not run: the VM of ${keptBy} is kept, and boma-it runs one test VM at a time (\`down\` it and run the rest, or use --keep never)`
        : "not run: interrupted before its turn";
      report.hosts.push({ host: target.name, verdict: "not run", exitCode: null, failed: [], message: why, wallSeconds: 0, runDir: null });
      continue;
    }
    try {
      const host = await context.log.step(
        `host ${target.name}`,
        () => target.run(dir),
        (result) => result.verdict === "pass",
      );
      reports.push(host);
      report.hosts.push({
        host: target.name,
        verdict: host.verdict,
        exitCode: host.exitCode,
        failed: host.error
          ? [host.error.message.split("\n")[0]!]
          : host.scenarios
              .flatMap((scenario) => (scenario.ok ? [] : scenario.checks.filter((check) => !check.ok).map((check) => `${scenario.name}: ${check.name}`)))
              .slice(0, 20),
        message: host.message.split("\n")[0] ?? "",
        wallSeconds: host.wallSeconds,
        runDir: host.runDir,
      });
      if (host.kept) {
        keptBy = target.name;
        if (targets.indexOf(target) < targets.length - 1)
          context.log.warn(`${target.name}'s VM is kept: the hosts after it are not run (one test VM at a time)`);
      }
    } catch (caught) {
      // Bad input or a refusal for this host (its profile, its inventory entry): the others still run.
      const error = asBomaError(caught, context.signal);
      const message = error instanceof Error ? error.message.split("\n")[0]! : String(error);
      report.hosts.push({
        host: target.name,
        verdict: "error",
        exitCode: error instanceof BomaError ? error.exitCode : ExitCode.harnessFault,
        failed: [message],
        message,
        wallSeconds: 0,
        runDir: null,
      });
      if (error instanceof InterruptedError) continue;
    }
  }
  // Hosts left out after an interrupt count as interrupted. Those left out behind a kept VM count
  // as refused (the one-VM rule) only when nothing failed: a failure that kept its VM stays the
  // fleet's verdict, not hidden under "refused".
  const ran = report.hosts.flatMap((host) => (host.exitCode === null ? [] : [host.exitCode]));
  const leftOut = context.signal.aborted ? ExitCode.interrupted : ran.some((code) => code !== ExitCode.pass) ? ExitCode.pass : ExitCode.refused;
  report.exitCode = worstExitCode(report.hosts.map((host) => host.exitCode ?? (host.verdict === "not run" ? leftOut : ExitCode.harnessFault)));
  report.finishedAt = new Date().toISOString();
  await writeFile(join(dir, "fleet.json"), `${JSON.stringify(report, null, 2)}\n`, { mode: 0o600 });
  await writeFile(join(dir, "junit.xml"), fleetJunit(report, reports), { mode: 0o600 });
  return report;
}

/** JUnit XML of a fleet: one testsuite per host, a case per check and stage of each scenario, plus its verdict. */
export function fleetJunit(fleet: FleetReport, reports: readonly RunReport[]): string {
  const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: "@", format: true, indentBy: "  " });
  const suites = fleet.hosts.map((entry) => {
    const host = reports.find((report) => report.runDir === entry.runDir);
    const cases: Record<string, unknown>[] = [];
    for (const scenario of host?.scenarios ?? []) {
      for (const check of scenario.checks) {
        const expectedFailure = scenario.expect === "fail" && check.stage === "post-reboot";
        cases.push({
          "@classname": `${entry.host}.${scenario.name}.${check.stage}`,
          "@name": check.name,
          "@time": check.seconds.toFixed(1),
          ...(!check.ok && !expectedFailure ? { failure: { "@message": check.detail, "#text": check.detail } } : {}),
        });
      }
    }
    const verdict =
      entry.verdict === "pass"
        ? {}
        : entry.verdict === "not run"
          ? { skipped: { "@message": entry.message } }
          : entry.verdict === "error"
            ? { error: { "@message": entry.message, "#text": entry.message } }
            : { failure: { "@message": entry.message, "#text": entry.message } };
    cases.push({ "@classname": entry.host, "@name": "survives the reboot", "@time": entry.wallSeconds.toFixed(1), ...verdict });
    return {
      "@name": entry.host,
      "@tests": String(cases.length),
      "@failures": String(cases.filter((testcase) => testcase.failure).length),
      "@errors": String(cases.filter((testcase) => testcase.error).length),
      "@skipped": String(cases.filter((testcase) => testcase.skipped).length),
      "@time": entry.wallSeconds.toFixed(1),
      testcase: cases,
    };
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n${builder.build({ testsuites: { "@name": `boma-it fleet ${fleet.fleet}`, testsuite: suites } }) as string}`;
}

/** The fleet's table: a line per host (verdict, what failed, wall time). */
export function fleetTable(fleet: FleetReport): string {
  const width = Math.max(4, ...fleet.hosts.map((host) => host.host.length));
  return [
    `${fleet.exitCode === 0 ? "PASS" : "FAIL"}: fleet ${fleet.fleet} (${fleet.hosts.length} host(s), exit ${fleet.exitCode})`,
    `  ${"host".padEnd(width)}  verdict  wall     what failed`,
    ...fleet.hosts.map(
      (host) =>
        `  ${host.host.padEnd(width)}  ${host.verdict.padEnd(7)}  ${`${Math.round(host.wallSeconds)} s`.padEnd(7)}  ${host.failed.length > 0 ? host.failed.join("; ").slice(0, 200) : "-"}`,
    ),
    `  fleet.json: ${join(fleet.dir, "fleet.json")}`,
    `  junit.xml:  ${join(fleet.dir, "junit.xml")}`,
  ].join("\n");
}
