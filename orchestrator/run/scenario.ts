/**
 * The steps of a scenario, on a machine the run driver gives it (driver.ts), read top to bottom:
 * apply → checks → reboot (proven by boot id) → checks → verdict. `run` runs all of them on a
 * fresh VM per scenario; `up` and the verbs on a kept VM run the ones they need. This file keeps
 * the sequence (RED→GREEN, the apply, idempotence, the revisions applied); the reboots and their
 * verdict are reboots.ts's, and what the steps share is stages.ts's.
 */
import { join } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { applyPlaybook, type ApplyResult } from "../ansible/apply.ts";
import { changedTasks } from "../ansible/verify.ts";
import { BadInputError, StoppedBesideError, SystemUnderTestError } from "../errors.ts";
import type { CheckResult } from "../guest/checks.ts";
import { followHostKeys, type HostKeyChange } from "../guest/host-keys.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { CHECKOUTS_DIR, checkoutRevision, profileAtRevision, resolveRevision, worktreeRevision, type ResolvedRevision } from "../profile/revision.ts";
import { rebootKinds, redExpectationAfter, type RebootKind } from "../profile/schema.ts";
import { wildcardAfterApply, wildcardBeforeApply, type CertificateOutcome } from "../ansible/certs.ts";
import { ansiblePlaybookArgs, type RunOptions, type ScenarioChoice } from "./options.ts";
import type { ScenarioReport } from "./report.ts";
import { loadProfileSecrets } from "../ansible/secrets.ts";
import { judge, judgeKinds, rebootByKinds } from "./reboots.ts";
import {
  checkStage,
  deriveSurvival,
  prepareAnsible,
  scenarioVms,
  verifyStage,
  type ScenarioSpec,
  type ScenarioVm,
  type StepContext,
  type Verdict,
  type VerifyPlan,
} from "./stages.ts";

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
        ...(declared.red.rebootOrder !== undefined ? { rebootOrder: declared.red.rebootOrder } : {}),
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
      ...(green?.rebootOrder !== undefined ? { rebootOrder: green.rebootOrder } : {}),
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
    order: scenario.rebootOrder ?? profile.document.rebootOrder ?? "all",
  });
  if (kinds.length === 1 && kinds[0] === "clean") return judge(scenario.expect, pre, outcomes[0]!.reboot.post, scenario.expectFailing);
  return judgeKinds(
    scenario,
    outcomes.map(({ kind, reboot }) => ({ kind, verdict: judgeKind(kind, reboot.post) })),
  );
}

/** The check a strict idempotence adds before the reboot. */
export const IDEMPOTENCE_CHECK = "idempotence: a second apply changes nothing";

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
  await loadProfileSecrets(profile, context.runner, context.secrets.redactor);
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
 * Applies the profile's playbook with a scenario's vars, after checking the transient inventory;
 * `folder` names the apply's folder in the session's (`ansible` unless said), `profile` the
 * profile it applies (the run's unless said: another ref's, say). For
 * le-prod-wildcard, a cached certificate goes onto the VM first, or the one the VM issued is
 * cached afterwards.
 */
export async function applyStep(
  context: StepContext,
  session: Pick<ScenarioVm, "machine" | "outputs" | "dir" | "peers">,
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
    for (const vm of scenarioVms(session)) await followHostKeys(vm.machine, context.log).catch(() => undefined);
    throw error;
  }
  // A role may have removed or rotated host keys: follow them before anything else logs in (each
  // VM's; the report keeps the first host's).
  const hostKeyChange = await followHostKeys(session.machine, context.log);
  for (const peer of session.peers ?? []) await followHostKeys(peer.machine, context.log);
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
