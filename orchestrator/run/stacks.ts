/**
 * Live runs: finding them across engines, resolving a `<run>` argument, tearing one down, and
 * mapping infra failures onto the CLI's error vocabulary.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { Engine, StackSummary } from "../../infra/engines/engine.ts";
import { BadInputError } from "../errors.ts";
import type { Log } from "../log.ts";

/** A live run and the engine that holds it. */
export interface LiveStack {
  summary: StackSummary;
  engine: Engine;
}

/** Every stack of every engine. */
export async function liveStacks(engines: readonly Engine[], onListError?: (engine: Engine, error: unknown) => void): Promise<LiveStack[]> {
  const found: LiveStack[] = [];
  for (const engine of engines) {
    let summaries: StackSummary[];
    try {
      summaries = await engine.list();
    } catch (error) {
      // Without a handler a listing failure is the caller's failure; reap goes on with its sweep.
      if (!onListError) throw error;
      onListError(engine, error);
      continue;
    }
    for (const summary of summaries) found.push({ summary, engine });
  }
  return found.sort((a, b) => a.summary.stack.localeCompare(b.summary.stack));
}

/**
 * Resolves `<run>`: a run id, its stamp or run dir name, or any unique part of the id. Without a
 * reference, the only live run.
 */
export function resolveRun(stacks: readonly LiveStack[], reference: string | undefined, command: string): LiveStack {
  const ids = stacks.map((stack) => stack.summary.stack);
  if (reference === undefined) {
    if (stacks.length === 1) return stacks[0]!;
    throw new BadInputError({
      message:
        stacks.length === 0
          ? `no live run to ${command}`
          : `${stacks.length} live runs; name one: ${ids.join(", ")}`,
    });
  }
  const exact = stacks.find((stack) => stack.summary.stack === reference || stack.summary.outputs.runDir.endsWith(`/${reference}`));
  if (exact) return exact;
  const partial = stacks.filter((stack) => stack.summary.stack.includes(reference));
  if (partial.length === 1) return partial[0]!;
  throw new BadInputError({
    message:
      partial.length === 0
        ? `no live run matches ${JSON.stringify(reference)}; expected one of ${ids.length > 0 ? ids.join(", ") : "(none live: see `boma-it status`)"}`
        : `${JSON.stringify(reference)} matches ${partial.length} runs: ${partial.map((stack) => stack.summary.stack).join(", ")}`,
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
