/** What `run` and `up` settle before creating anything: libvirt, the guard, accel and engine. */
import { decideAccel, probeAccel, type AccelDecision } from "../../infra/accel.ts";
import type { Engine } from "../../infra/engines/engine.ts";
import { learnDnsToken } from "../ansible/apply.ts";
import { planCerts, type CertPlan } from "./certs.ts";
import { DEFAULT_LIBVIRT_URI } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import type { CommandContext } from "../cli/command.ts";
import { expectPositionals, runCommandOptions, type RunCommandOptions } from "../cli/options.ts";
import { chooseEngine } from "./engine-choice.ts";
import { Libvirt } from "../host/libvirt.ts";
import type { Log } from "../log.ts";
import { certCacheDir, runLockPath, stacksDir } from "../host/paths.ts";
import { acquireRunLock, type RunLock } from "../host/lock.ts";
import { guardResources } from "../host/prerequisites.ts";
import { loadProfile, type LoadedProfile } from "../profile/load.ts";
import { loadSecrets, type RunSecrets } from "./secrets.ts";

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
 * Refuses early (exit 3) when libvirt is unreachable, another run holds the lock, a test VM runs
 * or resources are short, or the engine asked for cannot run; takes the run lock; picks accel and engine.
 */
export async function preflightRun(
  profile: LoadedProfile,
  options: RunCommandOptions,
  context: { runner: Runner; env: NodeJS.ProcessEnv; log: Log },
  purpose: string,
): Promise<RunMachinery> {
  // First: asking for an engine that cannot run is refused before anything else is touched.
  const { engine, reason } = await chooseEngine(options.engine, context.runner, stacksDir(context.env));
  const libvirt = new Libvirt(context.runner, context.env.LIBVIRT_DEFAULT_URI ?? DEFAULT_LIBVIRT_URI);
  await libvirt.ensureReachable();
  const lock = await acquireRunLock(runLockPath(context.env), purpose);
  const release = lock.release;
  try {
    await guardResources(libvirt, { vmMemoryMiB: profile.document.vm.memoryMiB, minFreeRamMiB: options.minFreeRamMiB });
    const accel = decideAccel(options.accel, await probeAccel());
    context.log.info(`accel: ${accel.accel} (${accel.reason})`);
    context.log.info(reason);
    return { libvirt, accel, engine, lock, release };
  } catch (error) {
    await release();
    throw error;
  }
}

/** What `run` and `up` read before anything else: options, profile and the run's secrets. */
export interface RunInputs {
  options: RunCommandOptions;
  profile: LoadedProfile;
  secrets: RunSecrets;
  /** The command's runner, redacting the run's secrets from every record. */
  runner: Runner;
}

/** Checks the options, loads the profile and its secrets; the log redacts them from then on. */
export async function loadRunInputs(
  command: string,
  context: Pick<CommandContext, "args" | "log" | "runner" | "locations" | "redactor">,
): Promise<RunInputs> {
  expectPositionals(command, context.args.positionals, 1, 1, "one <profile>");
  const options = runCommandOptions(context.args.values);
  const profile = await loadProfile(context.args.positionals[0]!, context.locations, context.runner, { say: (line) => context.log.info(line) });
  // The log and the runner redact through the invocation's redactor: from here on they hide these.
  const secrets = await loadSecrets(profile, context.runner, context.redactor);
  return { options, profile, secrets, runner: context.runner };
}

/**
 * The run's cert tier and what it needs, refused before anything is created: the overlay's
 * fields and egress (see {@link planCerts}) and, for the le tiers, the DNS token (see
 * {@link learnDnsToken}; redacted from then on).
 */
export async function planRunCerts(inputs: RunInputs, context: { env: NodeJS.ProcessEnv; log: Log }): Promise<CertPlan> {
  const certs = await planCerts(inputs.profile, inputs.options, certCacheDir(context.env));
  context.log.info(certs.reason);
  await learnDnsToken({ ...inputs, certs, log: context.log });
  return certs;
}
