/** `boma-it up <profile>`: provision and boot a VM that impersonates the host, apply; keep it. */
import { join } from "node:path";
import { BadInputError, ExitCode, SystemUnderTestError } from "../../errors.ts";
import { scenarioToBringUp } from "../../run/scenario.ts";
import { bringUp, KEEP_AT } from "../../run/sequences.ts";
import type { CommandDefinition } from "../command.ts";
import { oneOf, RUN_OPTIONS, runOptionsHelp } from "../options.ts";
import { hostTargets, loadRunInputs } from "../run-inputs.ts";

export const upCommand: CommandDefinition = {
  name: "up",
  summary: "provision, boot and apply; keep the VM and print how to reach it",
  usage:
    "up <profile> | --host H --repo DIR [--scenario green|red] [--ref REV] [--baseline REV] [--keep-at boot|apply|reboot] [--certs T] [--keep K] [--no-egress] [--min-free-ram MiB] [-e k=v] [--tags T] [--json]",
  details: `${runOptionsHelp("up")}
  --keep-at boot|apply|reboot      stop right after the boot and the reset point (the VM as the
                                   image made it: apply it yourself with \`boma-it apply <run>\`),
                                   after the apply (default), or just before the reboot: the
                                   checks run and the state the reboot will lose is kept
                                   (before-reboot.json) for \`boma-it reboot <run>\`
Applies the profile's playbook with the GREEN scenario's vars (or RED's with --scenario red).
Before the apply it takes the run's reset point (right after cloud-init), for \`boma-it reset <run>\`.
On success the VM stays up: reach it with \`boma-it ssh <run>\`, work on it with \`apply\`, \`check\`,
\`reboot\`, \`reset\` and \`console\`, remove it with \`boma-it down <run>\`.
If it fails to come up or to apply, what was created is removed again, unless --keep always, or
--keep on-failure (the default) and the apply itself failed (exit 1); the serial console and the
run's logs stay in the run dir. --json prints {runId, host, ip, ssh, runDir} (and vms[], each
{host, runId, ip, ssh}, for a profile with hosts: one VM per host, brought up, reset and taken
down together through the first's run).`,
  options: { ...RUN_OPTIONS, "keep-at": { type: "string" } },
  async run({ args, log, runner, env, locations, runsDir, signal, redactor }) {
    const keepAt = args.values["keep-at"] === undefined ? "apply" : oneOf("keep-at", args.values["keep-at"], KEEP_AT);
    if (keepAt === "boot") refuseApplyOptions(args.values);
    // From here on every command record and log line is redacted of the run's secrets.
    const [target] = await hostTargets("up", { args, log, runner, locations }, false);
    const inputs = await loadRunInputs(target!, { args, runner, redactor });
    const scenario = scenarioToBringUp(inputs.profile, inputs.options.scenario);
    const { report, error, summary } = await bringUp(inputs, scenario, keepAt, { runner, log, env, runsDir, signal });
    if (report.kept && report.verdict !== "pass") {
      log.info(`the VM is kept: get in with \`${report.kept.ssh}\``);
      log.info(`clean up with \`npm run boma-it -- down ${report.kept.run}\` (or \`npm run reap\`)`);
    }
    if (error !== undefined) throw error;
    if (report.verdict !== "pass" || !summary) throw new SystemUnderTestError(`${report.message}\n  report: ${join(report.runDir, "report.json")}`);
    const outputs = summary;
    const text = [
      `${outputs.host} is up as ${outputs.runId} at ${outputs.ip}`,
      `  shell:    ${outputs.ssh}`,
      // Several hosts: each other VM through the run's name.
      ...(outputs.vms ?? [])
        .slice(1)
        .map((vm) => `  ${vm.host}:${" ".repeat(Math.max(1, 9 - vm.host.length))}${vm.ip}, shell: npm run boma-it -- ssh ${outputs.runId} --host ${vm.host}`),
      `  console:  ${join(outputs.runDir, "console.log")}`,
      `  remove:   npm run boma-it -- down ${outputs.runId}`,
    ].join("\n");
    return { exitCode: ExitCode.pass, json: summary, text };
  },
};

/** `--keep-at boot` applies nothing: what only the apply reads is refused rather than ignored. */
function refuseApplyOptions(values: Record<string, unknown>): void {
  const given = ["baseline", "extra-vars", "tags", "skip-tags", "diff", "verbose"].filter((name) => {
    const value = values[name];
    return value !== undefined && value !== false && !(Array.isArray(value) && value.length === 0);
  });
  if (given.length === 0) return;
  throw new BadInputError({
    message: `--keep-at boot applies nothing, so ${given.map((name) => `--${name}`).join(", ")} would do nothing: give ${given.length === 1 ? "it" : "them"} to \`boma-it apply <run>\` once the VM is up`,
  });
}
