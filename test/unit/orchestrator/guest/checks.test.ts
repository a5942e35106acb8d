/**
 * Checks go through the Machine's waits on its clock (a fake one here): a failing check costs
 * exactly its `within` and says what it last saw, a passing one stops at once, a unit that failed
 * outright fails its check at once, a try that began within its `within` is heard out, and a VM
 * that went down is not a failed check but an error.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { runChecks } from "../../../../orchestrator/guest/checks.ts";
import { Machine, VmDownError } from "../../../../orchestrator/guest/machine.ts";
import type { Check } from "../../../../orchestrator/profile/schema.ts";
import { insideProbe, tryInside } from "../../../../orchestrator/guest/probes.ts";
import { writeFake } from "../../../helpers/fakes.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/**
 * A Machine whose guest answers `systemctl is-active` with the states in `states` (one per line,
 * consumed in turn, the last one staying), on a fake clock every command advances by 300 ms.
 */
async function guest(dir: string, states: string[], domainState = "running (booted)") {
  await writeFile(join(dir, "states"), `${states.join("\n")}\n`);
  await writeFake(
    join(dir, "bin"),
    "ssh",
    `states="${join(dir, "states")}"
state=$(head -n1 "$states")
[ "$(wc -l < "$states")" -gt 1 ] && sed -i 1d "$states"
echo "$state"
[ "$state" = active ] && exit 0
exit 3`,
  );
  let now = 0;
  const clock = { now: () => now, sleep: async (ms: number) => void (now += ms) };
  const runner = new Runner({ env: { PATH: `${join(dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: join(dir, "log") } });
  const run = runner.run.bind(runner);
  runner.run = async (...args: Parameters<Runner["run"]>) => {
    now += 300;
    return run(...args);
  };
  const machine = new Machine({
    name: "askari",
    target: { ip: "10.234.7.10", user: "boma", keyFile: "/k", knownHostsFile: "/kh", alias: "a" },
    runner,
    log: silentLog(),
    consoleLog: join(dir, "console.log"),
    domainState: async () => domainState,
    clock,
  });
  return { machine, clock };
}

describe("runChecks", () => {
  it("gives a failing check its own `within`, retrying until then, and says what it last saw", async () => {
    const tree = await tempTree();
    try {
      const { machine } = await guest(tree.dir, ["activating"]);
      const check: Check = { name: "docker active", unit: "docker.service", within: 20 };
      const [result] = await runChecks([check], machine, "10.234.7.10", "post-reboot");
      assert.equal(result?.ok, false);
      assert.equal(result?.detail, "docker.service is activating");
      assert.ok(result.seconds >= 20 && result.seconds < 23, `gave up after ${result.seconds} s of a 20 s within`);
    } finally {
      await tree.remove();
    }
  });

  it("passes as soon as the probe does, and reports it", async () => {
    const tree = await tempTree();
    try {
      const { machine } = await guest(tree.dir, ["activating", "activating", "active"]);
      const reported: string[] = [];
      const results = await runChecks([{ name: "docker active", unit: "docker.service", within: 60 }], machine, "10.234.7.10", "pre-reboot", {
        onResult: (result) => reported.push(`${result.stage} ${result.name} ${result.ok}`),
      });
      assert.deepEqual(
        results.map((result) => [result.ok, result.detail]),
        [[true, "docker.service is active"]],
      );
      assert.ok(results[0]!.seconds < 3, `passed after ${results[0]!.seconds} s`);
      assert.deepEqual(reported, ["pre-reboot docker active true"]);
    } finally {
      await tree.remove();
    }
  });

  it("fails at once on a unit that failed outright", async () => {
    const tree = await tempTree();
    try {
      const { machine } = await guest(tree.dir, ["failed"]);
      const [result] = await runChecks([{ name: "nftables active", unit: "nftables.service", within: 60 }], machine, "10.234.7.10", "post-reboot");
      assert.equal(result?.ok, false);
      assert.equal(result?.detail, "unit nftables.service failed");
      assert.ok(result.seconds < 2, `failed after ${result.seconds} s, not its within`);
    } finally {
      await tree.remove();
    }
  });

  it("hears out a try that began within the check's `within`, though it ends after it", async () => {
    const tree = await tempTree();
    try {
      const { machine } = await guest(tree.dir, ["active"]);
      // The guest is slow to answer: the one try takes 2 s of real time, past the 1 s within.
      await writeFake(join(tree.dir, "bin"), "ssh", "sleep 2; echo boma-lab web on askari");
      const [result] = await runChecks(
        [{ name: "containers reach each other", run: "docker exec probe wget -qO- http://web/", within: 1 }],
        machine,
        "10.234.7.10",
        "post-reboot",
      );
      assert.equal(result?.ok, true, result?.detail);
      assert.equal(result?.detail, "exit 0: boma-lab web on askari");
    } finally {
      await tree.remove();
    }
  });

  it("says a try the harness cut off got no answer, not that the command failed", async () => {
    const tree = await tempTree();
    try {
      const { machine } = await guest(tree.dir, ["active"]);
      await writeFake(join(tree.dir, "bin"), "ssh", "exec sleep 30");
      const outcome = await tryInside(machine, insideProbe({ name: "probe", run: "docker exec probe true", within: 1 }, undefined, undefined), 500);
      assert.deepEqual(outcome, { ok: false, detail: "no answer within 1 s" });
    } finally {
      await tree.remove();
    }
  });

  it("a VM that went down is no failed check: the wait's error goes to the caller", async () => {
    const tree = await tempTree();
    try {
      const { machine } = await guest(tree.dir, ["inactive"], "shut off (destroyed)");
      await assert.rejects(
        runChecks([{ name: "docker active", unit: "docker.service", within: 60 }], machine, "10.234.7.10", "post-reboot"),
        (error: unknown) => {
          assert.ok(error instanceof VmDownError);
          assert.equal(error.guestShutdown, false, "destroyed from the host");
          assert.match(error.message, /the VM is shut off \(destroyed\)/);
          return true;
        },
      );
    } finally {
      await tree.remove();
    }
  });
});
