/** The bodies of the verbs on a kept VM: what each does once attached (see attach.ts). */
import type { AttachedRun, VerbOutcome } from "./attach.ts";
import { applyStep, checkStage, rebootStep } from "./scenario.ts";

/** Applies the run's profile again with its scenario's vars; the apply's failure is thrown (exit 1). */
export async function attachedApply(run: AttachedRun): Promise<VerbOutcome> {
  const vars = run.steps.profile.document.scenarios?.[run.record.scenario ?? "green"]?.vars ?? {};
  const applied = await run.session.timed("apply", () => applyStep(run.steps, run.session, vars));
  return { ok: true, outcome: `applied ${run.steps.profile.playbookFile}: ${applied.recap}`, details: { recap: applied.recap, tasks: applied.tasks } };
}

/** Runs the profile's checks now. */
export async function attachedCheck(run: AttachedRun): Promise<VerbOutcome> {
  const checks = await run.session.timed("checks", () => checkStage(run.steps, run.session, "pre-reboot"));
  run.session.report.checks.push(...checks);
  const failed = checks.filter((check) => !check.ok);
  return { ok: failed.length === 0, outcome: failed.length === 0 ? `every check passes (${checks.length})` : `${failed.length} of ${checks.length} checks fail: ${failed.map((check) => check.name).join(", ")}` };
}

/** The run's reboot: proof, settle, checks, before/after diff. */
export async function attachedReboot(run: AttachedRun): Promise<VerbOutcome> {
  const outcome = await rebootStep(run.steps, run.session);
  run.session.report.checks.push(...outcome.post);
  const failed = outcome.post.filter((check) => !check.ok);
  const details = { bootIds: run.session.report.bootIds, snapshotDiff: run.session.report.snapshotDiff, notBack: run.session.report.notBack ?? null, bootResets: run.session.report.bootResets };
  if (!outcome.proof) return { ok: false, outcome: `the VM did not come back after the reboot: ${run.session.report.notBack?.reason ?? "unknown"}`, details };
  return {
    ok: failed.length === 0,
    outcome: failed.length === 0 ? `rebooted (boot id ${outcome.proof.bootIdBefore.slice(0, 8)}… → ${outcome.proof.bootIdAfter.slice(0, 8)}…) and every check passes` : `rebooted, and ${failed.length} of ${outcome.post.length} checks fail after it: ${failed.map((check) => check.name).join(", ")}`,
    details,
  };
}
