/**
 * The run lock: one harness at a time provisions a test VM, across processes. A lock file holds
 * the owner's pid; a lock whose owner died is stale and is taken over (and removed by reap).
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { RefusedError } from "./errors.ts";
import { processAlive } from "../infra/process.ts";

/** The lock file under the stacks dir. */
export function lockPath(stacksDir: string): string {
  return join(stacksDir, "run.lock");
}

/** Takes the lock or refuses (exit 3) naming the living owner; returns the release function. */
export async function acquireRunLock(stacksDir: string, isAlive: (pid: number) => boolean = processAlive): Promise<() => Promise<void>> {
  const path = lockPath(stacksDir);
  await mkdir(stacksDir, { recursive: true });
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
      return async () => {
        // Only our own lock is ours to remove.
        if ((await readOwner(path)) === process.pid) await rm(path, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = await readOwner(path);
      if (owner !== undefined && owner !== process.pid && isAlive(owner)) {
        throw new RefusedError(
          `another boma-it run (pid ${owner}) is provisioning a test VM: boma-it runs one at a time`,
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
export async function removeStaleLock(stacksDir: string, isAlive: (pid: number) => boolean = processAlive): Promise<boolean> {
  const path = lockPath(stacksDir);
  const owner = await readOwner(path);
  if (owner === undefined || isAlive(owner)) return false;
  await rm(path, { force: true });
  return true;
}

async function readOwner(path: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(path, "utf8")).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
