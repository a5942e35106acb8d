import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { Log } from "../../../orchestrator/log.ts";

/** A log on a captured stream with a clock the test moves. */
function capturedLog(quiet: boolean): { log: Log; printed: () => string; advance: (ms: number) => void } {
  const stream = new PassThrough();
  let text = "";
  stream.on("data", (chunk: Buffer) => (text += chunk.toString()));
  let clock = 0;
  const log = new Log({ stream, quiet, now: () => clock });
  return { log, printed: () => text, advance: (ms) => (clock += ms) };
}

describe("Log", () => {
  it("prints nested, timed steps and progress lines", async () => {
    const { log, printed, advance } = capturedLog(false);
    await log.step("boot", async () => {
      const tick = log.progress("SSH", 60_000, 1_000);
      advance(2_500);
      tick("login:");
      log.info("inside");
    });
    assert.equal(printed(), "▸ boot\n  … waiting for SSH (up to 60 s)\n  … SSH: 3 s of 60 s; last seen: login:\n  inside\n✓ boot (2.5 s)\n");
    assert.deepEqual(log.steps, [{ name: "boot", seconds: 2.5, ok: true, children: [] }]);
  });

  it("with quiet prints warnings only, while the transcript keeps every line", async () => {
    const { log, printed } = capturedLog(true);
    const transcript: string[] = [];
    log.transcribe((line) => transcript.push(line));
    await log.step("apply", async () => {
      log.info("a detail");
      log.warn("something to know");
    });
    assert.equal(printed(), "  warning: something to know\n");
    assert.deepEqual(transcript, ["▸ apply", "  a detail", "  warning: something to know", "✓ apply (0.0 s)"]);
  });

  it("branches: each line of a branch carries its label, at the trunk's depth, through the trunk's transcript and quiet setting", async () => {
    const { log, printed } = capturedLog(false);
    const transcript: string[] = [];
    log.transcribe((line) => transcript.push(line));
    await log.step("run", async () => {
      const red = log.branch("red", 5);
      const green = log.branch("green", 5);
      await Promise.all([red.step("apply", async () => red.info("task 1")), green.step("apply", async () => green.warn("slow"))]);
    });
    const expected = [
      "▸ run",
      "  red   │ ▸ apply",
      "  red   │   task 1",
      "  green │ ▸ apply",
      "  green │   warning: slow",
      "  red   │ ✓ apply (0.0 s)",
      "  green │ ✓ apply (0.0 s)",
      "✓ run (0.0 s)",
    ];
    assert.deepEqual(transcript, expected);
    assert.equal(printed(), `${expected.join("\n")}\n`);
    const quiet = capturedLog(true);
    quiet.log.branch("red").info("not printed");
    quiet.log.branch("red").warn("printed");
    assert.equal(quiet.printed(), "red │ warning: printed\n");
  });
});
