/**
 * What a command of the CLI is: its name, help text, options and the function that runs it.
 * Commands never print their result: they return it, and the CLI prints text or JSON.
 */
import type { ParseArgsConfig } from "node:util";
import type { Runner } from "../../infra/runner.ts";
import type { ExitCode } from "../errors.ts";
import type { Log } from "../log.ts";
import type { ProfileLocations } from "../profile/load.ts";
import type { Redactor } from "../ansible/secrets.ts";
import type { ParsedArgs } from "./options.ts";

/** Everything a command gets from the CLI. */
export interface CommandContext {
  args: ParsedArgs;
  json: boolean;
  /** The step log (stderr). */
  log: Log;
  runner: Runner;
  env: NodeJS.ProcessEnv;
  locations: ProfileLocations;
  /** Resolved runs dir (`--runs-dir`, `$BOMA_IT_RUNS_DIR`, `~/integration-runs`). */
  runsDir: string;
  /** Aborted on the first Ctrl-C/SIGTERM. */
  signal: AbortSignal;
  /**
   * The invocation's secrets: the log, the runner and everything the CLI prints (results and
   * errors) redact through it, so a secret a command learns is hidden from then on.
   */
  redactor: Redactor;
  /** For a command that streams its result as it comes (`console --follow`); redacted like the rest. */
  stdout: { write(text: string): void };
}

/** What a command returns for the CLI to print. */
export interface CommandOutcome {
  /** One of the contract's codes; `ssh` passes the remote command's own code through. */
  exitCode: ExitCode | number;
  /** The JSON document printed with --json. */
  json: unknown;
  /** The human-readable result printed on stdout otherwise. */
  text: string;
}

/** One command of the contract. */
export interface CommandDefinition {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Usage line(s) without the program name. */
  usage: string;
  /** Longer help: what it does, options, exit codes specific to it. */
  details: string;
  /** Options beyond the common ones. */
  options: NonNullable<ParseArgsConfig["options"]>;
  run(context: CommandContext): Promise<CommandOutcome>;
}
