/** Runs the real CLI as a child process (Node 24, type stripping) and returns what it did. */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `boma-it ...args` with extra environment; never throws on a non-zero exit. */
export function runCli(args: readonly string[], env: Record<string, string> = {}, cwd = PROJECT_ROOT): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), ...args],
      { cwd, env: { ...process.env, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
