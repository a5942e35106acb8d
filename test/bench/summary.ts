/**
 * The benchmark's arithmetic, kept pure so it is unit tested: which report phases make up each
 * benchmark phase, median/min/max over the samples, and the harness's share of an acceptance
 * run. The guest's time is its boots (firmware, boot loader and the shutdown before a reboot
 * included: they are measured per boot), Ansible's tasks, and a failing check's wait for its
 * `within` (the finding's time, reported on its own line); the harness is everything else, and
 * its goal is under 5 % of the run's machine time (its wall time, when its VMs ran one after the
 * other; see {@link overhead} for VMs side by side).
 */

/**
 * The phases the benchmark reports, each the sum of these report phases; `firstBoot` keeps a
 * phase to the VMs that booted (cold) or started from a saved first boot (warm).
 */
export const BENCH_PHASES: readonly { name: string; from: readonly string[]; firstBoot?: FirstBootKind }[] = [
  { name: "provision", from: ["provision"], firstBoot: "cold" },
  { name: "first boot to SSH", from: ["DHCP lease", "SSH"], firstBoot: "cold" },
  { name: "warm start: provision and restore", from: ["provision"], firstBoot: "warm" },
  { name: "warm start: restore to SSH", from: ["SSH"], firstBoot: "warm" },
  { name: "warm start to command-ready", from: ["provision", "SSH", "cloud-init"], firstBoot: "warm" },
  { name: "cloud-init done", from: ["cloud-init"] },
  { name: "saving the first boot", from: ["saving the first boot"] },
  { name: "apply", from: ["apply"] },
  { name: "pre-checks", from: ["checks before the reboot"] },
  { name: "reboot to SSH", from: ["reboot"] },
  { name: "system settled", from: ["system settled"] },
  { name: "post-checks", from: ["checks after the reboot"] },
  { name: "snapshots", from: ["snapshot before the reboot", "snapshot after the reboot"] },
  { name: "diagnostics", from: ["diagnostics"] },
  { name: "teardown", from: ["teardown"] },
];

/** Whether a VM booted from power-on or started from a saved first boot. */
export type FirstBootKind = "cold" | "warm";

/** One VM's life as a report has it (a scenario of `run`, or `up`). */
export interface VmSample {
  /** Absent in reports made before warm starts: those VMs all booted. */
  firstBoot?: FirstBootKind;
  phases: readonly { name: string; seconds: number }[];
  readyLagSeconds: readonly (number | null)[];
  guestBootSeconds: readonly (number | null)[];
  /** Per boot: shutdown + firmware + boot loader (power-on or reboot command until the kernel). */
  beforeKernelSeconds: readonly (number | null)[];
  ansibleTaskSeconds: number;
  /** Per check stage with a failing check: how long the longest failing one waited (its `within`). */
  findingWaitSeconds: number;
}

/** One acceptance run (`run askari`). */
export interface AcceptanceSample {
  wallSeconds: number;
  /** How many of its VMs ran at the same time (report.json's scenariosAtOnce; absent: one). */
  scenariosAtOnce?: number;
  vms: readonly VmSample[];
  peakRssMiB: number;
  verdict: string;
}

/** median, min, max of some numbers. */
export interface Stats {
  n: number;
  median: number;
  min: number;
  max: number;
}

export function stats(values: readonly number[]): Stats | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  // Three decimals: readiness lags are fractions of a second, shares a tenth of a percent.
  const round3 = (value: number) => Math.round(value * 1000) / 1000;
  return { n: sorted.length, median: round3(median), min: round3(sorted[0]!), max: round3(sorted.at(-1)!) };
}

/** Seconds of one benchmark phase in one VM's life, or null when it did not happen. */
export function phaseSeconds(sample: VmSample, phase: (typeof BENCH_PHASES)[number]): number | null {
  if (phase.firstBoot !== undefined && phase.firstBoot !== (sample.firstBoot ?? "cold")) return null;
  const parts = sample.phases.filter((entry) => phase.from.includes(entry.name));
  return parts.length === 0 ? null : round1(parts.reduce((sum, entry) => sum + entry.seconds, 0));
}

/** An acceptance run's overhead, in the terms and with the guest's invisible boot parts left out. */
export interface Overhead {
  /** Wall time minus the guest's boots (systemd-analyze) and Ansible's own task times. */
  seconds: number;
  ratio: number;
  /**
   * The same minus what the guest needed before its kernel started (shutdown before a reboot,
   * UEFI firmware, boot loader), which systemd-analyze does not count: what is left is the harness
   * (provisioning, readiness polling, checks and their `within` waits, snapshots, teardown).
   */
  harnessSeconds: number;
  harnessRatio: number;
  /** Failing checks' waits for their `within`: the finding's time, not the harness's. */
  findingWaitSeconds: number;
  /** The harness alone less the finding's waits: the goal metric (under 5 % of the wall time). */
  harnessShareSeconds: number;
  harnessShare: number;
  /** Where the harness's seconds went (see {@link HarnessParts}). */
  harnessParts: HarnessParts;
  guestBootSeconds: number;
  beforeKernelSeconds: number;
  ansibleSeconds: number;
}

/**
 * The harness's seconds of an acceptance run by where they went: its own phases, the time
 * between phases, and the rest (what the readiness waits take beyond the guest's own boot, and
 * Ansible's start), which is the harness figure minus the others.
 */
export interface HarnessParts {
  /** Every check stage, less the failing checks' waits for their `within` (counted as the finding's). */
  checks: number;
  snapshots: number;
  /** Provisioning, teardown and diagnostics of every VM. */
  provisionAndTeardown: number;
  /** Wall time outside every phase: the run's start and end, `systemd-analyze` after each boot. */
  betweenPhases: number;
  rest: number;
}

/** The measured parts of {@link HarnessParts}, each the bench phases it sums (the rest is computed). */
const HARNESS_PARTS = {
  checks: ["pre-checks", "post-checks"],
  snapshots: ["snapshots"],
  provisionAndTeardown: ["provision", "warm start: provision and restore", "saving the first boot", "diagnostics", "teardown"],
} as const;

/** The keys of {@link HarnessParts}, in the order the table shows them. */
const HARNESS_PART_KEYS = ["checks", "snapshots", "provisionAndTeardown", "betweenPhases", "rest"] as const;

/**
 * An acceptance run's overhead (see {@link Overhead}), of its machine time: the wall time when
 * its VMs ran one after the other; side by side (started together), each VM's own time and the
 * run's time outside the longest VM's phases, so that two guests' work is set against two VMs'
 * time, not one wall. (The shorter VM's gaps between its phases then count in `rest`.)
 */
export function overhead(sample: AcceptanceSample): Overhead {
  const sum = (values: readonly (number | null)[]) => values.reduce<number>((total, value) => total + (value ?? 0), 0);
  const vmTotals = sample.vms.map((vm) => vm.phases.reduce((part, phase) => part + phase.seconds, 0));
  const overlapped = (sample.scenariosAtOnce ?? 1) > 1;
  const outsidePhases = sample.wallSeconds - (overlapped ? Math.max(...vmTotals) : sum(vmTotals));
  const machineSeconds = overlapped ? sum(vmTotals) + outsidePhases : sample.wallSeconds;
  const guestBootSeconds = sum(sample.vms.flatMap((vm) => vm.guestBootSeconds));
  const beforeKernelSeconds = sum(sample.vms.flatMap((vm) => vm.beforeKernelSeconds));
  const ansibleSeconds = sample.vms.reduce((total, vm) => total + vm.ansibleTaskSeconds, 0);
  const seconds = machineSeconds - guestBootSeconds - ansibleSeconds;
  const harnessSeconds = seconds - beforeKernelSeconds;
  const ratio = (part: number) => Math.round((part / machineSeconds) * 1000) / 1000;
  const benchTotal = (names: readonly string[]) =>
    sum(sample.vms.flatMap((vm) => BENCH_PHASES.filter((phase) => names.includes(phase.name)).map((phase) => phaseSeconds(vm, phase))));
  const findingWaitSeconds = sample.vms.reduce((total, vm) => total + vm.findingWaitSeconds, 0);
  const checks = benchTotal(HARNESS_PARTS.checks) - findingWaitSeconds;
  const snapshots = benchTotal(HARNESS_PARTS.snapshots);
  const provisionAndTeardown = benchTotal(HARNESS_PARTS.provisionAndTeardown);
  const betweenPhases = outsidePhases;
  return {
    seconds: round1(seconds),
    ratio: ratio(seconds),
    harnessSeconds: round1(harnessSeconds),
    harnessRatio: ratio(harnessSeconds),
    findingWaitSeconds: round1(findingWaitSeconds),
    harnessShareSeconds: round1(harnessSeconds - findingWaitSeconds),
    harnessShare: ratio(harnessSeconds - findingWaitSeconds),
    harnessParts: {
      checks: round1(checks),
      snapshots: round1(snapshots),
      provisionAndTeardown: round1(provisionAndTeardown),
      betweenPhases: round1(betweenPhases),
      rest: round1(harnessSeconds - findingWaitSeconds - checks - snapshots - provisionAndTeardown - betweenPhases),
    },
    guestBootSeconds: round1(guestBootSeconds),
    beforeKernelSeconds: round1(beforeKernelSeconds),
    ansibleSeconds: round1(ansibleSeconds),
  };
}

/** Everything the benchmark reports. */
export interface BenchSummary {
  phases: Record<string, Stats | null>;
  acceptanceWallSeconds: Stats | null;
  readyLagSeconds: Stats | null;
  overheadRatio: Stats | null;
  overheadSeconds: Stats | null;
  beforeKernelSeconds: Stats | null;
  harnessSeconds: Stats | null;
  harnessRatio: Stats | null;
  /** The goal metric: the harness's share of the acceptance's wall time (see {@link Overhead.harnessShare}). */
  harnessShare: Stats | null;
  harnessShareSeconds: Stats | null;
  findingWaitSeconds: Stats | null;
  harnessParts: Record<keyof HarnessParts, Stats | null>;
  peakRssMiB: Stats | null;
  downSeconds: Stats | null;
  reapSeconds: Stats | null;
}

/** Summarises the samples: every VM of every run and every `up` counts for the per-phase figures. */
export function summarize(
  acceptance: readonly AcceptanceSample[],
  ups: readonly VmSample[],
  downs: readonly number[],
  reaps: readonly number[],
  upRssMiB: readonly number[] = [],
): BenchSummary {
  const vms = [...acceptance.flatMap((run) => run.vms), ...ups];
  const phases: Record<string, Stats | null> = {};
  for (const phase of BENCH_PHASES) phases[phase.name] = stats(vms.map((vm) => phaseSeconds(vm, phase)).filter((value) => value !== null));
  const overheads = acceptance.map(overhead);
  return {
    phases,
    acceptanceWallSeconds: stats(acceptance.map((run) => run.wallSeconds)),
    readyLagSeconds: stats(vms.flatMap((vm) => vm.readyLagSeconds).filter((value) => value !== null)),
    overheadRatio: stats(overheads.map((entry) => entry.ratio)),
    overheadSeconds: stats(overheads.map((entry) => entry.seconds)),
    beforeKernelSeconds: stats(vms.flatMap((vm) => vm.beforeKernelSeconds).filter((value) => value !== null)),
    harnessSeconds: stats(overheads.map((entry) => entry.harnessSeconds)),
    harnessRatio: stats(overheads.map((entry) => entry.harnessRatio)),
    harnessShare: stats(overheads.map((entry) => entry.harnessShare)),
    harnessShareSeconds: stats(overheads.map((entry) => entry.harnessShareSeconds)),
    findingWaitSeconds: stats(overheads.map((entry) => entry.findingWaitSeconds)),
    harnessParts: Object.fromEntries(
      HARNESS_PART_KEYS.map((key) => [key, stats(overheads.map((entry) => entry.harnessParts[key]))]),
    ) as BenchSummary["harnessParts"],
    peakRssMiB: stats([...acceptance.map((run) => run.peakRssMiB), ...upRssMiB]),
    downSeconds: stats(downs),
    reapSeconds: stats(reaps),
  };
}

/** How an acceptance's VMs began: all booted from power-on, all from a saved first boot, or some of each. */
export type AcceptanceStart = "cold" | "warm" | "mixed";

/** How `sample`'s VMs began (a VM without `firstBoot` booted: reports before warm starts). */
export function acceptanceStart(sample: AcceptanceSample): AcceptanceStart {
  const kinds = new Set(sample.vms.map((vm) => vm.firstBoot ?? "cold"));
  return kinds.size === 1 ? [...kinds][0]! : "mixed";
}

/** One summary per way the acceptances began, each with the `up`s that began the same way. */
export function summarizeByStart(
  acceptance: readonly AcceptanceSample[],
  ups: readonly VmSample[],
  downs: readonly number[],
  reaps: readonly number[],
): Partial<Record<AcceptanceStart, BenchSummary>> {
  const byStart: Partial<Record<AcceptanceStart, BenchSummary>> = {};
  for (const start of ["cold", "warm", "mixed"] as const) {
    const runs = acceptance.filter((sample) => acceptanceStart(sample) === start);
    const sameUps = start === "mixed" ? [] : ups.filter((vm) => (vm.firstBoot ?? "cold") === start);
    if (runs.length > 0 || sameUps.length > 0) byStart[start] = summarize(runs, sameUps, downs, reaps);
  }
  return byStart;
}

/** The speed goals (measured by the bench, never by a timed test) and where a warm acceptance stands. */
export const GOALS = { warmAcceptanceSeconds: 420, warmStartToReadySeconds: 15, harnessShare: 0.05 } as const;

/** The goals in words, each with the warm figure that judges it (or why there is none). */
export function goalLines(warm: BenchSummary | undefined): string[] {
  const judged = (what: string, value: number | undefined, goal: number, format: (value: number) => string) =>
    value === undefined
      ? `${what}: - (no warm acceptance measured)`
      : `${what}: ${format(value)} (goal ${format(goal)} or less: ${value <= goal ? "met" : "not met"})`;
  const seconds = (value: number) => `${value.toFixed(1)} s`;
  const percent = (value: number) => `${(value * 100).toFixed(1)} %`;
  return [
    judged("askari RED→GREEN from saved first boots", warm?.acceptanceWallSeconds?.median, GOALS.warmAcceptanceSeconds, seconds),
    judged("warm start to command-ready", warm?.phases["warm start to command-ready"]?.median, GOALS.warmStartToReadySeconds, seconds),
    judged("the harness's share", warm?.harnessShare?.median, GOALS.harnessShare, percent),
  ];
}

/** The table's rows for one summary (name, figures, unit). */
function tableRows(summary: BenchSummary): [string, Stats | null, string][] {
  return [
    ...BENCH_PHASES.map((phase) => [phase.name, summary.phases[phase.name] ?? null, "s"] as [string, Stats | null, string]),
    ["down (a kept run)", summary.downSeconds, "s"],
    ["reap (nothing left)", summary.reapSeconds, "s"],
    ["readyLag", summary.readyLagSeconds, "s"],
    ["askari RED→GREEN wall", summary.acceptanceWallSeconds, "s"],
    ["before kernel (per boot)", summary.beforeKernelSeconds, "s"],
    ["overhead (issue's def.)", summary.overheadSeconds, "s"],
    ["overhead ratio", summary.overheadRatio, ""],
    ["harness + findings", summary.harnessSeconds, "s"],
    ["  findings' waits", summary.findingWaitSeconds, "s"],
    ["harness alone", summary.harnessShareSeconds, "s"],
    ["harness share", summary.harnessShare, ""],
    ["  of it: checks", summary.harnessParts.checks, "s"],
    ["  snapshots", summary.harnessParts.snapshots, "s"],
    ["  provision, teardown", summary.harnessParts.provisionAndTeardown, "s"],
    ["  between phases", summary.harnessParts.betweenPhases, "s"],
    ["  waits' slack, Ansible", summary.harnessParts.rest, "s"],
    ["harness peak RSS (MiB)", summary.peakRssMiB, "MiB"],
  ];
}

/** The summaries of {@link summarizeByStart} side by side: each row's median (and n) per way the VMs began. */
export function sideBySide(byStart: Partial<Record<AcceptanceStart, BenchSummary>>): string {
  const columns = (["cold", "warm", "mixed"] as const).filter((start) => byStart[start] !== undefined);
  const rows = columns.map((start) => tableRows(byStart[start]!));
  const cell = (value: Stats | null, unit: string) => (value ? `${format(value.median, unit).trim()} (${value.n})` : "-").padStart(14);
  const lines = [`${"median (n), s unless noted".padEnd(36)}${columns.map((start) => start.padStart(14)).join("")}`];
  for (const [index, [name, , unit]] of rows[0]!.entries()) {
    const cells = rows.map((row) => row[index]![1]);
    if (cells.every((value) => value === null)) continue;
    lines.push(`${name.padEnd(36)}${cells.map((value) => cell(value, unit)).join("")}`);
  }
  return lines.join("\n");
}

/** The headline: the goal metric, in words. */
export function headline(summary: BenchSummary): string {
  const share = summary.harnessShare;
  if (!share) return "harness share: - (no acceptance run)";
  const percent = (value: number) => `${(value * 100).toFixed(1)} %`;
  return `harness share: ${percent(share.median)} of the acceptance's wall time (goal under 5 %; ${share.n} run${share.n === 1 ? "" : "s"}, ${percent(share.min)}-${percent(share.max)}), ${summary.harnessShareSeconds?.median.toFixed(1)} s of ${summary.acceptanceWallSeconds?.median.toFixed(1)} s`;
}

/** The short table printed at the end. */
export function table(summary: BenchSummary): string {
  const lines = [`${"seconds unless noted".padEnd(24)}${"n".padStart(3)}${"median".padStart(9)}${"min".padStart(9)}${"max".padStart(9)}`];
  for (const [name, value, unit] of tableRows(summary)) {
    if (!value) {
      lines.push(`${name.padEnd(24)}${"-".padStart(3)}`);
      continue;
    }
    lines.push(`${name.padEnd(24)}${String(value.n).padStart(3)}${format(value.median, unit)}${format(value.min, unit)}${format(value.max, unit)}`);
  }
  return lines.join("\n");
}

function format(value: number, unit: string): string {
  return (unit === "" ? value.toFixed(3) : value.toFixed(2)).padStart(9);
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
