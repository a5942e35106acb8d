/**
 * The one lifecycle of every command that works on test VMs: `run` and `up` (driver.ts) and the
 * verbs on a kept VM (attach.ts) open and close through {@link withCommand}. It holds the
 * machine's run lock and claims the run in it, records into a folder of its own (run.log: every
 * line as printed; commands.log: every external command), ends the command's result the same way
 * for all (see {@link CommandEnding}), and on every exit path ends those records, scrubs the folder
 * of the run's secrets, makes it private, writes the result and lets go of the lock. A change to
 * how a command is closed is made here.
 */
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { makePrivate, scrubDir, unscrubbed, type RunSecrets } from "../ansible/secrets.ts";
import { asBomaError, BomaError, causesOf, ExitCode, HarnessError, InterruptedError, SystemUnderTestError } from "../errors.ts";
import { acquireRunLock, type RunLock } from "../host/lock.ts";
import { runLockPath } from "../host/paths.ts";
import type { Log } from "../log.ts";
import type { CommandEnding } from "./report.ts";

/** A run's folder while a command works in it: its records open, what it must do at the end. */
export class RunFolder {
  readonly dir: string;
  readonly #streams: WriteStream[];
  readonly #detach: (() => void)[];
  #closed = false;

  private constructor(dir: string, streams: WriteStream[], detach: (() => void)[]) {
    this.dir = dir;
    this.#streams = streams;
    this.#detach = detach;
  }

  /** Starts recording `log`'s lines into run.log and `runner`'s commands into commands.log of `dir` (0600, appended). */
  static open(dir: string, log: Pick<Log, "transcribe">, runner: Pick<Runner, "addRecordListener">): RunFolder {
    const transcript = createWriteStream(join(dir, "run.log"), { flags: "a", mode: 0o600 });
    const commands = createWriteStream(join(dir, "commands.log"), { flags: "a", mode: 0o600 });
    const detach = [
      log.transcribe((line) => transcript.write(`${line}\n`)),
      runner.addRecordListener((record) => commands.write(`${JSON.stringify(record)}\n`)),
    ];
    return new RunFolder(dir, [transcript, commands], detach);
  }

  /** Stops recording and waits until the records are on disk (once; later calls do nothing). */
  async endRecords(): Promise<void> {
    for (const undo of this.#detach.splice(0)) undo();
    await Promise.all(this.#streams.splice(0).map((stream) => new Promise<void>((resolve) => stream.end(resolve))));
  }

  /**
   * Closes the folder: the records ended, every file scrubbed of `secrets` (a link is never
   * followed), the folder made private. Returns the error to report when a file could not be
   * scrubbed (a secret may remain), after saying how many were redacted.
   */
  async close(secrets: Pick<RunSecrets, "redactor">, log: Pick<Log, "info" | "warn">): Promise<HarnessError | undefined> {
    await this.endRecords();
    if (this.#closed) return undefined;
    this.#closed = true;
    const scrubbed = await scrubDir(this.dir, secrets);
    if (scrubbed.changed.length > 0) log.info(`redacted secrets in ${scrubbed.changed.length} file(s) of the run dir`);
    const error = scrubbed.failed.length > 0 ? unscrubbed(scrubbed.failed) : undefined;
    if (error) log.warn(`error: ${error.message}`);
    await makePrivate(this.dir).catch(() => undefined);
    return error;
  }
}

/** Where a command works: the run it claims in the lock, and its folder (made by {@link withCommand}). */
export interface CommandPlace {
  runId: string;
  dir: string;
}

/** What a command's body came to when it did not throw. */
export interface Judged {
  verdict: "pass" | "fail";
  message: string;
}

/** How {@link withCommand} opens and closes a command. */
export interface CommandFrame<Place extends CommandPlace, Result extends CommandEnding> {
  /** The machine's run lock, taken here first (refused, exit 3, while another holds it) and released on every exit path. */
  lock: { env: NodeJS.ProcessEnv; purpose: string };
  /** What the command settles under the lock before it makes anything, and its run and folder (a fresh name cannot race another harness's). */
  place: (lock: RunLock) => Promise<Place>;
  /** The result as it stands before the body runs (verdict "error" until something better is known). */
  begin: (place: Place) => Result;
  log: Log;
  runner: Runner;
  signal: AbortSignal;
  /** The secrets known when the command closes (a verb learns them as it goes). */
  secrets: () => Pick<RunSecrets, "redactor">;
  /** Writes the result where it belongs, redacted (after the folder is scrubbed, so nothing it writes is missed). */
  write: (result: Result) => Promise<void>;
  /** What the body leaves open and the folder must not wait for (a machine's master connection). */
  beforeClose?: () => Promise<void>;
}

/**
 * Runs a command's body in the lifecycle and returns its result and the error that ended it when
 * that was no verdict (not thrown: the caller decides; a failure of the system under test thrown
 * by the body is its verdict "fail", exit 1; a body stopped by Ctrl-C ends "interrupted", 130).
 * Once its folder exists the result is written whatever happens; what fails before (the lock
 * refused, the preflight, the folder itself) is thrown, after the lock is released.
 */
export async function withCommand<Place extends CommandPlace, Result extends CommandEnding>(
  frame: CommandFrame<Place, Result>,
  body: (place: Place, result: Result) => Promise<Judged>,
): Promise<{ result: Result; error: unknown }> {
  const { log, runner } = frame;
  const lock = await acquireRunLock(runLockPath(frame.lock.env), frame.lock.purpose);
  try {
    const place = await frame.place(lock);
    await lock.claim(place.runId);
    await mkdir(place.dir, { recursive: true, mode: 0o700 });
    const started = Date.now();
    const result = frame.begin(place);
    result.startedAt = new Date(started).toISOString();
    const folder = RunFolder.open(place.dir, log, runner);
    let error: unknown;
    try {
      const judged = await body(place, result);
      // Stopped meanwhile (Ctrl-C): whatever the body came to after that is the stop's doing.
      if (frame.signal.aborted && frame.signal.reason instanceof InterruptedError) throw frame.signal.reason;
      result.verdict = judged.verdict;
      result.exitCode = judged.verdict === "pass" ? ExitCode.pass : ExitCode.systemUnderTestFailed;
      result.message = judged.message;
      result.error = null;
    } catch (caught) {
      error = endInError(result, caught, frame.signal, log);
    } finally {
      result.finishedAt = new Date().toISOString();
      result.wallSeconds = Math.round((Date.now() - started) / 100) / 10;
      await frame.beforeClose?.().catch(() => undefined);
      // Anything secret that reached a file of the folder (a journal, a console log) is replaced.
      const unclean = await folder
        .close(frame.secrets(), log)
        .catch((closeError: unknown) => new HarnessError(`the folder could not be closed: ${(closeError as Error).message}`));
      if (unclean) {
        // A secret may remain: whatever it came to, the command cannot say its folder is clean.
        error = unclean;
        Object.assign(result, {
          verdict: "error",
          exitCode: ExitCode.harnessFault,
          message: unclean.message,
          error: { kind: unclean.name, message: unclean.message, causes: [] },
        });
      }
      try {
        await frame.write(result);
      } catch (writeError) {
        log.warn(`the result could not be written: ${(writeError as Error).message}`);
      }
      await makePrivate(place.dir).catch(() => undefined);
    }
    return { result, error };
  } finally {
    await lock.release();
  }
}

/**
 * Ends `result` in what `caught` says: a failure of the system under test is the verdict "fail"
 * (exit 1); anything else "error" with its exit code and causes, said in the log. Returns the
 * error as the CLI maps it.
 */
function endInError(result: CommandEnding, caught: unknown, signal: AbortSignal, log: Pick<Log, "warn">): unknown {
  // Once stopped, what failed next (an ssh killed mid-command) is the stop's doing, never a finding or a fault of its own.
  const error = signal.aborted && signal.reason instanceof InterruptedError ? signal.reason : asBomaError(caught, signal);
  const full = error instanceof InterruptedError ? "interrupted" : error instanceof Error ? error.message : String(error);
  result.exitCode = error instanceof BomaError ? error.exitCode : ExitCode.harnessFault;
  result.message = full;
  if (error instanceof SystemUnderTestError) {
    result.verdict = "fail";
    result.error = null;
    return error;
  }
  result.verdict = "error";
  result.error = { kind: error instanceof Error ? error.name : "Error", message: full, causes: causesOf(error) };
  log.warn(`error: ${full.split("\n")[0]}${result.error.causes.length > 0 ? `\n  caused by: ${result.error.causes.join("\n  caused by: ")}` : ""}`);
  return error;
}
