/**
 * Bringing a VM up: prepare the run dir and its keys, make sure the golden image exists, plan
 * the stack, let the engine create it, and wait until the guest is ready (DHCP lease → SSH with
 * the pinned key → cloud-init done). Tearing it down is the caller's job, on every exit path.
 */
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Engine } from "../../infra/engines/engine.ts";
import { imageInfo, imagePath } from "../../infra/image/images.ts";
import { planStack, runFiles, type StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { pickSubnet, stackSpec, type RunIdentity } from "../../infra/spec.ts";
import { HOST_KEY_TYPES, type HostKeyPair, type HostKeyType, type SeedKeys } from "../../infra/seed.ts";
import type { AccelDecision } from "../../infra/accel.ts";
import { processStart } from "../../infra/process.ts";
import { BadInputError, HarnessError, RefusedError } from "../errors.ts";
import { imageFix } from "../host/golden.ts";
import { Libvirt } from "../host/libvirt.ts";
import type { Log } from "../log.ts";
import { describePanic } from "../guest/console.ts";
import { BootStallError, Machine, tcgRaceOf, type SshReady } from "../guest/machine.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { controlPathFor, pinHostKeys, prepareControlSocketDir } from "../host/ssh.ts";
import type { EgressPlan } from "./egress.ts";
import type { RunRecord } from "./live-runs.ts";

/** Limits of the readiness waits (generous: TCG boots take minutes). */
export interface BootTimeouts {
  leaseMs: number;
  sshMs: number;
  cloudInitMs: number;
}

/**
 * The default limits, or `$BOMA_IT_BOOT_TIMEOUT_S` for the lease and SSH waits each; the defaults
 * `sharing` times longer when that many VMs share the cores under software emulation.
 */
export function bootTimeouts(env: NodeJS.ProcessEnv, sharing = 1): BootTimeouts {
  const override = Number(env.BOMA_IT_BOOT_TIMEOUT_S);
  const bootMs = Number.isFinite(override) && override > 0 ? override * 1000 : undefined;
  // Maxima, never waited out by a boot that answers. Under TCG on a 2-core machine whose host
  // takes a fifth of the CPU (2026-12-03), a first boot took 331 s to SSH and a reboot more than
  // 433 s: a wait that gives up on a slow boot calls it a finding of the change.
  const scale = Math.max(1, sharing);
  return { leaseMs: bootMs ?? scale * 10 * 60_000, sshMs: bootMs ?? scale * 12 * 60_000, cloudInitMs: scale * 10 * 60_000 };
}

/** One named phase and how long it took (for the report). */
export interface Phase {
  name: string;
  seconds: number;
}

/** What provisioning needs. */
export interface ProvisionOptions {
  profile: LoadedProfile;
  accel: AccelDecision;
  engine: Engine;
  runner: Runner;
  libvirt: Libvirt;
  log: Log;
  imageDir: string;
  /** What the VM may reach beyond its network, and how the allowlist's root-only commands run. */
  egress: Pick<EgressPlan, "spec" | "asRoot">;
  signal: AbortSignal;
  timeouts: BootTimeouts;
  /** What the run records about itself beyond its outputs (run.json: the profile, the command, where its stack lives). */
  record?: Omit<RunRecord, keyof StackOutputs | "engine">;
  /**
   * The subnets the run's other VMs were given (one made beside this one may not have its network
   * yet): never picked again; this VM's is added.
   */
  subnetsInUse?: Set<string>;
}

/**
 * The Machine of a run's VM: its pinned key, and its master connection when a safe, short enough
 * socket path exists (said when not).
 */
export async function machineFor(outputs: StackOutputs, context: { runner: Runner; log: Log; libvirt: Libvirt; signal?: AbortSignal }): Promise<Machine> {
  const controlPath = (await prepareControlSocketDir()) ? controlPathFor(outputs.runId) : undefined;
  if (controlPath === undefined) context.log.info("SSH commands go without a shared connection (no safe, short enough socket path): each pays a login");
  return new Machine({
    name: outputs.host,
    target: {
      ip: outputs.ip,
      user: outputs.user,
      keyFile: outputs.keyFile,
      knownHostsFile: outputs.knownHostsFile,
      alias: outputs.runId,
      ...(controlPath ? { controlPath } : {}),
    },
    runner: context.runner,
    log: context.log,
    consoleLog: outputs.consoleLog,
    domainState: () => context.libvirt.domainState(outputs.domain),
    power: {
      powerOffOnReset: () => context.libvirt.setRebootAction(outputs.domain, "destroy"),
      restartOnReset: () => context.libvirt.setRebootAction(outputs.domain, "restart"),
      start: () => context.libvirt.startDomain(outputs.domain),
      powerCycle: () => context.libvirt.powerCycle(outputs.domain),
    },
    ...(context.signal ? { signal: context.signal } : {}),
  });
}

/** Writes (or updates) a run's record, run.json in its run dir (0600). */
export async function writeRunRecord(runDir: string, record: RunRecord): Promise<void> {
  await writeFile(join(runDir, "run.json"), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
}

/** A run whose VM is up and ready. */
export interface LiveRun {
  outputs: StackOutputs;
  machine: Machine;
  phases: Phase[];
  /** Readiness of each boot so far (the first one here). */
  boots: SshReady[];
  /** Why the first boot was reset, if it was (QEMU TCG's text-patching race; at most once). */
  resets: string[];
}

/** ssh-keygen's arguments for a host key of each type: Debian's own sizes (rsa 3072, ecdsa 256). */
const HOST_KEY_ARGS: Record<HostKeyType, string[]> = { rsa: ["-t", "rsa", "-b", "3072"], ecdsa: ["-t", "ecdsa", "-b", "256"], ed25519: ["-t", "ed25519"] };

/** Generates the run's client key and the VM's host keys (each type a Debian host has) and pins them all. */
async function makeKeys(runner: Runner, runDir: string, runId: string): Promise<SeedKeys> {
  const files = runFiles(runDir);
  await mkdir(join(runDir, "keys"), { recursive: true, mode: 0o700 });
  await chmod(join(runDir, "keys"), 0o700);
  await runner.run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `boma-it harness ${runId}`, "-f", files.keyFile]);
  const hostKeys: HostKeyPair[] = [];
  for (const type of HOST_KEY_TYPES) {
    const file = files.hostKeyFile(type);
    await runner.run("ssh-keygen", ["-q", ...HOST_KEY_ARGS[type], "-N", "", "-C", `boma-it host ${runId}`, "-f", file]);
    hostKeys.push({ type, privateKey: await readFile(file, "utf8"), publicKey: await readFile(`${file}.pub`, "utf8") });
  }
  await pinHostKeys(
    files.knownHostsFile,
    runId,
    hostKeys.map((key) => key.publicKey),
  );
  return { clientPublicKey: await readFile(`${files.keyFile}.pub`, "utf8"), hostKeys };
}

/** Creates the stack and waits until the VM is ready. Throws with the stack possibly half made. */
export async function provision(options: ProvisionOptions, run: { identity: RunIdentity; runDir: string }): Promise<LiveRun> {
  const { profile, log, runner, libvirt, signal } = options;
  const phases: Phase[] = [];
  const timed = <T>(name: string, body: () => Promise<T>): Promise<T> => log.timed(phases, name, body);

  const image = profile.document.image;
  const golden = imagePath(options.imageDir, image);
  // A missing named image was made (or refused) by the preflight; one gone since is said here.
  const info = image.startsWith("file:") ? undefined : await imageInfo(options.imageDir, image);
  if (info && !info.present) throw new RefusedError(`golden image ${image} is not in ${options.imageDir}`, imageFix(image));
  if (
    image.startsWith("file:") &&
    !(await stat(golden).then(
      (stats) => stats.isFile(),
      () => false,
    ))
  ) {
    throw new BadInputError({ file: profile.file, path: "image", message: `expected a qcow2 file, found nothing at ${golden}` });
  }

  const outputs = await timed("provision", async () => {
    const keys = await makeKeys(runner, run.runDir, run.identity.runId);
    const used = await libvirt.usedSubnets();
    // No await from the pick to the add: a VM provisioned beside this one sees the choice.
    const subnet = pickSubnet([...used, ...(options.subnetsInUse ?? [])], run.identity.runId);
    options.subnetsInUse?.add(subnet.cidr);
    const ownerStart = processStart();
    const spec = stackSpec({
      identity: run.identity,
      accel: options.accel.accel,
      vm: profile.document.vm,
      subnet,
      egress: options.egress.spec,
      hostAddresses: await libvirt.hostAddresses(),
      goldenImage: golden,
      runDir: run.runDir,
      ownerPid: process.pid,
      ...(ownerStart !== undefined ? { ownerStart } : {}),
    });
    const plan = planStack(spec, keys, libvirt.uri, { asRoot: options.egress.asRoot });
    log.info(
      `stack ${plan.stack}: network ${spec.network.subnet.cidr} (${{ allowlist: "NAT to the allowlist", open: "NAT", none: "no egress" }[spec.network.egress.mode]}), ${spec.vm.vcpus} vCPU, ${spec.vm.memoryMiB} MiB, ${spec.vm.diskGiB} GiB overlay on ${image}, ${spec.accel.toUpperCase()}`,
    );
    const made = await options.engine.up(plan, {
      signal,
      onEvent: (event) => {
        if (event.state === "done") log.info(`${event.action}d ${event.resource} (${event.seconds?.toFixed(1)} s)`);
        if (event.state === "failed") log.warn(`${event.action} ${event.resource} failed`);
      },
      onOutput: (line) => log.info(`  pulumi │ ${line}`),
    });
    await writeRunRecord(run.runDir, { ...made, engine: options.engine.name, ...options.record });
    return made;
  });

  const machine = await machineFor(outputs, { runner, log, libvirt, signal });

  try {
    return await bootAndWait(machine, { ...options, outputs, phases });
  } catch (error) {
    // The caller tears the stack down; the master connection is this function's to end.
    await machine.closeConnection();
    throw error;
  }
}

/** The first boot up to cloud-init done (with one power cycle for QEMU's TCG race or a firmware stall). */
async function bootAndWait(machine: Machine, options: ProvisionOptions & { outputs: StackOutputs; phases: Phase[] }): Promise<LiveRun> {
  const { outputs, phases, log, libvirt, timeouts } = options;
  const timed = <T>(name: string, body: () => Promise<T>): Promise<T> => log.timed(phases, name, body);
  // The domain was started at the end of provisioning.
  let bootBeganAt = machine.now();
  const firstBoot = async (): Promise<SshReady> => {
    await timed("DHCP lease", async () => {
      const ip = await machine.waitFor(
        `a DHCP lease for ${outputs.ip} on ${outputs.network}`,
        timeouts.leaseMs,
        async () => {
          const lease = await libvirt.leaseOf(outputs.network, outputs.mac);
          return lease ? { done: true, value: lease } : { done: false, seen: (await machine.consoleTail(1))[0] ?? "no console output yet" };
        },
        { intervalMs: 500, maxIntervalMs: 1000, withConsole: true, stall: machine.stallCheck(bootBeganAt) },
      );
      if (ip !== outputs.ip) log.warn(`the VM got ${ip}, not the reserved ${outputs.ip}`);
    });
    return timed("SSH", () => machine.waitForSsh(timeouts.sshMs, { bootBeganAt, restartAt: bootBeganAt }));
  };
  const { value: ready, resets } = await withOneReset(firstBoot, {
    what: "the first boot",
    accel: options.accel.accel,
    log,
    reset: async () => {
      await machine.powerCycle();
      bootBeganAt = machine.now();
    },
  });
  log.info(
    `SSH answered ${ready.uptimeSeconds.toFixed(1)} s after the guest booted${ready.readyLagSeconds === undefined ? "" : `; noticed ${ready.readyLagSeconds.toFixed(1)} s after sshd became active`}`,
  );

  await timed("cloud-init", () => waitForCloudInit(machine, log, timeouts.cloudInitMs));

  return { outputs, machine, phases, boots: [ready], resets };
}

/**
 * Runs a boot; when it dies of something that is not the guest's, powers the VM off and on
 * (`reset`: a cold boot in a fresh QEMU process, not a reset in place, which under TCG can stall
 * the firmware again) and waits once more (`boot` is called again): QEMU TCG's text-patching race (see `isTcgTextPatchRace` in
 * machine.ts), or a boot that stalled before its kernel started (the firmware under TCG, see
 * {@link BootStallError}). For the golden image's first boot, before anything of the profile ran,
 * neither says anything about the system under test; after the reboot only a race before the
 * boot could write the disk is reset (`onlyDiskUntouched`: before init ran, or with the root
 * file system still read-only), so booting again is the same boot (a stall is always before the
 * kernel). A second one, any other
 * panic and any panic under KVM go to the caller. Returns why it reset.
 */
export async function withOneReset<T>(
  boot: () => Promise<T>,
  options: { what: string; accel: string; reset: () => Promise<void>; log: Pick<Log, "warn">; onlyDiskUntouched?: boolean },
): Promise<{ value: T; resets: string[] }> {
  try {
    return { value: await boot(), resets: [] };
  } catch (error) {
    const race = tcgRaceOf(error, options.accel);
    let reason: string;
    if (error instanceof BootStallError)
      reason = `${options.what} stalled before its kernel started (${error.message.split("\n")[0]!.replace(/^.*: (no kernel started)/, "$1")}): the firmware, not the guest; powering the VM off and on once`;
    else if (race && !(options.onlyDiskUntouched && !race.diskUntouched))
      reason = `${options.what} panicked under TCG (${describePanic(race)}): QEMU's text-patching race, not the guest; powering the VM off and on once`;
    else throw error;
    options.log.warn(reason);
    await options.reset();
    return { value: await boot(), resets: [reason] };
  }
}

/**
 * Waits for cloud-init to finish, within one limit for the whole wait (each try gets what is
 * left of it); SSH dropping meanwhile (a service restart) is one more try.
 */
async function waitForCloudInit(machine: Machine, log: Log, timeoutMs: number): Promise<void> {
  const started = machine.now();
  await machine.waitFor(
    "cloud-init to finish",
    timeoutMs,
    async () => {
      const left = Math.max(5_000, timeoutMs - (machine.now() - started));
      const result = await machine.execute(`timeout ${Math.ceil(left / 1000)} cloud-init status --wait`, { timeoutMs: left + 10_000 });
      if (result.exitCode === 0) return { done: true, value: undefined };
      // 2 = done with recoverable errors: worth a warning, not a failed run.
      if (result.exitCode === 2) {
        log.warn(`cloud-init finished with recoverable errors: ${result.stdout.trim().split("\n").at(-1)}`);
        return { done: true, value: undefined };
      }
      if (result.exitCode === 255) return { done: false, seen: `SSH dropped (${result.stderr.trim().split("\n").at(-1)}); reconnecting` };
      if (result.exitCode === 124) return { done: false, seen: "cloud-init still running" };
      throw new HarnessError(
        `cloud-init failed in the VM (exit ${result.exitCode}): ${(result.stdout + result.stderr).trim().split("\n").slice(-5).join("\n")}`,
      );
    },
    { intervalMs: 1000, maxIntervalMs: 2000 },
  );
}
