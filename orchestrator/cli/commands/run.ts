/** `boma-it run`: the whole sequence for a profile (RED→GREEN), a host without one, or a whole group. */
import { fleetTable, runFleet } from "../../run/fleet.ts";
import type { RunOptions } from "../../run/options.ts";
import type { RunReport } from "../../run/report.ts";
import { scenariosToRun } from "../../run/scenario.ts";
import { runScenarios } from "../../run/sequences.ts";
import { runReportText } from "../../run/past-runs.ts";
import type { CommandContext, CommandDefinition } from "../command.ts";
import { RUN_OPTIONS, runOptionsHelp } from "../options.ts";
import { hostTargets, loadRunInputs, type HostTarget } from "../run-inputs.ts";

export const runCommand: CommandDefinition = {
  name: "run",
  summary: "the whole sequence: provision, apply, check, reboot, check; RED→GREEN; a host or a group without profile",
  usage: `run <profile> [<profile>...] | --host H --repo DIR | --group G --repo DIR
    [--scenario S] [--serial] [--ref REV] [--baseline REV] [--certs T] [--keep K] [--no-egress] [--min-free-ram MiB] [-e k=v] [--tags T] [--json]`,
  details: `${runOptionsHelp("run")}
  --serial                         RED, then GREEN (only when RED was faithful), each with the
                                   profile's vCPUs; by default they run side by side, each on its
                                   own VM and network, when the free RAM holds both VMs (each line
                                   of the log then says whose it is); under TCG with too few cores
                                   for the profile's vCPUs, with fewer each (one core per VM at
                                   least: on 2 cores, 1 vCPU each), said in one line
Each scenario gets a fresh VM from the golden image: apply (scenario vars), checks, reboot
(proven by a new boot id), checks again. GREEN passes when every check passes before and after
the reboot. RED (the control) must pass before and fail after the reboot (exactly its
expectFailing checks, when the profile names them); otherwise the harness is not faithful
(exit 1). The profile's \`reboot:\` may name other kinds (power-loss, soft) or several, each from
the same applied state and judged on its own; RED's expectFailing may be per kind (none: RED
must survive that kind). A failing scenario keeps its VM (unless --keep never) and writes diagnostics/. A fault
of the harness or the infrastructure (a stall before the kernel, a domain destroyed from the host,
libvirt failing) is no verdict: exit 4, with its causes. Every exit writes report.json, junit.xml,
run.log and commands.log in the run dir; --json prints the report.
Several profiles or --group: each host in turn (its scenarios side by side, as above), under one fleet dir with
fleet.json and a junit.xml of a testsuite per host; a failing host does not stop the others;
the exit code is the worst; --json prints fleet.json.`,
  options: { ...RUN_OPTIONS, serial: { type: "boolean", default: false } },
  async run(context) {
    const targets = await hostTargets("run", context, true);
    const fleetName =
      typeof context.args.values.group === "string"
        ? context.args.values.group
        : targets.length > 1
          ? targets
              .map((target) => target.name)
              .join("+")
              .slice(0, 60)
          : undefined;
    if (fleetName === undefined) {
      const report = await runHost(targets[0]!, context, context.runsDir);
      return {
        exitCode: report.exitCode,
        json: report,
        text: runReportText(report, { short: true, ...(context.json ? { keptOnStderr: (line: string) => context.log.info(line) } : {}) }),
      };
    }
    // Several hosts, one VM at a time: unless --keep says otherwise, a failing host's VM goes
    // (its diagnostics stay) so the next host can start.
    const keep = context.args.values.keep === undefined ? ("never" as const) : undefined;
    if (keep)
      context.log.info(
        "several hosts: a failing host's VM is not kept (--keep never; its diagnostics are in its run dir); --keep on-failure keeps it and stops there",
      );
    const fleet = await runFleet(
      fleetName,
      targets.map((target) => ({ name: target.name, run: (runsDir) => runHost(target, context, runsDir, keep) })),
      context,
    );
    return { exitCode: fleet.exitCode, json: fleet, text: fleetTable(fleet) };
  },
};

/** One host's run: its scenarios (RED→GREEN, or GREEN), their revisions, cert tier, and the driver. */
async function runHost(target: HostTarget, context: CommandContext, runsDir: string, keep?: RunOptions["keep"]): Promise<RunReport> {
  const { log, runner, env, signal } = context;
  const inputs = await loadRunInputs(target, context);
  const { profile } = inputs;
  const options = keep ? { ...inputs.options, keep } : inputs.options;
  const scenarios = scenariosToRun(profile, options.scenario);
  const report = await runScenarios({ ...inputs, options }, scenarios, { runner, log, env, runsDir, signal });
  return report;
}
