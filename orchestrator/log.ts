/**
 * The terminal side of a run: a tree of timed steps and progress lines for long waits, written
 * to stderr (stdout is kept for the command's result, and for the one JSON document of --json).
 * Lower layers never print; they take callbacks, and the CLI hands them this log.
 */
import type { Writable } from "node:stream";

/** A finished step: its name, duration and outcome, children included. */
export interface StepRecord {
  name: string;
  seconds: number;
  ok: boolean;
  children: StepRecord[];
}

/** Where a {@link Log} writes and how it reads the clock (a fake clock in tests). */
export interface LogOptions {
  stream: Writable;
  /** Milliseconds since some fixed point (default: `performance.now()`). */
  now?: () => number;
  /** Whether to print at all (false in --quiet tests). */
  enabled?: boolean;
  /** Applied to every line before it is written (the run's secrets; see ansible/secrets.ts). */
  redact?: (text: string) => string;
  /** Only warnings reach the stream (a transcript still gets every line). */
  quiet?: boolean;
}

/** Nested, timed log steps (NixOS test driver style). */
export class Log {
  readonly #stream: Writable;
  readonly #now: () => number;
  readonly #enabled: boolean;
  readonly #quiet: boolean;
  #depth = 0;
  #redact: (text: string) => string = (text) => text;
  readonly #stack: StepRecord[][] = [[]];
  /** Where every line also goes (a run's run.log), with what was written before it was attached. */
  #transcript: ((line: string) => void) | undefined;
  readonly #early: string[] = [];
  /** A branch's trunk and the label its lines carry (see {@link branch}). */
  readonly #trunk: { log: Log; label: string } | undefined;

  constructor(options: LogOptions, trunk?: { log: Log; label: string }) {
    this.#trunk = trunk;
    this.#stream = options.stream;
    this.#now = options.now ?? (() => performance.now());
    this.#enabled = options.enabled ?? true;
    this.#quiet = options.quiet ?? false;
    if (options.redact) this.#redact = options.redact;
  }

  /** The top-level steps finished so far. */
  get steps(): readonly StepRecord[] {
    return this.#stack[0]!;
  }

  /** Prints a line at the current depth. */
  info(message: string): void {
    this.#write(message);
  }

  /** Prints a warning line. */
  warn(message: string): void {
    this.#write(`warning: ${message}`, true);
  }

  /**
   * Runs `body` as a named step: prints its start, its end with the duration, and records it.
   * The step counts as failed when `body` throws or `isOk` says so of its value.
   */
  async step<T>(name: string, body: () => Promise<T>, isOk: (value: T) => boolean = () => true): Promise<T> {
    this.#write(`▸ ${name}`);
    const started = this.#now();
    this.#depth += 1;
    this.#stack.push([]);
    let ok = false;
    try {
      const value = await body();
      ok = isOk(value);
      return value;
    } finally {
      const children = this.#stack.pop()!;
      this.#depth -= 1;
      const seconds = Math.round((this.#now() - started) / 100) / 10;
      this.#stack.at(-1)!.push({ name, seconds, ok, children });
      this.#write(`${ok ? "✓" : "✗"} ${name} (${seconds.toFixed(1)} s)`);
    }
  }

  /** Like {@link step}, and appends `{name, seconds}` to `phases` whatever the outcome (for reports). */
  async timed<T>(phases: { name: string; seconds: number }[], name: string, body: () => Promise<T>): Promise<T> {
    const started = this.#now();
    try {
      return await this.step(name, body);
    } finally {
      phases.push({ name, seconds: Math.round((this.#now() - started) / 100) / 10 });
    }
  }

  /**
   * A progress reporter for a wait: call it with what was last seen as often as you like; it
   * prints at most every `everyMs`, with elapsed time, the limit and what was last seen.
   */
  progress(what: string, timeoutMs: number, everyMs = 5_000): (lastSeen?: string) => void {
    const started = this.#now();
    let lastPrinted = started;
    this.#write(`… waiting for ${what} (up to ${Math.round(timeoutMs / 1000)} s)`);
    return (seen?: string) => {
      const now = this.#now();
      if (now - lastPrinted < everyMs) return;
      lastPrinted = now;
      const elapsed = Math.round((now - started) / 1000);
      this.#write(`… ${what}: ${elapsed} s of ${Math.round(timeoutMs / 1000)} s${seen ? `; last seen: ${seen}` : ""}`);
    };
  }

  /**
   * Sends every line from now on to `sink` too (redacted, as printed), starting with the lines
   * written so far (at most the last 500): a run's run.log holds the whole step tree. Returns the
   * detach function.
   */
  transcribe(sink: (line: string) => void): () => void {
    for (const line of this.#early) sink(line);
    this.#transcript = sink;
    return () => {
      if (this.#transcript === sink) this.#transcript = undefined;
    };
  }

  /**
   * A log for one of several things done at the same time (RED and GREEN side by side): its own
   * step tree, each line it writes labelled (`label` padded to `width`), written through this log
   * (its stream, its transcript, its redaction) at this log's depth now.
   */
  branch(label: string, width = label.length): Log {
    return new Log(
      { stream: this.#stream, now: this.#now, enabled: this.#enabled, quiet: this.#quiet },
      { log: this, label: `${"  ".repeat(this.#depth)}${label.padEnd(width)} │ ` },
    );
  }

  #write(line: string, important = false): void {
    const root = this.#root();
    root.#emit(`${this.#prefix()}${"  ".repeat(this.#depth)}${root.#redact(line)}`, important);
  }

  /** The log that writes: this one, or the trunk of its branch's trunk. */
  #root(): Log {
    return this.#trunk ? this.#trunk.log.#root() : this;
  }

  /** What each line of a branch begins with: its trunks' labels, then its own. */
  #prefix(): string {
    return this.#trunk ? `${this.#trunk.log.#prefix()}${this.#trunk.label}` : "";
  }

  #emit(text: string, important: boolean): void {
    if (this.#transcript) this.#transcript(text);
    else {
      this.#early.push(text);
      if (this.#early.length > 500) this.#early.shift();
    }
    if (this.#enabled && (important || !this.#quiet)) this.#stream.write(`${text}\n`);
  }
}
