/** `boma-it ssh <run> [-- cmd]`: a shell or a command in a live VM, with its pinned host key. */
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";
import { allEngines } from "../../run/engine-choice.ts";
import { ExitCode, HarnessError } from "../../errors.ts";
import { stacksDir } from "../../host/paths.ts";
import { liveStacks, resolveRun } from "../../run/stacks.ts";
import { sshInteractiveArgs, sshTargetOf } from "../../host/ssh.ts";

export const sshCommand: CommandDefinition = {
  name: "ssh",
  summary: "a shell or a command in a live VM, with its pinned host key",
  usage: "ssh <run> [-- command ...]",
  details: `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it.
Logs in as the harness account (passwordless sudo) with the run's key; the VM's host key was
pinned when the run was made, so a different key is refused. The exit code is the command's.`,
  options: {},
  async run({ args, runner, env }) {
    expectPositionals("ssh", args.positionals, 1, 1, "one <run>");
    const { summary } = resolveRun(await liveStacks(await allEngines(runner, stacksDir(env))), args.positionals[0], "reach");
    if (summary.state !== "up") {
      throw new HarnessError(`${summary.stack} is ${summary.state}, not up; see \`boma-it status\``);
    }
    const result = await runner.run("ssh", sshInteractiveArgs(sshTargetOf(summary.outputs), args.rest), {
      interactive: true,
      check: false,
    });
    const code = result.exitCode ?? ExitCode.harnessFault;
    return { exitCode: code, json: { runId: summary.stack, exitCode: code }, text: "" };
  },
};
