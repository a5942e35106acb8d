/**
 * Checks are retried until they pass or their own `within` is up: a failing check costs exactly
 * its `within`, not the stage's longest wait plus a poll interval.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runChecks } from "../../../../orchestrator/guest/checks.ts";
import type { Machine, MachineResult } from "../../../../orchestrator/guest/machine.ts";
import type { Check } from "../../../../orchestrator/profile/schema.ts";

/** A guest whose `systemctl is-active` answers the given states in turn (the last one stays). */
function guestAnswering(states: string[]): { machine: Machine; calls: () => number } {
  let calls = 0;
  const machine = {
    execute: async (): Promise<MachineResult> => {
      const state = states[Math.min(calls, states.length - 1)]!;
      calls += 1;
      return { exitCode: state === "active" ? 0 : 3, stdout: `${state}\n`, stderr: "", durationMs: 5 };
    },
  } as unknown as Machine;
  return { machine, calls: () => calls };
}

describe("runChecks", () => {
  it("gives a failing check its own `within`, retrying until then, and no longer", async () => {
    const guest = guestAnswering(["activating"]);
    const check: Check = { name: "docker active", unit: "docker.service", within: 1 };
    const [result] = await runChecks([check], guest.machine, "10.234.7.10", "post-reboot", {});
    assert.equal(result?.ok, false);
    assert.equal(result?.detail, "docker.service is activating");
    assert.ok(guest.calls() >= 2, `probed ${guest.calls()} time(s)`);
    assert.ok(result.seconds >= 1 && result.seconds < 3, `gave up after ${result.seconds} s (the next 3 s poll would be past within)`);
  });

  it("passes as soon as the probe does, and reports it", async () => {
    const guest = guestAnswering(["activating", "active"]);
    const reported: string[] = [];
    const results = await runChecks(
      [{ name: "docker active", unit: "docker.service", within: 60 }],
      guest.machine,
      "10.234.7.10",
      "pre-reboot",
      { onResult: (result) => reported.push(`${result.stage} ${result.name} ${result.ok}`) },
    );
    assert.deepEqual(results.map((result) => [result.ok, result.detail]), [[true, "docker.service is active"]]);
    assert.equal(guest.calls(), 2);
    assert.deepEqual(reported, ["pre-reboot docker active true"]);
  });
});
