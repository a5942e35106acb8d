import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { processStart } from "../../../../infra/process.ts";
import { acquireRunLock, lockPath, removeStaleLock } from "../../../../orchestrator/host/lock.ts";
import { tempTree } from "../../../helpers/tmp.ts";

describe("run lock", () => {
  it("is taken once, refused to a second taker while its owner lives, and released", async () => {
    const tree = await tempTree();
    try {
      const release = await acquireRunLock(tree.dir);
      assert.equal((await readFile(lockPath(tree.dir), "utf8")), `${process.pid}\n${processStart()}\n`, "its pid and when it started");
      await writeFile(lockPath(tree.dir), "4242\n");
      await assert.rejects(acquireRunLock(tree.dir, (pid) => pid === 4242), /another boma-it run \(pid 4242\) is provisioning a test VM: boma-it runs one at a time/);
      await release();
      assert.equal((await readFile(lockPath(tree.dir), "utf8")).trim(), "4242", "release never removes somebody else's lock");
    } finally {
      await tree.remove();
    }
  });

  it("takes over and reaps a lock whose owner died", async () => {
    const tree = await tempTree();
    try {
      await writeFile(lockPath(tree.dir), "4242\n");
      assert.equal(await removeStaleLock(tree.dir, () => true), false);
      const release = await acquireRunLock(tree.dir, () => false);
      await release();
      await writeFile(lockPath(tree.dir), "4242\n");
      assert.equal(await removeStaleLock(tree.dir, () => false), true);
    } finally {
      await tree.remove();
    }
  });

  it("a lock left by a crash before the host rebooted is stale even when its pid now belongs to another process", async () => {
    const tree = await tempTree();
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      // The same living process: refused (the real check, no fake).
      await writeFile(lockPath(tree.dir), `${child.pid}\n${processStart(child.pid!)}\n`);
      await assert.rejects(acquireRunLock(tree.dir), new RegExp(`another boma-it run \\(pid ${child.pid}\\)`));
      assert.equal(await removeStaleLock(tree.dir), false);
      // Written in another boot: whoever holds that pid now is not its owner.
      await writeFile(lockPath(tree.dir), `${child.pid}\n00000000-0000-0000-0000-000000000000/1\n`);
      assert.equal(await removeStaleLock(tree.dir), true);
      await writeFile(lockPath(tree.dir), `${child.pid}\n00000000-0000-0000-0000-000000000000/1\n`);
      const release = await acquireRunLock(tree.dir);
      await release();
      // A lock of an older harness (no start line) trusts the pid as before.
      await writeFile(lockPath(tree.dir), `${child.pid}\n`);
      assert.equal(await removeStaleLock(tree.dir), false);
    } finally {
      child.kill();
      await tree.remove();
    }
  });
});
