/**
 * The run driver's other half: a verb on a kept VM (apply, check, reboot, reset) attaches to a
 * live run found anywhere on this host and works on it through the one lifecycle (lifecycle.ts):
 * the run lock claimed for it, a folder of its own in the run dir (`verbs/<stamp>-<verb>/`:
 * run.log, commands.log, result.json, ended as a run's report is), a line in the run's
 * report.json, everything let go on every exit path. A verb never tears the VM down;
 * {@link takeDown} does, for `down`.
 */
import { readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { dnsQueryLogOf, newRunIdentity } from "../../infra/spec.ts";
import { decideAccel, probeAccel } from "../../infra/accel.ts";
import { briefOf } from "../../infra/errors.ts";
import { asBomaError, BadInputError, ExitCode, RefusedError } from "../errors.ts";
import type { CheckResult } from "../guest/checks.ts";
import type { Machine } from "../guest/machine.ts";
import { libvirtFor, type Libvirt } from "../host/libvirt.ts";
import { underRunLock } from "../host/lock.ts";
import { runLockPath, stacksDir } from "../host/paths.ts";
import type { Log } from "../log.ts";
import { loadProfile, synthesizeProfile, type LoadedProfile, type ProfileLocations } from "../profile/load.ts";
import { CHECKOUTS_DIR, checkoutRevision, profileAtRevision, resolveRevision } from "../profile/revision.ts";
import { CERT_TIERS, type CertTier } from "../profile/schema.ts";
import { allEngines } from "../host/engine-choice.ts";
import { NO_ANSIBLE_ARGS, type AnsibleArgs } from "./options.ts";
import { planRunCerts } from "./preflight.ts";
import { bootTimeouts, machineFor, type Phase } from "./provision.ts";
import { emptyScenarioReport, vmEntryOf, type CommandEnding, type RunReport } from "./report.ts";
import type { PeerVm, ScenarioVm, StepContext } from "./stages.ts";
import { rootCommand } from "../host/root.ts";
import { describeBlocked, readBlocked, type BlockedAttempt } from "./egress.ts";
import { loadProfileSecrets, secretsOf, type Redactor, type RunSecrets } from "../ansible/secrets.ts";
import { findRuns, resolveRun, teardown, type FoundRun, type RunRecord } from "./live-runs.ts";
import { withCommand } from "./lifecycle.ts";

/** What a verb is asked. */
export interface VerbRequest {
  verb: string;
  /** `<run>` as the user typed it (absent: the only live run). */
  reference: string | undefined;
  runner: Runner;
  log: Log;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  redactor: Redactor;
  locations: ProfileLocations;
  ansible?: AnsibleArgs;
  /** `apply --ref`: the infrastructure repo at this revision instead of the one the run applied. */
  ref?: string;
}

/** A live run a verb works on. */
export interface AttachedRun {
  found: FoundRun;
  record: RunRecord;
  machine: Machine;
  libvirt: Libvirt;
  /** The verb's own folder in the run dir. */
  dir: string;
  /** For the scenario steps (profile, certs, secrets as the run's profile is on disk now). */
  stepContext: StepContext;
  session: ScenarioVm;
  /** The revision of the infrastructure repo the profile was taken at (`--ref`, or the run's), if not the worktree. */
  revision?: { ref: string; commit: string };
  /** The run's VMs as found (records included), the first `found`; several for a run of several hosts. */
  members: FoundRun[];
}

/** What a verb did (result.json of its folder, and a line of the run's report): how it ended, as a run's report says it, and what it did. */
export interface VerbResult extends CommandEnding {
  verb: string;
  runId: string;
  dir: string;
  phases: Phase[];
  checks: CheckResult[];
  /** What else the verb says (a reset's boot id, a reboot's proof). */
  details: Record<string, unknown>;
}

/** What a verb's body returns. */
export interface VerbOutcome {
  ok: boolean;
  outcome: string;
  details?: Record<string, unknown>;
}

/**
 * Finds the live run a verb names (anywhere on this host). `onlyMine`: a run left unnamed is the
 * one live run this user made, never another user's (their runs are named, not taken).
 */
export async function findVerbRun(
  request: Pick<VerbRequest, "verb" | "reference" | "runner" | "env">,
  options: { onlyMine?: boolean; host?: string } = {},
): Promise<{ found: FoundRun; libvirt: Libvirt }> {
  const libvirt = libvirtFor(request.runner, request.env);
  await libvirt.ensureReachable();
  const runs = await findRuns(await allEngines(request.runner, stacksDir(request.env)), request.runner, libvirt, stacksDir(request.env));
  if (request.reference !== undefined || !options.onlyMine) {
    const found = request.reference === undefined ? onlyRun(runs, request.verb) : resolveRun(runs, request.reference, request.verb);
    return { found: options.host === undefined ? found : topologyMember(runs, found, options.host, request.verb), libvirt };
  }
  const uid = process.getuid?.();
  const owners = await Promise.all(
    runs.map((run) =>
      stat(run.outputs.runDir).then(
        (info) => info.uid,
        () => undefined,
      ),
    ),
  );
  const mine = runs.filter((_, index) => owners[index] === uid);
  if (mine.length === 0 && runs.length > 0) {
    throw new BadInputError({
      message: `no live run of yours to ${request.verb}; ${runs.length === 1 ? "the one live run was" : `the ${runs.length} live runs were`} made by another user: ${runs.map((run) => run.runId).join(", ")}; name the one to ${request.verb}`,
    });
  }
  return { found: onlyRun(mine, request.verb), libvirt };
}

/**
 * The one live run when none is named: the only VM, or the first VM of the only run of several
 * hosts (its VMs are one run); otherwise what {@link resolveRun} says of several.
 */
function onlyRun(runs: readonly FoundRun[], verb: string): FoundRun {
  const firsts = new Set(runs.map((run) => run.record?.topology?.[0]?.runId ?? run.runId));
  const first = firsts.size === 1 ? runs.find((run) => run.runId === [...firsts][0]) : undefined;
  return first ?? resolveRun(runs, undefined, verb);
}

/**
 * The VMs of the run a found VM belongs to, its first (whose record and report are the run's)
 * first: itself alone when it is one host's. A VM of it that is gone is refused, naming it.
 */
async function topologyMembers(named: FoundRun, request: Pick<VerbRequest, "verb" | "runner" | "env">): Promise<FoundRun[]> {
  const topology = named.record?.topology;
  if (!topology) return [named];
  return Promise.all(
    topology.map(async (member) => {
      if (member.runId === named.runId) return named;
      try {
        return (await findVerbRun({ ...request, reference: member.runId })).found;
      } catch (error) {
        throw new RefusedError(
          `${member.runId} (${member.host}'s VM of ${topology[0]!.runId}) is gone: ${briefOf(error)}`,
          `\`${request.verb}\` works on the run's VMs together; take the rest down with \`npm run boma-it -- down ${topology[0]!.runId}\``,
        );
      }
    }),
  );
}

/**
 * The VM of `host` in the topology a run belongs to (`--host kazi`): the run itself when it is
 * that host's; bad input naming the topology's hosts when it has none of that name, or is one VM.
 */
function topologyMember(runs: readonly FoundRun[], found: FoundRun, host: string, verb: string): FoundRun {
  if (found.outputs.host === host) return found;
  const members = found.record?.topology ?? [];
  const member = members.find((candidate) => candidate.host === host);
  if (!member) {
    throw new BadInputError({
      path: "--host",
      message:
        members.length === 0
          ? `${found.runId} is one VM, of ${found.outputs.host}; expected --host ${found.outputs.host} or none, found ${JSON.stringify(host)}`
          : `expected one of the hosts of ${found.runId}'s run (${members.map((candidate) => candidate.host).join(", ")}), found ${JSON.stringify(host)}`,
    });
  }
  return resolveRun(runs, member.runId, verb);
}

/**
 * `down`: destroys a live run's stack where it lives (domain with its NVRAM, volumes, pool,
 * network, the run's keys), under the run lock claimed for it; the run dir keeps its logs. Exit 3
 * when its stack is not where its record says, 4 when something could not be deleted.
 */
export async function takeDown(request: Pick<VerbRequest, "reference" | "runner" | "env" | "log" | "signal">): Promise<FoundRun> {
  const { found } = await findVerbRun({ ...request, verb: "take down" }, { onlyMine: true });
  const engine = found.engine;
  if (!engine) {
    throw new RefusedError(`${found.runId}'s stack is not where its record says (${found.elsewhere ?? "unknown"})`, "npm run reap removes it by its name");
  }
  // A topology is one run: every VM of it goes, the first (whose stack holds the network) last.
  const members = found.record?.topology ?? [{ host: found.outputs.host, runId: found.runId, runDir: found.outputs.runDir }];
  await underRunLock(runLockPath(request.env), `down of ${found.runId}`, found.runId, async () => {
    const live = new Set((await engine.list()).map((stack) => stack.stack));
    const failures: unknown[] = [];
    for (const member of [...members].reverse()) {
      if (live.has(member.runId)) await teardown(engine, member.runId, member.runDir, request.log).catch((error: unknown) => failures.push(error));
    }
    if (failures.length > 0) throw failures[0];
  }).catch((error: unknown) => {
    throw asBomaError(error, request.signal);
  });
  return found;
}

/**
 * The profile with the repo at the revision the run applied (`--ref`, a scenario's `ref`), from
 * its checkout in the run dir: `apply` on a kept VM applies what made it, not the worktree.
 * A run of the worktree (or one whose report says nothing) gets the profile as it is on disk.
 */
export async function profileAsApplied(
  profile: LoadedProfile,
  record: RunRecord,
  outputs: StackOutputs,
  request: Pick<VerbRequest, "runner" | "log" | "ref">,
): Promise<{ profile: LoadedProfile; revision?: { ref: string; commit: string } }> {
  let wanted: { ref: string; commit: string; source: { file: string; path: string } } | undefined;
  if (request.ref) {
    wanted = { ref: request.ref, commit: request.ref, source: { file: "", path: "--ref" } };
  } else {
    const report = record.reportFile
      ? await readFile(record.reportFile, "utf8").then(
          (text) => JSON.parse(text) as Partial<RunReport>,
          () => undefined,
        )
      : undefined;
    const scenario = report?.scenarios?.find((entry) => entry.stack === outputs.runId);
    if (!scenario?.ref || !scenario.commit || scenario.commit === "worktree") return { profile };
    wanted = { ref: scenario.ref, commit: scenario.commit, source: { file: record.reportFile!, path: `scenarios.${scenario.name}.commit` } };
  }
  const revision = await resolveRevision(profile.repoDir, wanted.commit, request.runner, wanted.source);
  const repoDir = await checkoutRevision(revision, join(outputs.runDir, CHECKOUTS_DIR), request.runner);
  request.log.info(`${request.ref ? "--ref" : "the run applied"} ${wanted.ref} = ${revision.commit}: working with the repo from ${repoDir}`);
  return { profile: await profileAtRevision(profile, repoDir, request.runner, request.log), revision: { ref: wanted.ref, commit: revision.commit } };
}

/**
 * Attaches to a live run and runs `body` on it; returns what it did (never throws for the verb's
 * own failure: its exit code says it). `needsProfile`: the verb applies or checks, so the run's
 * profile is loaded as it is on disk now (a run made before runs recorded theirs cannot), with
 * the repo at the revision the run applied when it applied one.
 */
export async function withAttachedRun(
  request: VerbRequest,
  options: { needsProfile: boolean },
  body: (run: AttachedRun) => Promise<VerbOutcome>,
): Promise<VerbResult> {
  const { found: named, libvirt } = await findVerbRun(request);
  // A VM of several hosts is applied, checked and rebooted with the others: the verb works on the
  // run as a whole, through its first VM (whose record and report are the run's).
  const members = await topologyMembers(named, request);
  const found = members[0]!;
  const record = found.record ?? { ...found.outputs, engine: "direct" as const };
  for (const member of members.slice(1)) {
    const memberState = await libvirt.domainState(member.outputs.domain);
    if (!memberState.startsWith("running"))
      throw new RefusedError(
        `${member.runId} (${member.outputs.host}'s VM of ${found.runId}) is ${memberState}, not running: \`${request.verb}\` works on the run's VMs together`,
        `take the run down with \`npm run boma-it -- down ${found.runId}\``,
      );
  }
  const state = await libvirt.domainState(found.outputs.domain);
  if (!state.startsWith("running")) {
    throw new RefusedError(
      `${found.runId} is ${state}, not running: \`${request.verb}\` works on a live VM`,
      `see \`npm run boma-it -- status\`; remove it with \`npm run boma-it -- down ${found.runId}\``,
    );
  }
  if (options.needsProfile && !record.profile && !record.synthesized) {
    throw new BadInputError({
      message: `${found.runId} does not say which profile made it (it was made by an older boma-it): \`${request.verb}\` cannot know what to apply or check`,
    });
  }
  let machine: Machine | undefined;
  const peers: PeerVm[] = [];
  let secrets: RunSecrets = secretsOf([], undefined, {}, request.redactor);
  const report = emptyScenarioReport({ name: "green", expect: "pass" }, found.runId, "");
  const { result, error } = await withCommand(
    {
      lock: { env: request.env, purpose: `${request.verb} of ${found.runId}` },
      place: async () => ({
        runId: found.runId,
        dir: join(found.outputs.runDir, "verbs", `${newRunIdentity(found.outputs.host, new Date()).stamp}-${request.verb}`),
      }),
      begin: ({ dir }): VerbResult => ({
        verb: request.verb,
        runId: found.runId,
        verdict: "error",
        exitCode: ExitCode.harnessFault,
        message: "did not finish",
        error: null,
        startedAt: "",
        finishedAt: "",
        wallSeconds: 0,
        dir,
        phases: report.phases,
        checks: report.checks,
        details: {},
      }),
      log: request.log,
      runner: request.runner,
      signal: request.signal,
      secrets: () => secrets,
      beforeClose: async () => {
        await machine?.closeConnection();
        for (const peer of peers) await peer.machine.closeConnection();
      },
      // Each written on its own: the run's report gets its line even when result.json could not be written.
      write: async (result) => {
        await appendToReport(record, result, request.redactor).catch((appendError: unknown) =>
          request.log.warn(`the run's report.json was not updated: ${(appendError as Error).message}`),
        );
        await writeFile(join(result.dir, "result.json"), request.redactor.redact(`${JSON.stringify(result, null, 2)}\n`), { mode: 0o600 });
      },
    },
    async ({ dir }, result) => {
      request.log.info(`${request.verb} ${found.runId}${found.elsewhere ? ` (its stack lives in ${found.elsewhere})` : ""}; this call's folder: ${dir}`);
      const say = { say: (line: string) => request.log.info(line) };
      const onDisk = !options.needsProfile
        ? undefined
        : record.synthesized
          ? await synthesizeProfile(record.synthesized, "/", request.runner, say)
          : await loadProfile(record.profile!, request.locations, request.runner, say);
      const applied = onDisk ? await profileAsApplied(onDisk, record, found.outputs, request) : undefined;
      const profile = applied?.profile;
      if (profile) secrets = await loadProfileSecrets(profile, request.runner, request.redactor);
      const tier = CERT_TIERS.includes(record.certs as CertTier) ? (record.certs as CertTier) : "internal";
      const certs = profile
        ? await planRunCerts(
            { profile, options: { certs: tier, noEgress: record.noEgress === true }, secrets, runner: request.runner },
            { env: request.env, log: request.log },
          )
        : { tier, reason: "", vars: {}, dnsTokenVar: undefined, wildcard: undefined };
      machine = await machineFor(found.outputs, { runner: request.runner, log: request.log, libvirt, signal: request.signal });
      // The VM ran before this command: a panic of a boot it already went past does not count.
      await machine.markCurrentBoot();
      for (const member of members.slice(1)) {
        const peer = await machineFor(member.outputs, { runner: request.runner, log: request.log, libvirt, signal: request.signal });
        peers.push({ host: member.outputs.host, machine: peer, outputs: member.outputs });
        await peer.markCurrentBoot();
      }
      const stepContext: StepContext = {
        profile: profile!,
        certs,
        secrets,
        runner: request.runner,
        log: request.log,
        signal: request.signal,
        accel: decideAccel(found.outputs.accel === "kvm" ? "kvm" : "tcg", await probeAccel()),
        libvirt,
        timeouts: bootTimeouts(request.env),
        ansible: request.ansible ?? NO_ANSIBLE_ARGS,
      };
      const session: ScenarioVm = {
        machine,
        outputs: found.outputs,
        report,
        dir,
        timed: (name, step) => request.log.timed(report.phases, name, step),
        ...(peers.length > 0 ? { peers } : {}),
      };
      if (peers.length > 0) report.vms = members.map((member) => vmEntryOf(member.outputs));
      const outcome = await body({
        found,
        record,
        machine,
        libvirt,
        dir,
        stepContext,
        session,
        members,
        ...(applied?.revision ? { revision: applied.revision } : {}),
      });
      result.details = outcome.details ?? {};
      const blocked = await blockedSoFar(record, found.outputs.runId, request);
      if (blocked.length > 0) result.details = { ...result.details, egressBlocked: blocked };
      return { verdict: outcome.ok ? "pass" : "fail", message: outcome.outcome };
    },
  );
  // A refusal or bad input met on the way is the command's answer (exit 3 or 2), as before it attached.
  if (error instanceof BadInputError || error instanceof RefusedError) throw error;
  return result;
}

/**
 * What the allowlist has refused a kept VM since it started (the filter's set and the DNS's log
 * only grow), said as warnings: a verb's apply may have tried what the run's did not.
 */
async function blockedSoFar(record: RunRecord, runId: string, request: Pick<VerbRequest, "runner" | "log">): Promise<BlockedAttempt[]> {
  if (record.egress !== "allowlist") return [];
  const asRoot = await rootCommand(request.runner);
  if (asRoot === undefined) return [];
  const blocked = await readBlocked(request.runner, asRoot, { table: runId, queryLog: dnsQueryLogOf(runId) }).catch(() => []);
  for (const attempt of blocked) request.log.warn(`${describeBlocked(attempt)} (since the VM started)`);
  return blocked;
}

/** Adds a verb's line to the run's report.json (`verbs[]`), where the run keeps it. */
async function appendToReport(record: RunRecord, result: VerbResult, redactor: Redactor): Promise<void> {
  const file = record.reportFile ?? join(dirname(record.runDir), "report.json");
  const report = JSON.parse(await readFile(file, "utf8")) as RunReport & { verbs?: unknown[] };
  const { verb, verdict, exitCode, message, dir, startedAt, finishedAt, error } = result;
  report.verbs = [...(report.verbs ?? []), { verb, verdict, exitCode, message, dir, startedAt, finishedAt, error }];
  await writeFile(file, redactor.redact(`${JSON.stringify(report, null, 2)}\n`), { mode: 0o600 });
}

/** A verb's result in a few lines of text (an error's causes were said when it ended). */
export function verbText(result: VerbResult): string {
  return [
    `${result.verdict === "pass" ? "OK" : result.verdict === "fail" ? "FAIL" : "ERROR"}: ${result.verb} ${result.runId}: ${result.message.split("\n")[0]}`,
    `  results: ${join(result.dir, "result.json")}`,
  ].join("\n");
}
