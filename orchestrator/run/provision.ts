/**
 * Bringing a VM up: prepare the run dir and its keys, make sure the golden image exists, plan
 * the stack, let the engine create it, and wait until the guest is ready (DHCP lease → SSH with
 * the pinned key → cloud-init done). Tearing it down is the caller's job, on every exit path.
 */
import { chmod, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Engine } from "../../infra/engines/engine.ts";
import { imageInfo, imagePath } from "../../infra/image/images.ts";
import { planStack, runFiles, type StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { overlapsAny, pickSubnet, stackSpec, type RunIdentity, type StackSpec, type Subnet, type TopologyPlace, type WarmStartSpec } from "../../infra/spec.ts";
import { HOST_KEY_TYPES, seedFiles, type HostKeyPair, type HostKeyType, type SeedKeys } from "../../infra/seed.ts";
import { domainXml } from "../../infra/xml.ts";
import type { AccelDecision } from "../../infra/accel.ts";
import { processStart } from "../../infra/process.ts";
import { briefOf, ProvisionError } from "../../infra/errors.ts";
import { BadInputError, HarnessError, RefusedError } from "../errors.ts";
import { imageFix } from "../host/golden.ts";
import { Libvirt } from "../host/libvirt.ts";
import type { Log } from "../log.ts";
import { describePanic } from "../guest/console.ts";
import { BootStallError, Machine, tcgRaceOf, type MachineResult, type SshReady } from "../guest/machine.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { controlPathFor, pinHostKeys, prepareControlSocketDir } from "../host/ssh.ts";
import { rootCommand } from "../host/root.ts";
import {
  WARM_START_COPY,
  findWarmState,
  forgetWarmState,
  WARM_STATE_SLOTS,
  warmStateSlotKey,
  pruneWarmStates,
  prepareWarmStart,
  renameSaveImage,
  saveWarmState,
  warmStateKey,
  type WarmState,
  type WarmStateCache,
} from "../host/warm-states.ts";
import type { EgressPlan } from "./egress.ts";
import type { RunRecord } from "./live-runs.ts";

/** The emulator whose saved states a warm start restores (another build may not read them). */
const EMULATOR = "/usr/bin/qemu-system-x86_64";

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
   * Where saved first boots are kept (host/warm-states.ts): the VM starts from one of the same VM
   * when it is free, or boots and saves its own for the next. Absent: `--cold-boot`, neither.
   */
  warmStates?: WarmStateCache;
  /**
   * The subnets the run's other VMs were given (one made beside this one may not have its network
   * yet): never picked again; this VM's is added.
   */
  subnetsInUse?: Set<string>;
  /** One VM of several on one network (see {@link TopologyProvision}); absent: a VM alone on a network of its own. */
  topology?: TopologyProvision;
}

/**
 * Where a VM of a topology stands: its place on the run's one network (every VM's fixed address
 * and MAC, the network named after the first VM) and that network's subnet, picked once for all.
 * The first VM's stack makes the network and says so (`onNetworkMade`); each other's waits for
 * it (`network`) before it is made, and is never made when the first failed before.
 */
export interface TopologyProvision {
  place: TopologyPlace;
  subnet: Subnet;
  network?: Promise<void>;
  onNetworkMade?: () => void;
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
  /** Whether the VM booted or started from a saved first boot. */
  firstBoot: FirstBoot;
}

/** ssh-keygen's arguments for a host key of each type: Debian's own sizes (rsa 3072, ecdsa 256). */
const HOST_KEY_ARGS: Record<HostKeyType, string[]> = { rsa: ["-t", "rsa", "-b", "3072"], ecdsa: ["-t", "ecdsa", "-b", "256"], ed25519: ["-t", "ed25519"] };

/** Generates the run's client key and the VM's host keys (each type a Debian host has) and pins them all. */
async function makeKeys(runner: Runner, runDir: string, runId: string): Promise<SeedKeys> {
  const files = runFiles(runDir);
  await mkdir(join(runDir, "keys"), { recursive: true, mode: 0o700 });
  await chmod(join(runDir, "keys"), 0o700);
  await runner.run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `boma-it harness ${runId}`, "-f", files.keyFile]);
  for (const type of HOST_KEY_TYPES) {
    await runner.run("ssh-keygen", ["-q", ...HOST_KEY_ARGS[type], "-N", "", "-C", `boma-it host ${runId}`, "-f", files.hostKeyFile(type)]);
  }
  return pinKeys(runDir, runId);
}

/** The keys in a run's keys folder (made, or a saved first boot's), its host keys pinned under the run's alias. */
async function pinKeys(runDir: string, runId: string): Promise<SeedKeys> {
  const files = runFiles(runDir);
  const hostKeys: HostKeyPair[] = [];
  for (const type of HOST_KEY_TYPES) {
    const file = files.hostKeyFile(type);
    hostKeys.push({ type, privateKey: await readFile(file, "utf8"), publicKey: await readFile(`${file}.pub`, "utf8") });
  }
  await pinHostKeys(
    files.knownHostsFile,
    runId,
    hostKeys.map((key) => key.publicKey),
  );
  return { clientPublicKey: await readFile(`${files.keyFile}.pub`, "utf8"), hostKeys };
}

/** How a VM came to its first boot's end: booted from power-on, or started from a saved first boot. */
export type FirstBoot =
  | {
      kind: "cold";
      /** Where its state was saved for the next VM of the same shape. */ saved?: string;
      /** Why no saved first boot started it, when one was asked for. */ why?: string;
    }
  | { kind: "warm"; /** The run whose first boot it is, and when it was saved. */ from: string; savedAt: string };

/** Creates the stack and waits until the VM is ready. Throws with the stack possibly half made. */
export async function provision(options: ProvisionOptions, run: { identity: RunIdentity; runDir: string }): Promise<LiveRun> {
  const { profile, log } = options;
  const phases: Phase[] = [];

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

  const base = { identity: run.identity, runDir: run.runDir, golden, phases };
  const choice = options.warmStates === undefined ? undefined : await chooseWarmStart(options, base, options.warmStates);
  for (const passed of choice?.passedOver ?? []) log.info(`a saved first boot of this VM's shape is not free: ${passed}; trying the next slot`);
  if (choice?.why) log.info(`no saved first boot starts this VM: ${choice.why}; booting from power-on`);
  try {
    if (choice?.state) {
      try {
        return await startWarm(options, base, choice.state, choice.root!);
      } catch (error) {
        // Whatever of the warm start is in the run dir goes; its keys too before a cold boot makes its own.
        await rm(join(run.runDir, WARM_START_COPY), { force: true });
        options.subnetsInUse?.delete(choice.state.meta.subnet.cidr);
        // Stopped, or something of the warm stack may be left (its rollback or teardown failed): no second stack of this run.
        if (options.signal.aborted || error instanceof AggregateError || (error instanceof ProvisionError && !error.rolledBack)) throw error;
        // Nothing of the warm stack is left (see startWarm); the state is not tried again.
        log.warn(`the saved first boot ${choice.state.meta.key} could not be started (${briefOf(error)}): forgetting it, booting from power-on`);
        await forgetWarmState(choice.state);
        await rm(join(run.runDir, "keys"), { recursive: true, force: true });
        return await bootCold(options, base, { ...choice, state: undefined, why: "the saved first boot could not be started" });
      }
    }
    return await bootCold(options, base, choice);
  } finally {
    if (choice) releaseWarmChoice(choice);
  }
}

/** Ends a VM's claim on its first boot's key (its start or its save is over). */
export function releaseWarmChoice(choice: WarmChoice): void {
  if (choice.claimed) BUSY_STATES.delete(choice.key);
}

/**
 * Keys whose saved first boot a VM of this process is starting from or saving: a VM made beside
 * it (RED and GREEN side by side) takes the shape's next slot (see {@link WARM_STATE_SLOTS})
 * instead of the same state, address and UUID, or saving the same key at the same time.
 */
const BUSY_STATES = new Set<string>();

/** What provisioning decided about a saved first boot: the key of this VM, the state to start from, or why none. */
export interface WarmChoice {
  cache: WarmStateCache;
  /** The slot's key (see {@link warmStateSlotKey}): the state this VM starts from, or saves. */
  key: string;
  state: WarmState | undefined;
  /** How root-only commands run (the UEFI variables live in root's folder; libvirt saves as root). */
  root?: string[];
  /** Why no state starts this VM, and none is saved by it (absent: none was saved yet, so this VM saves one). */
  why?: string;
  /** Saved first boots of this shape that were there but not free, and why (this VM took another slot). */
  passedOver?: string[];
  /** Whether this VM holds the key in {@link BUSY_STATES} (to start from it, or to save it). */
  claimed?: boolean;
}

/** What a VM is before its stack exists. */
export interface ProvisionBase {
  identity: RunIdentity;
  runDir: string;
  golden: string;
  phases: Phase[];
}

/**
 * The VM's slot and a saved first boot in it that is free to start (its address unused, its UUID
 * undefined, no other VM of this process on it). A slot is claimed before any await and a
 * state's subnet reserved as soon as it is read, so a VM provisioned beside this one takes
 * another slot and picks another network. With no state in the slot, this VM boots and saves
 * one there; with every slot taken or unusable it boots and saves nothing.
 */
export async function chooseWarmStart(options: ProvisionOptions, base: ProvisionBase, cache: WarmStateCache): Promise<WarmChoice> {
  const { libvirt } = options;
  const key = await warmStateKey({
    goldenImage: base.golden,
    emulator: EMULATOR,
    accel: options.accel.accel,
    vm: options.profile.document.vm,
    host: base.identity.host,
    egressMode: options.egress.spec.mode,
    templates: vmTemplates(options, base),
  });
  const root = await rootCommand(options.runner);
  if (root === undefined) return { cache, key, state: undefined, why: "saving or restoring a VM's state needs root or password-less sudo" };
  await pruneWarmStates(cache);
  const passedOver: string[] = [];
  const reserved = options.subnetsInUse;
  for (let slot = 1; slot <= WARM_STATE_SLOTS; slot += 1) {
    const slotKey = warmStateSlotKey(key, slot);
    if (BUSY_STATES.has(slotKey)) continue;
    BUSY_STATES.add(slotKey);
    const state = await findWarmState(cache.dir, slotKey);
    if (!state) return { cache, key: slotKey, state: undefined, root, claimed: true, ...(passedOver.length > 0 ? { passedOver } : {}) };
    const subnet = state.meta.subnet.cidr;
    const takenBeside = overlapsAny(subnet, [...(reserved ?? [])]);
    if (!takenBeside) reserved?.add(subnet);
    // Not this VM's after all: the slot and its network are free for the next.
    const letGo = () => {
      if (!takenBeside) reserved?.delete(subnet);
      BUSY_STATES.delete(slotKey);
    };
    let used: string[];
    let defined: boolean;
    try {
      used = await libvirt.usedSubnets();
      defined = await libvirt.hasDomain(state.meta.uuid);
    } catch (error) {
      letGo();
      throw error;
    }
    const why = takenBeside || overlapsAny(subnet, used) ? `its network ${subnet} is in use` : defined ? "a VM started from it is still defined" : undefined;
    if (!why) return { cache, key: slotKey, state, root, claimed: true, ...(passedOver.length > 0 ? { passedOver } : {}) };
    letGo();
    passedOver.push(`${slotKey}: ${why}`);
  }
  const why =
    passedOver.length > 0
      ? `no slot of this VM's shape is free (${passedOver.join("; ")}${passedOver.length < WARM_STATE_SLOTS ? "; the others are this run's VMs'" : ""})`
      : `another VM of this run is starting from or saving each of the ${WARM_STATE_SLOTS} first boots of this VM's shape`;
  return { cache, key, state: undefined, why };
}

/** The seed and domain this VM would get, with a fixed identity: what of them is the VM's shape. */
function vmTemplates(options: ProvisionOptions, base: ProvisionBase): string {
  const placeholder = "warm-state-key";
  const spec = stackSpec({
    identity: { ...base.identity, runId: placeholder, stamp: placeholder, createdAt: new Date(0) },
    accel: options.accel.accel,
    vm: options.profile.document.vm,
    subnet: pickSubnet([], placeholder),
    egress: options.egress.spec,
    goldenImage: base.golden,
    runDir: `/${placeholder}`,
    ownerPid: 0,
  });
  const keys: SeedKeys = { clientPublicKey: placeholder, hostKeys: HOST_KEY_TYPES.map((type) => ({ type, privateKey: placeholder, publicKey: placeholder })) };
  const seed = seedFiles(spec, keys);
  return [seed.metaData, seed.userData, seed.networkConfig, domainXml(spec)].join("\n");
}

/** The stack of a VM booted from power-on: its own keys and address, its first boot saved when asked. */
async function bootCold(options: ProvisionOptions, base: ProvisionBase, choice: WarmChoice | undefined): Promise<LiveRun> {
  const { made, spec } = await makeStack(options, base, async () => ({
    keys: await makeKeys(options.runner, base.runDir, base.identity.runId),
    subnet: options.topology?.subnet ?? pickSubnet([...(await options.libvirt.usedSubnets()), ...(options.subnetsInUse ?? [])], base.identity.runId),
  }));
  const machine = await machineFor(made, { runner: options.runner, log: options.log, libvirt: options.libvirt, signal: options.signal });
  try {
    const live = await bootAndWait(machine, { ...options, outputs: made, phases: base.phases });
    // A state kept busy by another VM is not saved again: only a VM with none saves its own.
    if (!choice || choice.why !== undefined) return { ...live, firstBoot: { kind: "cold", ...(choice?.why ? { why: choice.why } : {}) } };
    const saved = await options.log.timed(base.phases, "saving the first boot", () => saveFirstBoot(options, live, spec, choice));
    return { ...live, firstBoot: { kind: "cold", ...(saved ? { saved } : {}) } };
  } catch (error) {
    // The caller tears the stack down; the master connection is this function's to end.
    await machine.closeConnection();
    throw error;
  }
}

/** Saves the VM's state for the next VM of its shape; a failure to save is said, never the run's. */
async function saveFirstBoot(options: ProvisionOptions, live: Omit<LiveRun, "firstBoot">, spec: StackSpec, choice: WarmChoice): Promise<string | undefined> {
  const { machine, outputs } = live;
  const bootId = await machine.bootId();
  await machine.closeConnection();
  const uuid = (await options.runner.run("virsh", ["-q", "-c", options.libvirt.uri, "domuuid", outputs.domain])).stdout.trim();
  const result = await saveWarmState(
    { runner: options.runner, uri: options.libvirt.uri, asRoot: choice.root ?? [] },
    {
      cache: choice.cache,
      key: choice.key,
      outputs,
      uuid,
      subnet: spec.network.subnet,
      nvram: spec.nvram,
      volumes: { pool: spec.pool.name, overlay: spec.volumes.overlay, seed: spec.volumes.seed },
      bootId,
    },
  );
  // Back from the restore: its network port is new (the host learns its address again), and its
  // clock is behind by the time the state took to write.
  await machine.waitForSsh(options.timeouts.sshMs);
  await machine.setClockToNow();
  if (!result.saved) {
    options.log.warn(`the first boot was not saved for the next VM (${result.why}); this VM goes on`);
    return undefined;
  }
  options.log.info(`first boot saved in ${result.dir}: the next VM of this shape starts from it in seconds`);
  return result.dir;
}

/** The stack of a VM started from a saved first boot: the state's keys, address and identity. */
async function startWarm(options: ProvisionOptions, base: ProvisionBase, state: WarmState, root: string[]): Promise<LiveRun> {
  const { log, timeouts } = options;
  log.info(`starting from the first boot ${state.meta.fromRun} saved at ${state.meta.savedAt} (same image, VM and seed; --cold-boot boots instead)`);
  const { made } = await makeStack(options, base, async () => {
    const warmStart = await prepareWarmStart(state, { runDir: base.runDir, keysDir: join(base.runDir, "keys"), runner: options.runner });
    return { keys: await pinKeys(base.runDir, base.identity.runId), subnet: state.meta.subnet, warm: { spec: warmStart, state, root } };
  });
  const machine = await machineFor(made, { runner: options.runner, log, libvirt: options.libvirt, signal: options.signal });
  try {
    // Ready to be logged into with the right time: the clock is part of the wait a warm start has,
    // and cloud-init's marker is looked for in the same command.
    const { ready, marker } = await log.timed(base.phases, "SSH", async () => {
      const answered = await machine.waitForSsh(timeouts.sshMs);
      if (answered.bootId !== state.meta.bootId)
        throw new HarnessError(`the restored VM has boot id ${answered.bootId}, not the saved first boot's ${state.meta.bootId}`);
      const [found] = await machine.setClockToNow(new Date(), [{ command: CLOUD_INIT_FINISHED_TEST }]);
      return { ready: answered, marker: found! };
    });
    await log.timed(base.phases, "cloud-init", () => confirmCloudInitDone(machine, log, timeouts.cloudInitMs, marker));
    log.info(`started from the saved first boot: boot id ${ready.bootId.slice(0, 8)}…, its clock set to now`);
    return {
      outputs: made,
      machine,
      phases: base.phases,
      boots: [ready],
      resets: [],
      firstBoot: { kind: "warm", from: state.meta.fromRun, savedAt: state.meta.savedAt },
    };
  } catch (error) {
    await machine.closeConnection();
    // A restored VM that does not answer as saved is taken down here (a failed restore, by the
    // engine), so that the cold boot after it finds no stack of this run.
    try {
      await options.engine.destroy(made.runId);
    } catch (destroyError) {
      throw new AggregateError([error, destroyError], `${briefOf(error)}; taking the restored VM down failed too: ${briefOf(destroyError)}`, {
        cause: destroyError,
      });
    }
    throw error;
  }
}

/** Plans the stack (keys and subnet from `identityOf`) and lets the engine make it; its record written. */
async function makeStack(
  options: ProvisionOptions,
  base: ProvisionBase,
  identityOf: () => Promise<{ keys: SeedKeys; subnet: Subnet; warm?: { spec: WarmStartSpec; state: WarmState; root: string[] } }>,
): Promise<{ made: StackOutputs; spec: StackSpec }> {
  const { log, libvirt } = options;
  return log.timed(base.phases, "provision", async () => {
    const { keys, subnet, warm } = await identityOf();
    // No await from the pick to the add: a VM provisioned beside this one sees the choice.
    options.subnetsInUse?.add(subnet.cidr);
    const ownerStart = processStart();
    const spec = stackSpec({
      identity: base.identity,
      accel: options.accel.accel,
      vm: options.profile.document.vm,
      subnet,
      egress: options.egress.spec,
      hostAddresses: await libvirt.hostAddresses(),
      goldenImage: base.golden,
      runDir: base.runDir,
      ownerPid: process.pid,
      ...(ownerStart !== undefined ? { ownerStart } : {}),
      ...(warm ? { warmStart: warm.spec } : {}),
      ...(options.topology ? { topology: options.topology.place } : {}),
    });
    if (warm)
      await renameSaveImage(warm.state, { runId: base.identity.runId, runDir: base.runDir, saveImage: warm.spec.saveImage, domainXml: domainXml(spec) });
    // The allowlist's root commands and a warm start's are the same words where both exist.
    const plan = planStack(spec, keys, libvirt.uri, { asRoot: warm?.root ?? options.egress.asRoot });
    log.info(
      `stack ${plan.stack}: network ${spec.network.subnet.cidr} (${{ allowlist: "NAT to the allowlist", open: "NAT", none: "no egress" }[spec.network.egress.mode]}), ${spec.vm.vcpus} vCPU, ${spec.vm.memoryMiB} MiB, ${spec.vm.diskGiB} GiB overlay on ${options.profile.document.image}, ${spec.accel.toUpperCase()}`,
    );
    // A topology's VM joins the network its first VM's stack makes.
    await options.topology?.network;
    const made = await options.engine.up(plan, {
      signal: options.signal,
      onEvent: (event) => {
        if (event.state === "done") log.info(`${event.action}d ${event.resource} (${event.seconds?.toFixed(1)} s)`);
        if (event.state === "failed") log.warn(`${event.action} ${event.resource} failed`);
      },
      onOutput: (line) => log.info(`  pulumi │ ${line}`),
    });
    await writeRunRecord(base.runDir, { ...made, engine: options.engine.name, ...options.record });
    options.topology?.onNetworkMade?.();
    return { made, spec };
  });
}

/** The first boot up to cloud-init done (with one power cycle for QEMU's TCG race or a firmware stall). */
async function bootAndWait(machine: Machine, options: ProvisionOptions & { outputs: StackOutputs; phases: Phase[] }): Promise<Omit<LiveRun, "firstBoot">> {
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

/** Exits 0 when cloud-init has finished its boot in the guest. */
const CLOUD_INIT_FINISHED_TEST = "test -e /var/lib/cloud/instance/boot-finished";

/**
 * cloud-init on a restored first boot: the state was saved only once it had finished, so its
 * marker is there and nothing is waited for (`cloud-init status --wait` alone costs 12-15 s under
 * TCG: Python loading cloud-init). A guest without the marker is waited for as after a boot.
 */
async function confirmCloudInitDone(machine: Machine, log: Log, timeoutMs: number, marker: MachineResult): Promise<void> {
  if (marker.exitCode === 0) return;
  log.warn("the restored first boot has no cloud-init boot-finished marker: waiting for cloud-init as after a boot");
  await waitForCloudInit(machine, log, timeoutMs);
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
