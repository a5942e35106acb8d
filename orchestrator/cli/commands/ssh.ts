/** `boma-it ssh <run> [-- cmd]`: a shell or a command in a live VM, with its pinned host key. */
import { ExitCode, HarnessError } from "../../errors.ts";
import { sshInteractiveArgs, sshTargetOf } from "../../host/ssh.ts";
import { findVerbRun } from "../../run/attach.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";

export const sshCommand: CommandDefinition = {
  name: "ssh",
  summary: "a shell or a command in a live VM, with its pinned host key",
  usage: "ssh <run> [--host H] [-- command ...]",
  details: `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it: any live
run on this host, whichever checkout made it.
Logs in as the harness account (passwordless sudo) with the run's key; the VM's host key was
pinned when the run was made, so a different key is refused. The exit code is the command's.
--host H: in a run of several hosts, the VM of host H (default: the run named).`,
  options: { host: { type: "string" } },
  async run({ args, runner, env }) {
    expectPositionals("ssh", args.positionals, 1, 1, "one <run>");
    const host = typeof args.values.host === "string" ? args.values.host : undefined;
    const { found } = await findVerbRun({ verb: "reach", reference: args.positionals[0], runner, env }, host === undefined ? {} : { host });
    if (found.state !== "up" && found.state !== "running") {
      throw new HarnessError(`${found.runId} is ${found.state}, not up; see \`boma-it status\``, { showTrace: false });
    }
    const result = await runner.run("ssh", sshInteractiveArgs(sshTargetOf(found.outputs), args.rest), { interactive: true, check: false });
    const code = result.exitCode ?? ExitCode.harnessFault;
    return { exitCode: code, json: { runId: found.runId, exitCode: code }, text: "" };
  },
};
