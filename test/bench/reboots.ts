/**
 * `npm run bench:reboots`: how often a reboot stalls before its kernel, by the two ways a
 * reboot can end: the guest's restart powering the domain off and the harness starting it afresh
 * (what `Machine.reboot` does), and the restart reset in place inside the same QEMU process (what
 * it did before). Both run on one kept VM (askari's, by default as cloud-init leaves the golden
 * image, no role applied: the stall comes after the old system's last word, so what it ran does
 * not matter, and a lighter guest gives more reboots an hour; `--applied` applies askari's
 * roles first), taking turns so that whatever else the machine does weighs on both alike. A boot that shows no kernel line within 150 s of its power-on or of the old system's
 * "reboot: machine restart" is a stall; it is counted, then the VM is powered off and on to go
 * on. Writes every sample and a summary; stall rates and reboot-to-SSH times go to
 * docs/benchmarks.md by hand, with the date, commit and machine.
 *
 * usage: npm run bench:reboots -- [--count N] [--applied] [--run RUN --runs-dir DIR] [--out FILE] [--json]
 */
import { execFileSync, spawn } from "node:child_process";
import { appendFile, mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Runner } from "../../infra/runner.ts";
import { BootStallError, KERNEL_STALL_MS } from "../../orchestrator/guest/machine.ts";
import { libvirtFor } from "../../orchestrator/host/libvirt.ts";
import { PROJECT_ROOT, runsDir } from "../../orchestrator/host/paths.ts";
import { Log } from "../../orchestrator/log.ts";
import { machineFor } from "../../orchestrator/run/provision.ts";
import { readRunRecord } from "../../orchestrator/run/live-runs.ts";

const USAGE = `usage: npm run bench:reboots -- [--count N] [--applied] [--run RUN --runs-dir DIR] [--out FILE] [--json]
  --count N          reboots by each path (default 30)
  --applied          apply askari's roles before the reboots (default: none, the guest as cloud-init leaves it)
  --run RUN          a kept run's directory name to reboot (default: up askari, down at the end)
  --runs-dir DIR     where --run lives
  --out FILE         where reboots.json goes (default <runs dir>/bench-reboots-<stamp>/reboots.json)
  --json             print reboots.json on stdout instead of the table`;
const OPTIONS = {
  count: { type: "string", default: "30" },
  applied: { type: "boolean", default: false },
  run: { type: "string" },
  "runs-dir": { type: "string" },
  out: { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;
let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>["values"];
try {
  ({ values } = parseArgs({ options: OPTIONS }));
} catch (error) {
  process.stderr.write(`bench:reboots: ${(error as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const count = Number(values.count);
if (!Number.isInteger(count) || count < 1) {
  process.stderr.write(`bench:reboots: --count: expected a whole number of at least 1, found ${JSON.stringify(values.count)}\n`);
  process.exit(2);
}
if (!process.env.BOMA_IT_SANDBOX) {
  process.stderr.write("bench:reboots: needs the e2e sandbox (real libvirt in its network namespace): run it as `npm run bench:reboots` (as root)\n");
  process.exit(3);
}

/** The two ways a reboot ends. */
type RebootPath = "power-off and fresh start" | "reset in place";
const PATHS: readonly RebootPath[] = ["power-off and fresh start", "reset in place"];

/** One reboot. */
interface Sample {
  path: RebootPath;
  /** It showed no kernel line within the stall limit. */
  stalled: boolean;
  /** From `systemctl reboot` to SSH with the new boot id (not stalled only). */
  seconds: number | null;
  /** From `systemctl reboot` to the kernel's start, less nothing: shutdown, firmware, boot loader (not stalled only). */
  beforeKernelSeconds: number | null;
  at: string;
}

const stamp = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
const benchDir = join(runsDir(undefined), `bench-reboots-${stamp}`);
await mkdir(benchDir, { recursive: true });
const cliEnv = values["runs-dir"]
  ? { BOMA_IT_RUNS_DIR: values["runs-dir"] }
  : { BOMA_IT_RUNS_DIR: join(benchDir, "runs"), BOMA_IT_STACKS_DIR: join(benchDir, "stacks") };

function cli(args: readonly string[]): Promise<{ code: number | null; stdout: string }> {
  const child = spawn(process.execPath, [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), ...args], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...cliEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) process.stderr.write(`  | ${line}\n`);
  });
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout })));
}

let runDir: string;
let ownRun: string | undefined;
if (values.run) {
  if (!values["runs-dir"]) {
    process.stderr.write("bench:reboots: --run needs --runs-dir (where that run lives)\n");
    process.exit(2);
  }
  runDir = join(values["runs-dir"], values.run);
} else {
  process.stderr.write(`bench:reboots: up askari${values.applied ? "" : " with no role applied"} (the VM every reboot is taken on)\n`);
  // `never` is a tag no task of a play has unless it asks for it: only the facts are gathered.
  const up = await cli(["up", "askari", "--json", ...(values.applied ? [] : ["--tags", "never"])]);
  if (up.code !== 0) {
    process.stderr.write(`bench:reboots: up failed (exit ${up.code})\n`);
    process.exit(4);
  }
  ({ runDir, runId: ownRun } = JSON.parse(up.stdout) as { runDir: string; runId: string });
}
const record = await readRunRecord(runDir);
if (!record) {
  process.stderr.write(`bench:reboots: no run record in ${runDir}\n`);
  process.exit(2);
}

const runner = new Runner();
const libvirt = libvirtFor(runner, process.env);
const log = new Log({ stream: process.stderr });
const machine = await machineFor(record, { runner, log, libvirt });
const timeoutMs = 8 * 60_000;

/** The restart reset in place, as `Machine.reboot` did before: the same QEMU process boots again. */
async function resetInPlace(): Promise<{ seconds: number; beforeKernelSeconds: number | null }> {
  const bootIdBefore = await machine.bootId();
  const started = machine.now();
  await machine.markNewBoot();
  await machine.closeConnection();
  await machine.execute("systemctl reboot", { timeoutMs: 30_000, multiplex: false });
  const ready = await machine.waitForSsh(timeoutMs, { notBootId: bootIdBefore, bootBeganAt: started });
  return { seconds: Math.round((machine.now() - started) / 100) / 10, beforeKernelSeconds: ready.beforeKernelSeconds ?? null };
}

/** The product's reboot: the restart powers the domain off, the harness starts it afresh. */
async function powerOffAndStart(): Promise<{ seconds: number; beforeKernelSeconds: number | null }> {
  const proof = await machine.reboot(timeoutMs);
  return { seconds: proof.seconds, beforeKernelSeconds: proof.ready.beforeKernelSeconds ?? null };
}

/** After a stall: off and on, and wait for the guest, so the next reboot starts from a booted system. */
async function recover(): Promise<void> {
  await machine.powerCycle();
  await machine.waitForSsh(timeoutMs, { restartAt: machine.now() });
}

/** Lets the booted system settle (units started, Docker's containers up) before the next reboot. */
async function settle(): Promise<void> {
  await machine.execute("timeout 300 systemctl is-system-running --wait", { timeoutMs: 330_000 });
}

// Read now: the tree may move on during a bench of hours, and the figures belong to this commit.
const commit = execFileSync("git", ["-C", PROJECT_ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
const samples: Sample[] = [];
const failures: string[] = [];
// Each sample is also appended as it is taken, so a bench cut off after hours keeps what it measured.
const samplesFile = join(benchDir, "samples.jsonl");
async function keep(sample: Sample): Promise<void> {
  samples.push(sample);
  await appendFile(samplesFile, `${JSON.stringify({ ...sample, commit })}\n`);
  process.stderr.write(`bench:reboots: ${sample.path}: ${sample.stalled ? "stalled" : `${sample.seconds?.toFixed(1)} s to SSH`}\n`);
}
try {
  if (!(await libvirt.domainState(record.domain)).startsWith("running")) {
    process.stderr.write(`bench:reboots: ${record.domain} is off: starting it\n`);
    await libvirt.startDomain(record.domain);
    await machine.waitForSsh(timeoutMs, { restartAt: machine.now() });
  }
  await settle();
  for (let round = 0; round < count; round += 1) {
    // Taking turns, and each round in the other order, so neither path always follows the other.
    const order = round % 2 === 0 ? PATHS : [...PATHS].reverse();
    for (const path of order) {
      const at = new Date().toISOString();
      process.stderr.write(`bench:reboots: ${round + 1}/${count}: ${path}\n`);
      try {
        const result = path === "reset in place" ? await resetInPlace() : await powerOffAndStart();
        await keep({ path, stalled: false, seconds: result.seconds, beforeKernelSeconds: result.beforeKernelSeconds, at });
      } catch (error) {
        if (!(error instanceof BootStallError)) {
          failures.push(`${at} ${path}: ${(error as Error).message.split("\n")[0]}`);
          await recover();
          continue;
        }
        process.stderr.write(`bench:reboots: STALL (${path}): ${error.message.split("\n")[0]}\n`);
        await keep({ path, stalled: true, seconds: null, beforeKernelSeconds: null, at });
        await recover();
      }
      await settle();
    }
  }
} finally {
  await machine.closeConnection();
  if (ownRun) await cli(["down", ownRun]);
}

/** Median, min and max of a list of seconds, as the benchmark tables print them. */
function spread(list: readonly number[]): string {
  if (list.length === 0) return "-";
  const sorted = [...list].sort((a, b) => a - b);
  const middle = sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
  return `${middle.toFixed(1)} (${sorted[0]!.toFixed(1)}-${sorted.at(-1)!.toFixed(1)})`;
}

const summary = PATHS.map((path) => {
  const mine = samples.filter((sample) => sample.path === path);
  const stalls = mine.filter((sample) => sample.stalled).length;
  const good = mine.filter((sample) => !sample.stalled);
  return {
    path,
    reboots: mine.length,
    stalls,
    stallRate: mine.length > 0 ? stalls / mine.length : null,
    rebootToSsh: spread(good.map((sample) => sample.seconds!)),
    beforeKernel: spread(good.flatMap((sample) => (sample.beforeKernelSeconds === null ? [] : [sample.beforeKernelSeconds]))),
  };
});
const machineInfo = {
  cpu: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  accel: record.accel,
  commit,
};
const guest = values.run ? `the kept run ${values.run}` : values.applied ? "askari's roles applied" : "no role applied";
const document = { date: new Date().toISOString(), stallLimitSeconds: KERNEL_STALL_MS / 1000, guest, machine: machineInfo, summary, samples, failures };
const out = values.out ?? join(benchDir, "reboots.json");
await writeFile(out, `${JSON.stringify(document, null, 2)}\n`);
if (values.json) process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
else {
  const rows = summary.map(
    (row) =>
      `| ${row.path} | ${row.reboots} | ${row.stalls} (${row.stallRate === null ? "-" : `${(row.stallRate * 100).toFixed(1)} %`}) | ${row.rebootToSsh} | ${row.beforeKernel} |`,
  );
  process.stdout.write(
    `| path | reboots | stalls | reboot to SSH, s (median, min-max) | before the kernel, s |\n|---|---|---|---|---|\n${rows.join("\n")}\n\nguest: ${guest}; machine: ${machineInfo.cpu}, ${machineInfo.cores} cores, ${machineInfo.memoryGiB} GiB, accel ${machineInfo.accel}; commit ${machineInfo.commit}\nsamples: ${out}\n`,
  );
  if (failures.length > 0) process.stdout.write(`failures (neither a stall nor a reboot):\n${failures.map((line) => `  ${line}`).join("\n")}\n`);
}
