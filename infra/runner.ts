/**
 * The one runner for external commands. Everything boma-it runs (virsh, qemu-img, ssh,
 * ansible-playbook, pulumi, ...) goes through {@link Runner.run}, which records the argv, exit
 * code, duration and the tail of the output, so that a failure can always say what was run and
 * what it printed last, and a run dir can keep the whole command log.
 */
import { access, constants } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { execa } from "execa";

/** How many trailing lines of output a record keeps. */
const TAIL_LINES = 20;

/** How many records a runner keeps in memory (a run makes thousands: the run dir's command log has them all). */
const HISTORY_LIMIT = 200;

/** What one finished command did. Results and failures share this shape (as in execa). */
export interface CommandRecord {
  /** Program and arguments, exactly as run (secrets already redacted). */
  argv: string[];
  /** Exit code, or undefined when the command was killed by a signal or never started. */
  exitCode: number | undefined;
  /** Signal that ended it, if any. */
  signal: string | undefined;
  /** Wall time in milliseconds. */
  durationMs: number;
  /** Whether the command ran past its timeout and was killed. */
  timedOut: boolean;
  /** Whether the command was cancelled through an AbortSignal. */
  canceled: boolean;
  /** Last lines of stdout and stderr interleaved by stream (stderr last). */
  tail: string;
  /** ISO time at which it started. */
  startedAt: string;
}

/** A finished command with its full output. */
export interface CommandResult extends CommandRecord {
  stdout: string;
  stderr: string;
  /** True when the exit code was not 0 (or the command timed out, was cancelled or never ran). */
  failed: boolean;
}

/** Options of one command. */
export interface RunOptions {
  /** Bytes or text fed on stdin. */
  input?: string | Uint8Array;
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number;
  cwd?: string;
  /** Extra environment variables (merged over the runner's environment). */
  env?: Record<string, string | undefined>;
  /** The command gets `env` alone, none of the runner's (a jail's bubblewrap: nothing of the harness's may pass). */
  replaceEnv?: boolean;
  /** Cancels the command (SIGTERM, then SIGKILL after 5 s). */
  signal?: AbortSignal;
  /** Throw {@link CommandFailedError} on failure (default true). */
  check?: boolean;
  /** Called for every output line as it arrives (for live progress), redacted like the record. */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  /**
   * Called before each output line is redacted (and given to `onLine`): where the caller learns
   * secrets the command told it of elsewhere (a jailed Ansible tells the harness each plaintext
   * it decrypts before it prints anything of it), so that they are hidden from that line on.
   */
  beforeLine?: () => void;
  /** Kill the command once its output passes this many bytes (default: execa's 100 MB). */
  maxBufferBytes?: number;
  /** Give the command this process's terminal (an interactive shell); nothing is captured. */
  interactive?: boolean;
  /**
   * The output holds a secret the caller needs (a private key, a token): it is returned, but the
   * record's tail (command log, failure messages) says it was withheld instead of showing it.
   */
  secretOutput?: boolean;
}

/** A command that failed when the caller asked for success. */
export class CommandFailedError extends Error {
  readonly result: CommandResult;
  constructor(result: CommandResult) {
    super(describeFailure(result));
    this.name = "CommandFailedError";
    this.result = result;
  }
}

/** One line that says what failed and how, followed by the output tail. */
export function describeFailure(result: CommandRecord): string {
  const command = result.argv.map(quoteArg).join(" ");
  let how: string;
  if (result.timedOut) how = `timed out after ${(result.durationMs / 1000).toFixed(1)} s`;
  else if (result.canceled) how = "was cancelled";
  else if (result.signal) how = `was killed by ${result.signal}`;
  else if (result.exitCode === undefined) how = "could not be started";
  else how = `exited with ${result.exitCode}`;
  const tail = result.tail.trim();
  return `\`${command}\` ${how}${tail ? `; last output:\n${indent(tail)}` : ""}`;
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((line) => `    ${line}`)
    .join("\n");
}

/** Quotes an argument for display the way a shell would need it. */
export function quoteArg(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

/** The last line of some output, blank lines and spaces at its end left out: what an error message quotes of it. */
export function lastLine(text: string): string {
  return text.trim().split("\n").at(-1) ?? "";
}

function lastLines(text: string, count: number): string {
  const lines = text.replace(/\n+$/, "").split("\n");
  return lines.slice(-count).join("\n");
}

/** Options of a {@link Runner}. */
export interface RunnerOptions {
  /** Environment the commands get (default: this process's). */
  env?: Record<string, string | undefined>;
  /** Receives every finished command (for the run dir's command log). */
  onRecord?: (record: CommandRecord) => void;
  /** Replaces secrets in argv, output and tails before anything is recorded or thrown. */
  redact?: (text: string) => string;
}

/** Runs external commands and records each one. */
export class Runner {
  readonly #env: Record<string, string | undefined>;
  readonly #onRecord: ((record: CommandRecord) => void) | undefined;
  readonly #listeners = new Set<(record: CommandRecord) => void>();
  readonly #redact: (text: string) => string;
  /** The last commands this runner finished (at most {@link HISTORY_LIMIT}), in order. */
  readonly history: CommandRecord[] = [];

  constructor(options: RunnerOptions = {}) {
    this.#env = options.env ?? process.env;
    this.#onRecord = options.onRecord;
    this.#redact = options.redact ?? ((text) => text);
  }

  /** A runner like this one that also redacts with `redact` (secrets learnt later, per run). */
  withRedaction(redact: (text: string) => string): Runner {
    const mine = this.#redact;
    const runner = new Runner({
      env: this.#env,
      ...(this.#onRecord ? { onRecord: this.#onRecord } : {}),
      redact: (text) => redact(mine(text)),
    });
    return runner;
  }

  /**
   * Sends every record from now on to `listener` too (a run's command log); returns the function
   * that stops it.
   */
  addRecordListener(listener: (record: CommandRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  #record(record: CommandRecord): void {
    this.history.push(record);
    if (this.history.length > HISTORY_LIMIT) this.history.splice(0, this.history.length - HISTORY_LIMIT);
    this.#onRecord?.(record);
    for (const listener of this.#listeners) listener(record);
  }

  /** The environment commands of this runner get. */
  get env(): Record<string, string | undefined> {
    return this.#env;
  }

  /** Runs `file args...`; throws {@link CommandFailedError} unless `check: false`. */
  async run(file: string, args: readonly string[] = [], options: RunOptions = {}): Promise<CommandResult> {
    const startedAt = new Date();
    const { onLine, beforeLine } = options;
    const redact = this.#redact;
    const lineHook = (stream: "stdout" | "stderr") =>
      onLine || beforeLine
        ? function* (line: unknown) {
            beforeLine?.();
            onLine?.(redact(String(line)), stream);
            yield line;
          }
        : "pipe";
    const subprocess = execa(file, [...args], {
      input: options.input,
      // execa takes whole milliseconds (a deadline minus a clock reading is not).
      timeout: options.timeoutMs === undefined ? undefined : Math.max(1, Math.ceil(options.timeoutMs)),
      cwd: options.cwd,
      env: options.replaceEnv ? { ...options.env } : { ...this.#env, ...options.env },
      extendEnv: false,
      cancelSignal: options.signal,
      ...(options.maxBufferBytes !== undefined ? { maxBuffer: options.maxBufferBytes } : {}),
      forceKillAfterDelay: 5000,
      reject: false,
      stripFinalNewline: false,
      ...(options.interactive
        ? { stdin: "inherit" as const, stdout: "inherit" as const, stderr: "inherit" as const }
        : {
            // Without input, stdin is closed: a command that reads it must not wait forever.
            ...(options.input === undefined ? { stdin: "ignore" as const } : {}),
            stdout: lineHook("stdout"),
            stderr: lineHook("stderr"),
          }),
      encoding: "utf8",
    });
    const outcome = await subprocess;
    const stdout = this.#redact(String(outcome.stdout ?? ""));
    const stderr = this.#redact(String(outcome.stderr ?? ""));
    const started = outcome.exitCode !== undefined || outcome.signal !== undefined;
    const spawnError = !started && outcome.failed ? String(outcome.originalMessage ?? outcome.message) : "";
    const tail = options.secretOutput
      ? `(output withheld: it holds a secret; ${stdout.length} bytes on stdout, ${stderr.length} on stderr)`
      : [lastLines(stdout, TAIL_LINES), lastLines(stderr, TAIL_LINES), this.#redact(spawnError)].filter((part) => part.trim() !== "").join("\n");
    const result: CommandResult = {
      argv: [file, ...args].map((arg) => this.#redact(arg)),
      exitCode: outcome.exitCode,
      signal: outcome.signal ?? undefined,
      durationMs: Math.round(outcome.durationMs),
      timedOut: outcome.timedOut,
      canceled: outcome.isCanceled,
      tail,
      startedAt: startedAt.toISOString(),
      stdout,
      stderr,
      failed: outcome.failed,
    };
    const { stdout: _out, stderr: _err, failed: _failed, ...record } = result;
    this.#record(record);
    if (result.failed && options.check !== false) throw new CommandFailedError(result);
    return result;
  }

  /**
   * Records a command that a library runs itself (the Pulumi Automation API spawns the `pulumi`
   * CLI): `operation` gets a line sink for its output; argv, duration, exit status and output
   * tail go into the same history as {@link run}'s. The operation's error is rethrown unchanged.
   */
  async track<T>(argv: readonly string[], operation: (onLine: (line: string) => void) => Promise<T>): Promise<T> {
    const startedAt = new Date();
    const started = performance.now();
    const lines: string[] = [];
    const onLine = (line: string) => {
      lines.push(line);
      if (lines.length > TAIL_LINES * 4) lines.splice(0, lines.length - TAIL_LINES);
    };
    const finish = (exitCode: number | undefined, extra: string) => {
      const tail = lastLines(this.#redact([...lines, extra].filter((part) => part.trim() !== "").join("\n")), TAIL_LINES);
      const record: CommandRecord = {
        argv: argv.map((arg) => this.#redact(arg)),
        exitCode,
        signal: undefined,
        durationMs: Math.round(performance.now() - started),
        timedOut: false,
        canceled: false,
        tail,
        startedAt: startedAt.toISOString(),
      };
      this.#record(record);
    };
    try {
      const value = await operation(onLine);
      finish(0, "");
      return value;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      // The Automation API's errors carry the CLI's exit code only inside their message.
      const exitCode = /exit code (\d+)/.exec(message)?.[1];
      finish(exitCode === undefined ? undefined : Number(exitCode), message);
      throw error;
    }
  }

  /** Runs a command and returns its stdout, throwing on failure. */
  async output(file: string, args: readonly string[] = [], options: RunOptions = {}): Promise<string> {
    return (await this.run(file, args, { ...options, check: true })).stdout;
  }

  /** Whether `file` is an executable on this runner's PATH; returns its path or undefined. */
  async which(file: string): Promise<string | undefined> {
    if (file.includes("/")) {
      try {
        await access(file, constants.X_OK);
        return file;
      } catch {
        return undefined;
      }
    }
    for (const dir of (this.#env.PATH ?? "").split(delimiter)) {
      if (!dir) continue;
      const candidate = join(dir, file);
      try {
        await access(candidate, constants.X_OK);
        return candidate;
      } catch {
        // not here; keep looking
      }
    }
    return undefined;
  }
}
