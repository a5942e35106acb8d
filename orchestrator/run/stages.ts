/**
 * What a scenario's steps share, whichever of them runs: what they are given (the run's context,
 * the scenario's VM, the scenario itself), the verdict they come to, the profile's checks of a
 * stage, the verify playbook, the survival checks derived right before a reboot and an Ansible run
 * made ready on the VM. RED→GREEN's sequence (scenario.ts), the reboots (reboots.ts) and the verbs
 * on a kept VM all take them from here, so that the reboots never need the sequence's file.
 */
import { mkdir } from "node:fs/promises";
import { join, relative } from "node:path";
import type { AccelDecision } from "../../infra/accel.ts";
import type { StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { GUEST_ANSIBLE_PYTHON } from "../../infra/seed.ts";
import { checkTransientInventory, runPlaybook, writeTransientInventory, type ApplyInput, type ApplyPeer, type TransientInventory } from "../ansible/apply.ts";
import { verifyFindings } from "../ansible/verify.ts";
import { runChecks, type CheckResult, type CheckStage } from "../guest/checks.ts";
import { certCacheDir } from "../host/paths.ts";
import type { Machine } from "../guest/machine.ts";
import { followHostKeys } from "../guest/host-keys.ts";
import { answeringPorts, deriveSurvivalChecks, observeSurvival, tlsCandidates, tlsPortsAnswering, type DerivedCheck } from "../guest/survival.ts";
import type { Libvirt } from "../host/libvirt.ts";
import type { Log } from "../log.ts";
import { profileForHost, type LoadedProfile } from "../profile/load.ts";
import type { ResolvedRevision } from "../profile/revision.ts";
import type { Check, ExpectFailing, RebootKind, RebootOrder } from "../profile/schema.ts";
import type { CertPlan } from "../ansible/certs.ts";
import { ansiblePlaybookArgs, type AnsibleArgs } from "./options.ts";
import type { BootTimeouts } from "./provision.ts";
import type { ScenarioReport } from "./report.ts";
import { overlayPlainVars, overlaySecrets, type RunSecrets } from "../ansible/secrets.ts";

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
  /** Several hosts: the scenario's own `rebootOrder`, over the profile's. */
  rebootOrder?: RebootOrder;
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
  /** Several hosts: the other hosts' VMs, in the topology's order (this one is the first host's). */
  peers?: PeerVm[];
}

/** Another VM of a topology's scenario. */
export interface PeerVm {
  host: string;
  machine: Machine;
  outputs: StackOutputs;
}

/** Every VM of a scenario, the first host's first, each with its host. */
export function scenarioVms(session: Pick<ScenarioVm, "machine" | "outputs" | "peers">): PeerVm[] {
  return [{ host: session.outputs.host, machine: session.machine, outputs: session.outputs }, ...(session.peers ?? [])];
}

/** `on`'s address on the link between it and `via` (`over: link`; the profile's validation made sure there is one). */
function linkAddressOf(on: PeerVm, via: PeerVm): string {
  const link = via.outputs.links?.find((each) => each.peer === on.host);
  if (!link) throw new Error(`no link between ${via.host} and ${on.host} in this scenario's stacks`);
  return link.peerAddress;
}

/** The verdict of a scenario. */
export interface Verdict {
  ok: boolean;
  outcome: string;
}

/**
 * Runs the profile's checks (or `checks`) now, each printed as it ends. Several hosts: each check
 * against the host it is `on` (the first by default), run where its `from` says (the controller,
 * that host, or another host against it); the results in the checks' order.
 */
export async function checkStage(
  context: Pick<StepContext, "profile" | "log" | "certs">,
  session: Pick<ScenarioVm, "machine" | "outputs" | "peers">,
  stage: CheckStage,
  checks: readonly Check[] = context.profile.document.checks,
): Promise<CheckResult[]> {
  const vms = scenarioVms(session);
  const options = {
    onResult: (result: CheckResult) =>
      context.log.info(`${result.ok ? "pass" : "FAIL"} ${result.name}: ${result.detail}${result.ok ? "" : ` (after ${result.seconds} s)`}`),
    context: { repoDir: context.profile.repoDir, tier: context.certs.tier, certCacheDir: certCacheDir() },
  };
  if (vms.length === 1) return runChecks(checks, session.machine, session.outputs.ip, stage, options);
  const vmOf = (host: string) => {
    const found = vms.find((vm) => vm.host === host);
    if (!found) throw new Error(`${host} is no host of this scenario (${vms.map((vm) => vm.host).join(", ")})`);
    return found;
  };
  // One batch per host the checks are about, host they run on and address they go to.
  const batches = new Map<string, { on: PeerVm; via: PeerVm | undefined; address: string; checks: Check[] }>();
  for (const check of checks) {
    const on = vmOf(check.on ?? vms[0]!.host);
    const via = check.from !== undefined && check.from !== "controller" && check.from !== on.host ? vmOf(check.from) : undefined;
    const address = via && check.over === "link" ? linkAddressOf(on, via) : on.outputs.ip;
    const key = `${on.host} ${via?.host ?? ""} ${address}`;
    if (!batches.has(key)) batches.set(key, { on, via, address, checks: [] });
    batches.get(key)!.checks.push(check);
  }
  const results = await Promise.all(
    [...batches.values()].map((batch) =>
      runChecks(batch.checks, batch.on.machine, batch.address, stage, {
        ...options,
        ...(batch.via ? { via: { host: batch.via.host, machine: batch.via.machine } } : {}),
      }),
    ),
  );
  const byCheck = new Map<Check, CheckResult>();
  [...batches.values()].forEach((batch, index) => batch.checks.forEach((check, at) => byCheck.set(check, results[index]![at]!)));
  return checks.map((check) => byCheck.get(check)!);
}

/** What a verify playbook runs with: the profile it comes from (a revision's, say) and the scenario's vars. */
export interface VerifyPlan {
  profile: LoadedProfile;
  vars: Record<string, unknown>;
}

/**
 * The repo's verify playbook (the profile's `verify:`), applied now through the apply's
 * confinement with the scenario's vars (and the command line's `-e` and `-v`, never its tags):
 * each assert and each failed task is a check of this stage (see ansible/verify.ts). Nothing when
 * the profile names none.
 */
export async function verifyStage(
  context: StepContext,
  session: Pick<ScenarioVm, "machine" | "outputs" | "dir" | "timed" | "peers">,
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
    for (const vm of scenarioVms(session)) await followHostKeys(vm.machine, context.log);
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

/**
 * An Ansible run on the scenario's VM made ready: what it is given (its vars, the run's secrets
 * and cert tier, the Python its modules run with), its folder, and its transient inventory,
 * written and checked with Ansible (safety invariant 1).
 */
export async function prepareAnsible(
  context: StepContext,
  session: Pick<ScenarioVm, "machine" | "outputs" | "peers">,
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
    ...(session.peers && session.peers.length > 0 ? { peers: session.peers.map((peer) => applyPeer(options.profile, peer)) } : {}),
  };
  await mkdir(input.dir, { recursive: true, mode: 0o700 });
  const files = await writeTransientInventory(input);
  await checkTransientInventory(input, files);
  return { input, files };
}

/** Another host of the topology as its apply takes it: its VM, and its own overlay's plain and secret vars and vault. */
function applyPeer(profile: LoadedProfile, peer: PeerVm): ApplyPeer {
  const own = profileForHost(profile, peer.host);
  const { secretVars, vaultFile } = overlaySecrets(own);
  const vars = overlayPlainVars(own, secretVars);
  return { host: peer.host, outputs: peer.outputs, target: peer.machine.target, vars, secretVars, ...(vaultFile ? { vaultFile } : {}) };
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
 * Survival checks derived from the state now (right before the reboot), recorded with what was
 * left out. Several hosts: each VM's own, named after its host (`kazi: survives: ...`) after the
 * first's.
 */
export async function deriveSurvival(context: StepContext, session: ScenarioVm): Promise<SurvivalPlan> {
  return session.timed("survival state before the reboot", async () => {
    const strict = context.profile.document.survival === "strict";
    const vms = scenarioVms(session);
    const derived = await Promise.all(
      vms.map(async (vm, index) => {
        const before = await observeSurvival(vm.machine);
        const answering = await answeringPorts(
          vm.outputs.ip,
          before.published.filter((entry) => entry.proto === "tcp").map((entry) => entry.port),
        );
        const speakingTls = await tlsPortsAnswering(vm.outputs.ip, tlsCandidates(before));
        const { checks, leftOut } = deriveSurvivalChecks(before, answering, strict, speakingTls);
        if (index === 0) return { host: vm.host, checks, leftOut };
        const named = (name: string) => `${vm.host}: ${name}`;
        return {
          host: vm.host,
          checks: checks.map((check) => ({ ...check, name: named(check.name) })),
          leftOut: leftOut.map((item) => ({ ...item, item: named(item.item) })),
        };
      }),
    );
    const [first, ...others] = derived;
    session.report.survival = { derived: derived.flatMap((vm) => vm.checks.map((check) => check.name)), leftOut: derived.flatMap((vm) => vm.leftOut) };
    const count = derived.reduce((sum, vm) => sum + vm.checks.length, 0);
    const leftOutCount = derived.reduce((sum, vm) => sum + vm.leftOut.length, 0);
    context.log.info(
      `survival: ${count} checks derived from the state before the reboot${vms.length > 1 ? ` of ${vms.length} hosts` : ""}, ${leftOutCount} item(s) left out (report.json says why)`,
    );
    const withinMs = Math.max(60, ...context.profile.document.checks.map((check) => check.within)) * 1000;
    return { checks: first!.checks, withinMs, ...(others.length > 0 ? { peers: others.map(({ host, checks }) => ({ host, checks })) } : {}) };
  });
}

/** Derived survival checks and how long they may take after the reboot. */
export interface SurvivalPlan {
  /** The first host's (the only one's). */
  checks: DerivedCheck[];
  withinMs: number;
  /** Several hosts: each other VM's, by host. */
  peers?: { host: string; checks: DerivedCheck[] }[];
}
