import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { acquireRunLock, lockPath, removeStaleLock } from "../../../orchestrator/lock.ts";
import { tempTree } from "../../helpers/tmp.ts";

describe("run lock", () => {
  it("is taken once, refused to a second taker while its owner lives, and released", async () => {
    const tree = await tempTree();
    try {
      const release = await acquireRunLock(tree.dir);
      assert.equal((await readFile(lockPath(tree.dir), "utf8")).trim(), String(process.pid));
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
});
