/** `--engine auto|pulumi|direct`: which engine carries out the plan, and why, in one line. */
import { DirectEngine } from "../../infra/engines/direct.ts";
import type { Engine } from "../../infra/engines/engine.ts";
import { pulumiInstallHint } from "../../infra/engines/pulumi-setup.ts";
import type { Runner } from "../../infra/runner.ts";
import { RefusedError } from "../errors.ts";

export const ENGINES = ["auto", "pulumi", "direct"] as const;
/** Who creates and destroys the stack: pulumi where its CLI is found (auto), or direct. */
export type EngineChoice = (typeof ENGINES)[number];

/** The engine chosen and the reason. */
export interface EngineDecision {
  engine: Engine;
  reason: string;
}

/** Picks the engine: pulumi when asked or when its CLI is on PATH (auto), else direct. */
export async function chooseEngine(choice: EngineChoice, runner: Runner, stacksDir: string): Promise<EngineDecision> {
  if (choice === "direct") return { engine: new DirectEngine(runner, stacksDir), reason: "engine: direct (asked for with --engine direct)" };
  const cli = await runner.which("pulumi");
  if (cli) {
    const why = choice === "pulumi" ? "asked for with --engine pulumi" : "auto: a pulumi CLI is on PATH";
    return { engine: await pulumiEngine(runner, stacksDir, cli), reason: `engine: pulumi (${why}: ${cli})` };
  }
  if (choice === "pulumi") throw new RefusedError("--engine pulumi: no pulumi CLI on PATH", pulumiInstallHint(stacksDir));
  return { engine: new DirectEngine(runner, stacksDir), reason: "engine: direct (auto: no pulumi CLI on PATH)" };
}

/**
 * Every engine that may hold stacks (for status, ssh, down and reap): the direct engine always,
 * the pulumi engine when a CLI can read its backend.
 */
export async function allEngines(runner: Runner, stacksDir: string): Promise<Engine[]> {
  const engines: Engine[] = [new DirectEngine(runner, stacksDir)];
  const cli = await runner.which("pulumi");
  if (cli) engines.push(await pulumiEngine(runner, stacksDir, cli));
  return engines;
}

/** The pulumi engine, loaded only when a CLI exists: the Automation API costs ~130 MiB and ~0.3 s. */
export async function pulumiEngine(runner: Runner, stacksDir: string, cli: string): Promise<Engine & { ensureUsable(): Promise<string> }> {
  const { PulumiEngine } = await import("../../infra/engines/pulumi.ts");
  return new PulumiEngine({ runner, stacksDir, cli });
}
