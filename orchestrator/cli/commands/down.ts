/** `boma-it down [<run>]`: destroy one kept run (the only live one when omitted). */
import { asBomaError, ExitCode, RefusedError } from "../../errors.ts";
import { underRunLock } from "../../host/lock.ts";
import { runLockPath } from "../../host/paths.ts";
import { findVerbRun } from "../../run/attach.ts";
import { teardown } from "../../run/live-runs.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";

export const downCommand: CommandDefinition = {
  name: "down",
  summary: "destroy one kept run (the only live one when omitted)",
  usage: "down [<run>] [--json]",
  details: `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it: any live
run on this host, whichever checkout made it (its stack is destroyed where it lives).
Deletes the domain (with its NVRAM), its volumes (a reset point's too), pool and network, and the
run's private keys; the run dir keeps its logs. Exit 4 when something could not be deleted
(then: npm run reap).`,
  options: {},
  async run({ args, log, runner, env, signal }) {
    expectPositionals("down", args.positionals, 0, 1, "at most one <run>");
    const { found } = await findVerbRun({ verb: "take down", reference: args.positionals[0], runner, env });
    if (!found.engine) {
      throw new RefusedError(`${found.runId}'s stack is not where its record says (${found.elsewhere ?? "unknown"})`, "npm run reap removes it by its name");
    }
    const engine = found.engine;
    await underRunLock(runLockPath(env), `down of ${found.runId}`, found.runId, () => teardown(engine, found.runId, found.outputs.runDir, log)).catch(
      (error: unknown) => {
        throw asBomaError(error, signal);
      },
    );
    return {
      exitCode: ExitCode.pass,
      json: { runId: found.runId, destroyed: true, runDir: found.outputs.runDir },
      text: `${found.runId} destroyed; its logs stay in ${found.outputs.runDir}`,
    };
  },
};
