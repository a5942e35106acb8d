/** `boma-it run <profile>`: the whole sequence; RED→GREEN when the profile has scenarios.red. */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { newRunIdentity, runDirName } from "../../../infra/spec.ts";
import type { CommandDefinition } from "../command.ts";
import { RUN_OPTIONS, RUN_OPTIONS_HELP } from "../options.ts";
import { BadInputError, BomaError, ExitCode, InterruptedError } from "../../errors.ts";
import { imageDir } from "../../host/paths.ts";
import { loadRunInputs, planRunCerts, preflightRun } from "../../run/preflight.ts";
import { makePrivate, scrubDir } from "../../run/secrets.ts";
import { bootTimeouts } from "../../run/provision.ts";
import { harnessPeakRssMiB, writeReport, type RunReport } from "../../run/report.ts";
import { runScenario, type ScenarioSpec } from "../../run/scenario.ts";

export const runCommand: CommandDefinition = {
  name: "run",
  summary: "the whole sequence: provision, apply, check, reboot, check; RED→GREEN",
  usage: "run <profile> [--scenario S] [--certs T] [--keep K] [--no-egress] [--min-free-ram MiB] [--json]",
  details: `${RUN_OPTIONS_HELP}
Each scenario gets a fresh VM from the golden image: apply (scenario vars), checks, reboot
(proven by a new boot id), checks again. GREEN passes when every check passes before and after
the reboot. RED (the control) must pass before and fail after the reboot; otherwise the harness
is not faithful (exit 1). A failing scenario keeps its VM (unless --keep never) and writes
diagnostics/. The run dir gets report.json and junit.xml; --json prints the report.`,
  options: RUN_OPTIONS,
  async run({ args, json, log, runner: plainRunner, env, locations, runsDir, signal, redactor }) {
    // From here on every command record and log line is redacted of the run's secrets.
    const inputs = await loadRunInputs("run", { args, log, runner: plainRunner, locations, redactor });
    const { options, profile, secrets, runner } = inputs;
    const declared = profile.document.scenarios;
    const choice = options.scenario ?? (declared?.red ? "red-green" : "green");
    if ((choice === "red" || choice === "red-green") && !declared?.red) {
      throw new BadInputError({ file: profile.file, path: "scenarios.red", message: `--scenario ${choice} needs a RED scenario; found none in the profile` });
    }
    const scenarios: ScenarioSpec[] = [];
    if (choice !== "green") scenarios.push({ name: "red", expect: "fail", vars: declared?.red?.vars ?? {} });
    if (choice !== "red") scenarios.push({ name: "green", expect: "pass", vars: declared?.green?.vars ?? {} });

    const certs = await planRunCerts(inputs, { env, log });
    const { libvirt, accel, engine, release } = await preflightRun(profile, options, { runner, env, log }, "run");
    try {

      const identity = newRunIdentity(profile.document.host);
      const runDir = join(runsDir, runDirName(identity));
      await mkdir(runDir, { recursive: true });
      log.info(`run ${identity.runId}: ${scenarios.map((scenario) => scenario.name.toUpperCase()).join(" → ")}; run dir ${runDir}`);
      const started = Date.now();
      const report: RunReport = {
        runId: identity.runId,
        profile: profile.name,
        host: profile.document.host,
        engine: engine.name,
        accel: accel.accel,
        certs: certs.tier,
        verdict: "error",
        exitCode: ExitCode.harnessFault,
        message: "",
        scenarios: [],
        readyLagSeconds: [],
        diagnostics: null,
        harness: { peakRssMiB: 0 },
        kept: null,
        startedAt: new Date(started).toISOString(),
        finishedAt: "",
        wallSeconds: 0,
        runDir,
      };

      let thrown: unknown;
      try {
        for (const scenario of scenarios) {
          const title = `${scenario.name.toUpperCase()} (expect: ${scenario.expect === "fail" ? "pass before, fail after the reboot" : "pass before and after the reboot"})`;
          const outcome = await log.step(
            title,
            () => runScenario({ profile, accel, engine, runner, libvirt, log, imageDir: imageDir(env), egress: !options.noEgress, certs, keep: options.keep, secrets, signal, timeouts: bootTimeouts(env) }, scenario, runDir),
            (result) => result.report.ok && result.error === undefined,
          );
          report.scenarios.push(outcome.report);
          report.readyLagSeconds.push(...outcome.report.readyLagSeconds);
          if (outcome.report.diagnostics) report.diagnostics = outcome.report.diagnostics;
          if (outcome.kept) report.kept = { run: outcome.kept.runId, ssh: outcome.kept.ssh, reap: `npm run boma-it -- down ${outcome.kept.runId}   # or: npm run reap` };
          if (outcome.error !== undefined) throw outcome.error;
          // RED that is not faithful makes GREEN meaningless: stop here.
          if (!outcome.report.ok) break;
        }
        const failed = report.scenarios.filter((scenario) => !scenario.ok);
        report.verdict = failed.length === 0 ? "pass" : "fail";
        report.exitCode = failed.length === 0 ? ExitCode.pass : ExitCode.systemUnderTestFailed;
        report.message = failed.length === 0 ? report.scenarios.map((scenario) => scenario.outcome).join("; ") : failed.map((scenario) => scenario.outcome).join("; ");
      } catch (error) {
        thrown = error;
        report.exitCode = error instanceof BomaError ? error.exitCode : ExitCode.harnessFault;
        report.verdict = "error";
        report.message = error instanceof Error ? error.message : String(error);
        if (error instanceof InterruptedError) report.message = "interrupted";
      } finally {
        report.finishedAt = new Date().toISOString();
        report.wallSeconds = Math.round((Date.now() - started) / 100) / 10;
        report.harness = { peakRssMiB: harnessPeakRssMiB() };
        await writeReport(report, secrets.redact);
        // Anything secret that reached a file of the run dir (a log, a journal) is replaced.
        const scrubbed = await scrubDir(runDir, secrets);
        if (scrubbed.length > 0) log.info(`redacted secrets in ${scrubbed.length} file(s) of the run dir`);
        await makePrivate(runDir);
      }
      if (thrown !== undefined) throw thrown;

      const lines = [
        `${report.verdict.toUpperCase()}: ${profile.name} (${report.wallSeconds} s)`,
        ...report.scenarios.map((scenario) => `  ${scenario.name.toUpperCase()}: ${scenario.outcome}`),
        `  report: ${join(runDir, "report.json")}`,
      ];
      if (report.diagnostics) lines.push(`  diagnostics: ${report.diagnostics}`);
      // The way in and the way out are the last lines: of the result, or of the log with --json.
      if (report.kept) {
        const keptLines = [`the VM is kept: get in with \`${report.kept.ssh}\``, `clean up with \`npm run boma-it -- down ${report.kept.run}\` (or \`npm run reap\`)`];
        if (json) keptLines.forEach((line) => log.info(line));
        else lines.push(...keptLines.map((line) => `  ${line}`));
      }
      return { exitCode: report.exitCode, json: report, text: lines.join("\n") };
    } finally {
      await release();
    }
  },
};
