/**
 * A fake `ssh` that plays the test VM for real Ansible runs in unit tests: it records its argv
 * (one JSON line per call in `$FAKE_LOG`), answers `-G` with the real OpenSSH (so what a call
 * would have done can be read back exactly), treats `-O` as a master that is running, and runs
 * the remote command here with `BOMA_FAKE_VM=1` in its environment (so a task can tell that it
 * ran "on the VM", not on the controller). Ansible's module payload arrives on stdin, as over a
 * real connection with pipelining.
 */
import { execFileSync } from "node:child_process";
import { writeFake } from "./fakes.ts";

/** Writes the fake VM's `ssh` into `binDir`. */
export async function writeFakeVmSsh(binDir: string): Promise<void> {
  await writeFake(
    binDir,
    "ssh",
    `for arg in "$@"; do
  case "$arg" in
    -G) exec /usr/bin/ssh "$@" ;;
    -O) exit 0 ;;
  esac
done
command="\${@: -1}"
export BOMA_FAKE_VM=1
exec /bin/sh -c "$command"`,
  );
}

/** The calls that would have connected somewhere: not `-G`, not `-O`, not a probe without a destination. */
export function connectionCalls(calls: readonly string[][]): string[][] {
  return calls.filter((call) => call[0] === "ssh" && !call.includes("-G") && !call.includes("-O") && !(call.length === 3 && call[1] === "-o"));
}

/** What OpenSSH makes of an argv (keyword → values), as `ssh -G` prints it. */
export function effectiveSsh(argv: readonly string[]): Map<string, string[]> {
  const output = execFileSync("/usr/bin/ssh", ["-G", ...argv], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const config = new Map<string, string[]>();
  for (const line of output.split("\n")) {
    const [key, ...rest] = line.split(" ");
    if (!key) continue;
    config.set(key, [...(config.get(key) ?? []), rest.join(" ")]);
  }
  return config;
}
