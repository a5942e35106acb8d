/** What the benchmark takes from a report: one VM's life as a {@link VmSample}. */
import type { CheckResult } from "../../orchestrator/guest/checks.ts";
import type { VmSample } from "./summary.ts";

/** The parts of a scenario report (or up.json) a sample is made of. */
export interface ReportedVm {
  firstBoot?: { kind: "cold" | "warm" } | null;
  phases: { name: string; seconds: number }[];
  readyLagSeconds: (number | null)[];
  guestBootSeconds?: (number | null)[];
  beforeKernelSeconds?: (number | null)[];
  apply?: { tasks: { seconds: number }[] } | null;
  checks?: Pick<CheckResult, "stage" | "ok" | "seconds">[];
}

/**
 * The finding's time in a VM's checks: checks of a stage run at once, so a stage with failing
 * checks waited as long as its longest failing one (its `within`); summed over the stages.
 */
export function findingWaitSeconds(checks: readonly Pick<CheckResult, "stage" | "ok" | "seconds">[]): number {
  const longest = new Map<string, number>();
  for (const check of checks) if (!check.ok) longest.set(check.stage, Math.max(longest.get(check.stage) ?? 0, check.seconds));
  return Math.round([...longest.values()].reduce((sum, seconds) => sum + seconds, 0) * 10) / 10;
}

/** One VM's life from its report. */
export function vmSample(report: ReportedVm): VmSample {
  return {
    ...(report.firstBoot ? { firstBoot: report.firstBoot.kind } : {}),
    phases: report.phases,
    readyLagSeconds: report.readyLagSeconds,
    guestBootSeconds: report.guestBootSeconds ?? [],
    beforeKernelSeconds: report.beforeKernelSeconds ?? [],
    ansibleTaskSeconds: (report.apply?.tasks ?? []).reduce((sum, task) => sum + task.seconds, 0),
    findingWaitSeconds: findingWaitSeconds(report.checks ?? []),
  };
}
