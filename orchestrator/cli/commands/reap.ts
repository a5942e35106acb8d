/** `boma-it reap`: destroy stale stacks and sweep what boma-it made that no living run owns. */
import type { CommandDefinition } from "../command.ts";
import { duration, expectPositionals, REAP_OPTIONS } from "../options.ts";
import { allEngines } from "../../host/engine-choice.ts";
import { ExitCode } from "../../errors.ts";
import { libvirtFor } from "../../host/libvirt.ts";
import { imageDir, runLockPath, stacksDir, warmStateDir } from "../../host/paths.ts";
import { reapInTurn } from "../../host/reap.ts";

export const reapCommand: CommandDefinition = {
  name: "reap",
  summary: "destroy stale stacks and sweep what boma-it made that no living run owns",
  usage: "reap [--dry-run] [--older-than 2h] [--json]",
  details: `Destroys every stack whose harness process is gone (kept VMs included), then sweeps what
boma-it made: domains with boma-it's metadata (with NVRAM), networks, network filters and pools
named as boma-it names a run's (boma-it-<host>-<yyyymmdd-hhmmss>), the volumes of such a pool
named after its run, the files they leave in /var/lib/libvirt, and the private keys (of run and
fleet folders of the runs dir) and SSH master connections of runs that are not live. While no
run holds the run lock, the reap holds it, and also removes golden images a killed
\`image build\`/\`image pull\` left half made, and first boots a killed run left half saved
(whole saved first boots stay: \`image prune\` removes them). A run whose harness is still alive is never
reaped; a name that merely starts with boma-it- (boma-it-prod), a volume in another pool and any
other folder are never touched.
Options:
  --dry-run          list what would be destroyed, touch nothing
  --older-than AGE   spare runs younger than AGE (90s, 30m, 2h, 1d)
Exit 0 when everything found was reaped, 4 when something could not be (each item says why).`,
  options: REAP_OPTIONS,
  async run({ args, log, runner, env, runsDir }) {
    expectPositionals("reap", args.positionals, 0, 0, "no arguments");
    const olderThanSeconds = duration("older-than", args.values["older-than"]);
    const libvirt = libvirtFor(runner, env);
    await libvirt.ensureReachable();
    const items = await reapInTurn({
      engines: await allEngines(runner, stacksDir(env)),
      libvirt,
      runner,
      log,
      runsDir,
      runLock: runLockPath(env),
      imageDir: imageDir(env),
      stateCacheDir: warmStateDir(env),
      dryRun: args.values["dry-run"] === true,
      olderThanSeconds,
    });
    const count = (action: string) => items.filter((item) => item.action === action).length;
    const failed = count("failed");
    const summary = args.values["dry-run"]
      ? `dry run: ${count("would destroy")} to destroy, ${count("spared")} spared`
      : `reaped ${count("destroyed")}, spared ${count("spared")}, failed ${failed}`;
    const text = [
      ...items.map((item) => `${item.action.padEnd(13)} ${item.kind.padEnd(7)} ${item.name}${item.detail ? `  (${item.detail})` : ""}`),
      summary,
    ].join("\n");
    return { exitCode: failed > 0 ? ExitCode.harnessFault : ExitCode.pass, json: { items, summary }, text };
  },
};
