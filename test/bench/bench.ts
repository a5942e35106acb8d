/**
 * `npm run bench`: where the time goes. Runs, N times, through the real CLI inside the e2e
 * sandbox, each time on an empty cache of saved first boots: the askari acceptance (`run
 * askari`) with every VM booted from power-on, each saving its first boot (RED's and GREEN's:
 * side by side they are two; with `--serial` it saves none, `--cold-boot`, and the `up`'s first
 * boot is the one saved), a plain `up`/`down` (plus a `reap` with nothing left), and the
 * acceptance again, its VMs started from those saved first boots. It writes a JSON summary and
 * prints the speed goals and the two acceptances' phases side by side. Speed goals are judged by
 * these numbers, never by timed tests.
 *
 * `--vcpus N` runs them all with VMs of N vCPUs (a copy of askari's profile in the bench dir): under
 * TCG it decides how many VMs run side by side on this machine's cores.
 *
 * usage: npm run bench -- [--runs N] [--serial] [--vcpus N] [--no-cold] [--no-acceptance] [--no-updown] [--out FILE] [--json]
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { PROJECT_ROOT, runsDir } from "../../orchestrator/host/paths.ts";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { vmSample, type ReportedVm } from "./samples.ts";
import { goalLines, headline, sideBySide, summarize, summarizeByStart, type AcceptanceSample, type VmSample } from "./summary.ts";

const USAGE = `usage: npm run bench -- [--runs N] [--serial] [--vcpus N] [--no-cold] [--no-acceptance] [--no-updown] [--out FILE] [--json]
  --runs N           how many times each (default 1)
  --serial           the acceptances with RED, then GREEN (run --serial), to set beside side by side
  --vcpus N          every VM with N vCPUs instead of the profile's (under TCG, VMs run side by side
                     only where the cores hold all their vCPUs)
  --no-cold          skip the acceptance whose VMs boot from power-on (the next one then boots and saves)
  --no-acceptance    skip both askari acceptances (run askari, RED→GREEN)
  --no-updown        skip the plain up/down/reap (one VM of the profile's shape, which side by side
                     under TCG may not be the acceptance's)
  --out FILE         where bench.json goes (default <runs dir>/bench-<stamp>/bench.json)
  --json             print bench.json on stdout instead of the table (progress stays on stderr)`;
const OPTIONS = {
  runs: { type: "string", default: "1" },
  serial: { type: "boolean", default: false },
  vcpus: { type: "string" },
  "no-cold": { type: "boolean", default: false },
  "no-acceptance": { type: "boolean", default: false },
  "no-updown": { type: "boolean", default: false },
  out: { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;
let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>["values"];
try {
  ({ values } = parseArgs({ options: OPTIONS }));
} catch (error) {
  process.stderr.write(`bench: ${(error as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  process.stderr.write(`bench: --runs: expected a whole number of at least 1, found ${JSON.stringify(values.runs)}\n`);
  process.exit(2);
}
const vcpus = values.vcpus === undefined ? undefined : Number(values.vcpus);
if (vcpus !== undefined && (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 64)) {
  process.stderr.write(`bench: --vcpus: expected a whole number from 1 to 64, found ${JSON.stringify(values.vcpus)}\n`);
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
/** What `run` and `up` are given: askari, or a copy of its profile with other vCPUs (its paths made absolute). */
const profile = vcpus === undefined ? "askari" : await askariWithVcpus(vcpus);

async function askariWithVcpus(count: number): Promise<string> {
  const source = join(PROJECT_ROOT, "profiles", "askari.yml");
  const text = (await readFile(source, "utf8"))
    .replace(/^(repo|overrides): (.+)$/gm, (_line, key: string, path: string) => `${key}: ${resolve(dirname(source), path.trim())}`)
    .replace(/^vm: \{ vcpus: \d+,/m, `vm: { vcpus: ${count},`);
  if (!text.includes(`vm: { vcpus: ${count},`)) throw new Error(`bench: ${source} has no one-line vm: { vcpus: ... } to change`);
  const copy = join(benchDir, `askari-${count}vcpu.yml`);
  await writeFile(copy, text);
  return copy;
}

/** Runs the CLI; its stderr goes to ours, prefixed, so a long bench shows progress. */
function cli(args: readonly string[], more: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; seconds: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), ...args], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...env, ...more },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) process.stderr.write(`  | ${line}\n`);
  });
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, seconds: Math.round((performance.now() - started) / 100) / 10 })));
}

const acceptance: AcceptanceSample[] = [];
const ups: VmSample[] = [];
const upRss: number[] = [];
const downs: number[] = [];
const reaps: number[] = [];
const failures: string[] = [];
let accel = "";
/** One acceptance through the CLI, its sample kept (`label` names it in the progress and the failures). */
async function runAcceptance(index: number, label: string, states: Record<string, string>, args: readonly string[] = []): Promise<void> {
  process.stderr.write(
    `bench ${index}/${runs}: run askari ${label} (RED→GREEN${values.serial ? ", one at a time" : ""}${vcpus ? `, ${vcpus} vCPUs per VM` : ""})\n`,
  );
  const result = await cli(["run", profile, ...args, ...(values.serial ? ["--serial"] : []), "--json"], states);
  const report = parseJson<RunReport>(result.stdout);
  if (!report) {
    failures.push(`run ${index} ${label}: exit ${result.code}, no report on stdout`);
    return;
  }
  if (result.code !== 0) failures.push(`run ${index} ${label}: exit ${result.code}: ${report.message}`);
  accel = report.accel;
  acceptance.push({
    wallSeconds: report.wallSeconds,
    ...(report.scenariosAtOnce !== undefined ? { scenariosAtOnce: report.scenariosAtOnce } : {}),
    vms: report.scenarios.map(vmSample),
    peakRssMiB: report.harness.peakRssMiB,
    verdict: report.verdict,
  });
}

for (let index = 1; index <= runs; index += 1) {
  // Each round its own cache: its first acceptance boots every VM, its second starts from them.
  const states = { BOMA_IT_STATE_CACHE: join(benchDir, `states-${index}`) };
  // One at a time, GREEN would start from RED's first boot: the booted acceptance saves none then.
  if (!values["no-acceptance"] && !values["no-cold"]) {
    if (values.serial) await runAcceptance(index, "booting every VM", states, ["--cold-boot"]);
    else await runAcceptance(index, "booting every VM, each saving its first boot", states);
  }
  if (!values["no-updown"]) {
    process.stderr.write(
      `bench ${index}/${runs}: up askari, down, reap (one VM, of the profile's shape: it starts from a saved first boot of that shape, or boots and saves one)\n`,
    );
    const up = await cli(["up", profile, "--json"], states);
    if (up.code !== 0) {
      failures.push(`up ${index}: exit ${up.code}`);
      await cli(["reap"], states);
    } else {
      const { runId, runDir } = JSON.parse(up.stdout) as { runId: string; runDir: string };
      const upReport = JSON.parse(await readFile(join(runDir, "up.json"), "utf8")) as ReportedVm & { accel: string; harness: { peakRssMiB: number } };
      accel = upReport.accel;
      const down = await cli(["down", runId], states);
      if (down.code !== 0) failures.push(`down ${index}: exit ${down.code}`);
      ups.push(vmSample({ ...upReport, phases: [...upReport.phases, { name: "teardown", seconds: down.seconds }] }));
      upRss.push(upReport.harness.peakRssMiB);
      downs.push(down.seconds);
      const reap = await cli(["reap"], states);
      reaps.push(reap.seconds);
    }
  }
  if (!values["no-acceptance"]) await runAcceptance(index, "from saved first boots", states);
}

const summary = summarize(acceptance, ups, downs, reaps, upRss);
const byStart = summarizeByStart(acceptance, ups, downs, reaps);
const goals = goalLines(byStart.warm);
const machine = {
  cpu: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  accel,
  vcpusPerVm: vcpus ?? "the profile's",
  commit: (() => {
    try {
      return execFileSync("git", ["-C", PROJECT_ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    } catch {
      return "unknown";
    }
  })(),
};
const document = {
  date: new Date().toISOString(),
  runs,
  machine,
  harnessShare: summary.harnessShare,
  goals,
  byStart,
  summary,
  samples: { acceptance, ups, downs, reaps },
  failures,
  benchDir,
};
const out = values.out ?? join(benchDir, "bench.json");
await writeFile(out, `${JSON.stringify(document, null, 2)}\n`);
if (values.json) process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
else {
  process.stdout.write(
    `${goals.join("\n")}\n${headline(summary)} (all runs)\n\n${sideBySide(byStart)}\n\nmachine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, accel ${accel}${vcpus ? `, ${vcpus} vCPUs per VM` : ""}; commit ${machine.commit}\nsummary: ${out}\n`,
  );
  if (failures.length > 0) process.stdout.write(`failures:\n${failures.map((line) => `  ${line}`).join("\n")}\n`);
}
if (failures.length > 0) process.exit(1);

/** A JSON document, or undefined when stdout held none (a crashed command). */
function parseJson<T>(text: string): T | undefined {
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}
