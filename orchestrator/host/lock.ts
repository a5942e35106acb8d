/**
 * The run lock: one harness at a time works on test VMs, on the whole machine (every checkout,
 * every stacks dir, every user). It is a kernel lock (flock) on one file, held by a small child
 * process that lives exactly as long as the harness (`tail --pid`): the kernel gives it to exactly
 * one taker however many race for it, and frees it when its holder dies, however it dies (SIGKILL,
 * a crash, a power cut): there is no stale lock to judge or take over. The file also says who
 * holds it (pid and start, since when, which runs), for messages and for the reaper, which spares
 * whatever the holder made. Who holds it is read from /proc/locks, never by taking it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmod, open, readFile, stat, writeFile } from "node:fs/promises";
import { ownerAlive, processStart } from "../../infra/process.ts";
import { RefusedError } from "../errors.ts";

/** Who holds the run lock, as the holder wrote it. */
export interface LockHolder {
  pid: number;
  /** When that process started (see `processStart`), when /proc could tell. */
  start?: string;
  /** Milliseconds since the epoch at which it took the lock. */
  since: number;
  /** What it is doing: `run`, `up`, a verb on a kept run. */
  purpose: string;
  /** The runs it works on (claimed as they are named). */
  runIds: string[];
}

/** A held run lock. */
export interface RunLock {
  path: string;
  /** When it was taken (ms since the epoch). */
  since: number;
  /** Records that the holder works on `runId` (the reaper spares it, messages name it). */
  claim(runId: string): Promise<void>;
  /** Frees the lock (idempotent). */
  release(): Promise<void>;
}

/** Exit codes of the holder's shell: the file could not be opened; another process holds the lock. */
const CANNOT_OPEN = 74;
const HELD = 75;

/**
 * Takes the run lock or refuses (exit 3) naming its holder. The file is made if missing (mode
 * 0666: another user's harness must be able to open it too) and opened without O_CREAT (a sticky
 * /run/lock refuses O_CREAT on another user's file).
 */
export async function acquireRunLock(path: string, purpose: string): Promise<RunLock> {
  return acquireLock(path, purpose, 0);
}

/**
 * Runs `body` under the run lock (taken as {@link acquireRunLock} takes it, claiming `runId` when
 * the work is on a run) and releases it on every exit path.
 */
export async function underRunLock<T>(path: string, purpose: string, runId: string | undefined, body: () => Promise<T>): Promise<T> {
  const lock = await acquireRunLock(path, purpose);
  try {
    if (runId !== undefined) await lock.claim(runId);
    return await body();
  } finally {
    await lock.release();
  }
}

/**
 * Takes a lock like the run lock, waiting up to `waitSeconds` for its holder to let go (0: not
 * at all); refuses (exit 3) naming the holder when it does not.
 */
export async function acquireLock(path: string, purpose: string, waitSeconds: number): Promise<RunLock> {
  await ensureLockFile(path);
  const wait = waitSeconds > 0 ? `-w ${Math.ceil(waitSeconds)}` : "-n";
  const holder = spawn(
    "sh",
    [
      "-c",
      `exec 9<"$1" || exit ${CANNOT_OPEN}; flock ${wait} -E ${HELD} 9 || exit ${HELD}; echo locked; exec tail --pid="$2" -f /dev/null`,
      "boma-it-lock",
      path,
      String(process.pid),
    ],
    {
      // A process group of its own: the terminal's Ctrl-C must not free the lock while we clean up.
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const outcome = await new Promise<{ locked: true } | { locked: false; code: number | null; stderr: string }>((resolve) => {
    let stderr = "";
    holder.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    holder.stdout!.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("locked")) resolve({ locked: true });
    });
    holder.once("exit", (code) => resolve({ locked: false, code, stderr }));
    holder.once("error", (error) => resolve({ locked: false, code: null, stderr: error.message }));
  });
  if (!outcome.locked) {
    if (outcome.code === HELD) {
      const current = await runLockHolder(path);
      const who =
        current && current.pid > 0
          ? ` (pid ${current.pid}, ${current.purpose}${current.runIds.length > 0 ? ` of ${current.runIds.join(", ")}` : ""}, since ${new Date(current.since).toISOString()})`
          : "";
      throw new RefusedError(
        `another boma-it run${who} holds the run lock ${path}: boma-it works on one test VM at a time`,
        "wait for it, or see `npm run boma-it -- status`",
      );
    }
    throw new RefusedError(
      `cannot take the run lock ${path}: ${outcome.stderr.trim() || `exit ${outcome.code}`}`,
      "make it readable to every boma-it user, or point BOMA_IT_RUN_LOCK at a file that is",
    );
  }
  holder.stdout!.destroy();
  holder.stderr!.destroy();
  holder.unref();
  const since = Date.now();
  const info: LockHolder = { pid: process.pid, ...startOf(), since, purpose, runIds: [] };
  await writeHolder(path, info);
  let released = false;
  // One write at a time: two claims at once (scenarios side by side) must not interleave a
  // truncate and a write, or the file a reaper reads is no JSON and the live runs look ownerless.
  let writing: Promise<void> = Promise.resolve();
  return {
    path,
    since,
    claim: async (runId) => {
      if (info.runIds.includes(runId)) return;
      info.runIds.push(runId);
      const write = writing.catch(() => undefined).then(() => writeHolder(path, info));
      writing = write;
      await write;
    },
    release: async () => {
      if (released) return;
      released = true;
      await writing.catch(() => undefined);
      await writeHolder(path, undefined);
      await stopHolder(holder);
    },
  };
}

/** Who holds the lock at `path` now, or undefined when nobody does (read from /proc/locks; the lock is never touched). */
export async function runLockHolder(path: string): Promise<LockHolder | undefined> {
  // The lock outlives a killed harness by up to a second (its holder polls once a second for
  // it), and a new holder writes its words just after it takes the lock: look again for a while.
  const deadline = Date.now() + HOLDER_SETTLE_MS;
  for (;;) {
    if (!(await flockHeld(path))) return undefined;
    const written = await readHolder(path);
    // The file's words count only while the harness that wrote them lives.
    if (written && ownerAlive(written.pid, written.start)) return written;
    if (Date.now() >= deadline) return { pid: 0, since: 0, purpose: "an unknown boma-it command", runIds: [] };
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** How long a held lock without a living writer is watched before its holder counts as unknown. */
const HOLDER_SETTLE_MS = 3_000;

function startOf(): { start?: string } {
  const start = processStart();
  return start !== undefined ? { start } : {};
}

async function ensureLockFile(path: string): Promise<void> {
  try {
    await writeFile(path, "", { flag: "wx", mode: 0o666 });
    // The umask took write from the others: give it back, so their harnesses can say who they are.
    await chmod(path, 0o666);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST")
      throw new RefusedError(`cannot make the run lock ${path}: ${(error as Error).message}`, "point BOMA_IT_RUN_LOCK at a file in a folder you can write");
  }
}

/** Writes who holds the lock into its file (best effort: a file of another user may be read-only to us). */
async function writeHolder(path: string, info: LockHolder | undefined): Promise<void> {
  const handle = await open(path, "r+").catch(() => undefined);
  if (!handle) return;
  try {
    await handle.truncate(0);
    if (info) await handle.write(`${JSON.stringify(info)}\n`, 0);
  } finally {
    await handle.close();
  }
}

async function readHolder(path: string): Promise<LockHolder | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, "utf8")) as LockHolder;
    return Number.isInteger(parsed.pid) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a flock write lock is held on `path`, from /proc/locks (its pid column names the
 * `flock` process that took it, long gone: the lock lives on in the holder's inherited fd).
 */
async function flockHeld(path: string): Promise<boolean> {
  const stats = await stat(path).catch(() => undefined);
  if (!stats) return false;
  const major = Number((BigInt(stats.dev) >> 8n) & 0xfffn) | Number((BigInt(stats.dev) >> 32n) & ~0xfffn);
  const minor = Number(BigInt(stats.dev) & 0xffn) | Number((BigInt(stats.dev) >> 12n) & ~0xffn);
  const device = `${major.toString(16).padStart(2, "0")}:${minor.toString(16).padStart(2, "0")}:${stats.ino}`;
  for (const line of (await readFile("/proc/locks", "utf8").catch(() => "")).split("\n")) {
    const fields = line.trim().split(/\s+/);
    // "1: FLOCK  ADVISORY  WRITE 12345 00:2b:1234 0 EOF" (blocked waiters are marked "->")
    if (fields[1] === "FLOCK" && fields[3] === "WRITE" && fields[5] === device) return true;
  }
  return false;
}

async function stopHolder(holder: ChildProcess): Promise<void> {
  if (holder.exitCode !== null || holder.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => holder.once("exit", () => resolve()));
  holder.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, 2000)))]);
  clearTimeout(timer);
}
