/** `boma-it validate <profile>`: load and check profile, overlay and inventory; run nothing. */
import { ExitCode } from "../../errors.ts";
import { checkBeforeBoot } from "../../ansible/apply.ts";
import { loadSecrets } from "../../ansible/secrets.ts";
import type { CommandDefinition } from "../command.ts";
import { hostTargets } from "../run-inputs.ts";
import { oneOf, PROFILELESS_OPTIONS } from "../options.ts";
import { SCENARIOS } from "../../run/options.ts";
import { profileForHost } from "../../profile/load.ts";
import { worktreeRevision } from "../../profile/revision.ts";
import { rebootKinds, type RebootKind } from "../../profile/schema.ts";
import { declaredScenarios, resolveScenarioRevisions } from "../../run/scenario.ts";
import { linkName } from "../../../infra/spec.ts";

export const validateCommand: CommandDefinition = {
  name: "validate",
  summary: "load and check a profile, its overlay and the inventory; run nothing",
  usage: "validate <profile> | --host H --repo DIR [--inventory F] [--playbook F] [--overrides F] [--ref REV] [--baseline REV] [--scenario S] [--json]",
  details: `<profile> is a name in profiles/ (askari) or a path to a YAML file.
Checks the profile and overlay against their schemas (unknown keys are errors), that repo,
inventory and playbook exist, that the host is in the inventory, and which revision of the repo
each scenario would apply (--ref/--baseline as \`run\` takes them). Then what the apply would
meet first, as a run meets it, in the jail and reaching no one: the vault passwords (exit 3
without them), the host's vars as Ansible resolves them (every group_vars/host_vars file, YAML
and vaulted) and \`ansible-playbook --syntax-check\` of the playbook (for a scenario that
applies the repo as on disk). Exit 0 when all is well, 2 with one line per problem
(file:line:column: path: expected ..., found ...; Ansible's own words as lines) otherwise.`,
  options: { ref: { type: "string" }, baseline: { type: "string" }, scenario: { type: "string" }, ...PROFILELESS_OPTIONS },
  async run({ args, locations, runner, log, redactor }) {
    // A typo of a scenario is refused before anything is read, as `run` refuses it.
    const asked = args.values.scenario === undefined ? undefined : oneOf("scenario", args.values.scenario, SCENARIOS);
    const [host] = await hostTargets("validate", { args, log, runner, locations }, false);
    const profile = await host!.load();
    // What each scenario would apply: its revision resolved (a ref naming no commit is exit 2 here).
    const { red, green } = declaredScenarios(profile);
    const plan = [...(red ? [red] : []), green];
    const target = asked === "red" ? "red" : "green";
    await resolveScenarioRevisions(
      profile,
      plan,
      {
        ...(typeof args.values.ref === "string" ? { ref: args.values.ref } : {}),
        ...(typeof args.values.baseline === "string" ? { baseline: args.values.baseline } : {}),
        target,
      },
      runner,
    );
    // What the apply would meet first, as a run meets it: the vault passwords (exit 3 without
    // them), the host's vars as Ansible resolves them, the playbook's syntax (exit 2, file and line).
    const scenario = plan.find((entry) => entry.name === target) ?? green;
    // Several hosts: each as its own VM's apply would meet it.
    for (const host of profile.topology?.map((member) => member.name) ?? [profile.document.host]) {
      const view = profileForHost(profile, host);
      const secrets = await loadSecrets(view, runner, redactor);
      if (!scenario.revision) await checkBeforeBoot({ profile: view, secrets, runner, log, vars: scenario.vars });
    }
    const worktree = await worktreeRevision(profile.repoDir, runner);
    const revisions = plan.map((scenario) => ({
      scenario: scenario.name,
      ref: scenario.revision?.ref ?? null,
      commit: scenario.revision?.commit ?? worktree.commit,
      ...(scenario.revision ? {} : { dirty: worktree.dirty ?? null }),
      baseline: scenario.baseline ? { ref: scenario.baseline.ref, commit: scenario.baseline.commit } : null,
    }));
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
      ...(profile.topology
        ? {
            hosts: profile.topology.map((host) => ({ host: host.name, groups: host.inventoryHost.groups, overlay: host.overlay.file ?? null, vm: host.vm })),
            rebootOrder: Object.fromEntries(plan.map((scenario) => [scenario.name, scenario.rebootOrder ?? profile.document.rebootOrder ?? "all"])),
            links: profile.document.links ?? [],
          }
        : {}),
      checks: profile.document.checks.map((check) => check.name),
      survival: profile.document.survival,
      verify: profile.verifyFile ?? null,
      idempotence: Object.fromEntries(plan.map((scenario) => [scenario.name, scenario.idempotence ?? profile.document.idempotence])),
      reboot: Object.fromEntries(plan.map((scenario) => [scenario.name, rebootKinds(scenario.reboot ?? profile.document.reboot)])),
      scenarios: Object.keys(profile.document.scenarios ?? {}),
      revisions,
    };
    const idempotence = Object.entries(summary.idempotence).filter(([, mode]) => mode !== false);
    const text = [
      `profile ${profile.name} is valid (${profile.file})`,
      ...(summary.hosts
        ? summary.hosts.map(
            (host, index) =>
              `  ${index === 0 ? "hosts:    " : "          "} ${host.host} (groups: ${host.groups.join(", ")}; overlay: ${host.overlay ?? "(none)"}; ${host.vm.vcpus} vCPU, ${host.vm.memoryMiB} MiB)`,
          )
        : [`  host:      ${summary.host} (groups: ${summary.groups.join(", ")})`]),
      ...(summary.links && summary.links.length > 0
        ? [`  links:     ${summary.links.map((pair, index) => `${linkName(index)} ${pair[0]} ↔ ${pair[1]}`).join(", ")} (each a network of its own)`]
        : []),
      ...(summary.rebootOrder
        ? [
            `  reboot order: ${Object.entries(summary.rebootOrder)
              .map(([name, order]) => `${name.toUpperCase()} ${Array.isArray(order) ? order.join(" → ") : order}`)
              .join(", ")}`,
          ]
        : []),
      `  repo:      ${summary.repo}`,
      `  playbook:  ${summary.playbook}`,
      ...(summary.hosts ? [] : [`  overlay:   ${summary.overlay ?? "(none)"}`]),
      `  image:     ${summary.image}; certs: ${summary.certs}; vm: ${summary.vm.vcpus} vCPU, ${summary.vm.memoryMiB} MiB, ${summary.vm.diskGiB} GiB`,
      `  checks:    ${summary.checks.length}${summary.checks.length > 0 ? ` (${summary.checks.join("; ")})` : ""}${summary.survival !== false ? `; survival checks${summary.survival === "strict" ? " (strict)" : ""} derived from the state before the reboot` : ""}`,
      ...(summary.verify ? [`  verify:    ${summary.verify} (before and after the reboot)`] : []),
      ...(idempotence.length > 0
        ? [
            `  idempotence: a second apply in ${idempotence.map(([name, mode]) => `${name.toUpperCase()}${mode === "strict" ? " (strict: any change fails)" : ""}`).join(", ")}`,
          ]
        : []),
      ...rebootLines(summary.reboot),
      `  scenarios: ${summary.scenarios.length > 0 ? summary.scenarios.join(" → ") : "green only"}`,
      ...revisions.map(
        (revision) =>
          `  ${revision.scenario.toUpperCase().padEnd(5)}      applies ${revision.ref ? `${revision.ref} = ${revision.commit}` : `the repo as on disk${revision.dirty ? " (uncommitted changes included)" : ""}`}${revision.baseline ? `, on top of ${revision.baseline.ref} = ${revision.baseline.commit}` : ""}`,
      ),
    ].join("\n");
    return { exitCode: ExitCode.pass, json: { valid: true, ...summary }, text };
  },
};

/** What `validate` says of the reboot kinds: nothing for one clean reboot, one line when every scenario reboots alike. */
function rebootLines(byScenario: Record<string, RebootKind[]>): string[] {
  const said = (kinds: RebootKind[]) => `${kinds.join(", ")}${kinds.length > 1 ? " (each from the same applied state)" : ""}`;
  const entries = Object.entries(byScenario);
  if (entries.every(([, kinds]) => kinds.join() === "clean")) return [];
  if (new Set(entries.map(([, kinds]) => kinds.join())).size === 1) return [`  reboot:    ${said(entries[0]![1])}`];
  return entries.map(([name, kinds]) => `  reboot:    ${name.toUpperCase()}: ${said(kinds)}`);
}
