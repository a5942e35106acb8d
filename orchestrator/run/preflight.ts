/** What a run settles before creating anything: libvirt, the lock, the guard, accel and engine, the cert tier. */
import { availableParallelism } from "node:os";
import { decideAccel, probeAccel, type AccelDecision } from "../../infra/accel.ts";
import type { Engine } from "../../infra/engines/engine.ts";
import type { Runner } from "../../infra/runner.ts";
import { learnDnsToken } from "../ansible/apply.ts";
import { ensureGoldenImage } from "../host/golden.ts";
import { libvirtFor, type Libvirt } from "../host/libvirt.ts";
import type { RunLock } from "../host/lock.ts";
import { certCacheDir, stacksDir } from "../host/paths.ts";
import {
  availableRamMiB,
  guardResources,
  MIN_FREE_DISK_GIB,
  RAM_MARGIN_MIB,
  RAM_PER_EXTRA_VM_MIB,
  ramNeededMiB,
  topologyRamNeededMiB,
  vcpusSideBySide,
  vmsTheCoresHold,
  freeGiB,
  OVERLAY_DIR,
} from "../host/prerequisites.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile, TopologyHost } from "../profile/load.ts";
import { planCerts, type CertPlan } from "../ansible/certs.ts";
import { chooseEngine } from "../host/engine-choice.ts";
import { rootCommand } from "../host/root.ts";
import { RefusedError } from "../errors.ts";
import type { RunOptions } from "./options.ts";
import type { RunSecrets } from "../ansible/secrets.ts";
import type { VmShape } from "../profile/schema.ts";

/** What a run's preflight is given: what the run is for, its profile and options, and the means to act. */
export interface PreflightRequest {
  /** What opens it (`run`, `up`): said in the lock and the report. */
  purpose: string;
  profile: LoadedProfile;
  options: RunOptions;
  runner: Runner;
  log: Log;
  env: NodeJS.ProcessEnv;
  imageDir: string;
  signal: AbortSignal;
  /** How many VMs the run would like to run at the same time (default 1): free RAM, disk and, under TCG, the cores decide. */
  vmsWanted?: number;
  /** What of the run needs root (as root, or through password-less sudo), if anything: refused now when neither is there. */
  needsRootFor?: string;
}

/** The machinery a run uses, decided once, and the run lock it holds (the lifecycle took it, and releases it). */
export interface RunMachinery {
  libvirt: Libvirt;
  accel: AccelDecision;
  engine: Engine;
  /** The machine's run lock, held: each scenario claims its run id in it. */
  lock: RunLock;
  /** How many VMs the run may run at the same time (1 unless it asked for more and the machine holds them). */
  vmsAtOnce: number;
  /** The shape the run's VMs get: the profile's, or fewer vCPUs each to run side by side under TCG (see {@link vcpusSideBySide}). */
  vm: VmShape;
  /** Several hosts: the most vCPUs each VM may have (its own shape's, or fewer under TCG). */
  vcpusEach?: number;
}

/**
 * Under the run lock (taken by the lifecycle, named for the request's purpose): refuses early
 * (exit 3) when the engine asked for cannot run, libvirt is unreachable, a test VM runs or
 * resources are short; picks accel and engine, each said in one line; makes the profile's golden
 * image on first use (see {@link ensureGoldenImage}).
 */
export async function preflightRun(request: PreflightRequest, lock: RunLock): Promise<RunMachinery> {
  // First: asking for an engine that cannot run is refused before libvirt is touched.
  const { engine, reason } = await chooseEngine(request.options.engine, request.runner, stacksDir(request.env));
  const libvirt = libvirtFor(request.runner, request.env);
  await libvirt.ensureReachable();
  if (request.needsRootFor && !(await rootCommand(request.runner))) {
    throw new RefusedError(
      `${request.needsRootFor} needs root, and this account is not root and has no password-less sudo`,
      "run as root, give the account password-less sudo, or change what needs it",
    );
  }
  const topology = request.profile.topology;
  if (topology) {
    const shapes = await guardTopology(libvirt, topology, request.options.minFreeRamMiB);
    const accel = decideAccel(request.options.accel, await probeAccel());
    request.log.info(`accel: ${accel.accel} (${accel.reason})`);
    const cores = availableParallelism();
    const most = Math.max(...shapes.map((shape) => shape.vcpus));
    // All of a topology's VMs run at once: under TCG, as many cores each as there are (one at least).
    const each = accel.accel === "tcg" ? Math.max(1, Math.min(most, Math.floor(cores / topology.length))) : most;
    if (each < most)
      request.log.info(
        `${topology.length} VMs at once with ${each} vCPU${each === 1 ? "" : "s"} each at most: under software emulation each VM's vCPUs need cores of their own, and this machine has ${cores}${topology.length > cores ? " (fewer than the VMs: they share them, and every wait is longer)" : ""}`,
      );
    request.log.info(reason);
    await ensureGoldenImage(request.imageDir, request.profile.document.image, request.options.imageFetch, request);
    return {
      libvirt,
      accel,
      engine,
      lock,
      vmsAtOnce: topology.length,
      vm: { ...request.profile.document.vm, vcpus: Math.min(request.profile.document.vm.vcpus, each) },
      vcpusEach: each,
    };
  }
  const memory = { vmMemoryMiB: request.profile.document.vm.memoryMiB, minFreeRamMiB: request.options.minFreeRamMiB };
  const wanted = request.vmsWanted ?? 1;
  const byMemory = await guardResources(libvirt, { ...memory, vms: wanted });
  const accel = decideAccel(request.options.accel, await probeAccel());
  request.log.info(`accel: ${accel.accel} (${accel.reason})`);
  const asked = request.profile.document.vm;
  const cores = availableParallelism();
  // Where the RAM holds them side by side but the cores not with the profile's vCPUs, fewer each.
  const fewer = byMemory >= wanted ? vcpusSideBySide(accel.accel, cores, asked.vcpus, wanted) : undefined;
  const vm = fewer === undefined ? asked : { ...asked, vcpus: fewer };
  const byCores = vmsTheCoresHold(accel.accel, cores, vm.vcpus, wanted);
  const vmsAtOnce = Math.min(byMemory, byCores);
  if (fewer !== undefined)
    request.log.info(
      `side by side with ${fewer} vCPU${fewer === 1 ? "" : "s"} per VM instead of the profile's ${asked.vcpus}: under software emulation ${wanted} VMs of ${asked.vcpus} vCPUs need ${wanted * asked.vcpus} cores and this machine has ${cores}, and ${wanted} smaller guests side by side finish well before one after the other (--serial: one at a time, with the profile's ${asked.vcpus})`,
    );
  else if (byCores < wanted)
    request.log.info(
      `scenarios one at a time: under software emulation ${wanted} VMs of ${asked.vcpus} vCPUs need ${wanted * asked.vcpus} cores, and this machine has ${cores}`,
    );
  else if (byMemory < wanted)
    request.log.info(
      `scenarios one at a time: ${wanted} VMs at once need ${ramNeededMiB(memory, wanted)} MiB of free RAM and ${wanted * MIN_FREE_DISK_GIB} GiB of disk, which this machine does not have now`,
    );
  request.log.info(reason);
  // Under the lock: two runs never make the same image at once.
  await ensureGoldenImage(request.imageDir, request.profile.document.image, request.options.imageFetch, request);
  return { libvirt, accel, engine, lock, vmsAtOnce, vm };
}

/**
 * The resource guard of a topology: one test VM at a time (a run's own aside) as for one host,
 * then free RAM for all of its VMs at once (see {@link topologyRamNeededMiB}), refused with the
 * arithmetic. Returns each host's VM shape.
 */
async function guardTopology(libvirt: Libvirt, topology: readonly TopologyHost[], minFreeRamMiB: number | undefined): Promise<VmShape[]> {
  const memories = topology.map((host) => host.vm.memoryMiB);
  await guardResources(libvirt, { vmMemoryMiB: memories[0]!, minFreeRamMiB });
  const needed = topologyRamNeededMiB(memories, minFreeRamMiB);
  const available = await availableRamMiB();
  if (available < needed) {
    const each = topology.map((host) => `${host.name} ${host.vm.memoryMiB}`).join(" + ");
    throw new RefusedError(
      `only ${available} MiB of RAM is free; ${topology.length} VMs at once need ${needed} MiB (${each} MiB of VM memory, ${minFreeRamMiB ? `--min-free-ram ${minFreeRamMiB} MiB for the first` : `${RAM_MARGIN_MIB} MiB of margin`}, ${RAM_PER_EXTRA_VM_MIB} MiB for each further VM's emulator)`,
      "stop other VMs or heavy jobs (see `npm run boma-it -- status`), or lower vm.memoryMiB (or vmFor) in the profile",
    );
  }
  // Each VM's overlay grows on its own (one VM's share was the guard's).
  const freeDisk = await freeGiB(OVERLAY_DIR);
  if (freeDisk !== undefined && freeDisk < topology.length * MIN_FREE_DISK_GIB) {
    throw new RefusedError(
      `only ${freeDisk.toFixed(1)} GiB of disk is free at ${OVERLAY_DIR}; ${topology.length} VMs need ${topology.length * MIN_FREE_DISK_GIB} GiB (${MIN_FREE_DISK_GIB} GiB for each overlay)`,
      "free space there, or remove leftovers with `npm run reap`",
    );
  }
  return topology.map((host) => host.vm);
}

/**
 * The run's cert tier and what it needs, refused before anything is created: the overlay's
 * fields and egress (see {@link planCerts}) and, for the le tiers, the DNS token (see
 * {@link learnDnsToken}; redacted from then on).
 */
export async function planRunCerts(
  inputs: { profile: LoadedProfile; options: Pick<RunOptions, "certs" | "noEgress">; secrets: RunSecrets; runner: Runner },
  context: { env: NodeJS.ProcessEnv; log: Log },
): Promise<CertPlan> {
  const certs = await planCerts(inputs.profile, inputs.options, certCacheDir(context.env));
  context.log.info(certs.reason);
  await learnDnsToken({ ...inputs, certs, log: context.log });
  return certs;
}
