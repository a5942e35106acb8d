/** What `run` and `up` read from the command line before anything else: options, profile, secrets. */
import { loadProfile, type LoadedProfile } from "../profile/load.ts";
import type { RunOptions } from "../run/options.ts";
import { loadSecrets, type RunSecrets } from "../run/secrets.ts";
import type { CommandContext } from "./command.ts";
import { expectPositionals, runCommandOptions } from "./options.ts";

/** The checked options, the profile and the run's secrets. */
export interface RunInputs {
  options: RunOptions;
  profile: LoadedProfile;
  secrets: RunSecrets;
}

/** Checks the options, loads the profile and its secrets; the log, the runner and the output redact them from then on. */
export async function loadRunInputs(command: string, context: Pick<CommandContext, "args" | "log" | "runner" | "locations" | "redactor">): Promise<RunInputs> {
  expectPositionals(command, context.args.positionals, 1, 1, "one <profile>");
  const options = runCommandOptions(context.args.values);
  const profile = await loadProfile(context.args.positionals[0]!, context.locations, context.runner, { say: (line) => context.log.info(line) });
  const secrets = await loadSecrets(profile, context.runner, context.redactor);
  return { options, profile, secrets };
}
