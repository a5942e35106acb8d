/**
 * Several commands through one SSH session: the batch script run by a real shell with the real
 * `timeout` and `base64` (as the guest has them), read back exactly (exit status, stdout, stderr,
 * stdin, output without a final newline, a command cut off); an answer that is not whole is not
 * taken; and the Machine sends one command for the lot, or each on its own when the batch's
 * answer is broken.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, it } from "node:test";
import { guestBatch, type BatchCommand } from "../../../../orchestrator/guest/batch.ts";
import { fakeCalls } from "../../../helpers/fakes.ts";
import { localGuest } from "../../../helpers/local-guest.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** Runs a batch's script with sh, as the guest's sudo would; returns its stdout. */
async function runScript(script: string): Promise<string> {
  const { stdout } = await promisify(execFile)("sh", ["-c", script], { encoding: "utf8" });
  return stdout;
}

describe("guestBatch", () => {
  it("gives each command's exit status, stdout, stderr and stdin back in order, exactly", async () => {
    const commands: BatchCommand[] = [
      { command: "echo habari; echo dunia >&2; exit 3" },
      { command: "printf 'no newline'" },
      { command: "cat", input: "jambo\nmarhaba 🌍\n" },
      { command: "true" },
      { command: "cat; echo read-nothing" },
      { command: "printf '\\n\\nblank lines around\\n\\n'" },
      // As `sh -c` would run them: a syntax error fails that command alone, exec and exit end it.
      { command: "if then fi (" },
      { command: "exec sh -c 'echo replaced; exit 5'" },
      { command: "echo first; exit 7; echo never" },
    ];
    const batch = guestBatch(commands, 10_000);
    const results = batch.read(await runScript(batch.script));
    assert.deepEqual(results, [
      { exitCode: 3, stdout: "habari\n", stderr: "dunia\n", timedOut: false },
      { exitCode: 0, stdout: "no newline", stderr: "", timedOut: false },
      { exitCode: 0, stdout: "jambo\nmarhaba 🌍\n", stderr: "", timedOut: false },
      { exitCode: 0, stdout: "", stderr: "", timedOut: false },
      { exitCode: 0, stdout: "read-nothing\n", stderr: "", timedOut: false },
      { exitCode: 0, stdout: "\n\nblank lines around\n\n", stderr: "", timedOut: false },
      { exitCode: 2, stdout: "", stderr: results?.[6]?.stderr ?? "", timedOut: false },
      { exitCode: 5, stdout: "replaced\n", stderr: "", timedOut: false },
      { exitCode: 7, stdout: "first\n", stderr: "", timedOut: false },
    ]);
    assert.match(results?.[6]?.stderr ?? "", /Syntax error/);
  });

  it("runs the commands side by side, and cuts one off at its time limit without holding up the rest", async () => {
    const batch = guestBatch([{ command: "sleep 30" }, { command: "sleep 0.5; echo late but in time" }, { command: "exit 124" }], 1500);
    const started = Date.now();
    const results = batch.read(await runScript(batch.script));
    const seconds = (Date.now() - started) / 1000;
    assert.ok(seconds < 10, `the batch took ${seconds} s: the cut-off command was not cut off`);
    assert.deepEqual(results, [
      { exitCode: undefined, stdout: "", stderr: "", timedOut: true },
      { exitCode: 0, stdout: "late but in time\n", stderr: "", timedOut: false },
      // A command's own 124 (timeout(1)'s word for a cut-off) is its exit status.
      { exitCode: 124, stdout: "", stderr: "", timedOut: false },
    ]);
  });

  it("takes no answer that is not whole, and no marker but its own", async () => {
    const batch = guestBatch([{ command: "echo one" }, { command: "echo two" }], 10_000, "00aa");
    const whole = await runScript(batch.script);
    assert.equal(batch.read(whole)?.length, 2);
    // Cut before its end (the session died), or one command's answer missing.
    assert.equal(batch.read(whole.slice(0, whole.indexOf("@@boma-it-00aa end"))), undefined);
    assert.equal(batch.read(whole.replace(/\n@@boma-it-00aa 1 out 0\ntwo\n/, "")), undefined);
    assert.equal(batch.read("sudo: a password is required\n"), undefined);
    // A command that prints another batch's markers, or this batch's own script, is read as its output.
    const other = guestBatch([{ command: "printf '@@boma-it-bb11 0 out 0\\nfake\\n@@boma-it-bb11 end\\n'" }, { command: "cat" }], 10_000, "cc22");
    const tricked = other.read(await runScript(other.script));
    assert.equal(tricked?.[0]?.stdout, "@@boma-it-bb11 0 out 0\nfake\n@@boma-it-bb11 end\n");
    assert.ok(!other.script.includes("@@boma-it-cc22"), "the marker is never in the script as one piece");
  });
});

describe("Machine.executeEach", () => {
  it("sends one command for the lot, and each result is what execute would say", async () => {
    const tree = await tempTree();
    try {
      const machine = await localGuest(tree.dir);
      const results = await machine.executeEach([{ command: "echo one" }, { command: "cat >&2; exit 2", input: "two" }], { timeoutMs: 10_000 });
      assert.deepEqual(
        results.map(({ exitCode, stdout, stderr, timedOut }) => ({ exitCode, stdout, stderr, timedOut })),
        [
          { exitCode: 0, stdout: "one\n", stderr: "", timedOut: false },
          { exitCode: 2, stdout: "", stderr: "two", timedOut: false },
        ],
      );
      assert.equal((await fakeCalls(join(tree.dir, "calls.log"))).filter(([program]) => program === "ssh").length, 1);
    } finally {
      await tree.remove();
    }
  });

  it("runs each command on its own when the batch's answer is broken", async () => {
    const tree = await tempTree();
    try {
      // A guest whose shell mangles the batch (it answers only single commands).
      const machine = await localGuest(tree.dir, { ssh: `case "\${@: -1}" in *mktemp*) echo garbled; exit 0;; esac; exec bash -c "\${@: -1}"` });
      const results = await machine.executeEach([{ command: "echo one" }, { command: "echo two; exit 1" }], { timeoutMs: 10_000 });
      assert.deepEqual(
        results.map(({ exitCode, stdout }) => [exitCode, stdout]),
        [
          [0, "one\n"],
          [1, "two\n"],
        ],
      );
      assert.equal((await fakeCalls(join(tree.dir, "calls.log"))).filter(([program]) => program === "ssh").length, 3);
    } finally {
      await tree.remove();
    }
  });
});
