/** `boma-it up <profile>`: provision and boot a VM that impersonates the host, apply; keep it. */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BadInputError, ExitCode, SystemUnderTestError } from "../../errors.ts";
import { imageDir } from "../../host/paths.ts";
import { withRun } from "../../run/driver.ts";
import { planEgress } from "../../run/egress.ts";
import { planRunCerts, preflightRun } from "../../run/preflight.ts";
import { harnessPeakRssMiB } from "../../run/report.ts";
import { applyStep, baselineStep, checkStage, profileAt, resolveScenarioRevisions, type ScenarioSpec } from "../../run/scenario.ts";
import { takeSnapshot } from "../../guest/snapshot.ts";
import { takeResetPoint } from "../../host/reset-point.ts";
import { writeRunRecord } from "../../run/provision.ts";
import { readRunRecord } from "../../run/live-runs.ts";
import type { CommandDefinition } from "../command.ts";
import { oneOf, RUN_OPTIONS, runOptionsHelp } from "../options.ts";
import { hostTargets, loadRunInputs } from "../run-inputs.ts";

/** What `up --json` prints (the command contract). */
interface UpSummary {
  runId: string;
  host: string;
  ip: string;
  ssh: string;
  runDir: string;
}

export const upCommand: CommandDefinition = {
  name: "up",
  summary: "provision, boot and apply; keep the VM and print how to reach it",
  usage: "up <profile> | --host H --repo DIR [--scenario green|red] [--ref REV] [--baseline REV] [--keep-at apply|reboot] [--certs T] [--keep K] [--no-egress] [--min-free-ram MiB] [-e k=v] [--tags T] [--json]",
  details: `${runOptionsHelp("up")}
  --keep-at apply|reboot           stop after the apply (default), or just before the reboot: the
                                   checks run and the state the reboot will lose is kept
                                   (before-reboot.json) for \`boma-it reboot <run>\`
Applies the profile's playbook with the GREEN scenario's vars (or RED's with --scenario red).
Before the apply it takes the run's reset point (right after cloud-init), for \`boma-it reset <run>\`.
On success the VM stays up: reach it with \`boma-it ssh <run>\`, work on it with \`apply\`, \`check\`,
\`reboot\`, \`reset\` and \`console\`, remove it with \`boma-it down <run>\`.
If it fails to come up or to apply, what was created is removed again, unless --keep always, or
--keep on-failure (the default) and the apply itself failed (exit 1); the serial console and the
run's logs stay in the run dir. --json prints {runId, host, ip, ssh, runDir}.`,
  options: { ...RUN_OPTIONS, "keep-at": { type: "string" } },
  async run({ args, log, runner, env, locations, runsDir, signal, redactor }) {
    // From here on every command record and log line is redacted of the run's secrets.
    const [target] = await hostTargets("up", { args, log, runner, locations }, false);
    const inputs = await loadRunInputs(target!, { args, runner, redactor });
    const { options, profile, secrets } = inputs;
    if (options.scenario === "red-green") {
      throw new BadInputError({ message: "--scenario: `up` applies one scenario; expected green or red, found \"red-green\"" });
    }
    const scenarioName = options.scenario === "red" ? "red" : "green";
    const keepAt = args.values["keep-at"] === undefined ? "apply" : oneOf("keep-at", args.values["keep-at"], ["apply", "reboot"] as const);
    const declared = profile.document.scenarios?.[scenarioName];
    if (scenarioName === "red" && !declared) {
      throw new BadInputError({ file: profile.file, path: "scenarios.red", message: "--scenario red needs a RED scenario; found none in the profile" });
    }
    const scenario: ScenarioSpec = { name: scenarioName, expect: "pass", vars: declared?.vars ?? {} };
    await resolveScenarioRevisions(profile, [scenario], { ...(options.ref ? { ref: options.ref } : {}), ...(options.baseline ? { baseline: options.baseline } : {}), target: scenarioName }, runner);
    const certs = await planRunCerts({ ...inputs, runner }, { env, log });
    const egress = await planEgress({ ...inputs, certs, runner }, { env, log });
    const request = { purpose: "up", profile, options, secrets, certs, egress, runner, log, env, runsDir, imageDir: imageDir(env), signal };
    let summary: UpSummary | undefined;
    const { report, error } = await withRun(request, { preflight: preflightRun }, async (run) => {
      await run.scenario({ name: scenarioName, expect: "pass", keep: { policy: options.keep, onPass: true } }, async (session) => {
        // Right after cloud-init, before anything of the profile: where `reset` goes back to.
        const bootId = await session.machine.bootId();
        await session.machine.closeConnection();
        const point = await session.timed("reset point", () => takeResetPoint(run.machinery.libvirt, runner, session.outputs));
        const record = await readRunRecord(session.dir);
        if (record) await writeRunRecord(session.dir, { ...record, resetPoint: { ...point, bootId } });
        const profileToApply = await profileAt(run.steps, session, scenario.revision);
        if (scenario.baseline) await baselineStep(run.steps, session, scenario, await profileAt(run.steps, session, scenario.baseline));
        const applied = await session.timed("apply", () => applyStep(run.steps, session, scenario.vars, { profile: profileToApply }));
        session.report.apply = { seconds: applied.seconds, recap: applied.recap, tasks: applied.tasks, ...(applied.hostKeyChange ? { hostKeyChange: applied.hostKeyChange } : {}) };
        session.report.certificate = applied.certificate;
        session.report.guestBootSeconds.push(await session.machine.guestBootSeconds());
        if (keepAt === "reboot") {
          // Everything the reboot will lose is looked at and kept: the checks and the state now.
          const pre = await session.timed("checks before the reboot", () => checkStage(run.steps, session, "pre-reboot"));
          session.report.checks.push(...pre);
          const snapshot = await session.timed("snapshot before the reboot", () => takeSnapshot(session.machine));
          await writeFile(join(session.dir, "before-reboot.json"), `${JSON.stringify({ checks: pre, snapshot }, null, 2)}\n`, { mode: 0o600 });
        }
        const { outputs } = session;
        summary = { runId: outputs.runId, host: outputs.host, ip: outputs.ip, ssh: outputs.ssh, runDir: outputs.runDir };
        await writeFile(
          join(session.dir, "up.json"),
          `${JSON.stringify({ ...summary, engine: run.machinery.engine.name, accel: run.machinery.accel.accel, certs: certs.tier, phases: session.report.phases, readyLagSeconds: session.report.readyLagSeconds, guestBootSeconds: session.report.guestBootSeconds, beforeKernelSeconds: session.report.beforeKernelSeconds, bootResets: session.report.bootResets, apply: { seconds: applied.seconds, tasks: applied.tasks }, certificate: applied.certificate, harness: { peakRssMiB: harnessPeakRssMiB() } }, null, 2)}\n`,
          { mode: 0o600 },
        );
        return { ok: true, outcome: `${outputs.host} is up as ${outputs.runId} at ${outputs.ip}` };
      });
    });
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
      `  console:  ${join(outputs.runDir, "console.log")}`,
      `  remove:   npm run boma-it -- down ${outputs.runId}`,
    ].join("\n");
    return { exitCode: ExitCode.pass, json: summary, text };
  },
};
