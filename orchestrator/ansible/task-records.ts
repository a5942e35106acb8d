/**
 * How each task of a play ended, as boma-it's callback records it (callbacks/boma_it.py): a JSON
 * line per task in a private folder the jail may write, read back by the harness only while it is
 * a regular file, redacted and cut. What a verify playbook asserted and what a second apply
 * changed are read from here (verify.ts), never parsed from the screen.
 */
import { chmod, lstat, mkdtemp, open, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { privateTempBase } from "../host/paths.ts";
import type { RunSecrets } from "./secrets.ts";

/** How one task ended on the host, as boma-it's callback recorded it (callbacks/boma_it.py). */
export interface TaskOutcome {
  /** The task's name as Ansible prints it (`role : name`). */
  task: string;
  /** The module or action (`ansible.builtin.assert`, `command`). */
  action: string;
  handler: boolean;
  status: "ok" | "changed" | "failed" | "skipped" | "unreachable";
  /** A failure the play said to ignore (`ignore_errors`). */
  ignored: boolean;
  /** The result's message, redacted. */
  msg: string;
  /** An assert's failed condition, redacted. */
  assertion?: string;
}

/**
 * Where boma-it's callback writes each task's outcome (a JSON line each), in a private folder of
 * memory-backed storage (a message may hold a secret until it is redacted), never the run dir;
 * `read` parses and redacts what was written.
 */
export async function taskRecords(
  secrets: RunSecrets,
): Promise<{ folder: string; file: string; read: () => Promise<TaskOutcome[]>; cleanup: () => Promise<void> }> {
  const folder = await mkdtemp(join(await privateTempBase(), "boma-it-tasks-"));
  const file = join(folder, "tasks.jsonl");
  await writeFile(file, "", { mode: 0o600 });
  return {
    folder,
    file,
    read: () => readTaskRecords(file, secrets.redact),
    cleanup: () => removeJailWritable(folder),
  };
}

/**
 * Removes a folder the jail could write: when a plain removal fails (the jail made a folder in it
 * unreadable), every folder in it is made the owner's again first (links are never followed).
 */
async function removeJailWritable(folder: string): Promise<void> {
  try {
    await rm(folder, { recursive: true, force: true });
    return;
  } catch {
    // Below: give every folder its owner's rights back, then remove.
  }
  const reopen = async (path: string): Promise<void> => {
    const stats = await lstat(path).catch(() => undefined);
    if (!stats?.isDirectory()) return;
    await chmod(path, 0o700);
    for (const name of await readdir(path)) await reopen(join(path, name));
  };
  await reopen(folder);
  await rm(folder, { recursive: true, force: true });
}

/** The most of a task's message (or name) kept: a check's detail is a line, a report is not a log. */
const MESSAGE_LIMIT = 2000;

/** The most of the records file that is read: a play's records are kilobytes. */
const TASK_RECORDS_LIMIT_BYTES = 16 * 1024 * 1024;

/**
 * The task outcomes in a records file, read only when it is still a regular file (the jail could
 * write that folder: a FIFO would hang the harness, a link would point it elsewhere), and at most
 * {@link TASK_RECORDS_LIMIT_BYTES}; redacted. The jail's processes are gone by then (bubblewrap
 * ends them with the play).
 */
export async function readTaskRecords(file: string, redact: (text: string) => string): Promise<TaskOutcome[]> {
  return parseTaskRecords(await readRecordsFile(file), redact);
}

async function readRecordsFile(file: string): Promise<string> {
  const stats = await lstat(file).catch(() => undefined);
  if (!stats?.isFile()) return "";
  const handle = await open(file, "r");
  try {
    const buffer = Buffer.alloc(Math.min(stats.size, TASK_RECORDS_LIMIT_BYTES));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead).toString("utf8");
  } finally {
    await handle.close();
  }
}

/** The JSON lines boma-it's callback wrote, each message redacted; a line that is not one is left out. */
export function parseTaskRecords(text: string, redact: (text: string) => string): TaskOutcome[] {
  const statuses = new Set(["ok", "changed", "failed", "skipped", "unreachable"]);
  // Redacted whole, then cut (a secret cut in two would escape redaction), on one line (a name
  // or message with a newline must not forge a line of the run's log).
  const clean = (value: string) => {
    const one = [...redact(value)].map((char) => (char < " " || char === "\u007f" ? " " : char)).join("");
    return one.length > MESSAGE_LIMIT ? `${one.slice(0, MESSAGE_LIMIT)}…` : one;
  };
  const outcomes: TaskOutcome[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (typeof entry.task !== "string" || typeof entry.status !== "string" || !statuses.has(entry.status)) continue;
    outcomes.push({
      task: clean(entry.task),
      action: typeof entry.action === "string" ? clean(entry.action) : "",
      handler: entry.handler === true,
      status: entry.status as TaskOutcome["status"],
      ignored: entry.ignored === true,
      msg: typeof entry.msg === "string" ? clean(entry.msg) : "",
      ...(typeof entry.assertion === "string" ? { assertion: clean(entry.assertion) } : {}),
    });
  }
  return outcomes;
}
