/** Facts about local processes that engines, the lock and the reaper share. */
import { readFileSync } from "node:fs";

/** Whether a process of this pid exists (EPERM: it exists but belongs to someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * What tells a process from a later one with the same pid: the boot it runs in and the clock tick
 * it started at (`<boot id>/<ticks>`, from /proc). Undefined where /proc cannot tell (another OS,
 * a process that is gone).
 */
export function processStart(pid: number = process.pid): string | undefined {
  try {
    const bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 2 (the command name) may hold spaces and parentheses: fields are counted after its
    // last ")"; field 22 is the start time.
    const startTicks = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
    return bootId && startTicks && /^\d+$/.test(startTicks) ? `${bootId}/${startTicks}` : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether the process that recorded itself as (`pid`, `start`) still lives. A pid alone is not
 * enough: after the host rebooted, or the pids wrapped, another process may hold it, and a run or
 * lock it "owns" would never be reaped. When `start` was recorded and /proc can tell, the process
 * of that pid must be the one that started then. Without `start` (older records), any process of
 * that pid counts.
 */
export function ownerAlive(pid: number, start?: string): boolean {
  if (!processAlive(pid)) return false;
  if (start === undefined) return true;
  const current = processStart(pid);
  return current === undefined || current === start;
}

/** How the reaper and the lock ask whether an owner lives (replaceable in tests). */
export type OwnerCheck = (pid: number, start?: string) => boolean;
