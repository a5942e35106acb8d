/** `boma-it down [<run>]`: destroy one kept run (the only live one when omitted). */
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";
import { allEngines } from "../../run/engine-choice.ts";
import { asBomaError, ExitCode } from "../../errors.ts";
import { stacksDir } from "../../host/paths.ts";
import { liveStacks, resolveRun, teardown } from "../../run/stacks.ts";

export const downCommand: CommandDefinition = {
  name: "down",
  summary: "destroy one kept run (the only live one when omitted)",
  usage: "down [<run>] [--json]",
  details: `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it.
Deletes the domain (with its NVRAM), its volumes, pool and network, and the run's private keys;
the run dir keeps its logs. Exit 4 when something could not be deleted (then: npm run reap).`,
  options: {},
  async run({ args, log, runner, env, signal }) {
    expectPositionals("down", args.positionals, 0, 1, "at most one <run>");
    const stacks = await liveStacks(await allEngines(runner, stacksDir(env)));
    const { summary, engine } = resolveRun(stacks, args.positionals[0], "take down");
    try {
      await teardown(engine, summary.stack, summary.outputs.runDir, log);
    } catch (error) {
      throw asBomaError(error, signal);
    }
    return {
      exitCode: ExitCode.pass,
      json: { runId: summary.stack, destroyed: true, runDir: summary.outputs.runDir },
      text: `${summary.stack} destroyed; its logs stay in ${summary.outputs.runDir}`,
    };
  },
};
