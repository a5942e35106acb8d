/** What a run settles before creating anything: libvirt, the lock, the guard, accel and engine, the cert tier. */
import { decideAccel, probeAccel, type AccelDecision } from "../../infra/accel.ts";
import type { Engine } from "../../infra/engines/engine.ts";
import { DEFAULT_LIBVIRT_URI } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { learnDnsToken } from "../ansible/apply.ts";
import { ensureGoldenImage } from "../host/golden.ts";
import { Libvirt } from "../host/libvirt.ts";
import { acquireRunLock, type RunLock } from "../host/lock.ts";
import { certCacheDir, runLockPath, stacksDir } from "../host/paths.ts";
import { guardResources } from "../host/prerequisites.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { planCerts, type CertPlan } from "./certs.ts";
import type { RunRequest } from "./driver.ts";
import { chooseEngine } from "./engine-choice.ts";
import type { RunOptions } from "./options.ts";
import type { RunSecrets } from "./secrets.ts";

/** The machinery a run uses, decided once, and the run lock it holds. */
export interface RunMachinery {
  libvirt: Libvirt;
  accel: AccelDecision;
  engine: Engine;
  /** The machine's run lock, held from here on. */
  lock: RunLock;
  /** Releases the run lock; call it on every exit path. */
  release: () => Promise<void>;
}

/**
 * Refuses early (exit 3) when the engine asked for cannot run, libvirt is unreachable, another
 * run holds the lock, a test VM runs or resources are short; takes the run lock (named for the
 * request's purpose); picks accel and engine, each said in one line; makes the profile's golden
 * image on first use (see {@link ensureGoldenImage}).
 */
export async function preflightRun(
  request: Pick<RunRequest, "profile" | "options" | "runner" | "env" | "log" | "purpose" | "imageDir" | "signal">,
): Promise<RunMachinery> {
  // First: asking for an engine that cannot run is refused before anything else is touched.
  const { engine, reason } = await chooseEngine(request.options.engine, request.runner, stacksDir(request.env));
  const libvirt = new Libvirt(request.runner, request.env.LIBVIRT_DEFAULT_URI ?? DEFAULT_LIBVIRT_URI);
  await libvirt.ensureReachable();
  const lock = await acquireRunLock(runLockPath(request.env), request.purpose);
  try {
    await guardResources(libvirt, { vmMemoryMiB: request.profile.document.vm.memoryMiB, minFreeRamMiB: request.options.minFreeRamMiB });
    const accel = decideAccel(request.options.accel, await probeAccel());
    request.log.info(`accel: ${accel.accel} (${accel.reason})`);
    request.log.info(reason);
    // Under the lock: two runs never make the same image at once.
    await ensureGoldenImage(request.imageDir, request.profile.document.image, request.options.imageFetch, request);
    return { libvirt, accel, engine, lock, release: lock.release };
  } catch (error) {
    await lock.release();
    throw error;
  }
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
