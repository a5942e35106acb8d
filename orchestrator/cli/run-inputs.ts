/**
 * What `run`, `up` and `validate` read from the command line before anything else: which hosts
 * (a profile by name or path, several profiles, `--host` with `--repo` and no profile, or a whole
 * `--group` of the inventory), the checked options, and each host's profile and secrets.
 */
import { BadInputError } from "../errors.ts";
import { groupMembers, readInventory } from "../profile/inventory.ts";
import { loadProfile, synthesizeProfile, type LoadedProfile, type ProfileArgs } from "../profile/load.ts";
import { closest } from "../did-you-mean.ts";
import { loadProfileSecrets } from "../ansible/secrets.ts";
import type { CommandContext } from "./command.ts";
import { runCommandOptions } from "./options.ts";
import { resolve } from "node:path";
import { realpath, stat } from "node:fs/promises";
import type { RunInputs } from "../run/sequences.ts";

/** One host to run: its name, and how to load its profile (loading is the run's first step). */
export interface HostTarget {
  name: string;
  load(): Promise<LoadedProfile>;
}

/** The hosts a command names: profiles, `--host`, or `--group`; bad input when it names none or both kinds. */
export async function hostTargets(
  command: string,
  context: Pick<CommandContext, "args" | "log" | "runner" | "locations">,
  allowMany: boolean,
): Promise<HostTarget[]> {
  const { values, positionals } = context.args;
  const text = (name: string) => (typeof values[name] === "string" ? (values[name] as string) : undefined);
  const host = text("host");
  const group = text("group");
  const repo = text("repo");
  const say = { say: (line: string) => context.log.info(line) };
  const cwd = context.locations.cwd ?? process.cwd();
  const profileless = (name: string): ProfileArgs => ({
    host: name,
    repo: repo!,
    ...(text("inventory") ? { inventory: text("inventory")! } : {}),
    ...(text("playbook") ? { playbook: text("playbook")! } : {}),
    ...(text("overrides") ? { overrides: text("overrides")! } : {}),
    ...(text("image") ? { image: text("image")! } : {}),
  });
  if (host !== undefined || group !== undefined) {
    if (positionals.length > 0)
      throw new BadInputError({
        message: `\`boma-it ${command}\` takes a <profile> or --host/--group, not both; found ${positionals.map((arg) => JSON.stringify(arg)).join(", ")} and --${host !== undefined ? "host" : "group"}`,
      });
    if (host !== undefined && group !== undefined) throw new BadInputError({ message: "--host and --group: expected one of them, found both" });
    if (repo === undefined)
      throw new BadInputError({ message: `--${host !== undefined ? "host" : "group"} needs --repo <the infrastructure repo>; found none` });
    if (host !== undefined) return [{ name: host, load: () => synthesizeProfile(profileless(host), cwd, context.runner, say) }];
    if (!allowMany) throw new BadInputError({ message: `--group: \`boma-it ${command}\` works on one host; use --host, or \`boma-it run --group\`` });
    return (await groupHosts(group!, resolve(cwd, repo), text("inventory") ?? "inventory/hosts.yml", context)).map((name) => ({
      name,
      load: () => synthesizeProfile(profileless(name), cwd, context.runner, say),
    }));
  }
  if (positionals.length === 0)
    throw new BadInputError({
      message: `\`boma-it ${command}\` needs a <profile> (a name in profiles/ or a YAML file) or --host H --repo DIR; found nothing (see \`boma-it ${command} --help\`)`,
    });
  if (positionals.length > 1 && !allowMany)
    throw new BadInputError({
      message: `\`boma-it ${command}\` takes one <profile>; found ${positionals.length}: ${positionals.map((arg) => JSON.stringify(arg)).join(", ")}`,
    });
  return positionals.map((reference) => ({
    name: reference.replace(/^.*\//, "").replace(/\.ya?ml$/, ""),
    load: () => loadProfile(reference, context.locations, context.runner, say),
  }));
}

/** The hosts of an inventory group (directly or through its children), as Ansible reads the inventory. */
async function groupHosts(group: string, repoDir: string, inventory: string, context: Pick<CommandContext, "runner">): Promise<string[]> {
  const repo = await realpath(repoDir).catch(() => undefined);
  if (!repo || !(await stat(repo)).isDirectory())
    throw new BadInputError({ path: "--repo", message: `expected a directory (the infrastructure repo), found nothing at ${repoDir}` });
  const read = await readInventory(resolve(repo, inventory), context.runner, repo);
  if (!read.groups.has(group)) {
    const hint = closest(group, [...read.groups.keys()]);
    throw new BadInputError({
      path: "--group",
      message: `no group ${JSON.stringify(group)} in ${read.file}; expected one of ${[...read.groups.keys()].sort().join(", ")}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}`,
    });
  }
  const hosts = groupMembers(read, group).sort();
  if (hosts.length === 0) throw new BadInputError({ path: "--group", message: `group ${JSON.stringify(group)} of ${read.file} has no hosts` });
  return hosts;
}

/** Checks the options, loads a host's profile and its secrets; the log, the runner and the output redact them from then on. */
export async function loadRunInputs(target: HostTarget, context: Pick<CommandContext, "args" | "runner" | "redactor">): Promise<RunInputs> {
  const options = runCommandOptions(context.args.values);
  const profile = await target.load();
  const secrets = await loadProfileSecrets(profile, context.runner, context.redactor);
  return { options, profile, secrets };
}
