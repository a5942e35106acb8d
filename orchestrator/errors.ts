import { PulumiUnavailableError } from "../infra/engines/pulumi-setup.ts";
import { ProvisionError, TeardownError } from "../infra/errors.ts";
import { CommandFailedError } from "../infra/runner.ts";
import { WaitError } from "./retry.ts";

/**
 * The error vocabulary of boma-it. Every failure that reaches the CLI is one of these; the CLI's
 * single top-level catch maps them to the exit codes of the command contract and decides how
 * each prints (short for expected failures, with a trace for harness faults).
 */

/** Exit codes of the command contract (README, "Commands"). */
export const ExitCode = {
  pass: 0,
  systemUnderTestFailed: 1,
  badInput: 2,
  refused: 3,
  harnessFault: 4,
  interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Base of every error the CLI knows how to print and map to an exit code. */
export abstract class BomaError extends Error {
  abstract readonly exitCode: ExitCode;
  /** Whether the CLI prints a stack trace: only for faults of the harness itself. */
  readonly showTrace: boolean = false;
}

/** A field of a bad-input problem: where it is and what was expected and found. */
export interface InputProblem {
  /** File the problem is in, when it is in a file. */
  file?: string;
  /** 1-based line and column in that file, when known. */
  line?: number;
  column?: number;
  /** YAML path such as `checks[2].http.port`, when known. */
  path?: string;
  /** What is wrong, phrased as "expected X, found Y" wherever that fits. */
  message: string;
}

/** Formats one problem as `file:line:col: path: message`. */
export function formatProblem(problem: InputProblem): string {
  let where = problem.file ?? "";
  if (problem.file && problem.line !== undefined) {
    where += `:${problem.line}`;
    if (problem.column !== undefined) where += `:${problem.column}`;
  }
  const parts = [where, problem.path ?? ""].filter((part) => part !== "");
  return parts.length > 0 ? `${parts.join(": ")}: ${problem.message}` : problem.message;
}

/** Bad input: profile, overlay, inventory or arguments (exit 2). */
export class BadInputError extends BomaError {
  readonly exitCode = ExitCode.badInput;
  readonly problems: readonly InputProblem[];
  constructor(problems: InputProblem | readonly InputProblem[]) {
    const list = Array.isArray(problems) ? problems : [problems as InputProblem];
    super(list.map(formatProblem).join("\n"));
    this.name = "BadInputError";
    this.problems = list;
  }
}

/** Refused by a preflight guard (exit 3); `remedy` says what to do about it. */
export class RefusedError extends BomaError {
  readonly exitCode = ExitCode.refused;
  readonly remedy: string | undefined;
  constructor(message: string, remedy?: string) {
    super(remedy ? `${message}\n  fix: ${remedy}` : message);
    this.name = "RefusedError";
    this.remedy = remedy;
  }
}

/** The system under test failed: apply failed, a check failed, RED not faithful (exit 1). */
export class SystemUnderTestError extends BomaError {
  readonly exitCode = ExitCode.systemUnderTestFailed;
  constructor(message: string) {
    super(message);
    this.name = "SystemUnderTestError";
  }
}

/**
 * A fault of the harness or the infrastructure under it: provisioning, boot, SSH timeout (exit 4).
 * It prints its cause chain and its trace: whoever reads it unattended has nothing else.
 */
export class HarnessError extends BomaError {
  readonly exitCode = ExitCode.harnessFault;
  override readonly showTrace: boolean;
  constructor(message: string, options?: { cause?: unknown; showTrace?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "HarnessError";
    this.showTrace = options?.showTrace ?? true;
  }
}

/** The user interrupted the run (Ctrl-C or SIGTERM), exit 130. */
export class InterruptedError extends BomaError {
  readonly exitCode = ExitCode.interrupted;
  constructor(message = "interrupted") {
    super(message);
    this.name = "InterruptedError";
  }
}

/** A scenario stopped because another one beside it ended the run: an interruption of it, never the run's error. */
export class StoppedBesideError extends InterruptedError {
  constructor(message: string) {
    super(message);
    this.name = "StoppedBesideError";
  }
}

/** Maps any thrown value to its exit code; unknown errors are harness faults. */
export function exitCodeOf(error: unknown): ExitCode {
  return error instanceof BomaError ? error.exitCode : ExitCode.harnessFault;
}

/** The messages of an error's causes, outermost first (first lines; at most eight). */
export function causesOf(error: unknown): string[] {
  const causes: string[] = [];
  let current = error instanceof Error ? error.cause : undefined;
  while (current !== undefined && causes.length < 8) {
    causes.push(current instanceof Error ? `${current.name}: ${current.message.split("\n")[0]}` : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return causes;
}

/**
 * Maps what infra and the waits throw onto the error vocabulary (exit codes): a provisioning,
 * teardown, command or wait failure is a harness fault (4) keeping its cause; anything after an
 * interrupt is the interrupt (130); the pulumi engine missing is a refusal (3).
 */
export function asBomaError(error: unknown, signal: AbortSignal): unknown {
  if (error instanceof BomaError) return error;
  if (signal.aborted) return signal.reason instanceof InterruptedError ? signal.reason : new InterruptedError();
  if (error instanceof PulumiUnavailableError) return new RefusedError(error.message, error.remedy);
  if (error instanceof ProvisionError) return new HarnessError(`provisioning failed: ${error.message}`, { cause: error });
  if (error instanceof TeardownError) return new HarnessError(`${error.message}\nrun \`npm run reap\` to remove what is left`, { cause: error });
  if (error instanceof CommandFailedError) return new HarnessError(error.message, { cause: error });
  if (error instanceof WaitError) return new HarnessError(error.message, { cause: error });
  return error;
}
