/**
 * A before/after picture of the guest around the reboot: firewall ruleset, listening sockets,
 * containers and failed units. The diff says what the reboot changed, which is usually the bug.
 */
import type { Machine } from "./machine.ts";

/** What a snapshot holds, by name. */
export const SNAPSHOT_COMMANDS = {
  // Counters change all the time; without them the diff shows only what the reboot changed.
  "nft ruleset": "nft list ruleset | sed -E 's/ ?counter packets [0-9]+ bytes [0-9]+//'",
  "listening sockets": "ss -Htln | awk '{print $4}' | sort -u",
  containers: "docker ps -a --format '{{.Names}} {{.Image}} {{.Status}}' 2>/dev/null | sed -E 's/ (Up|Exited \\([0-9]+\\)|Created|Restarting).*/ \\1/' | sort",
  "failed units": "systemctl list-units --failed --plain --no-legend --no-pager | awk '{print $1}'",
} as const;

export type Snapshot = Record<keyof typeof SNAPSHOT_COMMANDS, string>;

/** Lines added and removed between two pictures of one item. */
export interface SnapshotDiff {
  added: string[];
  removed: string[];
}

/** Takes the picture (its items through one command in the guest); an item that cannot be read says so instead of failing the run. */
export async function takeSnapshot(machine: Machine): Promise<Snapshot> {
  const items = Object.entries(SNAPSHOT_COMMANDS);
  const results = await machine.executeEach(
    items.map(([, command]) => ({ command })),
    { timeoutMs: 60_000 },
  );
  return Object.fromEntries(
    items.map(([name], index) => {
      const result = results[index]!;
      return [name, result.exitCode === 0 ? result.stdout : `(could not read: exit ${result.exitCode}: ${result.stderr.trim()})`];
    }),
  ) as Snapshot;
}

/** Line diff of each item (order-insensitive, blank lines ignored). */
export function diffSnapshots(before: Snapshot, after: Snapshot): Record<string, SnapshotDiff> {
  const diff: Record<string, SnapshotDiff> = {};
  for (const name of Object.keys(SNAPSHOT_COMMANDS) as (keyof Snapshot)[]) {
    const lines = (text: string) =>
      new Set(
        text
          .split("\n")
          .map((line) => line.trim())
          .filter(Boolean),
      );
    const was = lines(before[name]);
    const now = lines(after[name]);
    diff[name] = { added: [...now].filter((line) => !was.has(line)), removed: [...was].filter((line) => !now.has(line)) };
  }
  return diff;
}
