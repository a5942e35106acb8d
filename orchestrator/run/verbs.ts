/** The bodies of the verbs on a kept VM: what each does once attached (see attach.ts). */
import { RefusedError } from "../errors.ts";
import { pinSeedHostKeys } from "../guest/host-keys.ts";
import { resetToPoint } from "../host/reset-point.ts";
import type { AttachedRun, VerbOutcome } from "./attach.ts";
import { rebootKinds, type RebootKind } from "../profile/schema.ts";
import { rebootByKinds, rebootLabel } from "./reboots.ts";
import { applyStep } from "./scenario.ts";
import { checkStage, deriveSurvival, scenarioVms, verifyStage, type VerifyPlan } from "./stages.ts";
import { provenInWords, rebootedAs, reportedProof } from "./report.ts";

/** The vars of the scenario the kept VM was brought up with. */
function scenarioVars(run: AttachedRun): Record<string, unknown> {
  return run.stepContext.profile.document.scenarios?.[run.record.scenario ?? "green"]?.vars ?? {};
}

/** The profile's verify playbook with the run's scenario vars. */
function verifyPlan(run: AttachedRun): VerifyPlan {
  return { profile: run.stepContext.profile, vars: scenarioVars(run) };
}

/** Applies the run's profile again with its scenario's vars; the apply's failure is thrown (exit 1). */
export async function attachedApply(run: AttachedRun): Promise<VerbOutcome> {
  const vars = scenarioVars(run);
  const applied = await run.session.timed("apply", () => applyStep(run.stepContext, run.session, vars));
  const at = run.revision ? ` (${run.revision.ref} = ${run.revision.commit.slice(0, 12)})` : "";
  return {
    ok: true,
    outcome: `applied ${run.stepContext.profile.playbookFile}${at}: ${applied.recap}${applied.hostKeyChange ? `; host keys re-pinned (${applied.hostKeyChange.detail})` : ""}`,
    details: {
      recap: applied.recap,
      tasks: applied.tasks,
      ...(run.revision ? { revision: run.revision } : {}),
      ...(applied.hostKeyChange ? { hostKeyChange: applied.hostKeyChange } : {}),
    },
  };
}

/** Runs the profile's checks (and its verify playbook) now. */
export async function attachedCheck(run: AttachedRun): Promise<VerbOutcome> {
  const checks = [
    ...(await run.session.timed("checks", () => checkStage(run.stepContext, run.session, "pre-reboot"))),
    ...(await verifyStage(run.stepContext, run.session, "pre-reboot", verifyPlan(run))),
  ];
  run.session.report.checks.push(...checks);
  const failed = checks.filter((check) => !check.ok);
  return {
    ok: failed.length === 0,
    outcome:
      failed.length === 0
        ? `every check passes (${checks.length})`
        : `${failed.length} of ${checks.length} checks fail: ${failed.map((check) => check.name).join(", ")}`,
  };
}

/**
 * The run's reboot by each kind asked for (`--kind`, else the profile's `reboot`): proof, settle,
 * checks, before/after diff; several kinds each from the state the VM is in now.
 */
export async function attachedReboot(run: AttachedRun, asked?: readonly RebootKind[]): Promise<VerbOutcome> {
  const { stepContext, session } = run;
  const kinds = asked ?? rebootKinds(stepContext.profile.document.reboot);
  const survival = stepContext.profile.document.survival !== false ? await deriveSurvival(stepContext, session) : undefined;
  const outcomes = await rebootByKinds(stepContext, session, kinds, {
    checks: stepContext.profile.document.checks,
    ...(survival ? { survival } : {}),
    verify: verifyPlan(run),
    failed: (_kind, post) => post.some((check) => !check.ok),
    order: stepContext.profile.document.scenarios?.[run.record.scenario ?? "green"]?.rebootOrder ?? stepContext.profile.document.rebootOrder ?? "all",
  });
  const details = {
    bootIds: session.report.bootIds,
    snapshotDiff: session.report.snapshotDiff,
    notBack: session.report.notBack ?? null,
    bootResets: session.report.bootResets,
    ...(session.report.reboots ? { reboots: session.report.reboots } : {}),
    ...(session.report.vms ? { vms: session.report.vms } : {}),
  };
  const said = outcomes.map(({ kind, reboot }) => {
    const label = rebootLabel(kind);
    if (reboot.notBack) return { ok: false, text: `the VM did not come back after ${label}: ${reboot.notBack}` };
    if (!reboot.proof) return { ok: false, text: `the VM did not come back after ${label}: unknown` };
    const failed = reboot.post.filter((check) => !check.ok);
    const proven = `${rebootedAs(kind)} (${provenInWords(reportedProof(reboot.proof))})`;
    return failed.length === 0
      ? { ok: true, text: `${proven} and every check passes` }
      : { ok: false, text: `${proven}, and ${failed.length} of ${reboot.post.length} checks fail after it: ${failed.map((check) => check.name).join(", ")}` };
  });
  return { ok: said.every((entry) => entry.ok), outcome: said.map((entry) => entry.text).join("; "), details };
}

/**
 * Back to the run's reset point (right after its first boot and cloud-init): the saved state is
 * restored onto an empty top volume, the guest's clock set to now, and the boot id, address and
 * host key said as they are (the host key is the one pinned: the login proves it).
 */
export async function attachedReset(run: AttachedRun): Promise<VerbOutcome> {
  const { session, stepContext: steps } = run;
  const vms = scenarioVms(session).map((vm, index) => ({ ...vm, point: run.members[index]?.record?.resetPoint }));
  const missing = vms.filter((vm) => !vm.point);
  if (missing.length > 0) {
    throw new RefusedError(
      `${missing.map((vm) => vm.outputs.runId).join(", ")} ${missing.length === 1 ? "has" : "have"} no reset point: only \`boma-it up\` takes one (right after cloud-init, before the apply)`,
      "make the VM with `npm run boma-it -- up <profile>`",
    );
  }
  // Several hosts: every VM back to its own point, together.
  const readies = await session.timed("reset", () =>
    Promise.all(
      vms.map(async (vm) => {
        await vm.machine.closeConnection();
        await resetToPoint(run.libvirt, steps.runner, vm.outputs, vm.point!);
        // What the console showed before the restore is no longer the guest's.
        await vm.machine.markNewBoot();
        // Back to the seed's host keys too: whatever an apply since removed or rotated is undone.
        await pinSeedHostKeys(vm.machine.target);
        const ready = await vm.machine.waitForSsh(steps.timeouts.sshMs);
        await vm.machine.setClockToNow();
        return { vm, ready, sameBoot: vm.point!.bootId === undefined || vm.point!.bootId === ready.bootId };
      }),
    ),
  );
  const said = readies.map(
    ({ vm, ready, sameBoot }) =>
      `${vms.length > 1 ? `${vm.host}: ` : ""}back to ${vm.point!.at} (right after cloud-init, before any apply): boot id ${ready.bootId}${sameBoot ? " (that boot's, no boot was needed)" : ""}, address ${vm.outputs.ip}, the pinned host key`,
  );
  const [first] = readies;
  return {
    ok: true,
    outcome: said.join("; "),
    details: {
      at: first!.vm.point!.at,
      bootId: first!.ready.bootId,
      ip: first!.vm.outputs.ip,
      sameBoot: first!.sameBoot,
      ...(vms.length > 1
        ? { vms: readies.map(({ vm, ready, sameBoot }) => ({ host: vm.host, at: vm.point!.at, bootId: ready.bootId, ip: vm.outputs.ip, sameBoot })) }
        : {}),
    },
  };
}
