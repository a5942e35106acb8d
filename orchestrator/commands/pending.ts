/**
 * Commands of the contract whose machinery arrives with a later issue. Each parses and checks
 * its arguments like the real one will, then says plainly what is not built yet (exit 4).
 */
import type { CommandDefinition } from "../cli/command.ts";
import { duration, expectPositionals, REAP_OPTIONS } from "../cli/options.ts";
import { NotBuiltError } from "../errors.ts";

export const reapCommand: CommandDefinition = {
  name: "reap",
  summary: "destroy stale stacks and sweep every boma-it- libvirt object and file",
  usage: "reap [--dry-run] [--older-than 2h] [--json]",
  details: `Options:
  --dry-run          list what would be destroyed, touch nothing
  --older-than AGE   spare runs younger than AGE (90s, 30m, 2h, 1d)`,
  options: REAP_OPTIONS,
  async run({ args }) {
    expectPositionals("reap", args.positionals, 0, 0, "no arguments");
    duration("older-than", args.values["older-than"]);
    throw new NotBuiltError("`reap`", "issue 5; `boma-it down <run>` destroys one run today");
  },
};
