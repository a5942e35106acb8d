/** `boma-it runs` and `boma-it report [<run>]`: past runs, and one run's result as a person reads it. */
import { ExitCode } from "../../errors.ts";
import { listPastRuns, pastRunsTable, readPastReport, resolvePastRun, runReportText } from "../../run/past-runs.ts";
import { reportPagePath } from "../../run/report-page.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals } from "../options.ts";

export const runsCommand: CommandDefinition = {
  name: "runs",
  summary: "past runs in the runs dir: id, host, when, verdict, time, kept VM",
  usage: "runs [--runs-dir DIR] [--json]",
  details: `Lists every run that wrote a report.json under the runs dir (a fleet's hosts too), newest
first: its run dir's name, host, start (UTC), verdict and exit code, wall time, and the VM it kept.
\`boma-it report <run>\` reads one. --json prints a list of {runId, name, dir, host, profile,
startedAt, verdict, exitCode, wallSeconds, kept, fleet}.`,
  options: {},
  async run({ args, runsDir }) {
    expectPositionals("runs", args.positionals, 0, 0, "no arguments");
    const runs = await listPastRuns(runsDir);
    return { exitCode: ExitCode.pass, json: runs, text: pastRunsTable(runs, runsDir) };
  },
};

export const reportCommand: CommandDefinition = {
  name: "report",
  summary: "one past run's result as a person reads it (the newest when omitted)",
  usage: "report [<run>] [--open] [--runs-dir DIR] [--json]",
  details: `<run> is a run dir's name as \`runs\` lists it, the run id, or any part of either only one
run has; without it, the newest run. Prints the verdict, each scenario with the checks that failed
and what they saw, what the reboot changed (ruleset, listeners, containers, failed units), what
the allowlist refused, where the diagnostics are and how to get into a kept VM. --json prints the
run's report.json as it is. --open prints the path of the run's page, report.html (a page of
its own: phases on a timeline, each check before and after the reboot, what the reboot changed,
the diagnostics as links; made from report.json when the run predates it), to open in a browser.
Exits 0 whatever the run came to: the run's own exit code is in it.`,
  options: { open: { type: "boolean", default: false } },
  async run({ args, runsDir }) {
    expectPositionals("report", args.positionals, 0, 1, "at most one <run>");
    const run = resolvePastRun(await listPastRuns(runsDir), args.positionals[0], runsDir);
    const report = await readPastReport(run);
    if (args.values.open === true) {
      const page = await reportPagePath(report);
      return { exitCode: ExitCode.pass, json: { page }, text: page };
    }
    return { exitCode: ExitCode.pass, json: report, text: runReportText(report, { short: false }) };
  },
};
