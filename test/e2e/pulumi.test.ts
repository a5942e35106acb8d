/**
 * The pulumi engine against a real Pulumi CLI and a real VM. No Pulumi CLI can be installed on
 * the machine CI runs on (not in Debian; the npm package and `PulumiCommand.install` download),
 * so there this suite is skipped and says so. On a host with the CLI and the command plugin
 * (README, "The pulumi engine"): `sudo npm run test:e2e -- --test-name-pattern=pulumi`.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { access, mkdir, symlink } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { COMMAND_PLUGIN, pulumiPaths } from "../../infra/engines/pulumi-setup.ts";
import { cli, leftovers, startCli, suiteDirs } from "./helpers.ts";

const pulumiCli = (() => {
  try {
    return execFileSync("sh", ["-c", "command -v pulumi"], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
})();
const SKIP = pulumiCli
  ? false
  : "no pulumi CLI on this host (none can be installed here): the pulumi engine is proven by unit tests only (setMocks and a recording fake CLI). On a host with the CLI: see README, `The pulumi engine`";

describe("the pulumi engine, for real", { timeout: 30 * 60_000, skip: SKIP }, () => {
  const dirs = suiteDirs();
  /** The CLI as a person uses it on the suite's stacks. */
  const pulumi = (args: string[]) => {
    const paths = pulumiPaths(dirs.stacksDir);
    return execFileSync("pulumi", [...args, "--non-interactive"], {
      cwd: paths.dir,
      encoding: "utf8",
      env: { ...process.env, PULUMI_HOME: paths.home, PULUMI_BACKEND_URL: paths.backendUrl, PULUMI_CONFIG_PASSPHRASE_FILE: paths.passphraseFile },
    });
  };

  before(async () => {
    // The engine's PULUMI_HOME is its own; the plugin comes from the user's, installed as the README says.
    const plugin = `${COMMAND_PLUGIN.kind}-${COMMAND_PLUGIN.name}-v${COMMAND_PLUGIN.version}`;
    const installed = join(process.env.PULUMI_HOME ?? join(homedir(), ".pulumi"), "plugins", plugin);
    await access(installed).catch(() => {
      throw new Error(`the command plugin is not installed at ${installed}: pulumi plugin install resource command ${COMMAND_PLUGIN.version}`);
    });
    const plugins = join(pulumiPaths(dirs.stacksDir).home, "plugins");
    await mkdir(plugins, { recursive: true });
    await symlink(installed, join(plugins, plugin));
  });

  it("up --engine pulumi: `pulumi stack ls` and `stack output` show the live VM; status; down removes the stack", async () => {
    const up = await cli(["up", "askari", "--engine", "pulumi", "--json"], dirs.env);
    assert.equal(up.code, 0, up.stderr.slice(-3000));
    assert.match(up.stderr, /engine: pulumi \(asked for with --engine pulumi/);
    const run = JSON.parse(up.stdout) as { runId: string; ip: string; runDir: string };

    const stacks = JSON.parse(pulumi(["stack", "ls", "--json"])) as { name: string; resourceCount: number }[];
    assert.deepEqual(
      stacks.map((stack) => stack.name),
      [run.runId],
    );
    assert.ok(stacks[0]!.resourceCount >= 6, "the plan's six local.Command resources and the stack");
    const outputs = JSON.parse(pulumi(["stack", "output", "--json", "--stack", run.runId])) as Record<string, unknown>;
    assert.equal(outputs.ip, run.ip);
    assert.equal(outputs.runDir, run.runDir);
    const tags = JSON.parse(pulumi(["stack", "tag", "ls", "--json", "--stack", run.runId])) as Record<string, string>;
    assert.equal(tags["boma-it:host"], "askari");
    assert.equal(tags["boma-it:state"], "up");

    const status = JSON.parse((await cli(["status", "--json"], dirs.env)).stdout) as { runId: string; engine: string }[];
    assert.deepEqual(
      status.map((entry) => [entry.runId, entry.engine]),
      [[run.runId, "pulumi"]],
    );
    const hostname = await cli(["ssh", run.runId, "--", "hostname"], dirs.env);
    assert.equal(hostname.stdout.trim(), "askari");

    const down = await cli(["down", run.runId], dirs.env);
    assert.equal(down.code, 0, down.stderr.slice(-2000));
    assert.deepEqual(JSON.parse(pulumi(["stack", "ls", "--json"])), []);
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });

  it("a harness SIGKILLed during `pulumi up`: reap clears the stale lock and pending operations, and nothing remains", async () => {
    const up = startCli(["up", "askari", "--engine", "pulumi"], dirs.env);
    await up.waitForStderr(/created (network|isolation|pool)/, 180_000);
    up.kill("SIGKILL");
    await up.result;
    // The CLI child may outlive its harness for a moment; reap must wait for nothing but dead pids.
    execFileSync("sh", ["-c", "for i in $(seq 1 50); do pgrep -f 'pulumi up' >/dev/null || exit 0; sleep 0.2; done; pkill -KILL -f 'pulumi up' || true"]);
    assert.notDeepEqual(await leftovers(dirs.stacksDir), [], "the killed harness left its stack behind");
    const reaped = await cli(["reap"], dirs.env);
    assert.equal(reaped.code, 0, reaped.stderr.slice(-3000));
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });
});
