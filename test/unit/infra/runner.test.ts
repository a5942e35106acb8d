import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CommandFailedError, lastLine, Runner, type CommandRecord } from "../../../infra/runner.ts";

describe("Runner", () => {
  it("records argv, exit code, duration and output tail of each command", async () => {
    const records: CommandRecord[] = [];
    const runner = new Runner({ onRecord: (record) => records.push(record) });
    const result = await runner.run("sh", ["-c", "seq 1 30; echo oops >&2; exit 3"], { check: false });
    assert.equal(result.exitCode, 3);
    assert.equal(result.failed, true);
    assert.deepEqual(result.argv, ["sh", "-c", "seq 1 30; echo oops >&2; exit 3"]);
    assert.ok(result.durationMs >= 0);
    const tail = result.tail.split("\n");
    assert.equal(tail.length, 21, "20 lines of stdout and the stderr line");
    assert.equal(tail[0], "11");
    assert.equal(tail.at(-1), "oops");
    assert.equal(records.length, 1);
    assert.equal(runner.history.length, 1);
  });

  it("throws a CommandFailedError that says what ran and how it ended", async () => {
    const runner = new Runner();
    await assert.rejects(runner.run("sh", ["-c", "echo last words; exit 7"]), (error: unknown) => {
      assert.ok(error instanceof CommandFailedError);
      assert.equal(error.message, "`sh -c 'echo last words; exit 7'` exited with 7; last output:\n    last words");
      return true;
    });
  });

  it("feeds stdin and streams lines as they come", async () => {
    const lines: string[] = [];
    const result = await new Runner().run("cat", [], { input: "a\nb\n", onLine: (line) => lines.push(line) });
    assert.equal(result.stdout, "a\nb\n");
    assert.deepEqual(lines, ["a", "b"]);
  });

  it("kills a command at its timeout and says so", async () => {
    const result = await new Runner().run("sleep", ["5"], { timeoutMs: 200, check: false });
    assert.equal(result.timedOut, true);
    assert.match(new CommandFailedError(result).message, /`sleep 5` timed out after/);
  });

  it("reports a program that does not exist", async () => {
    const result = await new Runner().run("no-such-program-boma", [], { check: false });
    assert.equal(result.exitCode, undefined);
    assert.match(new CommandFailedError(result).message, /could not be started/);
  });

  it("redacts secrets from argv and output", async () => {
    const runner = new Runner({ redact: (text) => text.replaceAll("hunter2", "***") });
    const result = await runner.run("echo", ["pw=hunter2"]);
    assert.equal(result.stdout, "pw=***\n");
    assert.deepEqual(result.argv, ["echo", "pw=***"]);
  });

  it("finds executables on its PATH", async () => {
    const runner = new Runner({ env: { PATH: "/usr/bin:/bin" } });
    assert.equal(await runner.which("sh"), "/usr/bin/sh");
    assert.equal(await runner.which("no-such-program-boma"), undefined);
  });
});

describe("lastLine", () => {
  it("quotes the last line that says something, not the blank ones after it", () => {
    assert.equal(lastLine("first\nsecond: failed\n\n  \n"), "second: failed");
    assert.equal(lastLine("one line"), "one line");
    assert.equal(lastLine("a\n\nb"), "b");
    assert.equal(lastLine(" \n\n"), "");
    assert.equal(lastLine(""), "");
  });
});
