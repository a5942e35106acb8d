/**
 * The steps of a scenario, on a machine the run driver gives it (driver.ts), read top to bottom:
 * apply → checks → reboot (proven by boot id) → checks → verdict. `run` runs all of them on a
 * fresh VM per scenario; `up` and the verbs on a kept VM run the ones they need. A VM that does
 * not come back after the reboot is the change's finding only when the console shows its new
 * kernel ran; a firmware stall, a domain destroyed from the host, libvirt failing are faults of
 * the harness or the infrastructure (exit 4), never a verdict.
 */
import { mkdir } from "node:fs/promises";
import { join, relative } from "node:path";
import type { AccelDecision } from "../../infra/accel.ts";
import type { StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { GUEST_ANSIBLE_PYTHON } from "../../infra/seed.ts";
import {
  applyPlaybook,
  checkTransientInventory,
  runPlaybook,
  writeTransientInventory,
  type ApplyInput,
  type ApplyResult,
  type TransientInventory,
} from "../ansible/apply.ts";
import { changedTasks, verifyFindings } from "../ansible/verify.ts";
import { BadInputError, HarnessError, StoppedBesideError, SystemUnderTestError } from "../errors.ts";
import { runChecks, type CheckResult, type CheckStage } from "../guest/checks.ts";
import { certCacheDir } from "../host/paths.ts";
import { describePanic } from "../guest/console.ts";
import { BootStallError, GuestPanicError, RebootUnprovenError, tcgRaceOf, VmDownError, type Machine, type RebootProof } from "../guest/machine.ts";
import { collectDiagnostics } from "../guest/diagnostics.ts";
import { dropRewindPoint, rewind, takeRewindPoint, type RewindPoint } from "../host/rewind.ts";
import { followHostKeys, type HostKeyChange } from "../guest/host-keys.ts";
import { diffSnapshots, takeSnapshot, type Snapshot } from "../guest/snapshot.ts";
import {
  answeringPorts,
  deriveSurvivalChecks,
  observeSurvival,
  runSurvivalChecks,
  tlsCandidates,
  tlsPortsAnswering,
  type DerivedCheck,
} from "../guest/survival.ts";
import type { Libvirt } from "../host/libvirt.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { CHECKOUTS_DIR, checkoutRevision, profileAtRevision, resolveRevision, worktreeRevision, type ResolvedRevision } from "../profile/revision.ts";
import { rebootKinds, redExpectationAfter, VERIFY_CHECK_PREFIX, type Check, type ExpectFailing, type RebootKind } from "../profile/schema.ts";
import { wildcardAfterApply, wildcardBeforeApply, type CertificateOutcome, type CertPlan } from "../ansible/certs.ts";
import { ansiblePlaybookArgs, type AnsibleArgs, type RunOptions, type ScenarioChoice } from "./options.ts";
import { withOneReset, type BootTimeouts } from "./provision.ts";
import { provenInWords, rebootedAs, reportedProof, type RebootEntry, type ScenarioReport } from "./report.ts";
import { loadSecrets, type RunSecrets } from "../ansible/secrets.ts";

/** How long systemd may take to report the system running after the reboot (slow units under TCG). */
const SYSTEM_RUNNING_TIMEOUT_MS = 5 * 60_000;

/** How a scenario's VM is kept when it ends: the run's `--keep` policy, and whether a passing one is kept too. */
export interface KeepRule {
  policy: RunOptions["keep"];
  /** Keep it when it passed too (`up`: the VM is what it is for). */
  onPass: boolean;
}

/** A scenario to open: what it is called, where its files go, what it expects. */
export interface ScenarioOpening {
  name: "red" | "green";
  expect: "fail" | "pass";
  /** Its folder in the run dir (absent: the run dir itself, as `up` has it). */
  folder?: string;
  /** Keep its VM when it passed too (`up`); the run's `--keep` policy decides the rest. */
  keepOnPass?: boolean;
  /** Where its steps are told (a branch of the run's log when scenarios run side by side). */
  log?: Log;
  /** What stops it (the run's, or one that also stops it when a scenario beside it ends the run). */
  signal?: AbortSignal;
  /** Told of a fault that ends it (not a verdict) as soon as it happens, before its cleanup. */
  onFault?: (error: unknown) => void;
}

/** One scenario to run. */
export interface ScenarioSpec {
  name: "red" | "green";
  expect: "fail" | "pass";
  vars: Record<string, unknown>;
  /** RED only: the checks that must fail after the reboot (and only those), for every kind or per kind. */
  expectFailing?: ExpectFailing;
  /** The revision of the infrastructure repo it applies (absent: the repo as it is on disk). */
  revision?: ResolvedRevision;
  /** The upgrade path: the revision applied first (what the live host runs now). */
  baseline?: ResolvedRevision;
  /** The scenario's own `idempotence`, over the profile's. */
  idempotence?: boolean | "strict";
  /** The scenario's own `reboot` kinds, over the profile's. */
  reboot?: RebootKind | RebootKind[];
}

/** The scenarios a profile declares, as every command takes them: RED (the control) when declared, and GREEN. */
export function declaredScenarios(profile: Pick<LoadedProfile, "document">): { red: ScenarioSpec | undefined; green: ScenarioSpec } {
  const declared = profile.document.scenarios;
  const red: ScenarioSpec | undefined = declared?.red
    ? {
        name: "red",
        expect: "fail",
        vars: declared.red.vars ?? {},
        ...(declared.red.expectFailing ? { expectFailing: declared.red.expectFailing } : {}),
        ...(declared.red.idempotence !== undefined ? { idempotence: declared.red.idempotence } : {}),
        ...(declared.red.reboot !== undefined ? { reboot: declared.red.reboot } : {}),
      }
    : undefined;
  const green = declared?.green;
  return {
    red,
    green: {
      name: "green",
      expect: "pass",
      vars: green?.vars ?? {},
      ...(green?.idempotence !== undefined ? { idempotence: green.idempotence } : {}),
      ...(green?.reboot !== undefined ? { reboot: green.reboot } : {}),
    },
  };
}

/**
 * What `run` runs for `--scenario` (default: RED→GREEN when the profile declares RED, else GREEN),
 * in order; RED asked for where none is declared is bad input naming the profile's field.
 */
export function scenariosToRun(profile: Pick<LoadedProfile, "document" | "file">, asked: ScenarioChoice | undefined): ScenarioSpec[] {
  const { red, green } = declaredScenarios(profile);
  const choice = asked ?? (red ? "red-green" : "green");
  if (choice !== "green" && !red) {
    throw new BadInputError({ file: profile.file, path: "scenarios.red", message: `--scenario ${choice} needs a RED scenario; found none in the profile` });
  }
  return [...(choice !== "green" ? [red!] : []), ...(choice !== "red" ? [green] : [])];
}

/**
 * What `up` applies for `--scenario`: one scenario, GREEN by default; RED's vars when asked, then
 * expected to pass like any VM brought up to work on.
 */
export function scenarioToBringUp(profile: Pick<LoadedProfile, "document" | "file">, asked: ScenarioChoice | undefined): ScenarioSpec {
  if (asked === "red-green") throw new BadInputError({ message: '--scenario: `up` applies one scenario; expected green or red, found "red-green"' });
  const { red, green } = declaredScenarios(profile);
  if (asked !== "red") return green;
  if (!red) throw new BadInputError({ file: profile.file, path: "scenarios.red", message: "--scenario red needs a RED scenario; found none in the profile" });
  return { name: "red", expect: "pass", vars: red.vars, ...(red.reboot !== undefined ? { reboot: red.reboot } : {}) };
}

/** What the steps need from the run. */
export interface StepContext {
  profile: LoadedProfile;
  certs: CertPlan;
  secrets: RunSecrets;
  runner: Runner;
  log: Log;
  signal: AbortSignal;
  accel: AccelDecision;
  libvirt: Libvirt;
  timeouts: BootTimeouts;
  ansible: AnsibleArgs;
}

/** A scenario's VM: its Machine, its stack's outputs and where its results go (made by the run driver). */
export interface ScenarioVm {
  machine: Machine;
  outputs: StackOutputs;
  report: ScenarioReport;
  /** The scenario's folder in the run dir. */
  dir: string;
  /** Runs a step, timed into the scenario's phases. */
  timed<T>(name: string, body: () => Promise<T>): Promise<T>;
}

/** The verdict of a scenario. */
export interface Verdict {
  ok: boolean;
  outcome: string;
}

/**
 * RED→GREEN (or one of them), each scenario on a fresh VM of its own. One at a time (`sideBySide`
 * false): RED first, and GREEN only when RED was faithful. Side by side: both at once, each on
 * its own VM and network, each line of the log labelled with its scenario; a RED that is not
 * faithful still fails the run, and GREEN's result is then reported, not judged. A fault that
 * ends one scenario (exit 4) stops the other (its VM removed) and ends the run; Ctrl-C stops both.
 */
export async function runRedGreen(
  run: {
    stepContext: StepContext;
    report: { scenarios: ScenarioReport[]; readyLagSeconds: (number | null)[]; scenariosAtOnce?: number };
    scenario(opening: ScenarioOpening, body: (session: ScenarioVm) => Promise<Verdict>): Promise<ScenarioReport>;
  },
  scenarios: readonly ScenarioSpec[],
  options: { sideBySide?: boolean; steps?: (context: StepContext, session: ScenarioVm, scenario: ScenarioSpec) => Promise<Verdict> } = {},
): Promise<void> {
  const steps = options.steps ?? redGreenSteps;
  const title = (scenario: ScenarioSpec) =>
    `${scenario.name.toUpperCase()} (expect: ${scenario.expect === "fail" ? "pass before, fail after the reboot" : "pass before and after the reboot"})`;
  const runOne = (scenario: ScenarioSpec, context: StepContext, onFault?: (error: unknown) => void) =>
    context.log.step(
      title(scenario),
      () =>
        run.scenario(
          { name: scenario.name, expect: scenario.expect, folder: scenario.name, log: context.log, signal: context.signal, ...(onFault ? { onFault } : {}) },
          (session) => steps(context, session, scenario),
        ),
      (scenarioReport) => scenarioReport.ok,
    );
  const sideBySide = options.sideBySide === true && scenarios.length > 1;
  run.report.scenariosAtOnce = sideBySide ? scenarios.length : 1;
  if (!sideBySide) {
    for (const scenario of scenarios) {
      const result = await runOne(scenario, run.stepContext);
      if (!result.ok) break;
    }
    return;
  }

  const { log, signal } = run.stepContext;
  log.info(`side by side: ${scenarios.map((scenario) => scenario.name.toUpperCase()).join(" and ")}, each on its own VM (--serial: one at a time)`);
  // Each its own stop: a fault of one stops the others (never itself); Ctrl-C stops all.
  const stops = scenarios.map(() => new AbortController());
  let fault: { error: unknown } | undefined;
  const faulted = (index: number) => (error: unknown) => {
    if (fault) return;
    fault = { error };
    const stopped = new StoppedBesideError(`stopped: ${scenarios[index]!.name.toUpperCase()} ended the run (${firstLine(error)})`);
    stops.forEach((stop, other) => other !== index && stop.abort(stopped));
  };
  const width = Math.max(...scenarios.map((scenario) => scenario.name.length));
  const settled = await Promise.allSettled(
    scenarios.map((scenario, index) =>
      runOne(scenario, { ...run.stepContext, log: log.branch(scenario.name, width), signal: AbortSignal.any([signal, stops[index]!.signal]) }, faulted(index)),
    ),
  );
  // The scenarios in the order they were declared, whichever finished first, and what the run
  // records of each in that order.
  const order = scenarios.map((scenario) => scenario.name);
  run.report.scenarios.sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
  run.report.readyLagSeconds = run.report.scenarios.flatMap((scenario) => scenario.readyLagSeconds);
  const failures = settled.flatMap((result) => (result.status === "rejected" ? [result.reason as unknown] : []));
  // The run's error: the fault that stopped the others (not the stops it caused), or Ctrl-C's.
  if (fault && failures.includes(fault.error)) throw fault.error;
  const cause = failures.find((error) => !(error instanceof StoppedBesideError)) ?? failures[0];
  if (cause !== undefined) throw cause;
  const red = run.report.scenarios.find((scenario) => scenario.name === "red");
  const green = run.report.scenarios.find((scenario) => scenario.name === "green");
  if (red && !red.ok && green) {
    green.judged = false;
    green.outcome = `${green.outcome} (not judged: RED was not faithful, so GREEN's result proves nothing of the fix)`;
  }
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0]!;
}

/** RED→GREEN's steps on a fresh VM: apply, checks, reboot with proof, checks, verdict. */
export async function redGreenSteps(context: StepContext, session: ScenarioVm, scenario: ScenarioSpec): Promise<Verdict> {
  const { report } = session;
  const profile = await profileAt(context, session, scenario.revision);
  if (scenario.baseline) await baselineStep(context, session, scenario, await profileAt(context, session, scenario.baseline));
  const applied = await session.timed("apply", () => applyStep(context, session, scenario.vars, { profile }));
  report.apply = {
    seconds: applied.seconds,
    recap: applied.recap,
    tasks: applied.tasks,
    ...(applied.hostKeyChange ? { hostKeyChange: applied.hostKeyChange } : {}),
  };
  report.certificate = applied.certificate;
  // The first boot has long finished by now (the apply took minutes): its time is final. A warm
  // start's first boot is the saved run's, counted there.
  report.guestBootSeconds.push(report.firstBoot?.kind === "warm" ? null : await session.machine.guestBootSeconds());

  const idempotence = scenario.idempotence ?? profile.document.idempotence;
  const secondApply = idempotence === false ? [] : await idempotenceStep(context, session, scenario.vars, { profile, strict: idempotence === "strict" });
  const verify: VerifyPlan = { profile, vars: scenario.vars };
  const pre = [
    ...(await session.timed("checks before the reboot", () => checkStage(context, session, "pre-reboot"))),
    ...(await verifyStage(context, session, "pre-reboot", verify)),
    ...secondApply,
  ];
  report.checks.push(...pre);
  if (!pre.every((check) => check.ok)) {
    // Decided before the reboot (GREEN failed, or RED proves nothing).
    context.log.info("skipping the reboot: the scenario failed before it");
    return judge(scenario.expect, pre, [], scenario.expectFailing);
  }
  // The change must survive: GREEN also checks what the host was right before the reboot.
  const survival = scenario.expect === "pass" && context.profile.document.survival !== false ? await deriveSurvival(context, session) : undefined;
  const kinds = rebootKinds(scenario.reboot ?? profile.document.reboot);
  const judgeKind = (kind: RebootKind, post: readonly CheckResult[]) => judge(scenario.expect, pre, post, scenario.expectFailing, kind);
  const outcomes = await rebootByKinds(context, session, kinds, {
    checks: context.profile.document.checks,
    ...(survival ? { survival } : {}),
    verify,
    failed: (kind, post) => !judgeKind(kind, post).ok,
    expectAfter: (kind) => (scenario.expect === "pass" || redExpectationAfter(kind, scenario.expectFailing).after === "survive" ? "pass" : "fail"),
  });
  if (kinds.length === 1 && kinds[0] === "clean") return judge(scenario.expect, pre, outcomes[0]!.reboot.post, scenario.expectFailing);
  return judgeKinds(
    scenario,
    outcomes.map(({ kind, reboot }) => ({ kind, verdict: judgeKind(kind, reboot.post) })),
  );
}

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
  },
): Promise<KindOutcome[]> {
  const { machine, report } = session;
  const several = kinds.length > 1;
  const tagged = !(kinds.length === 1 && kinds[0] === "clean");
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

/** The check a strict idempotence adds before the reboot. */
export const IDEMPOTENCE_CHECK = "idempotence: a second apply changes nothing";

/** What a verify playbook runs with: the profile it comes from (a revision's, say) and the scenario's vars. */
export interface VerifyPlan {
  profile: LoadedProfile;
  vars: Record<string, unknown>;
}

/**
 * Idempotence (Molecule's step of that name): the playbook applied a second time right after the
 * first, with the same vars; the tasks that changed are listed in the report. `strict` makes it a
 * check before the reboot, failing on any change; otherwise there is no check, only the list.
 */
export async function idempotenceStep(
  context: StepContext,
  session: ScenarioVm,
  vars: Record<string, unknown>,
  options: { profile: LoadedProfile; strict: boolean },
): Promise<CheckResult[]> {
  const started = session.machine.now();
  const applied = await session.timed("second apply (idempotence)", async () => {
    try {
      return await applyStep(context, session, vars, { folder: "ansible-idempotence", profile: options.profile });
    } catch (error) {
      if (!(error instanceof SystemUnderTestError)) throw error;
      throw new SystemUnderTestError(`the second apply (idempotence) failed where the first passed: ${error.message}`);
    }
  });
  const changed = changedTasks(applied.outcomes, applied.recap);
  session.report.idempotence = { mode: options.strict ? "strict" : true, changed, seconds: applied.seconds };
  const said = changed.length === 0 ? "nothing changed" : `${changed.length} task(s) changed: ${changed.join(", ")}`;
  context.log[changed.length === 0 || !options.strict ? "info" : "warn"](`idempotence: a second apply: ${said}`);
  if (!options.strict) return [];
  const result: CheckResult = {
    name: IDEMPOTENCE_CHECK,
    stage: "pre-reboot",
    ok: changed.length === 0,
    detail:
      changed.length === 0 ? "a second apply right after the first changed nothing" : `a second apply right after the first changed: ${changed.join(", ")}`,
    seconds: Math.round((session.machine.now() - started) / 100) / 10,
  };
  context.log.info(`${result.ok ? "pass" : "FAIL"} ${result.name}: ${result.detail}`);
  return [result];
}

/**
 * The repo's verify playbook (the profile's `verify:`), applied now through the apply's
 * confinement with the scenario's vars (and the command line's `-e` and `-v`, never its tags):
 * each assert and each failed task is a check of this stage (see ansible/verify.ts). Nothing when
 * the profile names none.
 */
export async function verifyStage(
  context: StepContext,
  session: Pick<ScenarioVm, "machine" | "outputs" | "dir" | "timed">,
  stage: CheckStage,
  plan: VerifyPlan,
): Promise<CheckResult[]> {
  const file = plan.profile.verifyFile;
  if (!file) return [];
  const label = relative(plan.profile.repoDir, file);
  return session.timed(`verify ${stage === "pre-reboot" ? "before" : "after"} the reboot`, async () => {
    const started = session.machine.now();
    const { input, files } = await prepareAnsible(context, session, plan.vars, {
      profile: plan.profile,
      dir: await freshFolder(join(session.dir, `verify-${stage}`)),
      playbookArgs: ansiblePlaybookArgs({ ...context.ansible, tags: undefined, skipTags: undefined, diff: false }),
    });
    context.log.info(`verify: ${label}`);
    const run = await runPlaybook(input, files, file);
    context.signal.throwIfAborted();
    // A role may have removed or rotated host keys: follow them before anything else logs in.
    await followHostKeys(session.machine, context.log);
    const seconds = Math.round((session.machine.now() - started) / 100) / 10;
    return verifyFindings(run, label).map((finding) => {
      context.log.info(`${finding.ok ? "pass" : "FAIL"} ${finding.name}: ${finding.detail}`);
      return { ...finding, stage, seconds };
    });
  });
}

/** `base`, or `base-2`, `base-3`… : the first that does not exist yet, made (0700). */
async function freshFolder(base: string): Promise<string> {
  for (let attempt = 1; ; attempt += 1) {
    const folder = attempt === 1 ? base : `${base}-${attempt}`;
    try {
      await mkdir(folder, { mode: 0o700 });
      return folder;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
}

/** Survival checks derived from the state now (right before the reboot), recorded with what was left out. */
export async function deriveSurvival(context: StepContext, session: ScenarioVm): Promise<SurvivalPlan> {
  return session.timed("survival state before the reboot", async () => {
    const before = await observeSurvival(session.machine);
    const answering = await answeringPorts(
      session.outputs.ip,
      before.published.filter((entry) => entry.proto === "tcp").map((entry) => entry.port),
    );
    const speakingTls = await tlsPortsAnswering(session.outputs.ip, tlsCandidates(before));
    const { checks, leftOut } = deriveSurvivalChecks(before, answering, context.profile.document.survival === "strict", speakingTls);
    session.report.survival = { derived: checks.map((check) => check.name), leftOut };
    context.log.info(`survival: ${checks.length} checks derived from the state before the reboot, ${leftOut.length} item(s) left out (report.json says why)`);
    const withinMs = Math.max(60, ...context.profile.document.checks.map((check) => check.within)) * 1000;
    return { checks, withinMs };
  });
}

/** Derived survival checks and how long they may take after the reboot. */
export interface SurvivalPlan {
  checks: DerivedCheck[];
  withinMs: number;
}

/**
 * Resolves the revisions each scenario applies, before anything is created (a ref that names no
 * commit is bad input, exit 2, naming it and the repo): the profile's `scenarios.<name>.ref` and
 * `baseline`, or the command line's `--ref`/`--baseline` for the scenario that is run (`target`).
 */
export async function resolveScenarioRevisions(
  profile: LoadedProfile,
  scenarios: ScenarioSpec[],
  asked: { ref?: string; baseline?: string; target: "red" | "green" },
  runner: Runner,
): Promise<void> {
  for (const scenario of scenarios) {
    const declared = profile.document.scenarios?.[scenario.name];
    const fromCli = scenario.name === asked.target;
    for (const field of ["ref", "baseline"] as const) {
      const given = fromCli ? asked[field] : undefined;
      const value = given ?? declared?.[field];
      if (value === undefined) continue;
      const source = given !== undefined ? { file: "", path: `--${field}` } : { file: profile.file, path: `scenarios.${scenario.name}.${field}` };
      const resolved = await resolveRevision(profile.repoDir, value, runner, source);
      if (field === "ref") scenario.revision = resolved;
      else scenario.baseline = resolved;
    }
  }
}

/**
 * The profile as a scenario applies it: at its revision (checked out read-only into the
 * scenario's folder, its vaulted values learnt as secrets), or as the repo is on disk. Recorded
 * in the scenario's report (ref, commit, dirty).
 */
export async function profileAt(
  context: StepContext,
  session: Pick<ScenarioVm, "dir" | "report">,
  revision: ResolvedRevision | undefined,
): Promise<LoadedProfile> {
  if (!revision) {
    const worktree = await worktreeRevision(context.profile.repoDir, context.runner);
    session.report.ref ??= null;
    session.report.commit ??= worktree.commit;
    if (session.report.commit === "worktree") session.report.dirty = worktree.dirty ?? null;
    return context.profile;
  }
  if (session.report.commit === undefined) {
    session.report.ref = revision.ref;
    session.report.commit = revision.commit;
  }
  const repoDir = await checkoutRevision(revision, join(session.dir, CHECKOUTS_DIR), context.runner);
  const profile = await profileAtRevision(context.profile, repoDir, context.runner, context.log);
  // The revision's own vaulted vars are its secrets too.
  await loadSecrets(profile, context.runner, context.secrets.redactor);
  context.log.info(`${revision.ref} is ${revision.commit}: applied from ${repoDir}`);
  return profile;
}

/**
 * The upgrade path's first apply: the baseline (what the live host runs now). Its failure is
 * the baseline's, not the change's, and says so (exit 1).
 */
export async function baselineStep(context: StepContext, session: ScenarioVm, scenario: ScenarioSpec, profile: LoadedProfile): Promise<void> {
  const baseline = scenario.baseline!;
  session.report.baseline = { ref: baseline.ref!, commit: baseline.commit, apply: null };
  context.log.info(`on baseline ${baseline.ref} = ${baseline.commit.slice(0, 12)}: what the live host runs is applied first, the change on top`);
  try {
    const applied = await session.timed("apply baseline", () => applyStep(context, session, scenario.vars, { folder: "ansible-baseline", profile }));
    session.report.baseline.apply = { seconds: applied.seconds, recap: applied.recap, tasks: applied.tasks };
  } catch (error) {
    if (!(error instanceof SystemUnderTestError)) throw error;
    throw new SystemUnderTestError(`the baseline ${baseline.ref} (${baseline.commit.slice(0, 12)}) failed to apply, not the change: ${error.message}`);
  }
}

/**
 * The Python Ansible's modules run with: the seed's (infra/guest/ansible_python.py: python3 that
 * compiles a module payload's code once, not at every task), or python3 on a VM made before the
 * seed carried it.
 */
async function guestPythonOf(machine: Machine): Promise<string> {
  const found = await machine.execute(`test -x ${GUEST_ANSIBLE_PYTHON}`, { timeoutMs: 60_000 });
  return found.exitCode === 0 ? GUEST_ANSIBLE_PYTHON : "/usr/bin/python3";
}

/**
 * Applies the profile's playbook with a scenario's vars, after checking the transient inventory;
 * `folder` names the apply's folder in the session's (`ansible` unless said), `profile` the
 * profile it applies (the run's unless said: another ref's, say). For
 * le-prod-wildcard, a cached certificate goes onto the VM first, or the one the VM issued is
 * cached afterwards.
 */
export async function applyStep(
  context: StepContext,
  session: Pick<ScenarioVm, "machine" | "outputs" | "dir">,
  vars: Record<string, unknown>,
  options: { folder?: string; profile?: LoadedProfile } = {},
): Promise<ApplyResult & { certificate: CertificateOutcome | null; hostKeyChange?: HostKeyChange }> {
  const profile = options.profile ?? context.profile;
  const wildcard = context.certs.wildcard ? { ...context.certs.wildcard, machine: session.machine, secrets: context.secrets, log: context.log } : undefined;
  const before = wildcard ? await wildcardBeforeApply(wildcard) : undefined;
  const { input, files } = await prepareAnsible(
    context,
    session,
    { ...vars, ...before?.vars },
    {
      profile,
      dir: join(session.dir, options.folder ?? "ansible"),
      playbookArgs: ansiblePlaybookArgs(context.ansible),
    },
  );
  let result: ApplyResult;
  try {
    result = await applyPlaybook(input, files);
  } catch (error) {
    // A failed apply is the finding; its diagnostics still need a way in if keys changed first.
    await followHostKeys(session.machine, context.log).catch(() => undefined);
    throw error;
  }
  // A role may have removed or rotated host keys: follow them before anything else logs in.
  const hostKeyChange = await followHostKeys(session.machine, context.log);
  let certificate: CertificateOutcome | null = null;
  if (wildcard && before?.reused) {
    certificate = {
      tier: "le-prod-wildcard",
      domain: wildcard.settings.domain,
      source: "reused",
      notAfter: before.reused.notAfter.toISOString(),
      detail: `from ${wildcard.cache.dir}`,
    };
  } else if (wildcard && result.ok) certificate = await wildcardAfterApply(wildcard);
  return { ...result, certificate, ...(hostKeyChange ? { hostKeyChange } : {}) };
}

/**
 * An Ansible run on the scenario's VM made ready: what it is given (its vars, the run's secrets
 * and cert tier, the Python its modules run with), its folder, and its transient inventory,
 * written and checked with Ansible (safety invariant 1).
 */
async function prepareAnsible(
  context: StepContext,
  session: Pick<ScenarioVm, "machine" | "outputs">,
  vars: Record<string, unknown>,
  options: { profile: LoadedProfile; dir: string; playbookArgs: string[] },
): Promise<{ input: ApplyInput; files: TransientInventory }> {
  const input: ApplyInput = {
    profile: options.profile,
    outputs: session.outputs,
    target: session.machine.target,
    scenario: { name: "apply", vars },
    certs: context.certs,
    secrets: context.secrets,
    dir: options.dir,
    runner: context.runner,
    log: context.log,
    signal: context.signal,
    playbookArgs: options.playbookArgs,
    guestPython: await guestPythonOf(session.machine),
  };
  await mkdir(input.dir, { recursive: true, mode: 0o700 });
  const files = await writeTransientInventory(input);
  await checkTransientInventory(input, files);
  return { input, files };
}

/** Runs the profile's checks (or `checks`) now, each printed as it ends. */
export async function checkStage(
  context: Pick<StepContext, "profile" | "log" | "certs">,
  session: Pick<ScenarioVm, "machine" | "outputs">,
  stage: CheckStage,
  checks: readonly Check[] = context.profile.document.checks,
): Promise<CheckResult[]> {
  return runChecks(checks, session.machine, session.outputs.ip, stage, {
    onResult: (result) => context.log.info(`${result.ok ? "pass" : "FAIL"} ${result.name}: ${result.detail}${result.ok ? "" : ` (after ${result.seconds} s)`}`),
    context: { repoDir: context.profile.repoDir, tier: context.certs.tier, certCacheDir: certCacheDir() },
  });
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
    proof = await session.timed(kind === "clean" ? "reboot" : kind === "soft" ? "soft reboot" : "power loss", () => rebootWithOneReset(context, session, kind));
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
async function rebootWithOneReset(context: StepContext, session: ScenarioVm, kind: RebootKind): Promise<RebootProof> {
  const { machine, report } = session;
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
      attempt = async () => {
        const ready = await machine.waitForSsh(context.timeouts.sshMs, { notBootId: bootIdBefore, bootBeganAt: resetAt, restartAt: resetAt });
        const seconds = Math.round((machine.now() - started) / 100) / 10;
        if (kind === "power-loss")
          return { kind, bootIdBefore, bootIdAfter: ready.bootId, seconds, ready, previousBootEnd: await machine.endOfBoot(bootIdBefore) };
        return { kind, bootIdBefore, bootIdAfter: ready.bootId, seconds, ready };
      };
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
