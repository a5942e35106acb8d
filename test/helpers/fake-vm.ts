/**
 * A fake `ssh` that plays the test VM for real Ansible runs in unit tests: it records its argv
 * (one JSON line per call in `$FAKE_LOG`), answers `-G` with the real OpenSSH (so what a call
 * would have done can be read back exactly), treats `-O` as a master that is running, and runs
 * the remote command here with `BOMA_FAKE_VM=1` in its environment (so a task can tell that it
 * ran "on the VM", not on the controller). Ansible's module payload arrives on stdin, as over a
 * real connection with pipelining.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
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

/** A fake VM behind a fake SSH master (fake_master.py): what a jailed Ansible reaches through the gate. */
export interface FakeVm {
  /** The run's control socket, where the fake master listens. */
  controlPath: string;
  /** The commands the VM ran, in order. */
  commands(): Promise<string[]>;
  /** Requests the master refused (anything but sessions and alive checks), by type. */
  refused(): Promise<string[]>;
  stop(): Promise<void>;
}

/**
 * Starts a fake VM's master on `<dir>/sockets/<name>` (a short path: sockets hold 108 bytes).
 * `marker` is what BOMA_FAKE_VM says on it (a test with several VMs tells them apart by it).
 */
export async function startFakeVm(dir: string, name = "boma-it-askari-20261201-101010", marker = "1"): Promise<FakeVm> {
  const sockets = join(dir, "sockets");
  await mkdir(sockets, { recursive: true, mode: 0o700 });
  const controlPath = join(sockets, name);
  const log = join(dir, marker === "1" ? "fake-vm.jsonl" : `fake-vm-${marker}.jsonl`);
  const child = spawn("python3", [join(import.meta.dirname, "fake_master.py"), controlPath, log, marker], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => chunk.toString().includes("ready") && resolve());
    child.once("exit", (code) => reject(new Error(`fake master exited with ${code}`)));
  });
  const entries = async () =>
    (await readFile(log, "utf8").catch(() => ""))
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { command?: string; refused?: string });
  return {
    controlPath,
    commands: async () => (await entries()).flatMap((entry) => (entry.command === undefined ? [] : [entry.command])),
    refused: async () => (await entries()).flatMap((entry) => (entry.refused === undefined ? [] : [entry.refused])),
    stop: async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((resolve) => child.once("exit", resolve));
      }
    },
  };
}
