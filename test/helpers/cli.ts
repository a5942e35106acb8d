/** Runs the real CLI as a child process (Node 24, type stripping) and returns what it did. */
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * This test process's own run lock: a command the unit tests run never takes the machine's (a
 * real run, or another test file beside this one, would hold it), unless a test names its own.
 */
const TEST_RUN_LOCK = join(tmpdir(), `boma-it-unit-${process.pid}.lock`);
process.once("exit", () => rmSync(TEST_RUN_LOCK, { force: true }));

/** `boma-it ...args` with extra environment; never throws on a non-zero exit. */
export function runCli(args: readonly string[], env: Record<string, string> = {}, cwd = PROJECT_ROOT): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), ...args],
      { cwd, env: { ...process.env, BOMA_IT_RUN_LOCK: TEST_RUN_LOCK, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
