/**
 * The pulumi engine's Automation API wrapper against a recording fake `pulumi` CLI
 * (test/helpers/fake-pulumi.py, found through `PulumiCommand.get({ root })`). What this proves:
 * the sequence of CLI calls for create→up→list→destroy→remove, the environment and working
 * folder each call gets, and how the wrapper handles the CLI's failures (stale and live locks,
 * pending operations, a missing stack or plugin, a failed up). What it cannot prove: that a real
 * Pulumi engine runs the inline program (the fake never runs it; see pulumi-program.test.ts for
 * the program, and docs/decisions/0001 for running the e2e test on a host with the CLI).
 */
import assert from "node:assert/strict";
import { chmod, copyFile, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { PulumiEngine, resourceEventForwarder } from "../../../infra/engines/pulumi.ts";
import { PulumiUnavailableError, pulumiPaths, TAGS } from "../../../infra/engines/pulumi-setup.ts";
import type { ResourceEvent } from "../../../infra/engines/engine.ts";
import { ProvisionError, StackNotFoundError } from "../../../infra/errors.ts";
import { planStack } from "../../../infra/plan.ts";
import { Runner } from "../../../infra/runner.ts";
import { Libvirt } from "../../../orchestrator/host/libvirt.ts";
import { reap } from "../../../orchestrator/host/reap.ts";
import { fakeCalls, writeFake } from "../../helpers/fakes.ts";
import { FIXED_KEYS, fixedSpec, silentLog } from "../../helpers/fixtures.ts";
import { tempTree } from "../../helpers/tmp.ts";

interface PulumiCall {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
}

const FAKE = new URL("../../helpers/fake-pulumi.py", import.meta.url).pathname;
const plan = planStack(fixedSpec(), FIXED_KEYS);
const STACK = plan.stack;

let tree: Awaited<ReturnType<typeof tempTree>>;
let stacksDir: string;
let cli: string;
let logFile: string;
let runner: Runner;

/** The fake's calls, without the `--non-interactive` every call gets (asserted once below). */
async function calls(): Promise<PulumiCall[]> {
  const text = await readFile(logFile, "utf8").catch(() => "");
  return text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as PulumiCall);
}

/** A call as a short line: volatile arguments (ports, event-log files) dropped. */
function shape(call: PulumiCall): string {
  const kept: string[] = [];
  const argv = call.argv.slice(1);
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index]!;
    if (arg === "--event-log" || arg === "--file") index++;
    else if (arg !== "--non-interactive" && !arg.startsWith("--client=")) kept.push(arg);
  }
  return kept.join(" ");
}

/** The CLI calls of destroying a healthy stack (after `stack ls` has found it). */
const DESTROY_CALLS = [
  `stack select --stack ${STACK}`,
  `stack tag set ${TAGS.state} destroying --stack ${STACK}`,
  `stack export --show-secrets --stack ${STACK}`,
  `destroy --yes --skip-preview --exec-kind auto.inline --stack ${STACK}`,
  `stack history --json --show-secrets --page-size 1 --page 1 --stack ${STACK}`,
  `stack rm --yes ${STACK}`,
];

function installPlugin(): Promise<unknown> {
  return mkdir(join(pulumiPaths(stacksDir).home, "plugins", "resource-command-v4.5.0"), { recursive: true });
}

beforeEach(async () => {
  tree = await tempTree();
  stacksDir = join(tree.dir, "stacks");
  cli = join(tree.dir, "pulumi-install", "bin", "pulumi");
  await mkdir(join(tree.dir, "pulumi-install", "bin"), { recursive: true });
  await copyFile(FAKE, cli);
  await chmod(cli, 0o755);
  logFile = join(tree.dir, "pulumi-calls.log");
  // The Automation API runs the CLI with this process's environment (plus the workspace's).
  process.env.FAKE_LOG = logFile;
  // Whatever the Automation API puts into the system temp dir must be gone afterwards.
  process.env.TMPDIR = join(tree.dir, "tmp");
  await mkdir(process.env.TMPDIR);
  runner = new Runner({ env: { ...process.env, PATH: `${join(tree.dir, "bin")}:${process.env.PATH}` } });
});

afterEach(async () => {
  assert.deepEqual(await readdir(process.env.TMPDIR!), [], "nothing left in the temp dir (no stray workspaces, logs or state files)");
  delete process.env.TMPDIR;
  delete process.env.FAKE_PULUMI_FAIL_UP;
  delete process.env.FAKE_PULUMI_UP_CREATES;
  delete process.env.FAKE_PULUMI_VERSION;
  await tree.remove();
});

describe("pulumi engine (Automation API against a recording fake CLI)", () => {
  it("create → up → list → destroy → remove: the CLI calls, their environment and folder", async () => {
    await installPlugin();
    const engine = new PulumiEngine({ runner, stacksDir, cli });
    const output: string[] = [];
    const outputs = await engine.up(plan, { onOutput: (line) => output.push(line) });
    assert.deepEqual(outputs, plan.outputs);
    assert.ok(output.includes(`Updating (${STACK}):`), "the CLI's output reaches onOutput line by line");

    const listed = await engine.list();
    assert.deepEqual(listed, [{ stack: STACK, engine: "pulumi", state: "up", outputs: plan.outputs }]);
    await engine.destroy(STACK);
    assert.deepEqual(await engine.list(), []);

    const recorded = await calls();
    assert.deepEqual(recorded.map(shape), [
      "version",
      "plugin ls --json",
      `stack init ${STACK} --secrets-provider passphrase`,
      `stack tag set ${TAGS.created} ${plan.outputs.createdAt} --stack ${STACK}`,
      `stack tag set ${TAGS.pid} 4242 --stack ${STACK}`,
      `stack tag set ${TAGS.host} askari --stack ${STACK}`,
      `stack tag set ${TAGS.state} creating --stack ${STACK}`,
      `up --yes --skip-preview --exec-kind auto.inline --stack ${STACK}`,
      `stack output --json --stack ${STACK}`,
      `stack output --json --show-secrets --stack ${STACK}`,
      `stack history --json --show-secrets --page-size 1 --page 1 --stack ${STACK}`,
      `stack tag set ${TAGS.state} up --stack ${STACK}`,
      // list
      "stack ls --json",
      `stack tag ls --json --stack ${STACK}`,
      // destroy
      "stack ls --json",
      ...DESTROY_CALLS,
      "stack ls --json",
    ]);
    const paths = pulumiPaths(stacksDir);
    for (const call of recorded) {
      assert.ok(call.argv.includes("--non-interactive") || call.argv[1] === "version", `${shape(call)} runs non-interactive`);
      if (call.argv[1] === "version") continue;
      assert.equal(call.cwd, paths.dir, `${shape(call)} runs in the fixed work dir`);
      assert.deepEqual(
        call.env,
        {
          PULUMI_BACKEND_URL: paths.backendUrl,
          PULUMI_CONFIG_PASSPHRASE_FILE: paths.passphraseFile,
          PULUMI_HOME: paths.home,
          PULUMI_SKIP_UPDATE_CHECK: "true",
          PULUMI_AUTOMATION_API: "true",
        },
        `${shape(call)} gets the backend, passphrase file and home`,
      );
    }
    const passphrase = await stat(paths.passphraseFile);
    assert.equal(passphrase.mode & 0o777, 0o600);
    assert.ok(passphrase.size > 30, "a generated passphrase");
    // The project file a person's `pulumi -C stacks/pulumi stack ls` reads.
    assert.match(await readFile(join(paths.dir, "Pulumi.yaml"), "utf8"), new RegExp(`name: boma-it[\\s\\S]*url: ${paths.backendUrl}`));
    // Every Automation call is in the runner's history, as the CLI command it stands for.
    assert.deepEqual(
      runner.history.slice(0, 3).map((record) => record.argv.slice(0, 3).join(" ")),
      [`${cli} version`, "pulumi plugin ls", `pulumi stack init`],
    );
  });

  it("a missing command plugin refuses before any stack exists, and says how to install it offline", async () => {
    const engine = new PulumiEngine({ runner, stacksDir, cli });
    await assert.rejects(engine.up(plan), (error: unknown) => {
      assert.ok(error instanceof PulumiUnavailableError);
      assert.match(error.message, /command plugin 4\.5\.0/);
      assert.match(error.remedy, /pulumi plugin install resource command 4\.5\.0 --file pulumi-resource-command-v4\.5\.0-linux-amd64\.tar\.gz/);
      assert.match(error.remedy, new RegExp(`PULUMI_HOME=${pulumiPaths(stacksDir).home}`));
      return true;
    });
    assert.deepEqual((await calls()).map(shape), ["version", "plugin ls --json"]);
  });

  it("a CLI older than stack tags on file backends is refused", async () => {
    process.env.FAKE_PULUMI_VERSION = "3.200.0";
    const engine = new PulumiEngine({ runner, stacksDir, cli });
    await assert.rejects(engine.list(), (error: unknown) => error instanceof PulumiUnavailableError && /3\.200\.0.*3\.211\.0/.test(error.message));
  });

  it("a failed up deletes what it made: the state's resources by destroy, the half-made one by its delete script", async () => {
    await installPlugin();
    await writeFake(join(tree.dir, "bin"), "virsh", "exit 0");
    process.env.FAKE_PULUMI_FAIL_UP = "1";
    process.env.FAKE_PULUMI_UP_CREATES = "network isolation pool";
    const engine = new PulumiEngine({
      runner: new Runner({ env: { ...process.env, PATH: `${join(tree.dir, "bin")}:${process.env.PATH}`, FAKE_LOG: join(tree.dir, "virsh.log") } }),
      stacksDir,
      cli,
    });
    await assert.rejects(
      engine.up(plan),
      (error: unknown) => error instanceof ProvisionError && error.rolledBack && /pulumi up failed.*deleted again/s.test(error.message),
    );
    const virsh = (await fakeCalls(join(tree.dir, "virsh.log"))).map((call) =>
      call
        .filter((arg) => !["-q", "-c"].includes(arg) && !arg.startsWith("qemu"))
        .slice(0, 2)
        .join(" "),
    );
    // Not in the state: overlay, seed and domain (their deletes run directly); the rest by destroy.
    assert.ok(virsh.includes(`virsh destroy`) && virsh.includes(`virsh undefine`), `domain deleted directly: ${virsh.join(", ")}`);
    assert.ok(!virsh.some((call) => call.startsWith("virsh net-destroy")), "the network is the state's: destroy deletes it, not the script");
    const shapes = (await calls()).map(shape);
    assert.ok(shapes.includes(`destroy --yes --skip-preview --exec-kind auto.inline --stack ${STACK}`));
    assert.equal(shapes.at(-1), `stack rm --yes ${STACK}`);
    assert.deepEqual(await engine.list(), []);
  });

  it("a stale lock of a dead pulumi is cancelled; pending creates get their delete scripts, then are cleared", async () => {
    await installPlugin();
    const engine = new PulumiEngine({ runner, stacksDir, cli });
    await engine.up(plan);
    // What a harness killed mid-update leaves: the lock of its dead CLI and a pending create.
    const paths = pulumiPaths(stacksDir);
    const lockDir = join(paths.locksDir, STACK);
    await mkdir(lockDir, { recursive: true });
    await writeFile(
      join(lockDir, "0b1d.json"),
      JSON.stringify({ pid: 999_999_999, username: "root", hostname: hostname(), timestamp: "2026-11-22T03:41:00Z" }),
    );
    const marker = join(tree.dir, "half-made-domain-deleted");
    const state = join(paths.dir, ".pulumi", "stacks", "boma-it", `${STACK}.json`);
    const checkpoint = JSON.parse(await readFile(state, "utf8"));
    checkpoint.checkpoint.latest.pending_operations = [
      {
        type: "creating",
        resource: {
          urn: `urn:pulumi:${STACK}::boma-it::command:local:Command::domain`,
          inputs: { delete: `printf '%s' "$BOMA_DELETE_STDIN_0" >> ${marker}`, environment: { BOMA_DELETE_STDIN_0: { plaintext: '"secret-stdin"' } } },
        },
      },
    ];
    await writeFile(state, JSON.stringify(checkpoint));

    await engine.destroy(STACK);
    assert.equal(await readFile(marker, "utf8"), "secret-stdin", "the pending create's delete ran once, with its (decrypted) environment");
    const shapes = (await calls()).map(shape);
    const from = shapes.indexOf(`stack select --stack ${STACK}`);
    assert.deepEqual(shapes.slice(from), [
      `stack select --stack ${STACK}`,
      `stack tag set ${TAGS.state} destroying --stack ${STACK}`,
      `stack export --show-secrets --stack ${STACK}`,
      `stack import --stack ${STACK}`,
      `cancel --yes --stack ${STACK}`,
      `stack import --stack ${STACK}`,
      `destroy --yes --skip-preview --exec-kind auto.inline --stack ${STACK}`,
      `stack history --json --show-secrets --page-size 1 --page 1 --stack ${STACK}`,
      `stack rm --yes ${STACK}`,
    ]);
  });

  it("a lock held by a live pulumi is never cancelled: destroy fails and names the holder", async () => {
    await installPlugin();
    const engine = new PulumiEngine({ runner, stacksDir, cli });
    await engine.up(plan);
    const lockDir = join(pulumiPaths(stacksDir).locksDir, STACK);
    await mkdir(lockDir, { recursive: true });
    await writeFile(
      join(lockDir, "a11e.json"),
      JSON.stringify({ pid: process.pid, username: "root", hostname: hostname(), timestamp: "2026-11-22T03:41:00Z" }),
    );
    await assert.rejects(engine.destroy(STACK), new RegExp(`locked by pulumi \\(pid ${process.pid}\\).*still running`, "s"));
    assert.ok(!(await calls()).some((call) => call.argv[1] === "cancel"));
  });

  it("reap: a dead owner's stack is destroyed and removed, a living owner's is spared; the CLI calls", async () => {
    await installPlugin();
    await writeFake(join(tree.dir, "bin"), "virsh", "exit 0");
    runner = new Runner({ env: { ...process.env, PATH: `${join(tree.dir, "bin")}:${process.env.PATH}`, FAKE_LOG: join(tree.dir, "virsh.log") } });
    const engine = new PulumiEngine({ runner, stacksDir, cli });
    const stale = { ...plan, outputs: { ...plan.outputs, ownerPid: 999_001 } };
    const liveSpec = fixedSpec();
    const live = planStack({ ...liveSpec, identity: { ...liveSpec.identity, runId: "boma-it-askari-20261122-050000" }, ownerPid: process.pid }, FIXED_KEYS);
    await engine.up(stale);
    await engine.up(live);
    const before = (await calls()).length;
    const log = silentLog();
    const items = await reap({
      engines: [engine],
      libvirt: new Libvirt(runner, "qemu:///system"),
      runner,
      log,
      runsDir: join(tree.dir, "runs"),
      dryRun: false,
      olderThanSeconds: undefined,
      // Every place the reap sweeps is the test's own: never this machine's libvirt files or SSH masters.
      libvirtImagesDir: join(tree.dir, "images"),
      libvirtNvramDir: join(tree.dir, "nvram"),
      controlSocketDir: join(tree.dir, "sockets"),
      isAlive: (pid) => pid === process.pid,
    });
    assert.deepEqual(
      items.filter((item) => item.kind === "stack").map(({ name, action }) => `${action} ${name}`),
      [`destroyed ${STACK}`, `spared ${live.stack}`],
    );
    assert.deepEqual(
      (await engine.list()).map((summary) => summary.stack),
      [live.stack],
    );
    assert.deepEqual((await calls()).slice(before).map(shape).slice(0, 12), [
      "stack ls --json",
      `stack tag ls --json --stack ${STACK}`,
      `stack tag ls --json --stack ${live.stack}`,
      "stack ls --json",
      ...DESTROY_CALLS,
      // the run keys sweep lists the engines again
      "stack ls --json",
      `stack tag ls --json --stack ${live.stack}`,
    ]);
  });

  it("destroying a stack that does not exist says so", async () => {
    const engine = new PulumiEngine({ runner, stacksDir, cli });
    await assert.rejects(engine.destroy("boma-it-askari-20200101-000000"), StackNotFoundError);
  });

  it("resource events become ours, timed, for local.Command resources only", () => {
    const seen: ResourceEvent[] = [];
    const forward = resourceEventForwarder("create", (event) => seen.push(event));
    const urn = `urn:pulumi:${STACK}::boma-it::command:local:Command::network`;
    const metadata = { op: "create", urn, type: "command:local:Command", provider: "" } as const;
    forward({ sequence: 1, timestamp: 1, resourcePreEvent: { metadata } } as never);
    forward({ sequence: 2, timestamp: 2, resOutputsEvent: { metadata } } as never);
    forward({ sequence: 3, timestamp: 3, resourcePreEvent: { metadata: { ...metadata, type: "pulumi:pulumi:Stack", urn: "urn:x::stack" } } } as never);
    assert.deepEqual(
      seen.map(({ resource, state }) => `${resource} ${state}`),
      ["network start", "network done"],
    );
    assert.equal(typeof seen[1]!.seconds, "number");
  });
});

describe("pulumi engine versions", () => {
  it("the plugin it requires is the version of the pinned @pulumi/command SDK the program uses", async () => {
    const { COMMAND_PLUGIN } = await import("../../../infra/engines/pulumi-setup.ts");
    const sdk = JSON.parse(await readFile(new URL("../../../node_modules/@pulumi/command/package.json", import.meta.url), "utf8")) as { version: string };
    const manifest = JSON.parse(await readFile(new URL("../../../package.json", import.meta.url), "utf8")) as { dependencies: Record<string, string> };
    // The SDK's package.json says "v4.5.0"; the resources it registers ask the engine for that plugin.
    assert.equal(`v${COMMAND_PLUGIN.version}`, sdk.version);
    assert.equal(`v${manifest.dependencies["@pulumi/command"]}`, sdk.version, "pinned exactly");
  });
});
