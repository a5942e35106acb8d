/**
 * Past runs, as their run dirs keep them: `runs` lists them (a fleet's hosts included), `report`
 * finds one by any unique part of its name and says what it came to as a person reads it, in the
 * order a reader looks (the verdict, each scenario, what failed and what it saw, what the reboot
 * changed, where the diagnostics are, how to get into a kept VM).
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { closest } from "../did-you-mean.ts";
import { BadInputError } from "../errors.ts";
import { provenInWords, vmEntryLine, type RebootEntry, type RunReport, type ScenarioReport } from "./report.ts";

/** One past run, as `runs` lists it. */
export interface PastRun {
  runId: string;
  /** The run dir's name (`<stamp>-<host>`). */
  name: string;
  dir: string;
  host: string;
  profile: string;
  startedAt: string;
  verdict: RunReport["verdict"];
  exitCode: number;
  wallSeconds: number;
  /** The run id of the VM it kept, if it kept one. */
  kept: string | null;
  /** The fleet dir it ran in, for a host of `run --group`. */
  fleet?: string;
}

/** The report.json of a run dir, or undefined when it has none that reads as one. */
async function readReport(dir: string): Promise<RunReport | undefined> {
  try {
    const report = JSON.parse(await readFile(join(dir, "report.json"), "utf8")) as RunReport;
    return typeof report.runId === "string" && Array.isArray(report.scenarios) ? report : undefined;
  } catch {
    return undefined;
  }
}

/** Every run under `runsDir` with a report, a fleet's hosts included; newest first. */
export async function listPastRuns(runsDir: string): Promise<PastRun[]> {
  const entries = await readdir(runsDir, { withFileTypes: true }).catch(() => []);
  const runs: PastRun[] = [];
  for (const entry of entries.filter((candidate) => candidate.isDirectory())) {
    const dir = join(runsDir, entry.name);
    if (/-fleet-/.test(entry.name)) {
      const hosts = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const host of hosts.filter((candidate) => candidate.isDirectory())) {
        const report = await readReport(join(dir, host.name));
        if (report) runs.push(pastRun(report, join(dir, host.name), host.name, dir));
      }
      continue;
    }
    const report = await readReport(dir);
    if (report) runs.push(pastRun(report, dir, entry.name));
  }
  return runs.sort((a, b) => b.startedAt.localeCompare(a.startedAt) || b.name.localeCompare(a.name));
}

function pastRun(report: RunReport, dir: string, name: string, fleet?: string): PastRun {
  return {
    runId: report.runId,
    name,
    dir,
    host: report.host,
    profile: report.profile,
    startedAt: report.startedAt,
    verdict: report.verdict,
    exitCode: report.exitCode,
    wallSeconds: report.wallSeconds,
    kept: report.kept?.run ?? null,
    ...(fleet ? { fleet } : {}),
  };
}

/**
 * The past run `reference` names: its run id, its run dir's name, or any part of either that
 * only one run has; the newest when it is undefined. Bad input (exit 2) otherwise, with the
 * closest name.
 */
export function resolvePastRun(runs: readonly PastRun[], reference: string | undefined, runsDir: string): PastRun {
  if (runs.length === 0)
    throw new BadInputError({ message: `no past runs in ${runsDir} (a run writes its report.json there; --runs-dir names another place)` });
  if (reference === undefined) return runs[0]!;
  const exact = runs.find((run) => run.runId === reference || run.name === reference || run.dir === reference);
  if (exact) return exact;
  const matching = runs.filter((run) => run.runId.includes(reference) || run.name.includes(reference));
  if (matching.length === 1) return matching[0]!;
  if (matching.length > 1) {
    throw new BadInputError({
      message: `${JSON.stringify(reference)} names ${matching.length} past runs (${matching
        .slice(0, 5)
        .map((run) => run.name)
        .join(", ")}${matching.length > 5 ? ", …" : ""}); give more of the name`,
    });
  }
  const hint = closest(
    reference,
    runs.map((run) => run.name),
  );
  throw new BadInputError({
    message: `no past run ${JSON.stringify(reference)} in ${runsDir}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}; \`boma-it runs\` lists them`,
  });
}

/** The past run's report.json. */
export async function readPastReport(run: PastRun): Promise<RunReport> {
  const report = await readReport(run.dir);
  if (!report) throw new BadInputError({ message: `${join(run.dir, "report.json")} is gone or no longer reads as a report` });
  return report;
}

/** `runs` as a table with headings. */
export function pastRunsTable(runs: readonly PastRun[], runsDir: string): string {
  if (runs.length === 0) return `no past runs in ${runsDir}`;
  const rows = runs.map((run) => [
    run.name,
    run.host,
    run.startedAt.replace("T", " ").slice(0, 16),
    `${run.verdict} (${run.exitCode})`,
    `${Math.round(run.wallSeconds)} s`,
    run.kept ? `kept ${run.kept}` : "-",
  ]);
  const header = ["RUN", "HOST", "STARTED (UTC)", "VERDICT", "TOOK", "VM"];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join("  ")
      .trimEnd();
  return [`past runs in ${runsDir} (newest first):`, line(header), ...rows.map(line)].join("\n");
}

/** Which revision a scenario applied, for its line: ` (ref v2 = 1a2b3c4d5e6f, on baseline v1 = ...)`, or the worktree's state. */
export function revisionLabel(scenario: Pick<ScenarioReport, "ref" | "commit" | "dirty" | "baseline">): string {
  const at = scenario.ref
    ? `ref ${scenario.ref} = ${scenario.commit?.slice(0, 12)}`
    : scenario.commit === "worktree"
      ? `worktree${scenario.dirty ? ", uncommitted changes" : ""}`
      : "";
  const on = scenario.baseline ? `, on baseline ${scenario.baseline.ref} = ${scenario.baseline.commit.slice(0, 12)}` : "";
  return at || on ? ` (${at}${on})` : "";
}

/** One kind of reboot of a scenario in a line: how it was proven and whether it met the expectation. */
export function rebootEntryLine(entry: RebootEntry): string {
  const verdict = entry.ok ? "as expected" : "NOT as expected";
  if (!entry.proof) return `${entry.kind}: did not come back: ${entry.notBack?.reason ?? "unknown"} (${verdict})`;
  const proven = provenInWords(entry.proof);
  const failed = entry.checks.filter((check) => !check.ok).length;
  return `${entry.kind}: ${proven}; ${entry.checks.length - failed} of ${entry.checks.length} checks passed after it (${verdict})${entry.diagnostics ? `; diagnostics: ${entry.diagnostics}` : ""}`;
}

/** How many lines of a before/after difference are shown per side before "and N more". */
const DIFF_LINES = 4;

/** What one scenario came to, in the order a reader looks: its outcome, what failed, what the reboot changed. */
function scenarioLines(scenario: ScenarioReport): string[] {
  const about = [`expect: ${scenario.expect}`, ...(scenario.judged === false ? ["not judged"] : []), revisionLabel(scenario).slice(2, -1)].filter(Boolean);
  const lines = [`${scenario.name.toUpperCase()} (${about.join("; ")}): ${scenario.ok ? "as expected" : "NOT as expected"}`];
  lines.push(`  ${scenario.outcome}`);
  // Several kinds (or one that is not clean) are said a line each below.
  if (scenario.vms) for (const vm of scenario.vms) lines.push(`  ${vmEntryLine(vm)}`);
  else if (scenario.bootIds.length === 2 && !scenario.reboots)
    lines.push(`  rebooted: boot id ${scenario.bootIds[0].slice(0, 8)}… → ${scenario.bootIds[1].slice(0, 8)}…`);
  for (const entry of scenario.reboots ?? []) lines.push(`  ${rebootEntryLine(entry)}`);
  const failed = scenario.checks.filter((check) => !check.ok);
  for (const check of failed) {
    const after = check.reboot ? `after a ${check.reboot} reboot` : "after the reboot";
    lines.push(`  FAIL ${check.stage === "pre-reboot" ? "before the reboot" : after}: ${check.name}: ${check.detail}`);
  }
  const passed = scenario.checks.length - failed.length;
  if (scenario.checks.length > 0) lines.push(`  checks: ${passed} of ${scenario.checks.length} passed (before and after the reboot)`);
  if (scenario.idempotence) {
    const { changed, mode } = scenario.idempotence;
    lines.push(
      `  idempotence${mode === "strict" ? " (strict)" : ""}: a second apply ${changed.length === 0 ? "changed nothing" : `changed ${changed.length} task(s): ${changed.join(", ")}`}`,
    );
  }
  for (const [item, diff] of Object.entries(scenario.snapshotDiff ?? {})) {
    if (diff.added.length === 0 && diff.removed.length === 0) continue;
    lines.push(`  the reboot changed ${item}:`);
    for (const [sign, side] of [
      ["-", diff.removed],
      ["+", diff.added],
    ] as const) {
      lines.push(...side.slice(0, DIFF_LINES).map((entry) => `    ${sign} ${entry}`));
      if (side.length > DIFF_LINES) lines.push(`    ${sign} … and ${side.length - DIFF_LINES} more`);
    }
  }
  if (scenario.notBack) lines.push(`  did not come back: ${scenario.notBack.reason}`);
  if (scenario.diagnostics) lines.push(`  diagnostics: ${scenario.diagnostics} (INDEX.txt says what each file is)`);
  return lines;
}

/** The VMs' size and how many ran at once, in words (reports made before the size was recorded have none). */
export function vmsInWords(report: Pick<RunReport, "vm" | "scenariosAtOnce">): string | undefined {
  if (!report.vm) return undefined;
  const { vcpus, memoryMiB } = report.vm;
  return `VMs of ${vcpus} vCPU${vcpus === 1 ? "" : "s"} and ${memoryMiB} MiB${(report.scenariosAtOnce ?? 1) > 1 ? `, ${report.scenariosAtOnce} side by side` : ""}`;
}

/**
 * A run's result as text. `short` is what `run` prints at its end (a line per scenario); the whole
 * of it is what `report` prints: each scenario's failed checks with what they saw and what the
 * reboot changed.
 */
export function runReportText(report: RunReport, options: { short: boolean; keptOnStderr?: (line: string) => void }): string {
  const head = `${report.verdict.toUpperCase()}: ${report.profile} (${report.wallSeconds} s${options.short ? "" : `, exit ${report.exitCode}, started ${report.startedAt.replace("T", " ").slice(0, 19)} UTC, run ${report.runId}`})`;
  const lines = [head];
  if (options.short) lines.push(...report.scenarios.map((scenario) => `  ${scenario.name.toUpperCase()}${revisionLabel(scenario)}: ${scenario.outcome}`));
  else {
    const vms = vmsInWords(report);
    if (vms) lines.push(`  ${vms}`);
    lines.push(...report.scenarios.flatMap((scenario) => scenarioLines(scenario).map((line) => `  ${line}`)));
  }
  if (report.error) {
    lines.push(`  ${report.error.message.split("\n")[0]}`, ...report.error.causes.map((cause) => `    caused by: ${cause}`));
  }
  const blocked = report.egress?.blocked ?? [];
  if (!options.short && blocked.length > 0) {
    const names = [...new Set(blocked.map((attempt) => attempt.name ?? `${attempt.address}:${attempt.port}`))];
    lines.push(`  the allowlist refused: ${names.slice(0, 6).join(", ")}${names.length > 6 ? `, and ${names.length - 6} more` : ""}`);
  }
  lines.push(`  report: ${join(report.runDir, "report.json")}`, `  log: ${join(report.runDir, "run.log")}`);
  if (report.diagnostics) lines.push(`  diagnostics: ${report.diagnostics}`);
  if (report.kept) {
    const kept = [`the VM is kept: get in with \`${report.kept.ssh}\``, `clean up with \`npm run boma-it -- down ${report.kept.run}\` (or \`npm run reap\`)`];
    if (options.keptOnStderr) kept.forEach(options.keptOnStderr);
    else lines.push(...kept.map((line) => `  ${line}`));
  }
  return lines.join("\n");
}
