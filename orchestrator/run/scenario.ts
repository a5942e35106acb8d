/**
 * The imperative sequence of one scenario, read top to bottom: provision → ready → apply →
 * check → reboot (proven by boot id) → check → verdict → diagnostics/teardown. RED→GREEN runs
 * it once per scenario, each on a fresh VM from the golden image.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import { newRunIdentity, type RunIdentity } from "../../infra/spec.ts";
import { applyPlaybook, checkTransientInventory, writeTransientInventory, type ApplyResult } from "../ansible/apply.ts";
import { runChecks, type CheckResult } from "../guest/checks.ts";
import { collectDiagnostics } from "../guest/diagnostics.ts";
import { HarnessError, SystemUnderTestError } from "../errors.ts";
import type { KeepPolicy } from "../cli/options.ts";
import type { Log } from "../log.ts";
import { describePanic, tcgRaceOf, type Machine, type RebootProof } from "../guest/machine.ts";
import type { RunSecrets } from "./secrets.ts";
import { wildcardAfterApply, wildcardBeforeApply, type CertificateOutcome, type CertPlan } from "./certs.ts";
import { provision, withOneResetOnTcgRace, type LiveRun, type ProvisionOptions } from "./provision.ts";
import { sshTargetOf } from "../host/ssh.ts";
import type { ScenarioReport } from "./report.ts";
import { asBomaError, teardown } from "./stacks.ts";
import { diffSnapshots, takeSnapshot } from "../guest/snapshot.ts";

/** How long systemd may take to report the system running after the reboot (slow units under TCG). */
const SYSTEM_RUNNING_TIMEOUT_MS = 5 * 60_000;

/** One scenario to run. */
export interface ScenarioSpec {
  name: "red" | "green";
  expect: "fail" | "pass";
  vars: Record<string, unknown>;
}

/** Everything a scenario needs from the command: what provisioning needs, the tier and the keep policy. */
export interface SequenceContext extends Omit<ProvisionOptions, "runsDir"> {
  certs: CertPlan;
  keep: KeepPolicy;
  secrets: RunSecrets;
}

/** The result of one scenario, plus the live VM when it is kept. */
export interface ScenarioOutcome {
  report: ScenarioReport;
  /** Set when the VM was kept (failure with --keep on-failure, or --keep always). */
  kept?: { runId: string; ssh: string };
  /** A harness error that ended the scenario (exit 4 or 130), after cleanup. */
  error?: unknown;
}

/** Runs one scenario on a fresh VM and cleans up after it as the keep policy says. */
export async function runScenario(context: SequenceContext, scenario: ScenarioSpec, runDir: string): Promise<ScenarioOutcome> {
  const { log, profile } = context;
  const scenarioDir = join(runDir, scenario.name);
  await mkdir(scenarioDir, { recursive: true });
  const identity: RunIdentity = newRunIdentity(profile.document.host);
  const report: ScenarioReport = {
    name: scenario.name,
    expect: scenario.expect,
    ...(scenario.name === "red" ? { faithful: false } : {}),
    ok: false,
    outcome: "did not finish",
    stack: identity.runId,
    bootIds: [],
    checks: [],
    phases: [],
    readyLagSeconds: [],
    guestBootSeconds: [],
    beforeKernelSeconds: [],
    bootResets: [],
    apply: null,
    certificate: null,
    snapshotDiff: null,
    diagnostics: null,
  };
  const timed = <T>(name: string, body: () => Promise<T>): Promise<T> => log.timed(report.phases, name, body);

  let live: LiveRun | undefined;
  let failure: "sut" | "harness" | undefined;
  let error: unknown;
  try {
    live = await provision({ ...context, runsDir: runDir }, { identity, runDir: scenarioDir });
    report.phases.push(...live.phases);
    report.bootResets.push(...live.resets);
    report.readyLagSeconds.push(live.boots[0]?.readyLagSeconds ?? null);
    report.beforeKernelSeconds.push(live.boots[0]?.beforeKernelSeconds ?? null);
    const machine = live.machine;
    const outputs = live.outputs;

    const applied = await timed("apply", () => applyScenario(context, { outputs, machine }, scenario, scenarioDir));
    report.apply = { seconds: applied.seconds, recap: applied.recap, tasks: applied.tasks };
    // The first boot has long finished by now (the apply took minutes): its time is final.
    report.guestBootSeconds.push(await machine.guestBootSeconds());
    report.certificate = applied.certificate;

    const pre = await timed("checks before the reboot", () => checkStage(context, machine, outputs.ip, "pre-reboot"));
    report.checks.push(...pre);
    let post: CheckResult[] = [];
    if (pre.every((check) => check.ok)) post = await rebootAndRecheck(context, machine, outputs, report, timed);
    // Otherwise it is decided before the reboot (GREEN failed, or RED proves nothing).
    else log.info("skipping the reboot: the scenario failed before it");
    report.checks.push(...post);

    const verdict = judge(scenario.expect, pre, post);
    report.ok = verdict.ok;
    report.outcome = verdict.outcome;
    if (scenario.expect === "fail") report.faithful = verdict.ok;
    if (!report.ok) failure = "sut";
  } catch (caught) {
    error = asBomaError(caught, context.signal);
    failure = error instanceof SystemUnderTestError ? "sut" : "harness";
    report.outcome = error instanceof Error ? error.message.split("\n")[0]! : String(error);
    if (error instanceof SystemUnderTestError) error = undefined;
  }
  log.info(`${scenario.name}: ${report.outcome}`);

  // Diagnostics for every failure of the system under test; never masking the failure itself.
  if (failure === "sut" && live) {
    const dir = join(scenarioDir, "diagnostics");
    await timed("diagnostics", async () => {
      const items = await collectDiagnostics({ dir, machine: live!.machine, outputs: live!.outputs, runner: context.runner, libvirt: context.libvirt, reason: report.outcome });
      log.info(`collected ${items.filter((item) => item.ok).length} of ${items.length} items into ${dir}`);
    });
    report.diagnostics = dir;
  }

  // Kept or not, the harness is done with the VM: its SSH master connection goes now.
  await live?.machine.closeConnection();
  const stackExists = (await context.engine.list()).some((stack) => stack.stack === identity.runId);
  // --keep always keeps the VM whatever happened, Ctrl-C included; on-failure keeps a failed system under test.
  const keep = stackExists && (context.keep === "always" || (context.keep === "on-failure" && failure === "sut" && !context.signal.aborted));
  if (stackExists && !keep) {
    try {
      await timed("teardown", () => teardown(context.engine, identity.runId, scenarioDir, log));
    } catch (teardownError) {
      log.warn(`${(teardownError as Error).message}\nrun \`npm run reap\` to remove what is left`);
      // A leak is a harness fault even when the scenario itself passed.
      error ??= asBomaError(teardownError, context.signal);
    }
  }
  return {
    report,
    ...(keep ? { kept: { runId: identity.runId, ssh: `npm run boma-it -- ssh ${identity.runId}` } } : {}),
    ...(error !== undefined ? { error } : {}),
  };
}

/** A scenario's verdict from its checks before and after the reboot (design.md, RED→GREEN). */
export function judge(expect: "fail" | "pass", pre: readonly CheckResult[], post: readonly CheckResult[]): { ok: boolean; outcome: string } {
  const preOk = pre.every((check) => check.ok);
  const postOk = post.length > 0 && post.every((check) => check.ok);
  if (expect === "fail") {
    if (!preOk) return { ok: false, outcome: `RED failed before the reboot (${failedNames(pre)}): this is not a reboot bug, so RED proves nothing` };
    if (postOk) return { ok: false, outcome: "RED passed after the reboot: the harness is not faithful (it does not reproduce the incident)" };
    return { ok: true, outcome: `RED is faithful: it passed before the reboot and broke after it (${failedNames(post)})` };
  }
  if (!preOk) return { ok: false, outcome: `GREEN failed before the reboot: ${failedNames(pre)}` };
  if (!postOk) return { ok: false, outcome: `GREEN broke after the reboot: ${failedNames(post)}` };
  return { ok: true, outcome: "GREEN survived the reboot: every check passed before and after" };
}

/**
 * Reboots (proven by a new boot id), waits until systemd has settled and runs the checks again,
 * with a before/after snapshot. A VM that does not come back fails every check: that is the
 * finding, not a harness fault.
 */
async function rebootAndRecheck(
  context: SequenceContext,
  machine: Machine,
  { ip, domain }: Pick<StackOutputs, "ip" | "domain">,
  report: ScenarioReport,
  timed: <T>(name: string, body: () => Promise<T>) => Promise<T>,
): Promise<CheckResult[]> {
  const before = await timed("snapshot before the reboot", () => takeSnapshot(machine));
  try {
    const proof = await timed("reboot", () => rebootWithOneResetOnTcgRace(context, machine, domain, report));
    report.bootIds = [proof.bootIdBefore, proof.bootIdAfter];
    report.readyLagSeconds.push(proof.ready.readyLagSeconds ?? null);
    report.beforeKernelSeconds.push(proof.ready.beforeKernelSeconds ?? null);
    context.log.info(`rebooted: boot id ${proof.bootIdBefore.slice(0, 8)}… → ${proof.bootIdAfter.slice(0, 8)}… in ${proof.seconds} s`);
    await timed("system settled", () => waitSettled(machine, context.log));
    report.guestBootSeconds.push(await machine.guestBootSeconds());
    const post = await timed("checks after the reboot", () => checkStage(context, machine, ip, "post-reboot"));
    report.snapshotDiff = diffSnapshots(before, await timed("snapshot after the reboot", () => takeSnapshot(machine)));
    return post;
  } catch (error) {
    if (!(error instanceof HarnessError) || context.signal.aborted) throw error;
    const race = tcgRaceOf(error, context.accel.accel);
    if (race) {
      // Not the finding: QEMU ran a stale kernel patch. Judging it would make RED "faithful" and
      // GREEN "broken" for nothing, so the scenario ends as an infrastructure fault.
      throw new HarnessError(
        `after the reboot the guest kernel hit QEMU TCG's text-patching race (${describePanic(race)}): that says nothing about the change under test; run it again`,
        { cause: error },
      );
    }
    context.log.warn(`the VM did not come back after the reboot: ${error.message.split("\n")[0]}`);
    return context.profile.document.checks.map((check) => ({
      name: check.name,
      stage: "post-reboot" as const,
      ok: false,
      detail: "the VM did not come back after the reboot",
      seconds: 0,
    }));
  }
}

/**
 * The reboot; when the new boot's kernel hits QEMU TCG's race before it ran init, the VM is reset
 * once and the same boot is waited for again (recorded in `bootResets`).
 */
async function rebootWithOneResetOnTcgRace(context: SequenceContext, machine: Machine, domain: string, report: ScenarioReport): Promise<RebootProof> {
  const bootIdBefore = await machine.bootId();
  const started = machine.now();
  let attempt = () => machine.reboot(context.timeouts.sshMs, { bootIdBefore });
  const { value, resets } = await withOneResetOnTcgRace(() => attempt(), {
    what: "the boot after the reboot",
    accel: context.accel.accel,
    log: context.log,
    onlyBeforeUserspace: true,
    reset: async () => {
      await machine.markNewBoot();
      await context.libvirt.resetDomain(domain);
      const resetAt = machine.now();
      attempt = async () => {
        const ready = await machine.waitForSsh(context.timeouts.sshMs, { notBootId: bootIdBefore, bootBeganAt: resetAt });
        return { bootIdBefore, bootIdAfter: ready.bootId, seconds: Math.round((machine.now() - started) / 100) / 10, ready };
      };
    },
  });
  report.bootResets.push(...resets);
  return value;
}

/**
 * Applies the profile's playbook with a scenario's vars, after checking the transient inventory.
 * For le-prod-wildcard, a cached certificate goes onto the VM first, or the one the VM issued is
 * cached afterwards.
 */
export async function applyScenario(
  context: Pick<SequenceContext, "profile" | "certs" | "runner" | "log" | "signal" | "secrets">,
  { outputs, machine }: { outputs: StackOutputs; machine: Machine },
  scenario: Pick<ScenarioSpec, "name" | "vars">,
  scenarioDir: string,
): Promise<ApplyResult & { certificate: CertificateOutcome | null }> {
  const wildcard = context.certs.wildcard
    ? { ...context.certs.wildcard, runner: context.runner, target: sshTargetOf(outputs), secrets: context.secrets, log: context.log }
    : undefined;
  const before = wildcard ? await wildcardBeforeApply(wildcard) : undefined;
  const vars = { ...scenario.vars, ...before?.vars };
  const input = { profile: context.profile, outputs, target: machine.target, scenario: { name: scenario.name, vars }, certs: context.certs, secrets: context.secrets, dir: join(scenarioDir, "ansible"), runner: context.runner, log: context.log, signal: context.signal };
  await mkdir(input.dir, { recursive: true });
  const files = await writeTransientInventory(input);
  await checkTransientInventory(input, files);
  const result = await applyPlaybook(input, files);
  let certificate: CertificateOutcome | null = null;
  if (wildcard && before?.reused) {
    certificate = { tier: "le-prod-wildcard", domain: wildcard.settings.domain, source: "reused", notAfter: before.reused.notAfter.toISOString(), detail: `from ${wildcard.cache.dir}` };
  } else if (wildcard && result.ok) certificate = await wildcardAfterApply(wildcard);
  return { ...result, certificate };
}

async function checkStage(context: SequenceContext, machine: Machine, ip: string, stage: "pre-reboot" | "post-reboot"): Promise<CheckResult[]> {
  return runChecks(context.profile.document.checks, machine, ip, stage, {
    signal: context.signal,
    onResult: (result) => context.log.info(`${result.ok ? "pass" : "FAIL"} ${result.name}: ${result.detail}${result.ok ? "" : ` (after ${result.seconds} s)`}`),
  });
}

/** Waits until systemd has finished starting up (running or degraded), so checks see the booted system. */
async function waitSettled(machine: Machine, log: Log): Promise<void> {
  const result = await machine.execute(`timeout ${Math.round(SYSTEM_RUNNING_TIMEOUT_MS / 1000)} systemctl is-system-running --wait`, { timeoutMs: SYSTEM_RUNNING_TIMEOUT_MS + 30_000 });
  const state = result.stdout.trim() || result.stderr.trim();
  log.info(`system is ${state || `unknown (exit ${result.exitCode})`}`);
}

function failedNames(checks: readonly CheckResult[]): string {
  return checks.filter((check) => !check.ok).map((check) => check.name).join(", ");
}
