/**
 * The run lock: one harness at a time provisions a test VM, across processes. A lock file holds
 * the owner's pid and when it started; a lock whose owner died is stale and is taken over (and
 * removed by reap). The start matters after a crash of the host: the lock file outlives it, and
 * the pid may then belong to any process of the next boot.
 */
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { RefusedError } from "../errors.ts";
import { ownerAlive, processStart, type OwnerCheck } from "../../infra/process.ts";

/** The lock file under the stacks dir. */
export function lockPath(stacksDir: string): string {
  return join(stacksDir, "run.lock");
}

/** Takes the lock or refuses (exit 3) naming the living owner; returns the release function. */
export async function acquireRunLock(stacksDir: string, isAlive: OwnerCheck = ownerAlive): Promise<() => Promise<void>> {
  const path = lockPath(stacksDir);
  await mkdir(stacksDir, { recursive: true });
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      await writeFile(path, `${process.pid}\n${processStart() ?? ""}\n`, { flag: "wx", mode: 0o600 });
      return async () => {
        // Only our own lock is ours to remove.
        if ((await readOwner(path))?.pid === process.pid) await rm(path, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = await readOwner(path);
      if (owner !== undefined && owner.pid !== process.pid && isAlive(owner.pid, owner.start)) {
        throw new RefusedError(
          `another boma-it run (pid ${owner.pid}) is provisioning a test VM: boma-it runs one at a time`,
          "wait for it, or see `npm run boma-it -- status`",
        );
      }
      // Stale: its owner is gone. Remove it and try again.
      await rm(path, { force: true });
    }
  }
  throw new RefusedError(`could not take the run lock ${path}`, "see who holds it, or run `npm run reap`");
}

/** Removes the lock when its owner is dead; returns whether it did. */
export async function removeStaleLock(stacksDir: string, isAlive: OwnerCheck = ownerAlive): Promise<boolean> {
  const path = lockPath(stacksDir);
  const owner = await readOwner(path);
  if (owner === undefined || isAlive(owner.pid, owner.start)) return false;
  await rm(path, { force: true });
  return true;
}

/** Since when (ms since the epoch) a living harness holds the run lock; undefined when none does. */
export async function lockHeldSince(stacksDir: string, isAlive: OwnerCheck = ownerAlive): Promise<number | undefined> {
  const path = lockPath(stacksDir);
  const owner = await readOwner(path);
  if (owner === undefined || !isAlive(owner.pid, owner.start)) return undefined;
  return (await stat(path).catch(() => undefined))?.mtimeMs;
}

/** The lock's owner: its pid and, when recorded (a second line; older locks have none), its start. */
async function readOwner(path: string): Promise<{ pid: number; start?: string } | undefined> {
  try {
    const [pidLine = "", startLine = ""] = (await readFile(path, "utf8")).split("\n");
    const pid = Number(pidLine.trim());
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    return startLine.trim() ? { pid, start: startLine.trim() } : { pid };
  } catch {
    return undefined;
  }
}
