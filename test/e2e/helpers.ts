/**
 * Helpers of the e2e suite: it runs inside test/e2e/sandbox.sh (a network namespace with its
 * own libvirtd), drives the real CLI, and checks that nothing with the boma-it- prefix is left.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdtemp, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { after, before } from "node:test";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";
import { controlSocketDir } from "../../orchestrator/host/ssh.ts";

/** Fails at once, with the way to run it, when the suite is not inside the sandbox. */
export function requireSandbox(): void {
  assert.ok(
    process.env.BOMA_IT_SANDBOX,
    "the e2e suite needs real libvirt inside its network namespace: run it with `npm run test:e2e` (as root)",
  );
}

/** A suite's own runs dir and stacks dir, and the environment that points the CLI at them. */
export interface E2eDirs {
  runsDir: string;
  stacksDir: string;
  env: Record<string, string>;
}

/** A fresh runs dir and stacks dir for one test file. */
export async function e2eDirs(): Promise<E2eDirs> {
  const base = await mkdtemp(join(tmpdir(), "boma-it-e2e-"));
  // libvirt's QEMU user must reach images a test puts here (a blank disk, say).
  await chmod(base, 0o755);
  const runsDir = join(base, "runs");
  const stacksDir = join(base, "stacks");
  return { runsDir, stacksDir, env: { BOMA_IT_RUNS_DIR: runsDir, BOMA_IT_STACKS_DIR: stacksDir } };
}

/** The dirs of an e2e suite: filled in before its tests; whatever they left is reaped after them. */
export function suiteDirs(): E2eDirs {
  const dirs: E2eDirs = { runsDir: "", stacksDir: "", env: {} };
  before(async () => {
    requireSandbox();
    Object.assign(dirs, await e2eDirs());
  });
  after(async () => {
    // Whatever a failed test left, the next suites (and the machine) must not inherit it.
    if (dirs.stacksDir) await cli(["reap"], dirs.env).catch(() => undefined);
  });
  return dirs;
}

/** A finished CLI process. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running CLI process: wait for a line on stderr, send signals, await the end. */
export interface CliProcess {
  result: Promise<CliResult>;
  waitForStderr(pattern: RegExp, timeoutMs: number): Promise<void>;
  kill(signal: NodeJS.Signals): void;
  pid: number;
}

/** Starts `boma-it ...args`; its stderr is echoed (prefixed) so CI logs show progress. */
export function startCli(args: readonly string[], env: Record<string, string>): CliProcess {
  const child = spawn(process.execPath, [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), ...args], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => {
    const text = chunk.toString();
    stderr += text;
    for (const line of text.split("\n")) if (line.trim()) process.stderr.write(`    | ${line}\n`);
    for (const waiter of [...waiters]) {
      if (waiter.pattern.test(stderr)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  });
  const result = new Promise<CliResult>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return {
    result,
    pid: child.pid!,
    kill: (signal) => child.kill(signal),
    waitForStderr: (pattern, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(stderr)) return resolve();
        const timer = setTimeout(() => reject(new Error(`no ${pattern} on stderr within ${timeoutMs} ms:\n${stderr.slice(-2000)}`)), timeoutMs);
        waiters.push({ pattern, resolve: () => (clearTimeout(timer), resolve()) });
      }),
  };
}

/** Runs `boma-it ...args` to the end. */
export function cli(args: readonly string[], env: Record<string, string>): Promise<CliResult> {
  return startCli(args, env).result;
}

function virshNames(args: string[]): string[] {
  return execFileSync("virsh", ["-q", "-c", "qemu:///system", ...args], { encoding: "utf8" })
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("boma-it-"));
}

async function prefixedFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((entry) => entry.startsWith("boma-it-")).map((entry) => join(dir, entry));
  } catch {
    return [];
  }
}

/** SSH master connections of runs (pid and argv), alive whether or not their socket is still there. */
function sshMasters(): string[] {
  try {
    const listing = execFileSync("pgrep", ["-a", "-f", `ControlPath=${controlSocketDir()}/boma-it-`], { encoding: "utf8" });
    return listing.split("\n").filter((line) => line.includes("ControlMaster=auto"));
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/**
 * Everything with the boma-it- prefix that exists: domains, networks, pools, volumes, NVRAM,
 * SSH master connections, ledgers, pulumi stacks.
 */
export async function leftovers(stacksDir: string): Promise<string[]> {
  return [
    ...virshNames(["list", "--all", "--name"]).map((name) => `domain ${name}`),
    ...virshNames(["net-list", "--all", "--name"]).map((name) => `network ${name}`),
    ...virshNames(["pool-list", "--all", "--name"]).map((name) => `pool ${name}`),
    ...execFileSync("virsh", ["-q", "-c", "qemu:///system", "nwfilter-list"], { encoding: "utf8" })
      .split("\n")
      .map((line) => line.trim().split(/\s+/)[1] ?? "")
      .filter((name) => name.startsWith("boma-it-"))
      .map((name) => `nwfilter ${name}`),
    ...(await prefixedFiles("/var/lib/libvirt/images")).map((path) => `file ${path}`),
    ...(await prefixedFiles("/var/lib/libvirt/qemu/nvram")).map((path) => `file ${path}`),
    ...(await prefixedFiles(controlSocketDir())).map((path) => `ssh socket ${path}`),
    ...sshMasters().map((master) => `ssh master ${master}`),
    ...(await readdir(join(stacksDir, "direct")).catch(() => [] as string[])).map((file) => `ledger ${file}`),
    ...(await readdir(join(stacksDir, "pulumi", ".pulumi", "stacks", "boma-it")).catch(() => [] as string[]))
      .filter((file) => file.endsWith(".json"))
      .map((file) => `pulumi stack ${file}`),
  ];
}

/** Writes a variant of profiles/<name>.yml into `dir` (paths made absolute), changed by `edit`. */
export async function profileVariant(dir: string, name: string, file: string, edit: (yaml: string) => string): Promise<string> {
  const { readFile, writeFile } = await import("node:fs/promises");
  const original = await readFile(join(PROJECT_ROOT, "profiles", `${name}.yml`), "utf8");
  const absolute = original
    .replace(/^repo: (.+)$/m, (_line, path: string) => `repo: ${join(PROJECT_ROOT, "profiles", path.trim())}`)
    .replace(/^overrides: (.+)$/m, (_line, path: string) => `overrides: ${join(PROJECT_ROOT, "profiles", path.trim())}`);
  const target = join(dir, file);
  await writeFile(target, edit(absolute));
  return target;
}

/** A host outside the VM's network: its own namespace behind a veth, serving HTTP on port 80. */
export interface OutsideHost {
  /** Namespace name (also names the veth pair). */
  name: string;
  /** The host's address and the sandbox's end of the link, in one /24. */
  address: string;
  sandboxAddress: string;
}

/**
 * Runs `body` while an outside host exists and answers the sandbox (proven first, so a VM that
 * cannot reach it proves something). Allowed here: it is a test host in a namespace of our own.
 */
export async function withOutsideHost<T>(host: OutsideHost, body: () => Promise<T>): Promise<T> {
  const sh = (script: string) => execFileSync("sh", ["-c", script], { encoding: "utf8" });
  const link = host.name.replace(/^boma-it-e2e-/, "b").slice(0, 10);
  sh(`ip netns add ${host.name}
ip link add ${link}0 type veth peer name ${link}1 netns ${host.name}
ip addr add ${host.sandboxAddress}/24 dev ${link}0 && ip link set ${link}0 up
ip netns exec ${host.name} sh -c 'ip link set lo up; ip addr add ${host.address}/24 dev ${link}1; ip link set ${link}1 up; ip route add default via ${host.sandboxAddress}'`);
  const listener = spawn("ip", ["netns", "exec", host.name, "python3", "-m", "http.server", "80", "--bind", host.address], { stdio: "ignore" });
  try {
    let status = 0;
    for (let attempt = 0; attempt < 20 && status !== 200; attempt += 1) {
      status = await fetch(`http://${host.address}/`, { signal: AbortSignal.timeout(2000) }).then((response) => response.status, () => 0);
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    assert.equal(status, 200, `${host.name} (${host.address}) answers the sandbox: the test is sound`);
    return await body();
  } finally {
    listener.kill();
    sh(`ip link del ${link}0 2>/dev/null; ip netns del ${host.name}`);
  }
}

/** A LAN host (RFC 1918, like the real 10.20.x LAN) and an "internet" host (TEST-NET-2, not private). */
export const LAN_HOST: OutsideHost = { name: "boma-it-e2e-lan", address: "10.20.0.1", sandboxAddress: "10.20.0.254" };
export const INTERNET_HOST: OutsideHost = { name: "boma-it-e2e-wan", address: "198.51.100.1", sandboxAddress: "198.51.100.254" };

/** Whether the VM of a run opens a TCP connection to address:port ("reached" or "blocked"). */
export async function vmReaches(runId: string, address: string, port: number, env: Record<string, string>): Promise<string> {
  const probe = `timeout 8 bash -c '</dev/tcp/${address}/${port}' && echo reached || echo blocked`;
  return (await cli(["ssh", runId, "--", probe], env)).stdout.trim();
}

/** Whether the VM gets an answer to a DNS query over UDP from its gateway's dnsmasq. */
export async function vmGetsDnsAnswer(runId: string, gateway: string, env: Record<string, string>): Promise<string> {
  const query =
    "python3 -c \"import socket;q=bytes.fromhex('1234010000010000000000000661736b6172690000010001');s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5);s.sendto(q,('" +
    gateway +
    "',53));r=s.recv(512);print('dns-answer' if r[:2]==q[:2] else 'dns-garbled')\"";
  const result = await cli(["ssh", runId, "--", query], env);
  return result.stdout.trim() || result.stderr.trim();
}
