import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { retry, WaitError, type Clock } from "../../../../orchestrator/retry.ts";

/** A clock that only moves when the code under test sleeps. */
function fakeClock(): Clock & { sleeps: number[] } {
  let now = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
  };
}

describe("retry", () => {
  it("returns the value of the first attempt that is done, backing off in between", async () => {
    const clock = fakeClock();
    let attempts = 0;
    const value = await retry(async () => (++attempts < 4 ? { done: false, seen: `try ${attempts}` } : { done: true, value: "ok" }), {
      what: "a thing",
      timeoutMs: 60_000,
      intervalMs: 100,
      maxIntervalMs: 300,
      clock,
    });
    assert.equal(value, "ok");
    assert.deepEqual(clock.sleeps, [100, 200, 300]);
  });

  it("times out saying what it waited for and what it saw last", async () => {
    const clock = fakeClock();
    const seen: string[] = [];
    await assert.rejects(
      retry(async () => ({ done: false, seen: `uptime ${clock.now()}` }), {
        what: "SSH on 10.0.0.1",
        timeoutMs: 1000,
        intervalMs: 400,
        maxIntervalMs: 400,
        clock,
        onAttempt: (s) => seen.push(s),
      }),
      (error: unknown) => {
        assert.ok(error instanceof WaitError);
        assert.equal(error.timedOut, true);
        assert.equal(error.message, "timed out after 1 s waiting for SSH on 10.0.0.1; last seen: uptime 1000");
        return true;
      },
    );
    assert.deepEqual(seen, ["uptime 0", "uptime 400", "uptime 800", "uptime 1000"]);
  });

  it("gives up at once when the fail-fast check fires", async () => {
    const clock = fakeClock();
    await assert.rejects(
      retry(async () => ({ done: false, seen: "connection refused" }), {
        what: "SSH",
        timeoutMs: 600_000,
        clock,
        failFast: async () => "the VM is shut off",
      }),
      /gave up waiting for SSH: the VM is shut off; last seen: connection refused/,
    );
    assert.deepEqual(clock.sleeps, []);
  });

  it("stops when aborted", async () => {
    const controller = new AbortController();
    controller.abort(new Error("interrupted"));
    await assert.rejects(
      retry(async () => ({ done: true, value: 1 }), { what: "x", timeoutMs: 1, signal: controller.signal }),
      /interrupted/,
    );
  });
});
