/**
 * Live runs: finding them anywhere on this host (through this checkout's engines, and through
 * libvirt and each run's own record, run.json, for runs made from another checkout or stacks
 * dir), resolving a `<run>` argument, tearing one down.
 */
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { DirectEngine } from "../../infra/engines/direct.ts";
import { liveStacks, type Engine, type EngineName, type StackSummary } from "../../infra/engines/engine.ts";
import type { StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import { PREFIX } from "../../infra/spec.ts";
import { BadInputError } from "../errors.ts";
import type { Libvirt } from "../host/libvirt.ts";
import type { ResetPoint } from "../host/reset-point.ts";
import type { Log } from "../log.ts";
import type { ProfileArgs } from "../profile/load.ts";
import { closest } from "../did-you-mean.ts";

/** What a run records about itself next to its console (run.json), for whoever finds it later. */
export interface RunRecord extends StackOutputs {
  engine: EngineName;
  /** The stacks dir its stack lives in. */
  stacksDir?: string;
  /** The profile it was made from (a file), the command and the cert tier. */
  profile?: string;
  /** Or, for a run without a profile file, what the profile was made of. */
  synthesized?: ProfileArgs;
  purpose?: string;
  /** The scenario whose vars it was applied with. */
  scenario?: "red" | "green";
  certs?: string;
  /** The run was made without egress (`--no-egress`). */
  noEgress?: boolean;
  /** What its VM may reach: an allowlist, open, or none (absent in runs made before the allowlist: open). */
  egress?: "allowlist" | "open" | "none";
  /** The run's report.json. */
  reportFile?: string;
  /** Where `reset` takes the VM back to (see host/reset-point.ts), when the run took one. */
  resetPoint?: ResetPoint;
  /** Several hosts: the scenario's VMs (run id, run dir), the first's (whose stack holds the network) first; kept and taken down as one run. */
  topology?: { host: string; runId: string; runDir: string }[];
}

/** A live run found on this host. */
export interface FoundRun {
  runId: string;
  outputs: StackOutputs;
  /** As its engine lists it, or "running" for a domain only libvirt and its record know of. */
  state: StackSummary["state"] | "running";
  /** The engine that holds its stack, when this host can reach it. */
  engine: Engine | undefined;
  /** Where its stack lives when not in this checkout's stacks dir. */
  elsewhere: string | undefined;
  record: RunRecord | undefined;
}

/** Reads a run's record (run.json in its run dir); undefined when missing or unreadable (another user's run dir). */
export async function readRunRecord(runDir: string): Promise<RunRecord | undefined> {
  try {
    return JSON.parse(await readFile(join(runDir, "run.json"), "utf8")) as RunRecord;
  } catch {
    return undefined;
  }
}

/**
 * Every live run on this host: the stacks of this checkout's engines, and every `boma-it-` domain
 * libvirt has whose run dir (from the domain's metadata) holds a record; a run made from another
 * stacks dir gets that dir's engine, so `down` works from anywhere.
 */
export async function findRuns(engines: readonly Engine[], runner: Runner, libvirt: Libvirt | undefined, ourStacksDir: string): Promise<FoundRun[]> {
  const found = new Map<string, FoundRun>();
  for (const { summary, engine } of await liveStacks(engines)) {
    found.set(summary.stack, {
      runId: summary.stack,
      outputs: summary.outputs,
      state: summary.state,
      engine,
      elsewhere: undefined,
      record: await readRunRecord(summary.outputs.runDir),
    });
  }
  if (!libvirt) return [...found.values()];
  for (const name of await libvirt.names("domain")) {
    if (!name.startsWith(PREFIX) || found.has(name)) continue;
    const runDir = await libvirt.domainRunDir(name);
    const record = runDir ? await readRunRecord(runDir) : undefined;
    if (!record) continue;
    let engine: Engine | undefined;
    let state: FoundRun["state"] = "running";
    if (record.engine === "direct" && record.stacksDir && record.stacksDir !== ourStacksDir) {
      engine = new DirectEngine(runner, record.stacksDir);
      const summary = (await engine.list().catch(() => [])).find((stack) => stack.stack === name);
      if (summary) state = summary.state;
      else engine = undefined;
    }
    found.set(name, { runId: name, outputs: record, state, engine, elsewhere: record.stacksDir ?? runDir, record });
  }
  return [...found.values()].sort((a, b) => a.runId.localeCompare(b.runId));
}

/**
 * Resolves `<run>`: a run id, its stamp or run dir name, or any unique part of the id. Without a
 * reference, the only live run. A typo gets the closest run id.
 */
export function resolveRun<T extends { runId: string; outputs: Pick<StackOutputs, "runDir"> }>(
  runs: readonly T[],
  reference: string | undefined,
  command: string,
): T {
  const ids = runs.map((run) => run.runId);
  if (reference === undefined) {
    if (runs.length === 1) return runs[0]!;
    throw new BadInputError({
      message:
        runs.length === 0 ? `no live run to ${command} (see \`boma-it status\`)` : `${runs.length} live runs; name the one to ${command}: ${ids.join(", ")}`,
    });
  }
  const exact = runs.find((run) => run.runId === reference || run.outputs.runDir.endsWith(`/${reference}`) || run.outputs.runDir.includes(`/${reference}/`));
  if (exact) return exact;
  const partial = runs.filter((run) => run.runId.includes(reference));
  if (partial.length === 1) return partial[0]!;
  if (partial.length > 1)
    throw new BadInputError({
      message: `${JSON.stringify(reference)} matches ${partial.length} runs: ${partial.map((run) => run.runId).join(", ")}; name one`,
    });
  const hint = closest(reference, ids);
  throw new BadInputError({
    message:
      ids.length === 0
        ? `no live run matches ${JSON.stringify(reference)}: there is none (see \`boma-it status\`)`
        : `no live run matches ${JSON.stringify(reference)}; the live ones are ${ids.join(", ")}${hint ? ` (did you mean ${hint}?)` : ""}`,
  });
}

/** Destroys a run's stack and its run-scoped keys; the run dir's logs stay. */
export async function teardown(engine: Engine, stack: string, runDir: string | undefined, log: Log): Promise<void> {
  await log.step(`teardown ${stack}`, async () => {
    await engine.destroy(stack, {
      onEvent: (event) => {
        if (event.state === "done") log.info(`deleted ${event.resource} (${event.seconds?.toFixed(1)} s)`);
        if (event.state === "failed") log.warn(`deleting ${event.resource} failed${event.detail ? `: ${event.detail}` : ""}`);
      },
      onOutput: (line) => log.info(`  pulumi │ ${line}`),
    });
    // The private keys only ever served this VM; the logs stay for reading.
    if (runDir) await rm(join(runDir, "keys"), { recursive: true, force: true });
  });
}
