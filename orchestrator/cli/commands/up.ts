/** `boma-it up <profile>`: provision and boot a VM that impersonates the host; keep it. */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { CommandDefinition } from "../command.ts";
import { RUN_OPTIONS, RUN_OPTIONS_HELP } from "../options.ts";
import { BadInputError, ExitCode, SystemUnderTestError } from "../../errors.ts";
import { imageDir } from "../../host/paths.ts";
import { loadRunInputs, planRunCerts, preflightRun } from "../../run/preflight.ts";
import { makePrivate, scrubDir } from "../../run/secrets.ts";
import { bootTimeouts, prepareRun, provision } from "../../run/provision.ts";
import { asBomaError, teardown } from "../../run/stacks.ts";
import type { Machine } from "../../guest/machine.ts";
import { harnessPeakRssMiB } from "../../run/report.ts";
import { applyScenario } from "../../run/scenario.ts";

export const upCommand: CommandDefinition = {
  name: "up",
  summary: "provision, boot and apply; keep the VM and print how to reach it",
  usage: "up <profile> [--scenario green|red] [--certs T] [--keep K] [--no-egress] [--min-free-ram MiB] [--json]",
  details: `${RUN_OPTIONS_HELP}
Applies the profile's playbook with the GREEN scenario's vars (or RED's with --scenario red).
On success the VM stays up: reach it with \`boma-it ssh <run>\`, remove it with \`boma-it down <run>\`.
If it fails to come up or to apply, what was created is removed again (unless --keep always;
--keep on-failure keeps it when the apply itself failed); the serial console stays in the run dir. --json prints {runId, host, ip, ssh, runDir}.`,
  options: RUN_OPTIONS,
  async run({ args, log, runner: plainRunner, env, locations, runsDir, signal, redactor }) {
    // From here on every command record and log line is redacted of the run's secrets.
    const inputs = await loadRunInputs("up", { args, log, runner: plainRunner, locations, redactor });
    const { options, profile, secrets, runner } = inputs;
    if (options.scenario === "red-green") {
      throw new BadInputError({ message: "--scenario: `up` applies one scenario; expected green or red, found \"red-green\"" });
    }
    const scenarioName = options.scenario === "red" ? "red" : "green";
    const declared = profile.document.scenarios?.[scenarioName];
    if (scenarioName === "red" && !declared) {
      throw new BadInputError({ file: profile.file, path: "scenarios.red", message: "--scenario red needs a RED scenario; found none in the profile" });
    }
    const certs = await planRunCerts(inputs, { env, log });
    const { libvirt, accel, engine, release } = await preflightRun(profile, options, { runner, env, log }, "up");
    try {
      const run = await prepareRun(profile, runsDir);
      log.info(`run ${run.identity.runId}; run dir ${run.runDir}`);
      // Whose SSH master connection to end, once the VM is up.
      let machine: Machine | undefined;
      try {
        const live = await provision(
          { profile, accel, engine, runner, libvirt, log, runsDir, imageDir: imageDir(env), egress: !options.noEgress, signal, timeouts: bootTimeouts(env) },
          run,
        );
        machine = live.machine;
        const applied = await log.step(`apply (${scenarioName} vars)`, () =>
          applyScenario({ profile, certs, runner, log, signal, secrets }, live, { name: scenarioName, vars: declared?.vars ?? {} }, run.runDir),
        );
        live.phases.push({ name: "apply", seconds: applied.seconds });
        const summary = {
          runId: live.outputs.runId,
          host: live.outputs.host,
          ip: live.outputs.ip,
          ssh: live.outputs.ssh,
          runDir: live.outputs.runDir,
        };
        await writeFile(
          join(run.runDir, "up.json"),
          `${JSON.stringify(
            {
              ...summary,
              engine: engine.name,
              accel: accel.accel,
              certs: certs.tier,
              phases: live.phases,
              readyLagSeconds: live.boots.map((boot) => boot.readyLagSeconds ?? null),
              bootIds: live.boots.map((boot) => boot.bootId),
              guestBootSeconds: [await live.machine.guestBootSeconds()],
              beforeKernelSeconds: live.boots.map((boot) => boot.beforeKernelSeconds ?? null),
              bootResets: live.resets,
              apply: { seconds: applied.seconds, tasks: applied.tasks },
              certificate: applied.certificate,
              harness: { peakRssMiB: harnessPeakRssMiB() },
            },
            null,
            2,
          )}\n`,
        );
        const text = [
          `${live.outputs.host} is up as ${live.outputs.runId} at ${live.outputs.ip}`,
          `  shell:    ${live.outputs.ssh}`,
          `  console:  ${live.outputs.consoleLog}`,
          `  remove:   npm run boma-it -- down ${live.outputs.runId}`,
        ].join("\n");
        return { exitCode: ExitCode.pass, json: summary, text };
      } catch (error) {
        const mapped = asBomaError(error, signal);
        const keepFailedApply = options.keep === "on-failure" && mapped instanceof SystemUnderTestError;
        if (options.keep === "always" || keepFailedApply) {
          log.warn(`keeping the VM (--keep ${options.keep}): get in with \`npm run boma-it -- ssh ${run.identity.runId}\`, remove it with \`npm run boma-it -- down ${run.identity.runId}\``);
        } else if ((await engine.list()).some((stack) => stack.stack === run.identity.runId)) {
          try {
            await teardown(engine, run.identity.runId, run.runDir, log);
          } catch (teardownError) {
            log.warn(`${(teardownError as Error).message}\nrun \`npm run reap\` to remove what is left`);
          }
        }
        throw mapped;
      } finally {
        // The VM stays up (or was torn down); the harness's SSH master connection ends with it.
        await machine?.closeConnection();
        // Anything secret that reached a file of the run dir (a log, a journal) is replaced.
        await scrubDir(run.runDir, secrets);
        await makePrivate(run.runDir);
      }
    } finally {
      await release();
    }
  },
};
