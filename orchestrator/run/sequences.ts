/**
 * The sequences the commands start, each through the one driver (driver.ts): a host's scenarios
 * (`run`: RED→GREEN, or one of them) and a VM brought up to work on (`up`). cli/ parses the
 * command line and prints the result; what happens in between lives here.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import type { CertPlan } from "../ansible/certs.ts";
import type { RunSecrets } from "../ansible/secrets.ts";
import { takeSnapshot } from "../guest/snapshot.ts";
import { imageDir } from "../host/paths.ts";
import { takeResetPoint } from "../host/reset-point.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { rebootKinds } from "../profile/schema.ts";
import { withRun, type RunRequest } from "./driver.ts";
import { planEgress } from "./egress.ts";
import { readRunRecord } from "./live-runs.ts";
import type { RunOptions } from "./options.ts";
import { planRunCerts, preflightRun } from "./preflight.ts";
import { writeRunRecord } from "./provision.ts";
import { harnessPeakRssMiB, type RunReport } from "./report.ts";
import { applyStep, baselineStep, profileAt, resolveScenarioRevisions, runRedGreen } from "./scenario.ts";
import { checkStage, scenarioVms, type ScenarioSpec, type ScenarioVm, type StepContext } from "./stages.ts";

/** What a run is given once its profile is loaded: the options, the profile and its secrets. */
export interface RunInputs {
  options: RunOptions;
  profile: LoadedProfile;
  secrets: RunSecrets;
}

/** Where and how a sequence runs. */
export interface SequenceContext {
  runner: Runner;
  log: Log;
  env: NodeJS.ProcessEnv;
  runsDir: string;
  signal: AbortSignal;
}

/** What `up --json` prints (the command contract). */
export interface UpSummary {
  runId: string;
  host: string;
  ip: string;
  ssh: string;
  runDir: string;
  /** Several hosts: each VM (the first is the run's own), how to reach it. */
  vms?: { host: string; runId: string; ip: string; ssh: string }[];
}

/** Where `up` stops: right after the boot and the reset point, after the apply, or just before the reboot. */
export const KEEP_AT = ["boot", "apply", "reboot"] as const;
export type KeepAt = (typeof KEEP_AT)[number];

/**
 * The request that opens a run: the scenarios' revisions resolved (`--ref` for `target`, the
 * upgrade path's `--baseline`), the cert tier and the egress planned, each refused before
 * anything is created.
 */
async function runRequest(
  purpose: string,
  inputs: RunInputs,
  scenarios: ScenarioSpec[],
  target: "red" | "green",
  context: SequenceContext,
): Promise<RunRequest> {
  const { options, profile, secrets } = inputs;
  const { runner, log, env } = context;
  await resolveScenarioRevisions(
    profile,
    scenarios,
    { ...(options.ref ? { ref: options.ref } : {}), ...(options.baseline ? { baseline: options.baseline } : {}), target },
    runner,
  );
  const certs = await planRunCerts({ ...inputs, runner }, { env, log });
  const egress = await planEgress({ ...inputs, certs, runner }, { env, log });
  return {
    purpose,
    profile,
    options,
    secrets,
    certs,
    egress,
    runner,
    log,
    env,
    runsDir: context.runsDir,
    imageDir: imageDir(env),
    signal: context.signal,
    vmsWanted: profile.topology ? profile.topology.length : scenariosAtOnce(scenarios.length, options, certs, log),
    ...(scenarios.some((scenario) => rebootKinds(scenario.reboot ?? profile.document.reboot).length > 1)
      ? { needsRootFor: "several reboot kinds from one applied state (the VM's disk is copied in libvirt's pool folder)" }
      : {}),
  };
}

/**
 * How many scenarios a run would like to run at once: all (RED and GREEN side by side; the
 * preflight says whether the RAM holds them) unless `--serial`, or a le tier: a certificate is
 * issued once (DNS-01 for one name at a time) and the next scenario takes it from the cache.
 */
function scenariosAtOnce(count: number, options: RunOptions, certs: CertPlan, log: Log): number {
  if (count < 2 || options.serial) return 1;
  if (certs.tier !== "internal") {
    log.info(`scenarios one at a time: ${certs.tier} issues one certificate through DNS-01, and the next scenario reuses it`);
    return 1;
  }
  return count;
}

/** `run` for one host: its scenarios in order (see {@link runRedGreen}), the report whatever happened. */
export async function runScenarios(inputs: RunInputs, scenarios: ScenarioSpec[], context: SequenceContext): Promise<RunReport> {
  const request = await runRequest("run", inputs, scenarios, inputs.options.scenario === "red" ? "red" : "green", context);
  const { report } = await withRun(request, { preflight: preflightRun }, async (run) => {
    context.log.info(`scenarios: ${scenarios.map((scenario) => scenario.name.toUpperCase()).join(" → ")}`);
    const topology = inputs.profile.topology;
    // A topology's scenario has a VM per host already: its scenarios run one at a time.
    if (topology && scenarios.length > 1)
      context.log.info(`scenarios one at a time: each has ${topology.length} VMs (${topology.map((host) => host.name).join(", ")})`);
    await runRedGreen(run, scenarios, { sideBySide: !topology && run.machinery.vmsAtOnce >= scenarios.length });
  });
  return report;
}

/**
 * `up`: one scenario's VM, its reset point taken right after cloud-init, then (unless `keepAt:
 * "boot"`, which keeps the VM as the image made it) the profile applied and, with `keepAt:
 * "reboot"`, the checks and the state the reboot will lose kept (before-reboot.json).
 * The VM stays when it came up; `summary` says how to reach it.
 */
export async function bringUp(
  inputs: RunInputs,
  scenario: ScenarioSpec,
  keepAt: KeepAt,
  context: SequenceContext,
): Promise<{ report: RunReport; error: unknown; summary: UpSummary | undefined }> {
  const { runner } = context;
  const request = await runRequest("up", inputs, [scenario], scenario.name, context);
  let summary: UpSummary | undefined;
  const { report, error } = await withRun(request, { preflight: preflightRun }, async (run) => {
    await run.scenario({ name: scenario.name, expect: "pass", keepOnPass: true }, async (session) => {
      // Right after cloud-init, before anything of the profile: where `reset` goes back to (each VM's, several hosts).
      await session.timed("reset point", () =>
        Promise.all(
          scenarioVms(session).map(async (vm) => {
            const bootId = await vm.machine.bootId();
            await vm.machine.closeConnection();
            const point = await takeResetPoint(run.machinery.libvirt, runner, vm.outputs);
            // The guest stood still while its state was written: its clock is behind by that long.
            await vm.machine.waitForSsh(run.stepContext.timeouts.sshMs);
            await vm.machine.setClockToNow();
            const record = await readRunRecord(vm.outputs.runDir);
            if (record) await writeRunRecord(vm.outputs.runDir, { ...record, resetPoint: { ...point, bootId } });
          }),
        ),
      );
      const applied = keepAt === "boot" ? undefined : await applyForUp(run.stepContext, session, scenario, keepAt);
      const { outputs } = session;
      summary = {
        runId: outputs.runId,
        host: outputs.host,
        ip: outputs.ip,
        ssh: outputs.ssh,
        runDir: outputs.runDir,
        ...(session.peers
          ? { vms: scenarioVms(session).map((vm) => ({ host: vm.host, runId: vm.outputs.runId, ip: vm.outputs.ip, ssh: vm.outputs.ssh })) }
          : {}),
      };
      await writeFile(
        join(session.dir, "up.json"),
        `${JSON.stringify({ ...summary, engine: run.machinery.engine.name, accel: run.machinery.accel.accel, certs: request.certs.tier, phases: session.report.phases, firstBoot: session.report.firstBoot, readyLagSeconds: session.report.readyLagSeconds, guestBootSeconds: session.report.guestBootSeconds, beforeKernelSeconds: session.report.beforeKernelSeconds, bootResets: session.report.bootResets, ...(applied ? { apply: { seconds: applied.seconds, tasks: applied.tasks }, certificate: applied.certificate } : {}), harness: { peakRssMiB: harnessPeakRssMiB() } }, null, 2)}\n`,
        { mode: 0o600 },
      );
      const who = session.peers
        ? scenarioVms(session)
            .map((vm) => `${vm.host} at ${vm.outputs.ip}`)
            .join(", ")
        : `${outputs.host} at ${outputs.ip}`;
      return { ok: true, outcome: `${who}: up as ${outputs.runId}` };
    });
  });
  return { report, error, summary };
}

/**
 * `up`'s apply (the baseline first, on the upgrade path), recorded in the scenario's report; with
 * `keepAt: "reboot"` also the checks and the state the reboot will lose (before-reboot.json).
 */
async function applyForUp(
  context: StepContext,
  session: ScenarioVm,
  scenario: ScenarioSpec,
  keepAt: "apply" | "reboot",
): Promise<Awaited<ReturnType<typeof applyStep>>> {
  const profileToApply = await profileAt(context, session, scenario.revision);
  if (scenario.baseline) await baselineStep(context, session, scenario, await profileAt(context, session, scenario.baseline));
  const applied = await session.timed("apply", () => applyStep(context, session, scenario.vars, { profile: profileToApply }));
  session.report.apply = {
    seconds: applied.seconds,
    recap: applied.recap,
    tasks: applied.tasks,
    ...(applied.hostKeyChange ? { hostKeyChange: applied.hostKeyChange } : {}),
  };
  session.report.certificate = applied.certificate;
  // The first boot has long finished by now (the apply took minutes): its time is final. A warm
  // start's first boot is the saved run's, counted there.
  session.report.guestBootSeconds.push(session.report.firstBoot?.kind === "warm" ? null : await session.machine.guestBootSeconds());
  if (keepAt === "reboot") {
    // Everything the reboot will lose is looked at and kept: the checks and the state now.
    const pre = await session.timed("checks before the reboot", () => checkStage(context, session, "pre-reboot"));
    session.report.checks.push(...pre);
    const snapshot = await session.timed("snapshot before the reboot", () => takeSnapshot(session.machine));
    await writeFile(join(session.dir, "before-reboot.json"), `${JSON.stringify({ checks: pre, snapshot }, null, 2)}\n`, { mode: 0o600 });
  }
  return applied;
}
