import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { ownerAlive, processStart } from "../../../infra/process.ts";

describe("process identity across pid reuse", () => {
  it("a process's start is its boot and start tick; another process has another", async () => {
    const bootId = (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim();
    const mine = processStart();
    assert.match(mine ?? "", new RegExp(`^${bootId}/\\d+$`));
    // A command name with spaces and parentheses must not shift the fields (PR_SET_NAME = 15).
    const child = spawn("python3", ["-c", "import ctypes, time; ctypes.CDLL(None).prctl(15, b'x) y (z', 0, 0, 0); print(1, flush=True); time.sleep(60)"], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    try {
      await once(child.stdout!, "data");
      assert.match(await readFile(`/proc/${child.pid}/stat`, "utf8"), /^\d+ \(x\) y \(z\) /, "the name really holds them");
      const theirs = processStart(child.pid!);
      assert.match(theirs ?? "", new RegExp(`^${bootId}/\\d+$`));
      assert.ok(Number(theirs!.split("/")[1]) >= Number(mine!.split("/")[1]), "started after this process");
      assert.equal(processStart(child.pid!), theirs, "stable while it lives");
    } finally {
      child.kill();
    }
  });

  it("an owner lives while a process of its pid that started when it did lives", async () => {
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    const start = processStart(child.pid!)!;
    assert.equal(ownerAlive(child.pid!, start), true);
    assert.equal(ownerAlive(child.pid!), true, "without a recorded start, the pid alone counts (older records)");
    assert.equal(ownerAlive(child.pid!, processStart()), false, "a process that started at another time holds the pid");
    assert.equal(ownerAlive(child.pid!, `00000000-0000-0000-0000-000000000000/${start.split("/")[1]}`), false, "recorded in another boot");
    child.kill();
    await once(child, "exit");
    assert.equal(ownerAlive(child.pid!, start), false, "gone");
    assert.equal(processStart(child.pid!), undefined);
  });
});
