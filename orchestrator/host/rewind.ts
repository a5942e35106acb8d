/**
 * A rewind point: a running VM's memory and disk at one moment (after the apply and the checks
 * before the reboot), to go back to before each reboot kind after the first, so that every kind
 * starts from the same applied state. Made of libvirt's own pieces inside the run's pool, named
 * after the run (`down` and `reap` remove them with it):
 *
 * - the memory and device state, saved by `virsh save` (`<run>-applied.mem`);
 * - a copy of the VM's disk at that moment (`<run>-applied.qcow2`: the file, backing reference
 *   and all, so the copy is as small as the writes since the golden image).
 *
 * Going back destroys the domain, copies the saved disk over the VM's and restores the saved
 * state: the VM's disk keeps its name, so its definition, its reset point and a start from the
 * host are untouched. The saved memory holds whatever the guest held, the run's secrets
 * included: both files are 0600, and {@link dropRewindPoint} deletes them on every exit path.
 * The pool's folder is root's: the copies and deletions run as root (or through `sudo -n`).
 */
import { dirname, join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { RUN_OBJECT_SUFFIXES } from "../../infra/spec.ts";
import { HarnessError, RefusedError } from "../errors.ts";
import { virshOutput as virsh, type Libvirt } from "./libvirt.ts";
import { rootCommand, runAsRoot } from "./root.ts";

/** Where a rewind point is. */
export interface RewindPoint {
  /** The saved memory and device state. */
  memory: string;
  /** The VM's disk (what is rewound). */
  disk: string;
  /** Its copy at that moment. */
  savedDisk: string;
  /** When it was taken. */
  at: string;
  /** How root's commands run (libvirt's pool folder is root's): `[]` as root, `sudo -n` otherwise. */
  asRoot: readonly string[];
}

/** How long saving or restoring a VM's memory may take (GiBs under a loaded host). */
const SAVE_MS = 15 * 60_000;
/** How long copying a disk may take. */
const COPY_MS = 15 * 60_000;

/** The names of a run's rewind volumes (in its pool, so the reaper knows whose they are). */
export function rewindVolumes(runId: string): { memory: string; disk: string } {
  return { memory: `${runId}${RUN_OBJECT_SUFFIXES.volume[5]}`, disk: `${runId}${RUN_OBJECT_SUFFIXES.volume[4]}` };
}

/**
 * Takes the rewind point of a running VM: saves its state (the domain stops), copies its disk,
 * and brings it back from the saved state. The guest goes on where it was; its SSH connections do
 * not (close them first), and its clock is behind by how long that took. Whatever fails half way,
 * the VM is brought back where it can be and nothing of the point is left behind.
 */
export async function takeRewindPoint(libvirt: Libvirt, runner: Runner, outputs: StackOutputs): Promise<RewindPoint> {
  const asRoot = await rootCommand(runner);
  if (!asRoot) {
    throw new RefusedError(
      "several reboot kinds from one applied state copy the VM's disk in libvirt's pool folder, which only root may write",
      "run as root, give the account password-less sudo, or name one reboot kind",
    );
  }
  const disk = await libvirt.diskFile(outputs.domain);
  const names = rewindVolumes(outputs.runId);
  // The run's disk lives in its pool's folder: the rewind files go next to it.
  const folder = dirname(disk);
  const point: RewindPoint = { memory: join(folder, names.memory), disk, savedDisk: join(folder, names.disk), at: new Date().toISOString(), asRoot };
  let running = true;
  try {
    await virsh(runner, libvirt, ["save", outputs.domain, point.memory], SAVE_MS);
    running = false;
    await copyDisk(runner, asRoot, point.disk, point.savedDisk);
    await runAsRoot(runner, asRoot, "chmod", ["0600", point.memory, point.savedDisk], { timeoutMs: 30_000 });
    await virsh(runner, libvirt, ["restore", point.memory, "--running"], SAVE_MS);
    running = true;
  } catch (error) {
    // The VM back from its saved state where that was written whole; the point's files gone either way.
    if (!running) await virsh(runner, libvirt, ["restore", point.memory, "--running"], SAVE_MS, true).catch(() => undefined);
    await removePointFiles(runner, asRoot, point).catch(() => undefined);
    throw error;
  }
  // So that `down` and `reap` find them as the run's volumes.
  await virsh(runner, libvirt, ["pool-refresh", outputs.runId], 60_000, true);
  return point;
}

/** Back to the rewind point: the domain is destroyed, its disk replaced by the saved one, the saved state restored. */
export async function rewind(libvirt: Libvirt, runner: Runner, outputs: StackOutputs, point: RewindPoint): Promise<void> {
  await virsh(runner, libvirt, ["destroy", outputs.domain], 60_000, true);
  await copyDisk(runner, point.asRoot, point.savedDisk, point.disk);
  await virsh(runner, libvirt, ["restore", point.memory, "--running"], SAVE_MS);
}

/** Deletes the rewind point's files (the saved memory holds the run's secrets); what could not be deleted is thrown. */
export async function dropRewindPoint(libvirt: Libvirt, runner: Runner, outputs: StackOutputs, point: RewindPoint): Promise<void> {
  try {
    await removePointFiles(runner, point.asRoot, point);
  } catch (error) {
    throw new HarnessError(
      `the rewind point could not be deleted (${point.memory}, ${point.savedDisk}): ${(error as Error).message.split("\n")[0]}; \`npm run reap\` deletes it with the run`,
      { cause: error },
    );
  } finally {
    await virsh(runner, libvirt, ["pool-refresh", outputs.runId], 60_000, true).catch(() => undefined);
  }
}

async function removePointFiles(runner: Runner, asRoot: readonly string[], point: RewindPoint): Promise<void> {
  await runAsRoot(runner, asRoot, "rm", ["-f", "--", point.memory, point.savedDisk], { timeoutMs: 60_000 });
}

/** A disk file copied as it is (sparse, and a reflink where the file system has them); onto an existing file, its owner and mode stay. */
async function copyDisk(runner: Runner, asRoot: readonly string[], from: string, to: string): Promise<void> {
  await runAsRoot(runner, asRoot, "cp", ["--sparse=always", "--reflink=auto", "--", from, to], { timeoutMs: COPY_MS });
}
