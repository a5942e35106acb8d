/** `--engine auto|pulumi|direct`: which engine carries out the plan, and why, in one line. */
import { DirectEngine } from "../infra/engines/direct.ts";
import type { Engine } from "../infra/engines/engine.ts";
import type { Runner } from "../infra/runner.ts";
import type { EngineChoice } from "./cli/options.ts";
import { NotBuiltError } from "./errors.ts";

/** The engine chosen and the reason. */
export interface EngineDecision {
  engine: Engine;
  reason: string;
}

/** Picks the engine: pulumi when asked or when its CLI is on PATH (auto), else direct. */
export async function chooseEngine(choice: EngineChoice, runner: Runner, stacksDir: string): Promise<EngineDecision> {
  if (choice === "pulumi") throw new NotBuiltError("the pulumi engine", "issue 6; use --engine direct");
  const direct = new DirectEngine(runner, stacksDir);
  if (choice === "direct") return { engine: direct, reason: "engine: direct (asked for with --engine direct)" };
  const pulumi = await runner.which("pulumi");
  return {
    engine: direct,
    reason: pulumi
      ? `engine: direct (a pulumi CLI is at ${pulumi}, but the pulumi engine is not built yet: issue 6)`
      : "engine: direct (no pulumi CLI on PATH)",
  };
}

/** Every engine that may hold stacks (for status, down and reap). */
export function allEngines(runner: Runner, stacksDir: string): Engine[] {
  return [new DirectEngine(runner, stacksDir)];
}
