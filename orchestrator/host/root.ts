/**
 * How this process runs what only root may (the egress allowlist's nftables table and the
 * network DNS's query log): as it is when it is root, through `sudo -n` when the account has
 * password-less sudo (ADR-025's automation account does), not at all otherwise.
 */
import type { Runner } from "../../infra/runner.ts";

/** `[]` as root, `["sudo", "-n"]` where that works without a password, undefined when neither does. */
export async function rootCommand(runner: Runner, uid: number | undefined = process.getuid?.()): Promise<string[] | undefined> {
  if (uid === 0) return [];
  if (!(await runner.which("sudo"))) return undefined;
  const probe = await runner.run("sudo", ["-n", "true"], { check: false, timeoutMs: 10_000 });
  return probe.failed ? undefined : ["sudo", "-n"];
}

/** Runs `program args` as root through `asRoot` (from {@link rootCommand}). */
export function runAsRoot(runner: Runner, asRoot: readonly string[], program: string, args: readonly string[], options: Parameters<Runner["run"]>[2] = {}) {
  const argv = [...asRoot, program, ...args];
  return runner.run(argv[0]!, argv.slice(1), options);
}
