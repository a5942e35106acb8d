/** `boma-it down [<run>]`: destroy one kept run (your only live one when omitted). */
import { ExitCode } from "../../errors.ts";
import { takeDown } from "../../run/attach.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";

export const downCommand: CommandDefinition = {
  name: "down",
  summary: "destroy one kept run (your only live one when omitted)",
  usage: "down [<run>] [--json]",
  details: `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it: any live
run on this host, whichever checkout made it (its stack is destroyed where it lives). Without it,
the one live run you made; another user's run is taken down only when named (exit 2 otherwise,
naming it), and several of yours are listed for you to name one.
Deletes the domain (with its NVRAM), its volumes (a reset point's too), pool and network, and the
run's private keys; the run dir keeps its logs. Exit 4 when something could not be deleted
(then: npm run reap).`,
  options: {},
  async run({ args, log, runner, env, signal }) {
    expectPositionals("down", args.positionals, 0, 1, "at most one <run>");
    const found = await takeDown({ reference: args.positionals[0], runner, env, log, signal });
    return {
      exitCode: ExitCode.pass,
      json: { runId: found.runId, destroyed: true, runDir: found.outputs.runDir },
      text: `${found.runId} destroyed; its logs stay in ${found.outputs.runDir}`,
    };
  },
};
