/** `boma-it console <run>`: the serial console of a run's current boot (or all of them), or followed live. */
import { open, readFile, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { ExitCode } from "../../errors.ts";
import { consoleBoots } from "../../guest/console.ts";
import { consoleLines } from "../../guest/console.ts";
import { findVerbRun } from "../../run/attach.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";

export const consoleCommand: CommandDefinition = {
  name: "console",
  summary: "the serial console of a run's current boot (--all: every boot; --follow: live)",
  usage: "console [<run>] [--all] [--follow] [--json]",
  details: `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it (without it: the
only live run). Reads the run's console log (virtlogd writes it across boots); a boot begins where
the firmware loads the boot loader.
Options:
  --all      every boot, each under a header
  --follow   print what the console writes from now on, until Ctrl-C
--json prints {runId, consoleLog, boots, lines}.`,
  options: { all: { type: "boolean", default: false }, follow: { type: "boolean", default: false } },
  async run({ args, runner, env, signal, stdout }) {
    expectPositionals("console", args.positionals, 0, 1, "at most one <run>");
    const { found } = await findVerbRun({ verb: "read the console of", reference: args.positionals[0], runner, env });
    const file = found.outputs.consoleLog;
    const text = await readFile(file, "utf8").catch(() => "");
    const boots = consoleBoots(text);
    const lines = args.values.all ? boots.flatMap((boot, index) => [`── boot ${index + 1} of ${boots.length} ──`, ...boot]) : (boots.at(-1) ?? []);
    if (args.values.follow) {
      stdout.write(`${lines.join("\n")}\n── following ${file} (Ctrl-C to stop) ──\n`);
      let offset = (await stat(file).catch(() => undefined))?.size ?? 0;
      while (!signal.aborted) {
        const size = (await stat(file).catch(() => undefined))?.size ?? 0;
        if (size > offset) {
          const handle = await open(file, "r");
          const buffer = Buffer.alloc(size - offset);
          await handle.read(buffer, 0, buffer.length, offset);
          await handle.close();
          offset = size;
          stdout.write(`${consoleLines(buffer.toString("utf8")).join("\n")}\n`);
        }
        await sleep(500, undefined, { signal }).catch(() => undefined);
      }
      return { exitCode: ExitCode.pass, json: { runId: found.runId, consoleLog: file, boots: boots.length, lines }, text: "" };
    }
    return { exitCode: ExitCode.pass, json: { runId: found.runId, consoleLog: file, boots: boots.length, lines }, text: lines.join("\n") };
  },
};
