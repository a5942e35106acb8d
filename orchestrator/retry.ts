/**
 * The one retry primitive: try until it works, the time is up, or a fail-fast check says it
 * never will. Its last failure says what it saw. Time comes from a {@link Clock} so tests can
 * run it on a fake one.
 */
import { setTimeout as sleep } from "node:timers/promises";

/** Wall time and sleeping, replaceable in tests. */
export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock. */
export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) => sleep(ms, undefined, signal ? { signal } : undefined),
};

/** What one attempt found. */
export type Attempt<T> = { done: true; value: T } | { done: false; seen: string };

/** Options of {@link retry}. */
export interface RetryOptions {
  /** What we wait for, for messages: "SSH on 10.234.7.10". */
  what: string;
  timeoutMs: number;
  /** First pause between attempts (default 250 ms), doubled up to `maxIntervalMs`. */
  intervalMs?: number;
  maxIntervalMs?: number;
  signal?: AbortSignal;
  clock?: Clock;
  /** Called after every failed attempt with what it saw (for progress lines). */
  onAttempt?: (seen: string) => void;
  /** Checked after every failed attempt: a string means "this will never work" (e.g. the VM is off). */
  failFast?: () => Promise<string | undefined>;
}

/** Waiting ran out of time or a fail-fast check fired; `lastSeen` is what the last attempt saw. */
export class WaitError extends Error {
  readonly lastSeen: string;
  readonly timedOut: boolean;
  constructor(message: string, lastSeen: string, timedOut: boolean) {
    super(message);
    this.name = "WaitError";
    this.lastSeen = lastSeen;
    this.timedOut = timedOut;
  }
}

/** Calls `attempt` until it is done; throws {@link WaitError} on timeout or fail-fast. */
export async function retry<T>(attempt: () => Promise<Attempt<T>>, options: RetryOptions): Promise<T> {
  const clock = options.clock ?? realClock;
  const started = clock.now();
  let interval = options.intervalMs ?? 250;
  const maxInterval = options.maxIntervalMs ?? 2000;
  for (;;) {
    options.signal?.throwIfAborted();
    const result = await attempt();
    if (result.done) return result.value;
    const seen = result.seen;
    options.onAttempt?.(seen);
    const fatal = options.failFast ? await options.failFast() : undefined;
    if (fatal) throw new WaitError(`gave up waiting for ${options.what}: ${fatal}; last seen: ${seen}`, seen, false);
    const elapsed = clock.now() - started;
    if (elapsed >= options.timeoutMs) {
      throw new WaitError(`timed out after ${Math.round(elapsed / 1000)} s waiting for ${options.what}; last seen: ${seen}`, seen, true);
    }
    await clock.sleep(Math.min(interval, Math.max(0, options.timeoutMs - elapsed)), options.signal);
    interval = Math.min(interval * 2, maxInterval);
  }
}
