/**
 * A before/after picture of the guest around the reboot: firewall ruleset, listening sockets,
 * containers and failed units. The diff says what the reboot changed, which is usually the bug.
 */
import type { Machine } from "./machine.ts";

/** The lines of some output, trimmed and without blank ones. */
function linesOf(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

/**
 * What a snapshot holds, by name: the command that reads it in the guest (as root; a failure
 * reads as nothing, as it always has) and how its output is made comparable, here rather than in
 * the guest, where under TCG every program of a pipe costs 0.1-0.2 s.
 */
const SNAPSHOT_ITEMS = {
  // Counters change all the time; without them the diff shows only what the reboot changed.
  "nft ruleset": { command: "nft list ruleset || :", tidy: (text: string) => text.replace(/ ?counter packets \d+ bytes \d+/g, "") },
  "listening sockets": {
    command: "ss -Htln || :",
    tidy: (text: string) => [...new Set(linesOf(text).map((line) => line.split(/\s+/)[3] ?? ""))].sort().join("\n"),
  },
  containers: {
    command: "docker ps -a --format '{{.Names}} {{.Image}} {{.Status}}' 2>/dev/null || :",
    tidy: (text: string) =>
      linesOf(text)
        .map((line) => line.replace(/ (Up|Exited \(\d+\)|Created|Restarting).*/, " $1"))
        .sort()
        .join("\n"),
  },
  "failed units": {
    command: "systemctl list-units --failed --plain --no-legend --no-pager || :",
    tidy: (text: string) =>
      linesOf(text)
        .map((line) => line.split(/\s+/)[0]!)
        .join("\n"),
  },
} as const;

export type Snapshot = Record<keyof typeof SNAPSHOT_ITEMS, string>;

/** Lines added and removed between two pictures of one item. */
export interface SnapshotDiff {
  added: string[];
  removed: string[];
}

/** Takes the picture (its items through one command in the guest); an item that cannot be read says so instead of failing the run. */
export async function takeSnapshot(machine: Machine): Promise<Snapshot> {
  const items = Object.entries(SNAPSHOT_ITEMS);
  const results = await machine.executeEach(
    items.map(([, item]) => ({ command: item.command })),
    { timeoutMs: 60_000 },
  );
  return Object.fromEntries(
    items.map(([name, item], index) => {
      const result = results[index]!;
      return [name, result.exitCode === 0 ? item.tidy(result.stdout) : `(could not read: exit ${result.exitCode}: ${result.stderr.trim()})`];
    }),
  ) as Snapshot;
}

/** Line diff of each item (order-insensitive, blank lines ignored). */
export function diffSnapshots(before: Snapshot, after: Snapshot): Record<string, SnapshotDiff> {
  const diff: Record<string, SnapshotDiff> = {};
  for (const name of Object.keys(SNAPSHOT_ITEMS) as (keyof Snapshot)[]) {
    const lines = (text: string) => new Set(linesOf(text));
    const was = lines(before[name]);
    const now = lines(after[name]);
    diff[name] = { added: [...now].filter((line) => !was.has(line)), removed: [...was].filter((line) => !now.has(line)) };
  }
  return diff;
}
