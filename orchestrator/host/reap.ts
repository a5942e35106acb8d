/**
 * The reaper: destroys stale stacks of every engine, then sweeps libvirt and the disk for what
 * boma-it made that no living run owns. Whatever happened to a harness process (SIGKILL, a crash,
 * a power cut), `npm run reap` finds what it left. It touches only what boma-it made: a domain
 * with boma-it's metadata, objects and files with the exact names boma-it gives a run's
 * (`boma-it-<host>-<yyyymmdd-hhmmss>` and its suffixes, see `RUN_OBJECT_SUFFIXES`), volumes only
 * in a run's own pool, and in the runs dir only the keys of run and fleet folders. A name that
 * merely starts with the prefix (`boma-it-prod`) is someone else's. Each item has its own try.
 */
import { lstat, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Engine } from "../../infra/engines/engine.ts";
import { messageOf } from "../../infra/errors.ts";
import { ownerAlive, type OwnerCheck } from "../../infra/process.ts";
import type { Runner } from "../../infra/runner.ts";
import { LIBVIRT_DNSMASQ_DIR, runIdOfObject, runsDirFolderShape } from "../../infra/spec.ts";
import type { Libvirt } from "./libvirt.ts";
import type { Log } from "../log.ts";
import { ABSENT_PATTERN } from "../../infra/shell.ts";
import { RefusedError } from "../errors.ts";
import { acquireLock, acquireRunLock, runLockHolder, type LockHolder } from "./lock.ts";
import { liveStacks } from "../../infra/engines/engine.ts";
import { rootCommand, runAsRoot } from "./root.ts";
import { controlSocketDir, endMaster } from "./ssh.ts";
import { WARM_START_COPY, WARM_STATE_SAVING_PREFIX } from "./warm-states.ts";
import { privateTempBase } from "./paths.ts";

/** One thing the reaper found and what it did with it. */
export interface ReapItem {
  kind: "stack" | "domain" | "network" | "nwfilter" | "pool" | "volume" | "file" | "keys" | "ssh" | "nft";
  name: string;
  action: "destroyed" | "would destroy" | "spared" | "failed";
  detail: string;
}

/** Settings of a reap. */
export interface ReapOptions {
  engines: readonly Engine[];
  libvirt: Libvirt;
  runner: Runner;
  log: Log;
  runsDir: string;
  /**
   * The machine's run lock (see host/lock.ts): while a living harness holds it, whatever it made
   * since it took it (and the runs it claimed) is spared, whichever stacks dir or user it runs from.
   */
  runLock?: string;
  dryRun: boolean;
  /** Spare runs younger than this many seconds. */
  olderThanSeconds: number | undefined;
  /** Folders where libvirt keeps images and NVRAM (tests point them elsewhere). */
  libvirtImagesDir?: string;
  libvirtNvramDir?: string;
  /** Where runs' SSH master connections listen (default: {@link controlSocketDir}). */
  controlSocketDir?: string;
  /** Where libvirt keeps its networks' DNS files (default /var/lib/libvirt/dnsmasq). */
  libvirtDnsmasqDir?: string;
  /** How root-only commands run (default: {@link rootCommand}; tests give a fake's). */
  rootCommand?: (runner: Runner) => Promise<string[] | undefined>;
  /**
   * The golden image cache, whose unfinished builds and downloads (`.build-*`, `.pull-*`) of a
   * killed maker are swept. Give it only while this reap holds the run lock: every image maker
   * holds it, so then nothing there is in the making.
   */
  unfinishedImagesIn?: string;
  /**
   * Where Ansible runs keep their private folders (task records, learnt secrets: `boma-it-tasks-*`,
   * `boma-it-learnt-*`), which a harness killed twice leaves behind. Give it only while this reap
   * holds the run lock: every Ansible run on a VM runs under it, so then none is in use.
   */
  privateTempIn?: string;
  /**
   * This user's cache of saved first boots (host/warm-states.ts), whose half-saved states
   * (`.saving-<run id>`: a guest's memory, its secrets with it) a saver killed mid-save left.
   * Give it only while this reap holds the run lock: every save runs under it.
   */
  unfinishedStatesIn?: string;
  now?: Date;
  /** Whether a run's owner lives (pid and, when recorded, its start; replaceable in tests). */
  isAlive?: OwnerCheck;
}

/** The creation time in a run id (`boma-it-<host>-<yyyymmdd-hhmmss>`), if it has one. */
export function createdAtOf(name: string): Date | undefined {
  const match = /(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})/.exec(name);
  if (!match) return undefined;
  const [, y, mo, d, h, mi, s] = match;
  return new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}Z`);
}

/** Output of virsh (or rm) that means the object is already gone. */
const ABSENT = new RegExp(ABSENT_PATTERN, "i");

/**
 * Whether a libvirt object or file belongs to a run: the run id itself, or it followed by a
 * separator (`<run>-overlay.qcow2`, `<run>-isolation`, `<run>_VARS.fd`).
 */
function belongsTo(name: string, runId: string): boolean {
  return name === runId || (name.startsWith(runId) && /^[-_.]/.test(name.slice(runId.length)));
}

/**
 * Reaps one reap at a time (`<run lock>.reap`: a second waits up to 600 s for the first, then
 * finds what is left), holding the run lock too while it is free (not in a dry run): a run that
 * began during a long reap would make its network and volumes before its record exists, and the
 * sweep would take them for orphans. Holding it, it also clears `imageDir`'s half-made images.
 */
export async function reapInTurn(
  options: Omit<ReapOptions, "runLock" | "unfinishedImagesIn" | "privateTempIn" | "unfinishedStatesIn"> & {
    runLock: string;
    imageDir: string;
    privateTempDir?: string;
    /** This user's saved first boots (see {@link ReapOptions.unfinishedStatesIn}). */
    stateCacheDir?: string;
  },
): Promise<ReapItem[]> {
  const reapLock = `${options.runLock}.reap`;
  const other = await runLockHolder(reapLock);
  if (other) options.log.info(`waiting up to 600 s for another reap${other.pid > 0 ? ` (pid ${other.pid})` : ""} to finish`);
  const reaping = await acquireLock(reapLock, "reap", 600);
  try {
    const holding = options.dryRun
      ? undefined
      : await acquireRunLock(options.runLock, "reap").catch((error: unknown) => {
          if (error instanceof RefusedError) return undefined;
          throw error;
        });
    try {
      // Held by a living run, the reap spares what that run made since it took it.
      const privateTempIn = options.privateTempDir ?? (await privateTempBase());
      const held = holding
        ? { unfinishedImagesIn: options.imageDir, privateTempIn, ...(options.stateCacheDir ? { unfinishedStatesIn: options.stateCacheDir } : {}) }
        : {};
      return await reap({ ...options, ...held });
    } finally {
      await holding?.release();
    }
  } finally {
    await reaping.release();
  }
}

/** Reaps; returns every item found, with what was done. */
export async function reap(options: ReapOptions): Promise<ReapItem[]> {
  const { libvirt, runner, log } = options;
  const now = options.now ?? new Date();
  const isAlive = options.isAlive ?? ownerAlive;
  const items: ReapItem[] = [];
  const tooYoung = (name: string): boolean => {
    if (options.olderThanSeconds === undefined) return false;
    const created = createdAtOf(name);
    return created !== undefined && (now.getTime() - created.getTime()) / 1000 < options.olderThanSeconds;
  };
  // Whatever a living harness that holds the run lock made since it took it, and the runs it claimed.
  const holder: LockHolder | undefined = options.runLock ? await runLockHolder(options.runLock) : undefined;
  const heldBy = (name: string): string | undefined => {
    if (!holder) return undefined;
    const who = holder.pid > 0 ? `its harness (pid ${holder.pid}, ${holder.purpose}) holds the run lock` : "a living harness holds the run lock";
    if (holder.runIds.some((runId) => belongsTo(name, runId))) return who;
    // A holder that could not say when it took the lock (another user's read-only file): every run is spared.
    if (holder.since === 0) return who;
    const created = createdAtOf(name);
    return created !== undefined && created.getTime() >= holder.since - 2000 ? `${who} and made it` : undefined;
  };
  const act = async (kind: ReapItem["kind"], name: string, body: () => Promise<void>) => {
    // Keys are judged by their own time below: their folder is not named by a run id.
    const busy = kind === "keys" ? undefined : heldBy(name.split("/").at(-1)!);
    if (busy) {
      items.push({ kind, name, action: "spared", detail: busy });
      return;
    }
    if (options.dryRun) {
      items.push({ kind, name, action: "would destroy", detail: "" });
      return;
    }
    try {
      await body();
      items.push({ kind, name, action: "destroyed", detail: "" });
      log.info(`reaped ${kind} ${name}`);
    } catch (error) {
      const message = (error as Error).message;
      // Another reap (or the run's own teardown) got there first: gone is what we wanted.
      if (ABSENT.test(message)) {
        items.push({ kind, name, action: "destroyed", detail: "already gone" });
        return;
      }
      items.push({ kind, name, action: "failed", detail: message.split("\n")[0] ?? "" });
      log.warn(`could not reap ${kind} ${name}: ${message.split("\n")[0]}`);
    }
  };

  // 1. Stacks the engines know: a living owner's run is never reaped.
  const protectedNames = new Set<string>();
  let listingFailed = false;
  const stacks = await liveStacks(options.engines, (engine, error) => {
    listingFailed = true;
    const detail = messageOf(error).split("\n")[0] ?? "";
    items.push({ kind: "stack", name: `(${engine.name} engine)`, action: "failed", detail: `could not list its stacks: ${detail}` });
    log.warn(`could not list the ${engine.name} engine's stacks (${detail}); sweeping libvirt by prefix anyway`);
  });
  for (const { summary, engine } of stacks) {
    // A living owner is still working on it (`run` mid-scenario, `up` mid-boot). A kept VM's
    // owner has exited: that run is reapable.
    const owned = isAlive(summary.outputs.ownerPid, summary.outputs.ownerStart);
    if (owned || tooYoung(summary.stack)) {
      protectedNames.add(summary.stack);
      items.push({
        kind: "stack",
        name: summary.stack,
        action: "spared",
        detail: owned ? `its harness (pid ${summary.outputs.ownerPid}) is still working on it` : "younger than --older-than",
      });
      continue;
    }
    await act("stack", summary.stack, () => engine.destroy(summary.stack));
  }
  const spared = (runId: string) => protectedNames.has(runId);

  // 2. libvirt objects of a run's shape that no ledger explains (a crash before the first write).
  for (const name of await libvirt.names("domain")) {
    const runId = runIdOfObject(name, "domain");
    if (runId === undefined || spared(runId)) continue;
    const owner = await libvirt.domainOwner(name);
    if (owner === undefined) {
      // A domain boma-it makes carries its metadata from the first define: this one is someone else's.
      items.push({ kind: "domain", name, action: "spared", detail: "no boma-it metadata: not made by boma-it" });
      continue;
    }
    if (isAlive(owner.pid, owner.start)) {
      // A run of a living process that has not written its ledger yet, or owns it through another engine.
      items.push({ kind: "domain", name, action: "spared", detail: `its harness (pid ${owner.pid}) is alive` });
      protectedNames.add(runId);
      continue;
    }
    if (tooYoung(runId)) continue;
    await act("domain", name, async () => {
      await runner.run("virsh", ["-q", "-c", libvirt.uri, "destroy", name], { check: false });
      await runner.run("virsh", ["-q", "-c", libvirt.uri, "undefine", name, "--nvram"]);
    });
  }
  for (const name of await libvirt.names("network")) {
    const runId = runIdOfObject(name, "network");
    if (runId === undefined || spared(runId) || tooYoung(runId)) continue;
    await act("network", name, async () => {
      await runner.run("virsh", ["-q", "-c", libvirt.uri, "net-destroy", name], { check: false });
      // A transient network is gone once destroyed; a persistent one needs undefining too.
      const still = await libvirt.names("network");
      if (still.includes(name)) await runner.run("virsh", ["-q", "-c", libvirt.uri, "net-undefine", name]);
    });
  }
  // Volumes only in a run's own pool, and only those named after that run: another pool (the
  // default one, a user's) is never swept, whatever its volumes are called.
  for (const pool of await libvirt.names("pool")) {
    const runId = runIdOfObject(pool, "pool");
    if (runId === undefined || spared(runId) || tooYoung(runId)) continue;
    // A run's pool may hold files libvirt has not listed yet (a reset point's saved state).
    if (!options.dryRun && !heldBy(pool)) await runner.run("virsh", ["-q", "-c", libvirt.uri, "pool-refresh", pool], { check: false });
    const strangers: string[] = [];
    for (const volume of await libvirt.volumes(pool)) {
      if (runIdOfObject(volume, "volume") !== runId) {
        strangers.push(volume);
        continue;
      }
      await act("volume", `${pool}/${volume}`, async () => {
        await runner.run("virsh", ["-q", "-c", libvirt.uri, "vol-delete", volume, "--pool", pool]);
      });
    }
    if (strangers.length > 0) {
      // Deleting the pool would delete its folder with them: not ours to judge.
      items.push({
        kind: "pool",
        name: pool,
        action: "spared",
        detail: `it holds volumes boma-it does not make (${strangers.slice(0, 3).join(", ")}${strangers.length > 3 ? ", ..." : ""})`,
      });
      continue;
    }
    await act("pool", pool, async () => {
      await runner.run("virsh", ["-q", "-c", libvirt.uri, "pool-destroy", pool], { check: false });
      await runner.run("virsh", ["-q", "-c", libvirt.uri, "pool-delete", pool], { check: false });
      await runner.run("virsh", ["-q", "-c", libvirt.uri, "pool-undefine", pool]);
    });
  }

  for (const name of await libvirt.names("nwfilter")) {
    const runId = runIdOfObject(name, "nwfilter");
    if (runId === undefined || spared(runId) || tooYoung(runId)) continue;
    await act("nwfilter", name, async () => {
      await runner.run("virsh", ["-q", "-c", libvirt.uri, "nwfilter-undefine", name]);
    });
  }

  // 3. Files of a run's shape that libvirt no longer knows: a pool's folder, the NVRAM file.
  for (const [dir, kind] of [
    [options.libvirtImagesDir ?? "/var/lib/libvirt/images", "pool"],
    [options.libvirtNvramDir ?? "/var/lib/libvirt/qemu/nvram", "nvram"],
  ] as const) {
    for (const entry of await readdir(dir).catch(() => [] as string[])) {
      const runId = runIdOfObject(entry, kind);
      if (runId === undefined || spared(runId) || tooYoung(runId)) continue;
      await act("file", join(dir, entry), () => rm(join(dir, entry), { recursive: true, force: true }));
    }
  }

  // 3b. The egress allowlist's leftovers, root's alone (a run made them as root or with sudo):
  // nftables tables and DNS query logs named after runs.
  const asRoot = await (options.rootCommand ?? rootCommand)(runner);
  if (asRoot === undefined) {
    log.info("egress allowlist leftovers (nftables tables, DNS query logs) not looked at: that needs root or password-less sudo");
  } else {
    const tables = await runAsRoot(runner, asRoot, "nft", ["-j", "list", "tables"], { check: false, timeoutMs: 20_000 });
    for (const table of tables.failed ? [] : nftTables(tables.stdout)) {
      const runId = table.family === "inet" ? runIdOfObject(table.name, "nftTable") : undefined;
      if (runId === undefined || spared(runId) || tooYoung(runId)) continue;
      // The bare name, as every other object: the run lock's holder is matched on it.
      await act("nft", table.name, async () => {
        await runAsRoot(runner, asRoot, "nft", ["delete", "table", "inet", table.name]);
      });
    }
    const dnsmasqDir = options.libvirtDnsmasqDir ?? LIBVIRT_DNSMASQ_DIR;
    for (const entry of await readdir(dnsmasqDir).catch(() => [] as string[])) {
      const runId = runIdOfObject(entry, "dnsQueryLog");
      if (runId === undefined || spared(runId) || tooYoung(runId)) continue;
      await act("file", join(dnsmasqDir, entry), async () => {
        await runAsRoot(runner, asRoot, "rm", ["-f", join(dnsmasqDir, entry)]);
      });
    }
  }

  // 4. SSH master connections of runs nobody works on: a killed harness leaves its master to live
  // until it idles out or its VM is gone; the socket (named by the run id) says whose it is.
  const sockets = options.controlSocketDir ?? controlSocketDir();
  for (const entry of await readdir(sockets).catch(() => [] as string[])) {
    const runId = runIdOfObject(entry, "ssh");
    if (runId === undefined || spared(runId) || tooYoung(runId)) continue;
    await act("ssh", join(sockets, entry), () => endMaster(runner, join(sockets, entry)));
  }

  // 5. Run-scoped private keys of runs that are not live any more.
  // An engine that could not be listed may hold live runs: their keys stay. A living harness that
  // holds the run lock makes a run's keys before its stack is recorded: keys made since it took
  // the lock stay too (a second of slack for coarse file times).
  const liveRunDirs = new Set((await liveStacks(options.engines, () => undefined)).map(({ summary }) => summary.outputs.runDir));
  for (const keysDir of listingFailed ? [] : await runKeyDirs(options.runsDir)) {
    const runDir = keysDir.slice(0, -"/keys".length);
    if (liveRunDirs.has(runDir) || tooYoung(runDir)) continue;
    if (holder && ((await stat(keysDir).catch(() => undefined))?.mtimeMs ?? Infinity) >= holder.since - 1000) continue;
    await act("keys", keysDir, () => rm(keysDir, { recursive: true, force: true }));
    // A warm start's copy of a saved state (hundreds of MiB) that a killed run never restored.
    const warmCopy = join(runDir, WARM_START_COPY);
    if (
      await stat(warmCopy).then(
        () => true,
        () => false,
      )
    )
      await act("file", warmCopy, () => rm(warmCopy, { force: true }));
  }

  // 6. Golden images a killed maker left half made (gigabytes of a build's root file system).
  if (options.unfinishedImagesIn) {
    for (const entry of await readdir(options.unfinishedImagesIn).catch(() => [] as string[])) {
      if (!/^\.(build|pull)-/.test(entry)) continue;
      await act("file", join(options.unfinishedImagesIn, entry), () => rm(join(options.unfinishedImagesIn!, entry), { recursive: true, force: true }));
    }
  }

  // 7. Private folders of Ansible runs (task records, learnt secrets) a harness killed twice left:
  // this user's only (another's are theirs to sweep).
  if (options.privateTempIn) {
    const uid = process.getuid?.();
    for (const entry of await readdir(options.privateTempIn).catch(() => [] as string[])) {
      if (!/^boma-it-(tasks|learnt)-[A-Za-z0-9]{6}$/.test(entry)) continue;
      const folder = join(options.privateTempIn, entry);
      const stats = await lstat(folder).catch(() => undefined);
      if (!stats?.isDirectory() || (uid !== undefined && stats.uid !== uid)) continue;
      await act("file", folder, () => rm(folder, { recursive: true, force: true }));
    }
  }

  // 8. Half-saved first boots of a killed saver (saved states are kept: `image prune` clears them).
  if (options.unfinishedStatesIn) {
    for (const entry of await readdir(options.unfinishedStatesIn).catch(() => [] as string[])) {
      if (!entry.startsWith(WARM_STATE_SAVING_PREFIX)) continue;
      const folder = join(options.unfinishedStatesIn, entry);
      await act("file", folder, () => rm(folder, { recursive: true, force: true }));
    }
  }
  return items;
}

/** The tables `nft -j list tables` lists. */
function nftTables(json: string): { family: string; name: string }[] {
  try {
    const parsed = JSON.parse(json) as { nftables?: { table?: { family: string; name: string } }[] };
    return (parsed.nftables ?? []).flatMap((entry) => (entry.table ? [{ family: entry.table.family, name: entry.table.name }] : []));
  } catch {
    return [];
  }
}

/**
 * `keys/` folders of runs in a runs dir: `<run>/keys` and `<run>/<scenario>/keys` of run folders
 * (`<stamp>-<host>`), and of the runs inside fleet folders (`<stamp>-fleet-<name>/<run>`). No
 * other folder of the runs dir is looked into.
 */
async function runKeyDirs(runsDir: string): Promise<string[]> {
  const runFolders: string[] = [];
  for (const entry of await readdir(runsDir).catch(() => [] as string[])) {
    const shape = runsDirFolderShape(entry);
    if (shape === undefined) continue;
    runFolders.push(join(runsDir, entry));
    if (shape !== "fleet") continue;
    for (const inner of await readdir(join(runsDir, entry)).catch(() => [] as string[]))
      if (runsDirFolderShape(inner) === "run") runFolders.push(join(runsDir, entry, inner));
  }
  const found: string[] = [];
  for (const run of runFolders) {
    for (const candidate of [join(run, "keys"), ...["red", "green"].map((scenario) => join(run, scenario, "keys"))]) {
      if (
        await stat(candidate).then(
          (stats) => stats.isDirectory(),
          () => false,
        )
      )
        found.push(candidate);
    }
  }
  return found;
}
