/**
 * `npm run bench`: where the time goes. Runs the askari acceptance (`run askari`) and a plain
 * `up`/`down` (plus a `reap` with nothing left) N times, through the real CLI inside the e2e
 * sandbox, and writes a JSON summary and a short table. Speed goals are judged by these numbers,
 * never by timed tests.
 *
 * usage: npm run bench -- [--runs N] [--no-acceptance] [--no-updown] [--out FILE]
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { PROJECT_ROOT, runsDir } from "../../orchestrator/host/paths.ts";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { summarize, table, type AcceptanceSample, type VmSample } from "./summary.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "1" },
    "no-acceptance": { type: "boolean", default: false },
    "no-updown": { type: "boolean", default: false },
    out: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  process.stdout.write("usage: npm run bench -- [--runs N] [--no-acceptance] [--no-updown] [--out FILE]\n");
  process.exit(0);
}
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  process.stderr.write(`bench: --runs: expected a whole number of at least 1, found ${JSON.stringify(values.runs)}\n`);
  process.exit(2);
}
if (!process.env.BOMA_IT_SANDBOX) {
  process.stderr.write("bench: needs the e2e sandbox (real libvirt in its network namespace): run it as `npm run bench` (as root)\n");
  process.exit(3);
}

const stamp = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
const benchDir = join(runsDir(undefined), `bench-${stamp}`);
const env = { BOMA_IT_RUNS_DIR: join(benchDir, "runs"), BOMA_IT_STACKS_DIR: join(benchDir, "stacks") };
await mkdir(env.BOMA_IT_RUNS_DIR, { recursive: true });

/** Runs the CLI; its stderr goes to ours, prefixed, so a long bench shows progress. */
function cli(args: readonly string[]): Promise<{ code: number | null; stdout: string; seconds: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), ...args], { cwd: PROJECT_ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) process.stderr.write(`  | ${line}\n`);
  });
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, seconds: Math.round((performance.now() - started) / 100) / 10 })));
}

function vmSample(report: {
  phases: { name: string; seconds: number }[];
  readyLagSeconds: (number | null)[];
  guestBootSeconds?: (number | null)[];
  beforeKernelSeconds?: (number | null)[];
  apply?: { tasks: { seconds: number }[] } | null;
}): VmSample {
  return {
    phases: report.phases,
    readyLagSeconds: report.readyLagSeconds,
    guestBootSeconds: report.guestBootSeconds ?? [],
    beforeKernelSeconds: report.beforeKernelSeconds ?? [],
    ansibleTaskSeconds: (report.apply?.tasks ?? []).reduce((sum, task) => sum + task.seconds, 0),
  };
}

const acceptance: AcceptanceSample[] = [];
const ups: VmSample[] = [];
const upRss: number[] = [];
const downs: number[] = [];
const reaps: number[] = [];
const failures: string[] = [];
let accel = "";
for (let index = 1; index <= runs; index += 1) {
  if (!values["no-acceptance"]) {
    process.stderr.write(`bench ${index}/${runs}: run askari (RED→GREEN)\n`);
    const result = await cli(["run", "askari", "--json"]);
    const report = JSON.parse(result.stdout) as RunReport;
    if (result.code !== 0) failures.push(`run ${index}: exit ${result.code}: ${report.message}`);
    accel = report.accel;
    acceptance.push({ wallSeconds: report.wallSeconds, vms: report.scenarios.map(vmSample), peakRssMiB: report.harness.peakRssMiB, verdict: report.verdict });
  }
  if (!values["no-updown"]) {
    process.stderr.write(`bench ${index}/${runs}: up askari, down, reap\n`);
    const up = await cli(["up", "askari", "--json"]);
    if (up.code !== 0) {
      failures.push(`up ${index}: exit ${up.code}`);
      await cli(["reap"]);
      continue;
    }
    const { runId, runDir } = JSON.parse(up.stdout) as { runId: string; runDir: string };
    const upReport = JSON.parse(await readFile(join(runDir, "up.json"), "utf8")) as Parameters<typeof vmSample>[0] & { accel: string; harness: { peakRssMiB: number } };
    accel = upReport.accel;
    const down = await cli(["down", runId]);
    if (down.code !== 0) failures.push(`down ${index}: exit ${down.code}`);
    ups.push(vmSample({ ...upReport, phases: [...upReport.phases, { name: "teardown", seconds: down.seconds }] }));
    upRss.push(upReport.harness.peakRssMiB);
    downs.push(down.seconds);
    const reap = await cli(["reap"]);
    reaps.push(reap.seconds);
  }
}

const summary = summarize(acceptance, ups, downs, reaps, upRss);
const machine = {
  cpu: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  accel,
  commit: (() => {
    try {
      return execFileSync("git", ["-C", PROJECT_ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    } catch {
      return "unknown";
    }
  })(),
};
const document = { date: new Date().toISOString(), runs, machine, summary, samples: { acceptance, ups, downs, reaps }, failures, benchDir };
const out = values.out ?? join(benchDir, "bench.json");
await writeFile(out, `${JSON.stringify(document, null, 2)}\n`);
process.stdout.write(`${table(summary)}\n\nmachine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, accel ${accel}; commit ${machine.commit}\nsummary: ${out}\n`);
if (failures.length > 0) {
  process.stdout.write(`failures:\n${failures.map((line) => `  ${line}`).join("\n")}\n`);
  process.exit(1);
}
