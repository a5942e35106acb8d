/**
 * The run driver (after the NixOS test driver's context manager and Pulumi's finally-teardown):
 * every command that works on test VMs opens a run (the machine's run lock, libvirt, accel,
 * engine, a run dir of its own), runs scenarios on fresh machines, and closes it. A scenario is
 * closed with one keep decision; the run with its report.json, junit.xml, run.log (the step tree
 * as printed) and commands.log (every external command), on every exit path, 4 and 130 included,
 * each cleanup in its own try. A harness fault ends the run as "error" with its causes, never as a
 * verdict.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  dnsQueryLogOf,
  linkHostName,
  linkName,
  newRunIdentity,
  pickSubnet,
  runDirName,
  topologyLinks,
  topologyMembers,
  type RunIdentity,
  type Subnet,
} from "../../infra/spec.ts";
import { briefOf } from "../../infra/errors.ts";
import { asBomaError, ExitCode, InterruptedError, StoppedBesideError, SystemUnderTestError } from "../errors.ts";
import { collectDiagnostics, type DiagnosticItem, type DiagnosticsInput } from "../guest/diagnostics.ts";
import type { PreflightRequest, RunMachinery } from "./preflight.ts";
import { profileForHost, type LoadedProfile } from "../profile/load.ts";
import type { VmShape } from "../profile/schema.ts";
import type { Log } from "../log.ts";
import { bootTimeouts, provision, type BootTimeouts, type LiveRun, type ProvisionOptions } from "./provision.ts";
import { emptyScenarioReport, harnessPeakRssMiB, vmEntryOf, writeReport, type RunReport, type ScenarioReport } from "./report.ts";
import type { KeepRule, ScenarioOpening } from "./scenario.ts";
import type { ScenarioVm, StepContext, Verdict } from "./stages.ts";
import { teardown } from "./live-runs.ts";
import { writeReportPage } from "./report-page.ts";
import { stacksDir } from "../host/paths.ts";
import { warmStateCacheOf } from "../host/warm-states.ts";
import type { CertPlan } from "../ansible/certs.ts";
import { describeBlocked, readBlocked, type EgressPlan } from "./egress.ts";
import type { RunSecrets } from "../ansible/secrets.ts";
import { withCommand } from "./lifecycle.ts";
import type { RunLock } from "../host/lock.ts";

/** What a run is opened with. */
export interface RunRequest extends PreflightRequest {
  secrets: RunSecrets;
  certs: CertPlan;
  /** What the VM may reach beyond its network (egress.ts). */
  egress: EgressPlan;
  runsDir: string;
}

/** What the driver does through others (real ones in production, fakes in its unit tests). */
export interface DriverHooks {
  /** Under the run lock: refuses, or picks libvirt, accel and engine (preflight.ts). */
  preflight: (request: RunRequest, lock: RunLock) => Promise<RunMachinery>;
  /** Makes a scenario's VM and waits until it is ready (provision.ts). */
  provision?: (options: ProvisionOptions, run: { identity: RunIdentity; runDir: string }) => Promise<LiveRun>;
  collectDiagnostics?: (input: DiagnosticsInput) => Promise<DiagnosticItem[]>;
  now?: () => Date;
}

/** An open run. */
export class OpenRun {
  readonly request: RunRequest;
  readonly machinery: RunMachinery;
  readonly dir: string;
  readonly identity: RunIdentity;
  readonly report: RunReport;
  readonly #hooks: DriverHooks;
  /** The run ids its scenarios were given, and the subnets their networks have: each taken once, also side by side. */
  readonly #runIds = new Set<string>();
  readonly #subnets = new Set<string>();

  constructor(request: RunRequest, machinery: RunMachinery, identity: RunIdentity, dir: string, report: RunReport, hooks: DriverHooks) {
    this.request = request;
    this.machinery = machinery;
    this.identity = identity;
    this.dir = dir;
    this.report = report;
    this.#hooks = hooks;
  }

  /** The boot waits' limits: under TCG, VMs side by side share the cores, so each wait gets as many times longer. */
  get timeouts(): BootTimeouts {
    return bootTimeouts(this.request.env, this.machinery.accel.accel === "tcg" ? this.machinery.vmsAtOnce : 1);
  }

  /** What the scenario steps need (stages.ts). */
  get stepContext(): StepContext {
    const { request, machinery } = this;
    return {
      profile: request.profile,
      certs: request.certs,
      secrets: request.secrets,
      runner: request.runner,
      log: request.log,
      signal: request.signal,
      accel: machinery.accel,
      libvirt: machinery.libvirt,
      timeouts: this.timeouts,
      ansible: request.options.ansible,
    };
  }

  /**
   * Runs one scenario on a fresh VM: provision, `body` (which returns the verdict), diagnostics on
   * failure, then one keep decision. A failure of the system under test (thrown or judged) is the
   * scenario's verdict; any other error ends it after cleanup and is rethrown for the run.
   */
  async scenario(opening: ScenarioOpening, body: (session: ScenarioVm) => Promise<Verdict>): Promise<ScenarioReport> {
    const { request, machinery } = this;
    const log = opening.log ?? request.log;
    const signal = opening.signal ?? request.signal;
    const hosts = request.profile.topology?.map((host) => host.name) ?? [request.profile.document.host];
    const identities = await this.#freshIdentities(hosts);
    for (const identity of identities) await machinery.lock.claim(identity.runId);
    const dir = opening.folder ? join(this.dir, opening.folder) : this.dir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const report = emptyScenarioReport(opening, identities[0]!.runId);
    this.report.scenarios.push(report);
    const timed = <T>(name: string, step: () => Promise<T>): Promise<T> => log.timed(report.phases, name, step);

    // The scenario's VMs as they become ready, the first (the run's host) first.
    const lives: LiveRun[] = [];
    let failure: "sut" | "harness" | "interrupted" | undefined;
    let error: unknown;
    try {
      await this.#provisionVms(identities, { dir, log, signal, opening }, lives);
      const live = lives[0]!;
      for (const [index, each] of lives.entries()) {
        // A topology's other VMs' phases carry their host's name.
        report.phases.push(...(index === 0 ? each.phases : each.phases.map((phase) => ({ ...phase, name: `${each.outputs.host}: ${phase.name}` }))));
        report.bootResets.push(...each.resets);
      }
      report.firstBoot = live.firstBoot;
      // A warm start is no boot: its sshd became active in the saved run's boot, not in this run.
      report.readyLagSeconds.push(live.firstBoot.kind === "warm" ? null : (live.boots[0]?.readyLagSeconds ?? null));
      report.beforeKernelSeconds.push(live.boots[0]?.beforeKernelSeconds ?? null);
      if (lives.length > 1) report.vms = lives.map((each) => vmEntryOf(each.outputs));
      const peers = lives.slice(1).map((each) => ({ host: each.outputs.host, machine: each.machine, outputs: each.outputs }));
      const verdict = await body({ machine: live.machine, outputs: live.outputs, report, dir, timed, ...(peers.length > 0 ? { peers } : {}) });
      report.ok = verdict.ok;
      report.outcome = verdict.outcome;
      if (opening.expect === "fail") report.faithful = verdict.ok;
      if (!verdict.ok) failure = "sut";
    } catch (caught) {
      // Once stopped (Ctrl-C, or a fault beside it), what failed next (an ssh killed mid-command)
      // is the stop's doing, never a fault of its own.
      error = signal.aborted && signal.reason instanceof InterruptedError ? signal.reason : asBomaError(caught, signal);
      const message = error instanceof Error ? error.message.split("\n")[0]! : String(error);
      if (error instanceof SystemUnderTestError) {
        failure = "sut";
        report.outcome = message;
        error = undefined;
      } else {
        failure = error instanceof InterruptedError ? "interrupted" : "harness";
        // Interrupted: by Ctrl-C, or stopped because a scenario beside it ended the run (which says why).
        report.outcome =
          failure === "interrupted"
            ? error instanceof StoppedBesideError
              ? message
              : "interrupted"
            : `not judged: a fault of the harness or the infrastructure: ${message}`;
        // Before its diagnostics and teardown: what runs beside it stops now, not minutes later.
        if (failure === "harness") opening.onFault?.(error);
      }
    }
    log.info(`${opening.name}: ${report.outcome}`);
    this.report.readyLagSeconds.push(...report.readyLagSeconds);
    await this.#closeScenario(report, { ...opening, log }, lives, identities, failure, dir, timed).catch((closeError: unknown) => {
      error ??= asBomaError(closeError, signal);
    });
    // Its network is gone with it, or kept, and then libvirt lists it: either way not the run's to hold
    // (a later scenario may start from a first boot saved on that subnet).
    for (const each of lives) this.#subnets.delete(each.outputs.subnet);
    if (error !== undefined) throw error;
    return report;
  }

  /**
   * Makes a scenario's VMs and waits until each is ready, pushing each into `lives` as it is (so
   * that the caller closes what was made when one fails). One host: its VM, warm where it may be.
   * Several: one network for all, on a subnet picked once, made by the first VM's stack; every
   * VM boots at the same time, none from a saved first boot (a topology assigns each its address
   * and MAC); a failure of one is the scenario's once the others are ready or failed too.
   */
  async #provisionVms(
    identities: readonly RunIdentity[],
    scenario: { dir: string; log: Log; signal: AbortSignal; opening: ScenarioOpening },
    lives: LiveRun[],
  ): Promise<void> {
    const { request, machinery } = this;
    const provisionOne = this.#hooks.provision ?? provision;
    const topology = request.profile.topology;
    const vmDir = (identity: RunIdentity, index: number) => (index === 0 ? scenario.dir : peerDir(scenario.dir, identity.host));
    const options = (host: string): ProvisionOptions => ({
      profile: withVmShape(profileForHost(request.profile, host), this.#shapeFor(host)),
      accel: machinery.accel,
      engine: machinery.engine,
      runner: request.runner,
      libvirt: machinery.libvirt,
      log: scenario.log,
      imageDir: request.imageDir,
      egress: request.egress,
      signal: scenario.signal,
      timeouts: this.timeouts,
      subnetsInUse: this.#subnets,
      ...(request.options.coldBoot || topology ? {} : { warmStates: warmStateCacheOf(request.env) }),
      record: {
        stacksDir: stacksDir(request.env),
        ...(request.profile.synthesized ? { synthesized: request.profile.synthesized } : { profile: request.profile.file }),
        purpose: request.purpose,
        scenario: scenario.opening.name,
        certs: request.certs.tier,
        reportFile: join(this.dir, "report.json"),
        ...(request.options.noEgress ? { noEgress: true } : {}),
        egress: request.egress.spec.mode,
        ...(identities.length > 1
          ? { topology: identities.map((identity, index) => ({ host: identity.host, runId: identity.runId, runDir: vmDir(identity, index) })) }
          : {}),
      },
    });
    if (identities.length === 1) {
      lives.push(await provisionOne(options(identities[0]!.host), { identity: identities[0]!, runDir: scenario.dir }));
      return;
    }
    const first = identities[0]!;
    const used = [...(await machinery.libvirt.usedSubnets()), ...this.#subnets];
    const subnet = pickSubnet(used, first.runId);
    this.#subnets.add(subnet.cidr);
    const members = topologyMembers(subnet, identities);
    // Each link on a /24 of its own, apart from what the control host routes (its filter keeps a
    // VM to the other end whatever the subnet: this keeps the guests' routes unambiguous).
    const pairs = request.profile.document.links ?? [];
    const linkSubnets = pairs.reduce<Subnet[]>(
      (picked, _pair, index) => [...picked, pickSubnet([...used, subnet.cidr, ...picked.map((each) => each.cidr)], `${first.runId}-${linkName(index)}`)],
      [],
    );
    const place = { network: first.runId, members, links: topologyLinks(first.runId, members, pairs, linkSubnets) };
    scenario.log.info(
      `${identities.length} VMs on one network ${subnet.cidr}: ${members.map((member) => `${member.host} ${member.ip}`).join(", ")}, each resolving the others by name`,
    );
    for (const link of place.links)
      scenario.log.info(
        `link ${link.interface} on ${link.cidr}: ${link.ends.map((end) => `${end.host} ${end.ip} (${linkHostName(end.host, link)})`).join(" and ")}, nothing else on it`,
      );
    let networkMade!: () => void;
    let networkFailed!: (error: unknown) => void;
    const network = new Promise<void>((resolve, reject) => {
      networkMade = resolve;
      networkFailed = reject;
    });
    // Told to the others' waits; the first VM's own error is its own.
    network.catch(() => undefined);
    const made: (LiveRun | undefined)[] = identities.map(() => undefined);
    // One VM failing stops the others' waits: the scenario ends on its error, not minutes later.
    const stop = new AbortController();
    const signal = AbortSignal.any([scenario.signal, stop.signal]);
    let cause: { error: unknown } | undefined;
    const settled = await Promise.allSettled(
      identities.map(async (identity, index) => {
        const runDir = vmDir(identity, index);
        await mkdir(runDir, { recursive: true, mode: 0o700 });
        const topologyOf = index === 0 ? { place, subnet, onNetworkMade: networkMade } : { place, subnet, network };
        try {
          made[index] = await provisionOne({ ...options(identity.host), signal, topology: topologyOf }, { identity, runDir });
        } catch (provisionError) {
          if (index === 0) networkFailed(new StoppedBesideError(`stopped: the network of ${first.runId} was not made (${briefOf(provisionError)})`));
          if (!stop.signal.aborted) {
            cause = { error: provisionError };
            stop.abort(new StoppedBesideError(`stopped: ${identity.host}'s VM failed (${briefOf(provisionError)})`));
          }
          throw provisionError;
        }
      }),
    );
    lives.push(...made.filter((live): live is LiveRun => live !== undefined));
    // No VM holds the subnet: the run may pick it again.
    if (lives.length === 0) this.#subnets.delete(subnet.cidr);
    // The failure that stopped the others, not what the stop made of them.
    const failed = settled.find((result) => result.status === "rejected");
    if (failed) throw cause ? cause.error : failed.reason;
  }

  /** A host's VM shape: its own (`vm:` with its `vmFor:`), with no more vCPUs than the run's preflight gave the VMs. */
  #shapeFor(host: string): VmShape {
    const own = this.request.profile.topology?.find((member) => member.name === host)?.vm ?? this.request.profile.document.vm;
    const given = this.machinery.vm;
    return own === this.request.profile.document.vm ? given : { ...own, vcpus: Math.min(own.vcpus, this.machinery.vcpusEach ?? given.vcpus) };
  }

  /**
   * Diagnostics (for a failure of the system under test, and for a fault while the VM is there,
   * so an unattended reader has them), the machine's connection, then keep or tear down: each in
   * its own try, a leak being a fault even when the scenario passed.
   */
  async #closeScenario(
    report: ScenarioReport,
    opening: ScenarioOpening,
    lives: readonly LiveRun[],
    identities: readonly RunIdentity[],
    failure: "sut" | "harness" | "interrupted" | undefined,
    dir: string,
    timed: ScenarioVm["timed"],
  ): Promise<void> {
    const { runner } = this.request;
    const log = opening.log ?? this.request.log;
    // The run's signal, not the scenario's: a scenario stopped beside a fault after its verdict
    // still gets its diagnostics and its keep decision; only Ctrl-C cuts those short.
    const signal = this.request.signal;
    const { engine, libvirt } = this.machinery;
    if (lives.length > 0 && (failure === "sut" || failure === "harness")) {
      const diagnostics = join(dir, "diagnostics");
      try {
        await timed("diagnostics", async () => {
          // A topology's each in a folder named after its host.
          for (const live of lives) {
            const collect = (this.#hooks.collectDiagnostics ?? collectDiagnostics)({
              dir: identities.length === 1 ? diagnostics : join(diagnostics, live.outputs.host),
              machine: live.machine,
              outputs: live.outputs,
              runner,
              libvirt,
              reason: report.outcome,
            });
            // One host's failing leaves the others' to collect.
            const items =
              identities.length === 1
                ? await collect
                : await collect.catch((collectError: unknown) => {
                    log.warn(`diagnostics of ${live.outputs.host} could not be collected: ${briefOf(collectError)}`);
                    return [];
                  });
            log.info(
              `collected ${items.filter((item) => item.ok).length} of ${items.length} items${identities.length === 1 ? "" : ` of ${live.outputs.host}`} into ${diagnostics}`,
            );
          }
        });
        report.diagnostics = diagnostics;
        // RED's when both have some (each scenario's report names its own).
        if (this.report.diagnostics === null || opening.name === "red") this.report.diagnostics = diagnostics;
      } catch (diagnosticsError) {
        log.warn(`diagnostics could not be collected: ${(diagnosticsError as Error).message.split("\n")[0]}`);
      }
    }
    // Kept or not, the harness is done with the VMs: their SSH master connections go now.
    for (const live of lives) await live.machine.closeConnection().catch(() => undefined);
    // The allowlist is the network's: the first VM's stack holds it.
    if (lives[0] && lives[0].outputs.runId === identities[0]!.runId) await this.#egressOf(opening, lives[0]);
    const stacks = new Set((await engine.list()).map((stack) => stack.stack));
    const made = identities.filter((identity) => stacks.has(identity.runId));
    const keep =
      made.some((identity) => identity.runId === report.stack) &&
      keepVm({ policy: this.request.options.keep, onPass: opening.keepOnPass ?? false }, failure, signal.aborted);
    if (keep && lives.length > 0) {
      // Two scenarios side by side may both keep theirs: the report names RED's (the first
      // declared), the log each. A topology is kept and taken down as one run, its first VM's.
      const kept = { run: report.stack, ssh: `npm run boma-it -- ssh ${report.stack}`, reap: `npm run boma-it -- down ${report.stack}   # or: npm run reap` };
      if (this.report.kept) log.info(`kept too: ${report.stack} (get in with \`${kept.ssh}\`)`);
      if (!this.report.kept || opening.name === "red") this.report.kept = kept;
      return;
    }
    // The first VM's stack last: the network the others are on is its.
    const failures: unknown[] = [];
    for (const identity of [...made].reverse()) {
      try {
        await timed(made.length === 1 ? "teardown" : `teardown ${identity.host}`, () =>
          teardown(engine, identity.runId, identity !== identities[0] ? peerDir(dir, identity.host) : dir, log),
        );
      } catch (teardownError) {
        // Said here in full, once: the run's error repeats only its first line.
        log.warn(`${(teardownError as Error).message}\nrun \`npm run reap\` to remove what is left`);
        failures.push(teardownError);
      }
    }
    if (failures.length > 0) throw failures[0];
  }

  /**
   * What the allowlist refused this scenario's VM, read before its stack goes: each attempt said
   * once, and added to the run's report (a blocked attempt changes no verdict).
   */
  async #egressOf(opening: ScenarioOpening, live: LiveRun): Promise<void> {
    const { egress, runner } = this.request;
    const log = opening.log ?? this.request.log;
    if (egress.spec.mode !== "allowlist") return;
    const blocked = await readBlocked(runner, egress.asRoot, { table: live.outputs.runId, queryLog: dnsQueryLogOf(live.outputs.runId) }).catch(
      (readError: unknown) => {
        log.warn(`what the allowlist refused could not be read: ${(readError as Error).message.split("\n")[0]}`);
        return [];
      },
    );
    for (const attempt of blocked) log.warn(`${opening.name}: ${describeBlocked(attempt)}`);
    this.report.egress.blocked.push(...blocked.map((attempt) => ({ ...attempt, scenario: opening.name })));
  }

  /**
   * Run ids no live libvirt object has, one per host, all of one second (a topology's VMs share
   * their stamp): one run at a time holds the lock, but a kept VM or a leftover may carry this
   * second's names, so the second is bumped until every name is free.
   */
  async #freshIdentities(hosts: readonly string[]): Promise<RunIdentity[]> {
    const { libvirt } = this.machinery;
    const taken = new Set([...(await libvirt.names("domain")), ...(await libvirt.names("network")), ...(await libvirt.names("pool"))]);
    const start = (this.#hooks.now ?? (() => new Date()))().getTime();
    // From here to the return nothing awaits: a scenario started beside this one cannot pick the same names.
    for (let offset = 0; offset < 600; offset += 1) {
      const identities = hosts.map((host) => newRunIdentity(host, new Date(start + offset * 1000)));
      if (identities.every((identity) => !taken.has(identity.runId) && !this.#runIds.has(identity.runId))) {
        for (const identity of identities) this.#runIds.add(identity.runId);
        return identities;
      }
    }
    throw new Error("no free run id in ten minutes of names");
  }
}

/** Where a topology's VM after the first keeps its files (keys, console, record): the first's are the scenario's own. */
function peerDir(scenarioDir: string, host: string): string {
  return join(scenarioDir, "hosts", host);
}

/** The one keep decision: `always` keeps whatever happened; `on-failure` a failed system under test; `onPass` a passing one too. */
export function keepVm(rule: KeepRule, failure: "sut" | "harness" | "interrupted" | undefined, aborted: boolean): boolean {
  if (rule.policy === "always") return true;
  if (rule.policy === "never" || aborted) return false;
  if (failure === undefined) return rule.onPass;
  return failure === "sut";
}

/** What a run came to: its report, and the error that ended it when that was no verdict. */
export interface RunResult {
  report: RunReport;
  error: unknown;
}

/**
 * Opens a run, gives it to `body`, and closes it through the one lifecycle (lifecycle.ts): the
 * verdict from the scenarios (pass, or fail when one did not meet its expectation), "error" with
 * the causes when something else ended it; report.json, junit.xml, run.log and commands.log
 * written and redacted, the run dir made private, the lock released. Refusals before the run dir
 * exists are thrown.
 */
export async function withRun(request: RunRequest, hooks: DriverHooks, body: (run: OpenRun) => Promise<void>): Promise<RunResult> {
  let report: RunReport | undefined;
  const { result, error } = await withCommand(
    {
      lock: { env: request.env, purpose: request.purpose },
      place: async (lock) => {
        const machinery = await hooks.preflight(request, lock);
        const { identity, dir } = await freshRunDir(request, hooks.now ?? (() => new Date()));
        return { runId: identity.runId, dir, identity, machinery };
      },
      begin: ({ identity, dir, machinery }) => (report = emptyRunReport(request, machinery, identity, dir)),
      log: request.log,
      runner: request.runner,
      signal: request.signal,
      secrets: () => request.secrets,
      // Measured before the scrub reads the run dir's files: the harness's own peak, as benchmarked.
      beforeClose: async () => {
        if (report) report.harness = { peakRssMiB: harnessPeakRssMiB() };
      },
      write: async (ended) => {
        await writeReport(ended, request.secrets.redact);
        await writeReportPage(ended, request.secrets.redact);
      },
    },
    async ({ identity, dir, machinery }, opened) => {
      request.log.info(`run ${identity.runId} (${request.purpose} ${request.profile.name}); run dir ${dir}`);
      await body(new OpenRun(request, machinery, identity, dir, opened, hooks));
      const failed = opened.scenarios.filter((scenario) => !scenario.ok);
      return {
        verdict: failed.length === 0 ? "pass" : "fail",
        message: (failed.length === 0 ? opened.scenarios : failed).map((scenario) => scenario.outcome).join("; "),
      };
    },
  );
  return { report: result, error };
}

/** A run dir of its own: `<stamp>-<host>` made exclusively (a run of the same second gets the next second's). */
async function freshRunDir(request: RunRequest, now: () => Date): Promise<{ identity: RunIdentity; dir: string }> {
  await mkdir(request.runsDir, { recursive: true });
  const start = now().getTime();
  for (let offset = 0; offset < 600; offset += 1) {
    const identity = newRunIdentity(request.profile.document.host, new Date(start + offset * 1000));
    const dir = join(request.runsDir, runDirName(identity));
    try {
      await mkdir(dir, { mode: 0o700 });
      return { identity, dir };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
  throw new Error(`no free run dir name in ${request.runsDir}`);
}

/** The profile with the VM shape the run's preflight chose (the same profile when that is its own). */
function withVmShape(profile: LoadedProfile, vm: RunMachinery["vm"]): LoadedProfile {
  return profile.document.vm === vm ? profile : { ...profile, document: { ...profile.document, vm } };
}

function emptyRunReport(request: RunRequest, machinery: RunMachinery, identity: RunIdentity, dir: string): RunReport {
  return {
    runId: identity.runId,
    profile: request.profile.name,
    host: request.profile.document.host,
    engine: machinery.engine.name,
    accel: machinery.accel.accel,
    vm: machinery.vm,
    certs: request.certs.tier,
    egress: { mode: request.egress.spec.mode, allowed: request.egress.allowed, blocked: [] },
    verdict: "error",
    exitCode: ExitCode.harnessFault,
    message: "",
    scenarios: [],
    readyLagSeconds: [],
    diagnostics: null,
    harness: { peakRssMiB: 0 },
    kept: null,
    error: null,
    startedAt: "",
    finishedAt: "",
    wallSeconds: 0,
    runDir: dir,
  };
}
