/**
 * Errors of the infra layer. The orchestrator maps them onto the CLI's vocabulary; infra never
 * decides exit codes or how anything prints.
 */

/** Creating a stack failed (or was aborted); what it created was rolled back where it could be. */
export class ProvisionError extends Error {
  /** The creation was stopped through the AbortSignal (Ctrl-C). */
  readonly aborted: boolean;
  /** Everything created was deleted again (false: the ledger/state still lists leftovers). */
  readonly rolledBack: boolean;
  constructor(message: string, options: { cause?: unknown; aborted: boolean; rolledBack: boolean }) {
    super(message, { cause: options.cause });
    this.name = "ProvisionError";
    this.aborted = options.aborted;
    this.rolledBack = options.rolledBack;
  }
}

/** Destroying a stack left something behind; `failures` says what and why. */
export class TeardownError extends Error {
  readonly failures: readonly string[];
  constructor(stack: string, failures: readonly string[]) {
    super(`teardown of ${stack} left ${failures.length} thing(s) behind:\n${failures.map((line) => `  - ${line}`).join("\n")}`);
    this.name = "TeardownError";
    this.failures = failures;
  }
}

/** No stack of that name is known to the engine. */
export class StackNotFoundError extends Error {
  constructor(stack: string) {
    super(`no stack named ${stack}`);
    this.name = "StackNotFoundError";
  }
}

/** The message of anything thrown. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The message of anything thrown in one line: its first line, and its last when there are more (a failed command's last output). */
export function briefOf(error: unknown): string {
  const lines = messageOf(error)
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  return lines.length > 1 ? `${lines[0]} ${lines.at(-1)}` : (lines[0] ?? "");
}
