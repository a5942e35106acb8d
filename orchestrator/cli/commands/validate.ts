/** `boma-it validate <profile>`: load and check profile, overlay and inventory; run nothing. */
import { ExitCode } from "../../errors.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";
import { loadProfile } from "../../profile/load.ts";

export const validateCommand: CommandDefinition = {
  name: "validate",
  summary: "load and check a profile, its overlay and the inventory; run nothing",
  usage: "validate <profile> [--json]",
  details: `<profile> is a name in profiles/ (askari) or a path to a YAML file.
Checks the profile and overlay against their schemas (unknown keys are errors), that repo,
inventory and playbook exist, and that the host is in the inventory. Exit 0 when all is well,
2 with one line per problem (file:line:column: path: expected ..., found ...) otherwise.`,
  options: {},
  async run({ args, locations, runner, log }) {
    expectPositionals("validate", args.positionals, 1, 1, "one <profile>");
    const profile = await loadProfile(args.positionals[0]!, locations, runner, { say: (line) => log.info(line) });
    const summary = {
      profile: profile.name,
      file: profile.file,
      host: profile.document.host,
      groups: profile.inventoryHost.groups,
      repo: profile.repoDir,
      inventory: profile.inventoryFile,
      playbook: profile.playbookFile,
      overlay: profile.overlay.file ?? null,
      image: profile.document.image,
      certs: profile.document.certs,
      vm: profile.document.vm,
      checks: profile.document.checks.map((check) => check.name),
      scenarios: Object.keys(profile.document.scenarios ?? {}),
    };
    const text = [
      `profile ${profile.name} is valid (${profile.file})`,
      `  host:      ${summary.host} (groups: ${summary.groups.join(", ")})`,
      `  repo:      ${summary.repo}`,
      `  playbook:  ${summary.playbook}`,
      `  overlay:   ${summary.overlay ?? "(none)"}`,
      `  image:     ${summary.image}; certs: ${summary.certs}; vm: ${summary.vm.vcpus} vCPU, ${summary.vm.memoryMiB} MiB, ${summary.vm.diskGiB} GiB`,
      `  checks:    ${summary.checks.length} (${summary.checks.join("; ")})`,
      `  scenarios: ${summary.scenarios.length > 0 ? summary.scenarios.join(" → ") : "green only"}`,
    ].join("\n");
    return { exitCode: ExitCode.pass, json: { valid: true, ...summary }, text };
  },
};
