/** `boma-it console <run>`: the serial console of a run's current boot (or all of them), or followed live. */
import { readFile } from "node:fs/promises";
import { ExitCode } from "../../errors.ts";
import { consoleBoots, followConsole } from "../../guest/console.ts";
import { findVerbRun } from "../../run/attach.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";

export const consoleCommand: CommandDefinition = {
  name: "console",
  summary: "the serial console of a run's current boot (--all: every boot; --follow: live)",
  usage: "console [<run>] [--host H] [--all] [--follow] [--json]",
  details: `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it (without it: the
only live run). Reads the run's console log (virtlogd writes it across boots); a boot begins where
the firmware loads the boot loader.
Options:
  --all      every boot, each under a header
  --follow   print what the console writes from now on, until Ctrl-C
  --host H   in a run of several hosts, the console of host H's VM (default: the run named)
--json prints {runId, consoleLog, boots, lines}.`,
  options: { all: { type: "boolean", default: false }, follow: { type: "boolean", default: false }, host: { type: "string" } },
  async run({ args, runner, env, signal, stdout }) {
    expectPositionals("console", args.positionals, 0, 1, "at most one <run>");
    const host = typeof args.values.host === "string" ? args.values.host : undefined;
    const { found } = await findVerbRun({ verb: "read the console of", reference: args.positionals[0], runner, env }, host === undefined ? {} : { host });
    const file = found.outputs.consoleLog;
    const text = await readFile(file, "utf8").catch(() => "");
    const boots = consoleBoots(text);
    const lines = args.values.all ? boots.flatMap((boot, index) => [`── boot ${index + 1} of ${boots.length} ──`, ...boot]) : (boots.at(-1) ?? []);
    if (args.values.follow) {
      stdout.write(`${lines.join("\n")}\n── following ${file} (Ctrl-C to stop) ──\n`);
      await followConsole(file, (followed) => stdout.write(`${followed.join("\n")}\n`), signal);
      return { exitCode: ExitCode.pass, json: { runId: found.runId, consoleLog: file, boots: boots.length, lines }, text: "" };
    }
    return { exitCode: ExitCode.pass, json: { runId: found.runId, consoleLog: file, boots: boots.length, lines }, text: lines.join("\n") };
  },
};
