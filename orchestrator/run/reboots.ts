/**
 * The reboots of a scenario and their judgement: each reboot kind (clean, power loss, soft) in
 * turn from the same applied state (a rewind point between kinds), proven by boot id, the checks
 * again, and the verdict of RED and GREEN. `run` (scenario.ts) and the `reboot` verb (verbs.ts)
 * reboot through here, so a reboot is proven, rewound and judged one way. A VM that does not come
 * back after the reboot is the change's finding only when the console shows its new kernel ran; a
 * firmware stall, a domain destroyed from the host, libvirt failing are faults of the harness or
 * the infrastructure (exit 4), never a verdict.
 */
import { join, relative } from "node:path";
import { BadInputError, HarnessError } from "../errors.ts";
import type { CheckResult } from "../guest/checks.ts";
import { describePanic } from "../guest/console.ts";
import { BootStallError, GuestPanicError, RebootUnprovenError, tcgRaceOf, VmDownError, type Machine, type RebootProof } from "../guest/machine.ts";
import { collectDiagnostics } from "../guest/diagnostics.ts";
import { dropRewindPoint, rewind, takeRewindPoint, type RewindPoint } from "../host/rewind.ts";
import { diffSnapshots, takeSnapshot, type Snapshot } from "../guest/snapshot.ts";
import { runSurvivalChecks, type DerivedCheck } from "../guest/survival.ts";
import type { Log } from "../log.ts";
import { redExpectationAfter, VERIFY_CHECK_PREFIX, type Check, type ExpectFailing, type RebootKind, type RebootOrder } from "../profile/schema.ts";
import { withOneReset } from "./provision.ts";
import { provenInWords, rebootedAs, reportedProof, type RebootEntry, type ScenarioReport } from "./report.ts";
import {
  checkStage,
  scenarioVms,
  verifyStage,
  type PeerVm,
  type ScenarioSpec,
  type ScenarioVm,
  type StepContext,
  type SurvivalPlan,
  type Verdict,
  type VerifyPlan,
} from "./stages.ts";

/** How long systemd may take to report the system running after the reboot (slow units under TCG). */
const SYSTEM_RUNNING_TIMEOUT_MS = 5 * 60_000;

/** A scenario's verdict over its reboot kinds: each judged on its own, the scenario ok when every one is. */
export function judgeKinds(scenario: Pick<ScenarioSpec, "name" | "expect">, kinds: readonly { kind: RebootKind; verdict: Verdict }[]): Verdict {
  if (kinds.length === 1) return kinds[0]!.verdict;
  const failed = kinds.filter(({ verdict }) => !verdict.ok);
  if (failed.length === 0) {
    const names = kinds.map(({ kind }) => kind).join(", ");
    if (scenario.expect === "pass") return { ok: true, outcome: `GREEN survived every kind of reboot (${names}): every check passed before and after each` };
    // RED's per kind: broke as expected, or survived where it is expected to.
    return { ok: true, outcome: `RED is faithful: ${kinds.map(({ verdict }) => verdict.outcome.replace(/^RED (is faithful: )?/, "")).join("; ")}` };
  }
  return { ok: false, outcome: failed.map(({ verdict }) => verdict.outcome).join("; ") };
}

/** What the reboot of a kind is called in what the run says. */
export function rebootLabel(kind: RebootKind): string {
  return { clean: "the reboot", "power-loss": "the power loss", soft: "the soft reboot" }[kind];
}

/** One reboot kind's result. */
export interface KindOutcome {
  kind: RebootKind;
  reboot: RebootOutcome;
}

/**
 * Reboots by each kind in turn, each from the same applied state: with more than one kind, the
 * state right before the first reboot is saved once (a rewind point: memory and disk, see
 * host/rewind.ts) and each kind after the first starts from it again, its clock set to now. Each
 * kind runs the checks (and survival checks and verify playbook) after it; one whose result
 * `failed` says is a failure gets its diagnostics into `diagnostics-<kind>/` before the VM goes
 * back (the last kind's are the scenario's own). Each kind is recorded in the scenario's
 * `reboots[]` (unless it is a single clean reboot), its checks tagged with it. The rewind point
 * (its memory holds the run's secrets) is deleted on every exit path.
 */
export async function rebootByKinds(
  context: StepContext,
  session: ScenarioVm,
  kinds: readonly RebootKind[],
  plan: {
    checks: readonly Check[];
    survival?: SurvivalPlan;
    verify?: VerifyPlan;
    failed: (kind: RebootKind, post: readonly CheckResult[]) => boolean;
    /** What the checks after a kind are expected to do (default: pass). */
    expectAfter?: (kind: RebootKind) => "pass" | "fail";
    /** Several hosts: in which order their VMs reboot (default all at once). */
    order?: RebootOrder;
  },
): Promise<KindOutcome[]> {
  const { machine, report } = session;
  const several = kinds.length > 1;
  const tagged = !(kinds.length === 1 && kinds[0] === "clean");
  if (session.peers && session.peers.length > 0) {
    // One applied state per kind would be one rewind point per VM, restored together: one kind for several hosts.
    if (several)
      throw new BadInputError({
        path: "--kind",
        message: `expected one kind for a run of several hosts (each kind from one applied state is built for one VM), found ${kinds.join(", ")}`,
      });
    const reboot = await rebootTopology(context, session, kinds[0]!, plan.order ?? "all", plan);
    const checks = tagged ? reboot.post.map((check) => ({ ...check, reboot: kinds[0]! })) : reboot.post;
    report.checks.push(...checks);
    if (tagged)
      (report.reboots ??= []).push(
        rebootEntry(kinds[0]!, plan.expectAfter?.(kinds[0]!) ?? "pass", reboot, checks, !plan.failed(kinds[0]!, reboot.post), report, null),
      );
    return [{ kind: kinds[0]!, reboot }];
  }
  const outcomes: KindOutcome[] = [];
  let point: RewindPoint | undefined;
  let failure: { error: unknown } | undefined;
  try {
    if (several) {
      await session.timed("rewind point (the applied state each reboot kind starts from)", async () => {
        context.log.info(`reboot kinds: ${kinds.join(", ")}, each from this applied state (saved now, restored before each kind after the first)`);
        await machine.closeConnection();
        point = await takeRewindPoint(context.libvirt, context.runner, session.outputs);
        await afterRestore(context, machine);
      });
    }
    for (const [index, kind] of kinds.entries()) {
      if (index > 0 && point) await backToAppliedState(context, session, point, kind, plan.checks);
      delete report.notBack;
      const reboot = await rebootStep(context, session, plan.checks, plan.survival, plan.verify, kind);
      outcomes.push({ kind, reboot });
      const checks = tagged ? reboot.post.map((check) => ({ ...check, reboot: kind })) : reboot.post;
      report.checks.push(...checks);
      const failed = plan.failed(kind, reboot.post);
      let diagnostics: string | null = null;
      if (failed && index < kinds.length - 1) diagnostics = await kindDiagnostics(context, session, kind);
      if (tagged) (report.reboots ??= []).push(rebootEntry(kind, plan.expectAfter?.(kind) ?? "pass", reboot, checks, !failed, report, diagnostics));
    }
  } catch (error) {
    failure = { error };
    throw error;
  } finally {
    // Its memory holds the run's secrets: gone on every exit path, and a run whose copy could not
    // be deleted says so (the reaper deletes it with the run), unless it already ends on a fault.
    if (point) {
      await dropRewindPoint(context.libvirt, context.runner, session.outputs, point).catch((error: Error) => {
        if (failure) context.log.warn(error.message.split("\n")[0]!);
        else throw error;
      });
    }
  }
  return outcomes;
}

/**
 * Back to the applied state before a kind after the first: the rewind point restored, the clock
 * set to now, and the checks before the reboot run again (recorded with the kind): they passed
 * in that state, so one failing now says the state did not come back, the harness's fault.
 */
async function backToAppliedState(context: StepContext, session: ScenarioVm, point: RewindPoint, kind: RebootKind, checks: readonly Check[]): Promise<void> {
  await session.timed(`back to the applied state (before ${rebootLabel(kind)})`, async () => {
    await session.machine.closeConnection();
    await rewind(context.libvirt, context.runner, session.outputs, point);
    await afterRestore(context, session.machine);
  });
  const pre = (await session.timed(`checks before ${rebootLabel(kind)}`, () => checkStage(context, session, "pre-reboot", checks))).map((check) => ({
    ...check,
    reboot: kind,
  }));
  session.report.checks.push(...pre);
  const failed = pre.filter((check) => !check.ok);
  if (failed.length > 0) {
    throw new HarnessError(
      `back in the applied state (restored from ${point.at}) before ${rebootLabel(kind)}, checks that passed in it fail: ${failed.map((check) => check.name).join(", ")}: the state did not come back as it was saved; run it again`,
    );
  }
}

/** After a saved state was restored: SSH again (the old connections died with the old process), the clock set to now. */
async function afterRestore(context: StepContext, machine: Machine): Promise<void> {
  // A panic of a kind's boot before (one its reboot dealt with) is not the restored guest's.
  await machine.markNewBoot();
  await machine.waitForSsh(context.timeouts.sshMs);
  // The guest stood still while its state was written or read: its clock is behind by that long.
  await machine.setClockToNow();
}

/** A failed kind's diagnostics, before the VM goes back to the applied state (never throws). */
async function kindDiagnostics(context: StepContext, session: ScenarioVm, kind: RebootKind): Promise<string | null> {
  const dir = join(session.dir, `diagnostics-${kind}`);
  return session.timed(`diagnostics (${kind})`, async () => {
    const items = await collectDiagnostics({
      dir,
      machine: session.machine,
      outputs: session.outputs,
      runner: context.runner,
      libvirt: context.libvirt,
      reason: `after ${rebootLabel(kind)}: ${session.report.notBack?.reason ?? "checks failed"}`,
    });
    context.log.info(`collected ${items.filter((item) => item.ok).length} of ${items.length} items into ${dir}`);
    return dir;
  });
}

/** The report's entry for one reboot kind. */
function rebootEntry(
  kind: RebootKind,
  expect: "pass" | "fail",
  reboot: RebootOutcome,
  checks: CheckResult[],
  ok: boolean,
  report: ScenarioReport,
  diagnostics: string | null,
): RebootEntry {
  const proof = reboot.proof;
  return {
    kind,
    expect,
    ok,
    proof: proof ? reportedProof(proof) : null,
    checks,
    snapshotDiff: reboot.after ? diffSnapshots(reboot.before, reboot.after) : null,
    ...(report.notBack ? { notBack: report.notBack } : {}),
    diagnostics,
  };
}

/** What a reboot came to: the checks after it, and the proof, or why the VM did not come back. */
export interface RebootOutcome {
  post: CheckResult[];
  proof: RebootProof | undefined;
  /** Why the VM did not come back (no proof). */
  notBack?: string;
  before: Snapshot;
  after: Snapshot | undefined;
}

/**
 * Reboots (proven by a new boot id), waits until systemd has settled and runs the checks again,
 * with a before/after snapshot. A VM whose new kernel ran but that did not come back fails every
 * check (the finding, with the console in the report); a boot that never reached its kernel, a
 * domain destroyed from the host, libvirt failing: exit 4.
 */
export async function rebootStep(
  context: StepContext,
  session: ScenarioVm,
  checks: readonly Check[] = context.profile.document.checks,
  survival?: SurvivalPlan,
  verify?: VerifyPlan,
  kind: RebootKind = "clean",
): Promise<RebootOutcome> {
  const { machine, report } = session;
  const label = rebootLabel(kind);
  const before = await session.timed(`snapshot before ${label}`, () => takeSnapshot(machine));
  let proof: RebootProof;
  try {
    proof = await session.timed(kind === "clean" ? "reboot" : kind === "soft" ? "soft reboot" : "power loss", () =>
      rebootWithOneReset(context, machine, report, kind),
    );
  } catch (error) {
    const reason = await notBackReason(error, context, machine, kind);
    context.log.warn(`the VM did not come back after ${label}: ${reason}`);
    report.notBack = { reason, console: await machine.currentBootConsole(20) };
    const verifyFile = verify?.profile.verifyFile;
    const unverified = verifyFile ? [{ name: `${VERIFY_CHECK_PREFIX}${relative(verify.profile.repoDir, verifyFile)}` }] : [];
    const post = [...checks, ...(survival?.checks ?? []), ...unverified].map((check) => ({
      name: check.name,
      stage: "post-reboot" as const,
      ok: false,
      detail: `the VM did not come back after ${label}: ${reason}`,
      seconds: 0,
    }));
    return { post, proof: undefined, notBack: reason, before, after: undefined };
  }
  report.bootIds = [proof.bootIdBefore, proof.bootIdAfter];
  report.readyLagSeconds.push(proof.ready.readyLagSeconds ?? null);
  report.beforeKernelSeconds.push(proof.ready.beforeKernelSeconds ?? null);
  const lag = proof.ready.readyLagSeconds;
  context.log.info(
    `${rebootedAs(proof.kind)}: ${provenInWords(reportedProof(proof))}${lag === undefined ? "" : `; sshd noticed ${lag.toFixed(1)} s after it became active`}`,
  );
  await session.timed("system settled", () => waitSettled(machine, context.log));
  // A soft reboot is no boot: systemd-analyze still tells of the kernel's.
  report.guestBootSeconds.push(kind === "soft" ? null : await machine.guestBootSeconds());
  const post = await session.timed(`checks after ${label}`, async () => {
    const [written, derived] = await Promise.all([
      checkStage(context, session, "post-reboot", checks),
      survival && survival.checks.length > 0
        ? runSurvivalChecks(survival.checks, machine, session.outputs.ip, survival.withinMs, (result) =>
            context.log.info(`${result.ok ? "pass" : "FAIL"} ${result.name}: ${result.detail}`),
          )
        : Promise.resolve([]),
    ]);
    return [...written, ...derived];
  });
  if (verify) post.push(...(await verifyStage(context, session, "post-reboot", verify)));
  const after = await session.timed(`snapshot after ${label}`, () => takeSnapshot(machine));
  report.snapshotDiff = diffSnapshots(before, after);
  return { post, proof, before, after };
}

/** The VMs of a topology that reboot, in turns: all in one turn, or one per turn (rolling: every host in order; a list: those named). */
export function rebootTurns(hosts: readonly string[], order: RebootOrder): string[][] {
  if (order === "all") return [[...hosts]];
  return (order === "rolling" ? hosts : order).map((host) => [host]);
}

/**
 * A topology's reboot of one kind, in turns (see {@link rebootTurns}): each VM of a turn rebooted
 * at the same time and proven by its own boot id (recorded in `vms[]`; the first host's is the
 * scenario's `bootIds`). Rolling, the checks neither about nor from the host rebooting run while
 * it reboots (named "while <host> reboots: <check>"). Then every VM settles and every check runs.
 * A VM that does not come back (its new kernel ran) fails the checks about or from it; the
 * others run. A fault of any VM's reboot is the run's (exit 4), as with one VM.
 */
async function rebootTopology(
  context: StepContext,
  session: ScenarioVm,
  kind: RebootKind,
  order: RebootOrder,
  plan: { checks: readonly Check[]; survival?: SurvivalPlan; verify?: VerifyPlan },
): Promise<RebootOutcome> {
  const { report } = session;
  const vms = scenarioVms(session);
  const label = rebootLabel(kind);
  const entryOf = (host: string) => report.vms?.find((entry) => entry.host === host);
  const before = await session.timed(`snapshot before ${label}`, () => takeSnapshot(session.machine));
  const notBack = new Map<string, string>();
  let firstProof: RebootProof | undefined;
  const during: CheckResult[] = [];
  const involves = (check: Check) => [check.on ?? vms[0]!.host, ...(check.from !== undefined && check.from !== "controller" ? [check.from] : [])];
  const rebootOne = async (vm: PeerVm) => {
    try {
      const proof = await rebootWithOneReset(context, vm.machine, report, kind);
      const entry = entryOf(vm.host);
      if (entry) {
        entry.bootIds = [proof.bootIdBefore, proof.bootIdAfter];
        entry.proof = reportedProof(proof);
      }
      if (vm.machine === session.machine) {
        firstProof = proof;
        report.bootIds = [proof.bootIdBefore, proof.bootIdAfter];
        report.readyLagSeconds.push(proof.ready.readyLagSeconds ?? null);
        report.beforeKernelSeconds.push(proof.ready.beforeKernelSeconds ?? null);
      }
      context.log.info(`${vm.host} ${rebootedAs(proof.kind)}: ${provenInWords(reportedProof(proof))}`);
    } catch (error) {
      const reason = await notBackReason(error, context, vm.machine, kind);
      context.log.warn(`${vm.host} did not come back after ${label}: ${reason}`);
      notBack.set(vm.host, reason);
      const entry = entryOf(vm.host);
      if (entry) entry.notBack = reason;
      report.notBack ??= { reason: `${vm.host}: ${reason}`, console: await vm.machine.currentBootConsole(20) };
    }
  };
  for (const turn of rebootTurns(
    vms.map((vm) => vm.host),
    order,
  )) {
    const rebooting = vms.filter((vm) => turn.includes(vm.host));
    const verb = kind === "clean" ? "reboot" : kind === "soft" ? "soft reboot" : "power loss";
    // Rolling: what involves neither the hosts rebooting nor runs from them must hold meanwhile.
    const meanwhile = order === "all" ? [] : plan.checks.filter((check) => !involves(check).some((host) => turn.includes(host)));
    // Every VM's reboot (and what runs meanwhile) ends before a fault of one ends the scenario:
    // nothing of it goes on while the VMs are taken down.
    const [rebooted, held] = await Promise.allSettled([
      session.timed(`${turn.join(" and ")}: ${verb}`, async () => {
        const settled = await Promise.allSettled(rebooting.map(rebootOne));
        const fault = settled.find((result) => result.status === "rejected");
        if (fault) throw fault.reason;
        // Settled before the next turn: its checks meanwhile see these hosts' services up.
        await Promise.all(rebooting.filter((vm) => !notBack.has(vm.host)).map((vm) => waitSettled(vm.machine, context.log)));
      }),
      meanwhile.length === 0 ? Promise.resolve([]) : checkStage(context, session, "post-reboot", meanwhile),
    ]);
    if (rebooted.status === "rejected") throw rebooted.reason;
    if (held.status === "rejected") throw held.reason;
    during.push(...held.value.map((result) => ({ ...result, during: turn.join(" and "), detail: `while ${turn.join(" and ")} rebooted: ${result.detail}` })));
  }
  const back = vms.filter((vm) => !notBack.has(vm.host));
  if (order === "all") await session.timed("system settled", () => Promise.all(back.map((vm) => waitSettled(vm.machine, context.log))));
  report.guestBootSeconds.push(kind === "soft" || notBack.has(vms[0]!.host) ? null : await session.machine.guestBootSeconds());
  const cannotRun = plan.checks.filter((check) => involves(check).some((host) => notBack.has(host)));
  const post = await session.timed(`checks after ${label}`, async () => {
    const [written, derived] = await Promise.all([
      checkStage(
        context,
        session,
        "post-reboot",
        plan.checks.filter((check) => !cannotRun.includes(check)),
      ),
      // Each VM's survival checks on its own VM; a VM not back fails its own check instead (below).
      Promise.all(
        survivalByVm(vms, plan.survival)
          .filter(({ vm, checks }) => checks.length > 0 && !notBack.has(vm.host))
          .map(({ vm, checks }) =>
            runSurvivalChecks(checks, vm.machine, vm.outputs.ip, plan.survival!.withinMs, (result) =>
              context.log.info(`${result.ok ? "pass" : "FAIL"} ${result.name}: ${result.detail}`),
            ),
          ),
      ).then((results) => results.flat()),
    ]);
    const failed = (name: string, detail: string): CheckResult => ({ name, stage: "post-reboot", ok: false, detail, seconds: 0 });
    // A VM not back is a finding even where no check is about it, as one VM's is.
    const notBackChecks = [...notBack].map(([host, reason]) => failed(`${host} came back after ${label}`, reason));
    const unrun = cannotRun.map((check) => {
      const host = involves(check).find((each) => notBack.has(each))!;
      return failed(check.name, `${host} did not come back after ${label}: ${notBack.get(host)!}`);
    });
    return [...during, ...notBackChecks, ...written, ...unrun, ...derived];
  });
  if (plan.verify && notBack.size === 0) post.push(...(await verifyStage(context, session, "post-reboot", plan.verify)));
  const after = notBack.has(vms[0]!.host) ? undefined : await session.timed(`snapshot after ${label}`, () => takeSnapshot(session.machine));
  if (after) report.snapshotDiff = diffSnapshots(before, after);
  return {
    post,
    // The first host's proof stands for the scenario's (each VM's is in `vms[]`).
    proof: firstProof,
    ...(notBack.size > 0 ? { notBack: [...notBack].map(([host, reason]) => `${host}: ${reason}`).join("; ") } : {}),
    before,
    after,
  };
}

/** Each VM of a topology with its survival checks (none without a survival plan). */
function survivalByVm(vms: readonly PeerVm[], survival: SurvivalPlan | undefined): { vm: PeerVm; checks: readonly DerivedCheck[] }[] {
  if (!survival) return [];
  return vms.map((vm, index) => ({ vm, checks: index === 0 ? survival.checks : (survival.peers?.find((peer) => peer.host === vm.host)?.checks ?? []) }));
}

/**
 * Why the VM did not come back, when that is the change's doing; throws when it is not (the
 * harness or the infrastructure failed: exit 4, "run it again").
 */
async function notBackReason(error: unknown, context: StepContext, machine: Machine, kind: RebootKind): Promise<string> {
  if (!(error instanceof HarnessError) || context.signal.aborted) throw error;
  // Not the kind of reboot asked for (a soft reboot that never happened, a power loss that was a shutdown).
  if (error instanceof RebootUnprovenError) throw error;
  const race = tcgRaceOf(error, context.accel.accel);
  if (race) {
    // Not the finding: QEMU ran a stale kernel patch. Judging it would make RED "faithful" and
    // GREEN "broken" for nothing.
    throw new HarnessError(
      `after the reboot the guest kernel hit QEMU TCG's text-patching race (${describePanic(race)}): that says nothing about the change under test; run it again`,
      { cause: error },
    );
  }
  if (error instanceof BootStallError) {
    throw new HarnessError(
      "after the reboot the VM stalled before its kernel started, twice (the firmware under TCG): nothing of the change under test ran; run it again",
      { cause: error },
    );
  }
  if (error instanceof VmDownError) {
    if (error.guestShutdown) {
      if (error.ending === "halt") return "the VM halted instead of rebooting";
      return `the VM powered itself off instead of rebooting${error.ending === undefined ? " (its console does not say how its shutdown ended)" : ""}`;
    }
    if (/crashed/.test(error.state)) return `the guest crashed (libvirt: ${error.state})`;
    throw new HarnessError(`after the reboot the domain was ${error.state} from the host: that says nothing about the change under test; run it again`, {
      cause: error,
    });
  }
  if (error instanceof GuestPanicError) return `its kernel panicked: ${describePanic(error.panic)}`;
  // Anything else with the domain gone from under the guest (destroyed from the host, vanished)
  // says nothing about the change, however the harness noticed it.
  const state = await machine.domainState();
  if (state !== "" && !state.startsWith("running") && !/\((shutdown|crashed)\)/.test(state)) {
    throw new HarnessError(`after the reboot the domain was ${state} from the host: that says nothing about the change under test; run it again`, {
      cause: error,
    });
  }
  // A soft reboot has no new kernel to wait for: the old one ran on, and the new userspace never answered.
  if (kind === "soft")
    return `SSH never answered after the soft reboot (the kernel ran on; last console line: ${(await machine.currentBootConsole(1))[0] ?? "none"})`;
  // A wait that timed out: the change's finding only if the new boot's kernel ran.
  if (await machine.kernelStarted())
    return `its new kernel started but SSH never answered (last console line: ${(await machine.currentBootConsole(1))[0] ?? "none"})`;
  if (!/reboot: (machine restart|Restarting system)/.test((await machine.currentBootConsole(200)).join("\n"))) {
    return `the old system never finished shutting down (last console line: ${(await machine.currentBootConsole(1))[0] ?? "none"})`;
  }
  throw new HarnessError("after the reboot no kernel started and the wait ran out: nothing of the change under test ran; run it again", { cause: error });
}

/**
 * The reboot; when the new boot's kernel hits QEMU TCG's race before it could write the disk, or the boot
 * stalls before its kernel, the VM is powered off and on once and the same boot is waited for
 * again (recorded in `bootResets`).
 */
async function rebootWithOneReset(context: StepContext, machine: Machine, report: Pick<ScenarioReport, "bootResets">, kind: RebootKind): Promise<RebootProof> {
  // No boot, no firmware: nothing to reset.
  if (kind === "soft") return machine.softReboot(context.timeouts.sshMs);
  const bootIdBefore = await machine.bootId();
  const started = machine.now();
  let attempt = () =>
    kind === "power-loss" ? machine.powerLoss(context.timeouts.sshMs, { bootIdBefore }) : machine.reboot(context.timeouts.sshMs, { bootIdBefore });
  const { value, resets } = await withOneReset(() => attempt(), {
    what: "the boot after the reboot",
    accel: context.accel.accel,
    log: context.log,
    onlyDiskUntouched: true,
    reset: async () => {
      await machine.powerCycle();
      const resetAt = machine.now();
      attempt = () => machine.provenNewBoot(kind, { bootIdBefore, started, poweredOnAt: resetAt, bootBeganAt: resetAt }, context.timeouts.sshMs);
    },
  });
  report.bootResets.push(...resets);
  return value;
}

/** Waits until systemd has finished starting up (running or degraded), so checks see the booted system. */
async function waitSettled(machine: Machine, log: Log): Promise<void> {
  const result = await machine.execute(`timeout ${Math.round(SYSTEM_RUNNING_TIMEOUT_MS / 1000)} systemctl is-system-running --wait`, {
    timeoutMs: SYSTEM_RUNNING_TIMEOUT_MS + 30_000,
  });
  const state = result.stdout.trim() || result.stderr.trim();
  log.info(`system is ${state || `unknown (exit ${result.exitCode})`}`);
}

/**
 * A scenario's verdict from its checks before and after the reboot (README, `run`; the runbook's "Read a report"). With
 * `expectFailing`, RED is faithful only when exactly those checks fail after the reboot.
 */
export function judge(
  expect: "fail" | "pass",
  pre: readonly CheckResult[],
  post: readonly CheckResult[],
  expectFailingAll?: ExpectFailing,
  kind: RebootKind = "clean",
): Verdict {
  const preOk = pre.every((check) => check.ok);
  const postOk = post.length > 0 && post.every((check) => check.ok);
  const reboot = rebootLabel(kind);
  if (expect === "fail") {
    const expectation = redExpectationAfter(kind, expectFailingAll);
    if (!preOk) return { ok: false, outcome: `RED failed before the reboot (${failedNames(pre)}): this is not a reboot bug, so RED proves nothing` };
    if (expectation.after === "survive") {
      if (postOk) return { ok: true, outcome: `RED survived ${reboot}, as expected (every check passed before and after)` };
      return { ok: false, outcome: `RED broke after ${reboot} where it is expected to survive it (${failedNames(post)}): the harness is not faithful` };
    }
    if (postOk) return { ok: false, outcome: `RED passed after ${reboot}: the harness is not faithful (it does not reproduce the incident)` };
    const expectFailing = expectation.exactly;
    if (expectFailing && expectFailing.length > 0) {
      const failed = new Set(post.filter((check) => !check.ok).map((check) => check.name));
      const missing = expectFailing.filter((name) => !failed.has(name));
      const extra = [...failed].filter((name) => !expectFailing.includes(name));
      if (missing.length > 0 || extra.length > 0) {
        const parts = [
          ...(missing.length > 0 ? [`expected to fail but did not (passed, or never ran): ${missing.join(", ")}`] : []),
          ...(extra.length > 0 ? [`failed but not expected to: ${extra.join(", ")}`] : []),
        ];
        return { ok: false, outcome: `RED broke after ${reboot}, but not as the incident did (${parts.join("; ")}): the harness is not faithful` };
      }
      return {
        ok: true,
        outcome: `RED is faithful: it passed before ${reboot} and broke after it exactly as expected (${failedNames(post)}), every other check passed`,
      };
    }
    return { ok: true, outcome: `RED is faithful: it passed before ${reboot} and broke after it (${failedNames(post)})` };
  }
  if (!preOk) return { ok: false, outcome: `GREEN failed before the reboot: ${failedNames(pre)}` };
  if (!postOk) return { ok: false, outcome: `GREEN broke after ${reboot}: ${failedNames(post)}` };
  return { ok: true, outcome: `GREEN survived ${reboot}: every check passed before and after` };
}

function failedNames(checks: readonly CheckResult[]): string {
  return checks
    .filter((check) => !check.ok)
    .map((check) => check.name)
    .join(", ");
}
