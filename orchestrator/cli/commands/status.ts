/** `boma-it status`: live runs with their engine, host, age, IP and ssh command. */
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";
import { allEngines } from "../../run/engine-choice.ts";
import { ExitCode } from "../../errors.ts";
import { stacksDir } from "../../host/paths.ts";
import { ownerAlive } from "../../../infra/process.ts";
import { liveStacks } from "../../run/stacks.ts";

export const statusCommand: CommandDefinition = {
  name: "status",
  summary: "live runs: id, engine, host, age, IP, ssh command",
  usage: "status [--json]",
  details: `Lists the runs whose stacks exist, from every engine. A run in state "creating" or
"destroying" whose owner process is gone was interrupted: \`npm run reap\` removes it.
--json prints a list of {runId, host, ip, ssh, runDir, engine, ageSeconds, state, ownerAlive}.`,
  options: {},
  async run({ args, runner, env }) {
    expectPositionals("status", args.positionals, 0, 0, "no arguments");
    const now = Date.now();
    const runs = (await liveStacks(await allEngines(runner, stacksDir(env)))).map(({ summary }) => ({
      runId: summary.stack,
      host: summary.outputs.host,
      ip: summary.outputs.ip,
      ssh: summary.outputs.ssh,
      runDir: summary.outputs.runDir,
      engine: summary.engine,
      ageSeconds: Math.max(0, Math.round((now - Date.parse(summary.outputs.createdAt)) / 1000)),
      state: summary.state,
      ownerAlive: ownerAlive(summary.outputs.ownerPid, summary.outputs.ownerStart),
    }));
    const text =
      runs.length === 0
        ? "no live runs"
        : runs
            .map((run) => `${run.runId}  ${run.engine}  ${run.host}  ${formatAge(run.ageSeconds)}  ${run.ip}  ${run.state}${run.state === "up" || run.ownerAlive ? "" : " (owner gone)"}\n    ${run.ssh}`)
            .join("\n");
    return { exitCode: ExitCode.pass, json: runs, text };
  },
};

function formatAge(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}
