/**
 * A run's reset point: the VM's state right after its first boot and cloud-init, before any apply,
 * to go back to in seconds rather than a boot. Made of libvirt's own pieces, all inside the run's
 * pool (so `down` and `reap` remove them with it, and the golden image is never touched):
 *
 * - the memory and device state, saved by `virsh save` (`<run>-reset.mem`);
 * - the disk at that moment: the run's overlay, frozen from then on (nothing writes it again);
 * - a top volume backed by it (`<run>-top.qcow2`) that the VM writes instead.
 *
 * Going back destroys the domain, replaces the top volume by an empty one on the frozen overlay
 * and restores the saved state onto it. UEFI variables are not part of it: firmware variables a
 * role changes stay changed (the runbook says so).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { withPipedStdin, type StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { RUN_OBJECT_SUFFIXES } from "../../infra/spec.ts";
import { virshOutput as virsh, type Libvirt } from "./libvirt.ts";

/** Where a run's reset point is (run.json keeps it). */
export interface ResetPoint {
  /** The saved memory and device state (a volume of the run's pool). */
  memory: string;
  /** The frozen overlay (the disk at that moment). */
  base: string;
  /** The volume the VM writes on top of it. */
  top: string;
  /** When it was taken. */
  at: string;
  /** The boot id of the saved state (the first boot's). */
  bootId?: string;
}

/** The names of a run's reset volumes (in its pool, named after it so the reaper knows whose they are). */
export function resetVolumes(runId: string): { memory: string; top: string } {
  return { memory: `${runId}${RUN_OBJECT_SUFFIXES.volume[3]}`, top: `${runId}${RUN_OBJECT_SUFFIXES.volume[2]}` };
}

/**
 * Takes the reset point of a running VM: saves its state (the domain stops), puts an empty top
 * volume on its overlay, and brings it back from the saved state onto that volume (the persistent
 * definition too, so a start from the host never writes the frozen overlay). The guest goes on
 * where it was; its SSH connections do not (close them first).
 */
export async function takeResetPoint(libvirt: Libvirt, runner: Runner, outputs: StackOutputs): Promise<ResetPoint> {
  const pool = outputs.runId;
  const base = `${outputs.runId}${RUN_OBJECT_SUFFIXES.volume[0]}`;
  const { memory, top } = resetVolumes(outputs.runId);
  const memoryPath = join(await poolDir(runner, libvirt, pool), memory);
  await virsh(runner, libvirt, ["save", outputs.domain, memoryPath], 15 * 60_000);
  await virsh(runner, libvirt, ["pool-refresh", pool]);
  await freshTop(runner, libvirt, pool, base, top);
  await restoreOnto(runner, libvirt, memoryPath, base, top);
  // A start from the host (not a guest reboot, which keeps the running config) must use the top too.
  const inactive = await virsh(runner, libvirt, ["dumpxml", "--inactive", outputs.domain]);
  const define = withPipedStdin(["virsh", "-q", "-c", libvirt.uri, "define", "/dev/stdin"]);
  await runner.run(define[0]!, define.slice(1), { input: onTop(inactive, base, top), timeoutMs: 60_000 });
  return { memory: memoryPath, base, top, at: new Date().toISOString() };
}

/** Goes back to the reset point: the domain is destroyed, its top volume emptied, the saved state restored. */
export async function resetToPoint(libvirt: Libvirt, runner: Runner, outputs: StackOutputs, point: ResetPoint): Promise<void> {
  await virsh(runner, libvirt, ["destroy", outputs.domain], 60_000, true);
  await freshTop(runner, libvirt, outputs.runId, point.base, point.top);
  await restoreOnto(runner, libvirt, point.memory, point.base, point.top);
}

/** An empty top volume on `base` (the old one deleted first). */
async function freshTop(runner: Runner, libvirt: Libvirt, pool: string, base: string, top: string): Promise<void> {
  await virsh(runner, libvirt, ["vol-delete", top, "--pool", pool], 60_000, true);
  const basePath = (await virsh(runner, libvirt, ["vol-path", base, "--pool", pool])).trim();
  const capacity = /<capacity unit='(\w+)'>(\d+)<\/capacity>/.exec(await virsh(runner, libvirt, ["vol-dumpxml", base, "--pool", pool]));
  const xml = `<volume><name>${top}</name><capacity unit="${capacity?.[1] ?? "bytes"}">${capacity?.[2] ?? String(20 * 1024 ** 3)}</capacity><target><format type="qcow2"/></target><backingStore><path>${basePath}</path><format type="qcow2"/></backingStore></volume>`;
  const argv = withPipedStdin(["virsh", "-q", "-c", libvirt.uri, "vol-create", pool, "/dev/stdin"]);
  await runner.run(argv[0]!, argv.slice(1), { input: xml, timeoutMs: 60_000 });
}

/** Restores a saved state with its disk moved from `base` to `top`. */
async function restoreOnto(runner: Runner, libvirt: Libvirt, memoryPath: string, base: string, top: string): Promise<void> {
  const saved = await virsh(runner, libvirt, ["save-image-dumpxml", memoryPath]);
  const work = await mkdtemp(join(tmpdir(), "boma-it-reset-"));
  try {
    const file = join(work, "domain.xml");
    await writeFile(file, onTop(saved, base, top), { mode: 0o600 });
    await virsh(runner, libvirt, ["restore", memoryPath, "--xml", file, "--running"], 15 * 60_000);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** A domain XML whose disk is `top` instead of `base`. */
function onTop(xml: string, base: string, top: string): string {
  return xml.replace(new RegExp(`volume=(['"])${base.replace(/[.]/g, "\\.")}\\1`), `volume='${top}'`);
}

async function poolDir(runner: Runner, libvirt: Libvirt, pool: string): Promise<string> {
  const xml = await virsh(runner, libvirt, ["pool-dumpxml", pool]);
  const path = /<path>([^<]+)<\/path>/.exec(xml)?.[1];
  if (!path) throw new Error(`pool ${pool} has no target path`);
  return path;
}
