/**
 * The run lock: exactly one holder among any number of concurrent takers, whatever an earlier
 * holder left in the file; freed by the kernel when its holder dies, however it dies; never freed
 * early by a Ctrl-C to the harness's terminal. Real processes, no fakes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { acquireLock, acquireRunLock, runLockHolder } from "../../../../orchestrator/host/lock.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const TAKER = join(import.meta.dirname, "../../../helpers/lock-taker.ts");

/** Starts a taker process; resolves with its first line and the process. */
function taker(path: string, holdMs: number, options: { detached?: boolean } = {}) {
  const child = spawn(process.execPath, [TAKER, path, String(holdMs)], { stdio: ["pipe", "pipe", "inherit"], detached: options.detached ?? false });
  let output = "";
  const firstLine = new Promise<string>((resolve) => {
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("\n")) resolve(output.split("\n")[0]!);
    });
    child.once("exit", () => resolve(output.split("\n")[0] ?? ""));
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { child, firstLine, exited, output: () => output };
}

async function waitUntil(condition: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return condition();
}

describe("run lock", { timeout: 120_000 }, () => {
  it("is held once, refused to a second taker naming the holder, and free again once released", async () => {
    const tree = await tempTree();
    try {
      const path = join(tree.dir, "run.lock");
      const lock = await acquireRunLock(path, "up");
      await lock.claim("boma-it-askari-20261201-101010");
      const holder = await runLockHolder(path);
      assert.equal(holder?.pid, process.pid);
      assert.deepEqual(holder?.runIds, ["boma-it-askari-20261201-101010"]);
      await assert.rejects(
        acquireRunLock(path, "run"),
        new RegExp(`another boma-it run \\(pid ${process.pid}, up of boma-it-askari-20261201-101010, since .*\\) holds the run lock`),
      );
      await lock.release();
      assert.equal(await runLockHolder(path), undefined);
      const again = await acquireRunLock(path, "run");
      await again.release();
    } finally {
      await tree.remove();
    }
  });

  it("records every run claimed at once (scenarios side by side) in a holder file that stays JSON", async () => {
    const tree = await tempTree();
    try {
      const path = join(tree.dir, "run.lock");
      const lock = await acquireRunLock(path, "run");
      const ids = Array.from({ length: 8 }, (_, index) => `boma-it-askari-20261201-10101${index}`);
      await Promise.all(ids.map((id) => lock.claim(id)));
      assert.deepEqual((await runLockHolder(path))?.runIds, ids);
      await lock.release();
    } finally {
      await tree.remove();
    }
  });

  it("has exactly one holder among eight concurrent takers, whatever a dead holder left in the file", async () => {
    const tree = await tempTree();
    try {
      const path = join(tree.dir, "run.lock");
      await writeFile(path, JSON.stringify({ pid: 4242, since: 1, purpose: "run", runIds: [] }));
      const takers = Array.from({ length: 8 }, () => taker(path, 3000));
      const lines = await Promise.all(takers.map((one) => one.firstLine));
      assert.equal(lines.filter((line) => line === "held").length, 1, lines.join("\n"));
      assert.equal(lines.filter((line) => line.startsWith("refused: another boma-it run")).length, 7, lines.join("\n"));
      await Promise.all(takers.map((one) => one.exited));
    } finally {
      await tree.remove();
    }
  });

  it("is freed when its holder is killed (SIGKILL), and not by a Ctrl-C to the holder's terminal", async () => {
    const tree = await tempTree();
    try {
      const path = join(tree.dir, "run.lock");
      const killed = taker(path, 60_000);
      assert.equal(await killed.firstLine, "held");
      killed.child.kill("SIGKILL");
      await killed.exited;
      // Asked at once: the holder's helper lets go within a second of the harness's death, and
      // whoever asks (a reap right after a crash) waits that long rather than seeing a holder.
      assert.equal(await runLockHolder(path), undefined, "the kernel freed it");

      // Ctrl-C reaches the whole foreground process group; the harness cleans up for a second first.
      const interrupted = taker(path, 60_000, { detached: true });
      assert.equal(await interrupted.firstLine, "held");
      process.kill(-interrupted.child.pid!, "SIGINT");
      await waitUntil(async () => interrupted.output().includes("interrupted"), 5000);
      assert.equal((await runLockHolder(path))?.pid, interrupted.child.pid, "still held while the harness cleans up");
      interrupted.child.stdin!.end();
      await interrupted.exited;
      assert.equal(await runLockHolder(path), undefined);
    } finally {
      await tree.remove();
    }
  });

  it("a waiting taker gets it when the holder lets go", async () => {
    const tree = await tempTree();
    try {
      const path = join(tree.dir, "reap.lock");
      const first = taker(path, 1500);
      assert.equal(await first.firstLine, "held");
      const second = await acquireLock(path, "reap", 30);
      assert.equal((await runLockHolder(path))?.pid, process.pid);
      await second.release();
    } finally {
      await tree.remove();
    }
  });
});
