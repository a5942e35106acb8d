/** `boma-it status`: every live run on this host: owner, age, IP, what it last did, where it lives. */
import { readFile } from "node:fs/promises";
import { ownerAlive } from "../../../infra/process.ts";
import { ExitCode } from "../../errors.ts";
import { libvirtFor } from "../../host/libvirt.ts";
import { stacksDir } from "../../host/paths.ts";
import { allEngines } from "../../host/engine-choice.ts";
import { findRuns, type FoundRun } from "../../run/live-runs.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";

/** What the run did last: its last verb, else the command that made it. */
async function lastAction(run: FoundRun): Promise<string> {
  const file = run.record?.reportFile;
  if (file) {
    try {
      const report = JSON.parse(await readFile(file, "utf8")) as {
        verdict?: string;
        verbs?: { verb: string; verdict?: string; ok?: boolean; finishedAt: string }[];
      };
      const verb = report.verbs?.at(-1);
      // A verb line says its verdict; one written by an older boma-it said ok.
      if (verb) return `${verb.verb} (${verb.verdict ?? (verb.ok ? "pass" : "fail")}, ${verb.finishedAt})`;
      if (report.verdict) return `${run.record?.purpose ?? "run"} (${report.verdict})`;
    } catch {
      // A run still running has no report yet.
    }
  }
  return run.record?.purpose ?? "unknown";
}

export const statusCommand: CommandDefinition = {
  name: "status",
  summary: "live runs on this host: owner, age, IP, what each last did, ssh command",
  usage: "status [--json]",
  details: `Lists every live run on this host: those of this checkout's stacks, and every boma-it domain libvirt
has (a run made from another checkout says where its stack lives). A run in state "creating" or
"destroying" whose owner process is gone was interrupted: \`npm run reap\` removes it.
--json prints a list of {runId, host, ip, ssh, runDir, engine, ageSeconds, state, owner,
ownerAlive, lastAction, stackLives, and partOf for a VM of a run of several hosts: the run id
that names it}.`,
  options: {},
  async run({ args, runner, env, log }) {
    expectPositionals("status", args.positionals, 0, 0, "no arguments");
    const libvirt = libvirtFor(runner, env);
    const reachable = await libvirt.ensureReachable().then(
      () => true,
      () => false,
    );
    if (!reachable) log.warn("libvirt does not answer: listing this checkout's runs only");
    const found = await findRuns(await allEngines(runner, stacksDir(env)), runner, reachable ? libvirt : undefined, stacksDir(env));
    const now = Date.now();
    const runs = await Promise.all(
      found.map(async (run) => {
        const alive = ownerAlive(run.outputs.ownerPid, run.outputs.ownerStart);
        return {
          runId: run.runId,
          host: run.outputs.host,
          ip: run.outputs.ip,
          ssh: run.outputs.ssh,
          runDir: run.outputs.runDir,
          engine: run.engine?.name ?? run.record?.engine ?? "unknown",
          ageSeconds: Math.max(0, Math.round((now - Date.parse(run.outputs.createdAt)) / 1000)),
          state: run.state,
          owner: alive ? `harness pid ${run.outputs.ownerPid}` : "kept",
          ownerAlive: alive,
          lastAction: await lastAction(run),
          stackLives: run.elsewhere ?? "this checkout",
          // Several hosts: the run (its first VM's) this VM is part of; `down` of it takes all.
          ...(run.record?.topology ? { partOf: run.record.topology[0]!.runId } : {}),
        };
      }),
    );
    const text =
      runs.length === 0
        ? "no live runs"
        : runs
            .map(
              (run) =>
                `${run.runId}  ${run.engine}  ${run.host}  ${formatAge(run.ageSeconds)}  ${run.ip}  ${run.state}  ${run.owner}${run.state === "up" || run.state === "running" || run.ownerAlive ? "" : " (interrupted)"}\n    last: ${run.lastAction}\n    ${run.ssh}\n    run dir: ${run.runDir}${run.stackLives === "this checkout" ? "" : `\n    stack: ${run.stackLives}`}${run.partOf && run.partOf !== run.runId ? `\n    a VM of ${run.partOf} (several hosts: \`down ${run.partOf}\` takes all)` : ""}`,
            )
            .join("\n");
    return { exitCode: ExitCode.pass, json: runs, text };
  },
};

function formatAge(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}
