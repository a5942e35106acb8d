/**
 * What an engine is: it carries out a {@link Plan} (create in order, delete in reverse) and
 * lists the stacks it holds. Engines take hooks and an AbortSignal; they never print.
 */
import type { Plan, StackOutputs } from "../plan.ts";

/** Progress of one resource. */
export interface ResourceEvent {
  resource: string;
  action: "create" | "delete";
  state: "start" | "done" | "failed" | "skipped";
  seconds?: number;
  detail?: string;
}

/** Options of {@link Engine.up} and {@link Engine.destroy}. */
export interface EngineOptions {
  /** Cancels creation; what exists is then rolled back. Ignored by destroy (it always finishes). */
  signal?: AbortSignal;
  onEvent?: (event: ResourceEvent) => void;
  /** Engine output lines (pulumi's stream) for the progress display. */
  onOutput?: (line: string) => void;
}

/** A stack as an engine lists it. */
export interface StackSummary {
  stack: string;
  engine: EngineName;
  /** `creating` (or crashed while creating), `up`, or `destroying` (or crashed while destroying). */
  state: "creating" | "up" | "destroying";
  outputs: StackOutputs;
}

export type EngineName = "direct" | "pulumi";

/** An engine that carries out plans. */
export interface Engine {
  readonly name: EngineName;
  /** Creates every resource of the plan in order; on failure or abort, deletes what it made. */
  up(plan: Plan, options?: EngineOptions): Promise<StackOutputs>;
  /** Deletes every resource of a stack in reverse and forgets the stack. */
  destroy(stack: string, options?: EngineOptions): Promise<void>;
  /** The stacks this engine holds. */
  list(): Promise<StackSummary[]>;
}

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
