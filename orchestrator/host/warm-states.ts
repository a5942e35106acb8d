/**
 * Saved first boots: a VM's whole state right after its first boot and cloud-init (memory and
 * devices, disk, seed, UEFI variables, the keys it was made with), kept so that a later VM of the
 * same shape starts from it in seconds instead of booting for minutes (a warm start). RED and
 * GREEN of one run, and the next run of the same host, share one first boot that way.
 *
 * A state is reused only for exactly the VM it was: the key covers the golden image (path, size,
 * time), the emulator binary, the acceleration, the VM's size, the host it impersonates, its
 * egress mode and the text of the seed and the domain boma-it would write for it. The guest
 * then starts where that first boot left it: the same boot id (the reboot's proof reads the
 * "before" id after the restore, as after a boot), the same host keys (pinned as the saved run
 * pinned them), the same instance id and address; its clock is set to now.
 *
 * Kept per user, private (they hold the saved guest's host keys and the login key), in
 * `warmStateDir` (host/paths.ts); the newest few are kept. Deleting the folder is always safe: the next run boots cold.
 */
import { createHash } from "node:crypto";
import { chmod, cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import { readSaveImage, rewriteSaveImageXml } from "../../infra/save-image.ts";
import { briefOf } from "../../infra/errors.ts";
import type { Runner } from "../../infra/runner.ts";
import { bridgeFor, type Subnet, type WarmStartSpec } from "../../infra/spec.ts";
import { BadInputError } from "../errors.ts";
import { warmStateDir } from "./paths.ts";

/**
 * How many saved first boots are kept (the newest; each is the guest's memory and disk in use,
 * about 1 GiB): a host has up to three (two slots of the shape it runs side by side in, one of
 * the profile's for `up` and `--serial`), and a user works through a few hosts in turn.
 */
export const WARM_STATES_KEPT = 8;

/**
 * How many saved first boots one VM shape may have: one per VM of it that starts at the same
 * time (RED and GREEN side by side), each with its own network, address and UUID. The first VM
 * takes slot 1, a VM beside it slot 2; each slot is saved by the first VM that found it empty.
 */
export const WARM_STATE_SLOTS = 2;

/** A slot's key: the shape's key (see {@link warmStateKey}) for slot 1, `<key>-<slot>` for the others. */
export function warmStateSlotKey(key: string, slot: number): string {
  return slot === 1 ? key : `${key}-${slot}`;
}

/** The cache's size cap when `$BOMA_IT_STATE_CACHE_MAX_GIB` does not set one. */
export const WARM_STATES_MAX_GIB = 8;

/** Where saved first boots are kept, and how much of them: the newest first, while both limits hold. */
export interface WarmStateCache {
  dir: string;
  /** At most this many states. */
  kept: number;
  /** At most this many bytes on disk, all states together. */
  maxBytes: number;
}

/** The user's cache of saved first boots, as the environment sets it (see {@link warmStateCapBytes}). */
export function warmStateCacheOf(env: NodeJS.ProcessEnv): WarmStateCache {
  return { dir: warmStateDir(env), kept: WARM_STATES_KEPT, maxBytes: warmStateCapBytes(env) };
}

/**
 * The cache's size cap in bytes: `$BOMA_IT_STATE_CACHE_MAX_GIB` (a number of GiB; 0 keeps
 * nothing, so every VM boots), else {@link WARM_STATES_MAX_GIB}.
 */
export function warmStateCapBytes(env: NodeJS.ProcessEnv): number {
  const raw = env.BOMA_IT_STATE_CACHE_MAX_GIB;
  if (raw === undefined || raw.trim() === "") return WARM_STATES_MAX_GIB * 2 ** 30;
  const gib = Number(raw);
  if (!Number.isFinite(gib) || gib < 0)
    throw new BadInputError({
      path: "$BOMA_IT_STATE_CACHE_MAX_GIB",
      message: `expected a number of GiB, 0 or more (e.g. 8 or 2.5), found ${JSON.stringify(raw)}`,
    });
  return Math.floor(gib * 2 ** 30);
}

/** Bumped when what a state holds, or how it is restored, changes: older states are then never used. */
const FORMAT = 2;

/** What a saved first boot is of, and how to start from it. */
export interface WarmStateMeta {
  format: number;
  key: string;
  savedAt: string;
  /** The run whose first boot it is (its names are renamed to the new run's on restore). */
  fromRun: string;
  fromRunDir: string;
  host: string;
  uuid: string;
  mac: string;
  subnet: Subnet;
  /** The boot id of the saved boot. */
  bootId: string;
}

/** A saved first boot found in the cache. */
export interface WarmState {
  dir: string;
  meta: WarmStateMeta;
}

/** A state being saved, in the cache until it is whole: `<prefix><run id>` (`reap` sweeps a killed saver's). */
export const WARM_STATE_SAVING_PREFIX = ".saving-";

/** This run's copy of a saved state, in its run dir until the restore (the plan deletes it then). */
export const WARM_START_COPY = ".warm-start.save";

const FILES = { meta: "state.json", saveImage: "memory.save", disk: "disk.qcow2", seed: "seed.iso", nvram: "VARS.fd", keys: "keys" } as const;

/** The inputs a state's key covers, in the words of {@link warmStateKey}. */
export interface WarmStateKeyInputs {
  goldenImage: string;
  emulator: string;
  accel: string;
  vm: { vcpus: number; memoryMiB: number; diskGiB: number };
  host: string;
  egressMode: string;
  /** The seed and domain XML boma-it would write for this VM with a fixed identity: any change of either is another VM. */
  templates: string;
}

/** The key of the VM those inputs make: files' identities by path, size and modification time. */
export async function warmStateKey(inputs: WarmStateKeyInputs): Promise<string> {
  const identity = async (path: string) => {
    const stats = await stat(path).catch(() => undefined);
    return stats ? { path, size: stats.size, mtimeMs: Math.trunc(stats.mtimeMs) } : { path, missing: true };
  };
  const material = JSON.stringify({
    format: FORMAT,
    golden: await identity(inputs.goldenImage),
    emulator: await identity(inputs.emulator),
    accel: inputs.accel,
    vm: inputs.vm,
    host: inputs.host,
    egress: inputs.egressMode,
    templates: createHash("sha256").update(inputs.templates).digest("hex"),
  });
  return `${inputs.host}-${createHash("sha256").update(material).digest("hex").slice(0, 16)}`;
}

/** The saved first boot of that key, when there is a whole one. */
export async function findWarmState(cacheDir: string, key: string): Promise<WarmState | undefined> {
  const dir = join(cacheDir, key);
  const meta = await readFile(join(dir, FILES.meta), "utf8")
    .then((text) => JSON.parse(text) as WarmStateMeta)
    .catch(() => undefined);
  if (!meta || meta.format !== FORMAT || meta.key !== key) return undefined;
  for (const file of [FILES.saveImage, FILES.disk, FILES.seed, FILES.nvram, FILES.keys]) {
    if (!(await stat(join(dir, file)).catch(() => undefined))) return undefined;
  }
  return { dir, meta };
}

/** A saved first boot as `image ls` lists it. */
export interface ListedWarmState {
  key: string;
  dir: string;
  meta: WarmStateMeta | undefined;
  sizeBytes: number;
}

/** The saved first boots of a cache, newest first (a folder without a readable state.json too: `image prune` removes it). */
export async function listWarmStates(cacheDir: string): Promise<ListedWarmState[]> {
  const listed: (ListedWarmState & { at: number })[] = [];
  for (const entry of await readdir(cacheDir, { withFileTypes: true }).catch(() => [])) {
    if (!entry.isDirectory() || entry.name.startsWith(".")) continue;
    const dir = join(cacheDir, entry.name);
    const meta = await readFile(join(dir, FILES.meta), "utf8")
      .then((text) => JSON.parse(text) as WarmStateMeta)
      .catch(() => undefined);
    listed.push({ key: entry.name, dir, meta, sizeBytes: await diskUsage(dir), at: (await stat(dir).catch(() => undefined))?.mtimeMs ?? 0 });
  }
  return listed.sort((a, b) => b.at - a.at).map(({ at: _at, ...state }) => state);
}

/** The bytes a state's files take on disk (allocated blocks: the saved disk is sparse). */
async function diskUsage(dir: string): Promise<number> {
  let blocks = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []))
    if (entry.isFile()) blocks += (await stat(join(entry.parentPath, entry.name)).catch(() => undefined))?.blocks ?? 0;
  return blocks * 512;
}

/** Removes every saved first boot of a cache (the next VM of each shape boots and saves anew). */
export async function pruneAllWarmStates(cacheDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const entry of await readdir(cacheDir).catch(() => [] as string[])) {
    await rm(join(cacheDir, entry), { recursive: true, force: true });
    removed.push(entry);
  }
  return removed;
}

/** Deletes a saved first boot (one that could not be restored is never tried again). */
export async function forgetWarmState(state: WarmState): Promise<void> {
  await rm(state.dir, { recursive: true, force: true });
}

/** How the saving and the restoring reach libvirt and root. */
export interface WarmStateContext {
  runner: Runner;
  uri: string;
  /** The words before a command only root may run (`[]` as root, `["sudo", "-n"]` otherwise). */
  asRoot: string[];
}

/**
 * Saves a running VM's state as the first boot of `key`, then brings the VM back exactly where it
 * was (its SSH connections do not survive: close them first). The domain is stopped between the
 * two; whatever fails in the copying, it is restored, and only a failed restore is thrown. Returns
 * whether the state was kept, and why not.
 */
export async function saveWarmState(
  context: WarmStateContext,
  target: {
    cache: WarmStateCache;
    key: string;
    outputs: StackOutputs;
    uuid: string;
    subnet: Subnet;
    /** The domain's UEFI variables file. */
    nvram: string;
    volumes: { pool: string; overlay: string; seed: string };
    bootId: string;
  },
): Promise<{ saved: true; dir: string } | { saved: false; why: string }> {
  const { runner, uri, asRoot } = context;
  const { outputs } = target;
  const virsh = (args: string[], timeoutMs = 15 * 60_000) => runner.run("virsh", ["-q", "-c", uri, ...args], { timeoutMs });
  const work = join(target.cache.dir, `${WARM_STATE_SAVING_PREFIX}${outputs.runId}`);
  try {
    await mkdir(target.cache.dir, { recursive: true, mode: 0o700 });
    await chmod(target.cache.dir, 0o700);
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { mode: 0o700 });
  } catch (error) {
    return { saved: false, why: `the cache ${target.cache.dir} cannot be written: ${briefOf(error)}` };
  }
  const saveImage = join(work, FILES.saveImage);
  try {
    await virsh(["save", outputs.domain, saveImage]);
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    // A failed save leaves the domain running (libvirt resumes it).
    return { saved: false, why: `virsh save failed: ${briefOf(error)}` };
  }
  const kept = join(target.cache.dir, target.key);
  try {
    const owner = `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`;
    const asRootRun = (argv: string[]) => runner.run([...asRoot, ...argv][0]!, [...asRoot, ...argv].slice(1), { timeoutMs: 5 * 60_000 });
    // libvirt writes the save image as root; the UEFI variables live in root's folder.
    await asRootRun(["chown", owner, saveImage]);
    await asRootRun(["install", "-m", "0600", "-o", owner.split(":")[0]!, "-g", owner.split(":")[1]!, target.nvram, join(work, FILES.nvram)]);
    await virsh(["vol-download", target.volumes.overlay, join(work, FILES.disk), "--pool", target.volumes.pool, "--sparse"]);
    await virsh(["vol-download", target.volumes.seed, join(work, FILES.seed), "--pool", target.volumes.pool]);
    await cp(join(outputs.runDir, "keys"), join(work, FILES.keys), { recursive: true, filter: (source) => !source.endsWith("known_hosts") });
    const meta: WarmStateMeta = {
      format: FORMAT,
      key: target.key,
      savedAt: new Date().toISOString(),
      fromRun: outputs.runId,
      fromRunDir: outputs.runDir,
      host: outputs.host,
      uuid: target.uuid,
      mac: outputs.mac,
      subnet: target.subnet,
      bootId: target.bootId,
    };
    await writeFile(join(work, FILES.meta), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 });
    // The seed holds the guest's private host keys: every file the owner's alone.
    for (const file of [FILES.saveImage, FILES.disk, FILES.seed, FILES.nvram]) await chmod(join(work, file), 0o600);
  } catch (error) {
    await restore(virsh, saveImage, work);
    await rm(work, { recursive: true, force: true });
    return { saved: false, why: `copying the state failed: ${briefOf(error)}` };
  }
  // Back where it was, from the very file the cache keeps (a restore only reads it).
  await restore(virsh, saveImage, work);
  try {
    await rm(kept, { recursive: true, force: true });
    await rename(work, kept);
    if ((await pruneWarmStates(target.cache)).includes(target.key)) {
      return {
        saved: false,
        why: `the state alone is larger than the cache's cap of ${(target.cache.maxBytes / 2 ** 30).toFixed(1)} GiB ($BOMA_IT_STATE_CACHE_MAX_GIB)`,
      };
    }
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    return { saved: false, why: `keeping the state in ${kept} failed: ${briefOf(error)}` };
  }
  return { saved: true, dir: kept };
}

async function restore(virsh: (args: string[]) => Promise<unknown>, saveImage: string, work: string): Promise<void> {
  try {
    await virsh(["restore", saveImage, "--running"]);
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Keeps the newest states while both of the cache's limits hold (oldest out first: a state that
 * would go past either is removed with every older one), and no half-saved one of a process that
 * died. Returns the folders removed.
 */
export async function pruneWarmStates(cache: WarmStateCache): Promise<string[]> {
  const entries = await readdir(cache.dir, { withFileTypes: true }).catch(() => []);
  const states: { name: string; at: number }[] = [];
  const removed: string[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory()) continue;
    const path = join(cache.dir, entry.name);
    const at = (await stat(path).catch(() => undefined))?.mtimeMs;
    if (at === undefined) continue;
    // A half-saved state older than an hour is one whose saver died.
    if (entry.name.startsWith(WARM_STATE_SAVING_PREFIX)) {
      if (Date.now() - at > 3_600_000) {
        await rm(path, { recursive: true, force: true });
        removed.push(entry.name);
      }
      continue;
    }
    states.push({ name: entry.name, at });
  }
  states.sort((a, b) => b.at - a.at);
  let total = 0;
  let full = false;
  for (const [index, state] of states.entries()) {
    const path = join(cache.dir, state.name);
    if (!full) {
      total += await diskUsage(path);
      full = index >= cache.kept || total > cache.maxBytes;
    }
    if (full) {
      await rm(path, { recursive: true, force: true });
      removed.push(state.name);
    }
  }
  return removed;
}

/**
 * Makes this run's start from a state: its own copy of the save image (in the run dir; the plan
 * deletes it once restored) and the key files the saved guest trusts, copied into the run's keys
 * folder. {@link renameSaveImage} then makes the copy's domain this run's.
 */
export async function prepareWarmStart(state: WarmState, run: { runDir: string; keysDir: string; runner: Runner }): Promise<WarmStartSpec> {
  // The keys first: a run dir with keys is one the reaper looks into, and it removes the copy
  // below when the run died before the restore did.
  await mkdir(run.keysDir, { recursive: true, mode: 0o700 });
  await cp(join(state.dir, FILES.keys), run.keysDir, { recursive: true });
  const saveImage = join(run.runDir, WARM_START_COPY);
  await run.runner.run("cp", ["--sparse=always", "--reflink=auto", join(state.dir, FILES.saveImage), saveImage], { timeoutMs: 10 * 60_000 });
  await chmod(saveImage, 0o600);
  return {
    uuid: state.meta.uuid,
    mac: state.meta.mac,
    saveImage,
    disk: join(state.dir, FILES.disk),
    seed: join(state.dir, FILES.seed),
    nvram: join(state.dir, FILES.nvram),
  };
}

/**
 * A saved domain's XML with the saved run's names (the domain, its pool and volumes, network,
 * filter, bridge, NVRAM file, console log) made this run's, and its metadata element replaced.
 */
export function renameSavedDomain(xml: string, from: { runId: string; runDir: string }, to: { runId: string; runDir: string }, metadata: string): string {
  const pairs: [string, string][] = [
    // libvirt writes a path as XML text: a runs dir holding & or a quote appears escaped.
    [escapeXml(from.runDir), escapeXml(to.runDir)],
    [from.runDir, to.runDir],
    [from.runId, to.runId],
    [bridgeFor(from.runId), bridgeFor(to.runId)],
  ];
  return pairs.reduce((text, [old, now]) => text.split(old).join(now), xml.replace(/<metadata>[\s\S]*?<\/metadata>/, metadata));
}

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[char]!);
}

/**
 * Makes the domain of this run's copy of the save image this run's (see {@link renameSavedDomain}):
 * `domainXml` is the domain this run defines, whose metadata (its owner, so the reaper judges the
 * right process) the restored domain carries.
 */
export async function renameSaveImage(state: WarmState, to: { runId: string; runDir: string; saveImage: string; domainXml: string }): Promise<void> {
  const metadata = /<metadata>[\s\S]*?<\/metadata>/.exec(to.domainXml)?.[0];
  if (!metadata) throw new Error("the run's domain XML has no metadata element");
  const { xml } = await readSaveImage(to.saveImage);
  await rewriteSaveImageXml(to.saveImage, renameSavedDomain(xml, { runId: state.meta.fromRun, runDir: state.meta.fromRunDir }, to, metadata));
}
