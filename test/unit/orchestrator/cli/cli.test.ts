import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, it } from "node:test";
import { COMMANDS } from "../../../../orchestrator/cli/commands/index.ts";
import { splitCommand } from "../../../../orchestrator/cli/main.ts";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../../../orchestrator/host/paths.ts";
import { runCli } from "../../../helpers/cli.ts";

describe("boma-it CLI", () => {
  it("validates the shipped askari profile (exit 0)", async () => {
    const result = await runCli(["validate", "askari"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /profile askari is valid/);
  });

  it("prints one JSON document with --json", async () => {
    const result = await runCli(["validate", "askari", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const document = JSON.parse(result.stdout) as { valid: boolean; host: string; groups: string[] };
    assert.equal(document.valid, true);
    assert.equal(document.host, "askari");
    assert.ok(document.groups.includes("docker_hosts"));
  });

  it("refuses an unknown command with exit 2 and the list of commands", async () => {
    const result = await runCli(["bogus"]);
    assert.equal(result.code, 2);
    assert.equal(result.stderr.trim(), `boma-it: unknown command "bogus"; expected one of ${COMMANDS.map((c) => c.name).join(", ")} (see \`boma-it --help\`)`);
  });

  it("suggests the closest command, option and value for a typo", async () => {
    const command = await runCli(["valdate", "askari"]);
    assert.equal(command.code, 2);
    assert.match(command.stderr, /unknown command "valdate" \(did you mean "validate"\?\)/);
    const option = await runCli(["up", "askari", "--kep", "always"]);
    assert.equal(option.code, 2);
    assert.match(option.stderr, /unknown option --kep for `boma-it up` \(did you mean --keep\?\)/);
    const value = await runCli(["up", "askari", "--keep", "alway"]);
    assert.equal(value.code, 2);
    assert.match(value.stderr, /--keep: expected one of on-failure, always, never, found "alway" \(did you mean always\?\)/);
  });

  it("suggests on every closed set: two letters swapped, a scenario, an image the other action makes", async () => {
    const swapped = await runCli(["validate", "askari", "--accel", "kmv"]);
    assert.equal(swapped.code, 2);
    assert.match(swapped.stderr, /--accel: expected one of auto, kvm, tcg, found "kmv" \(did you mean kvm\?\)/);
    const scenario = await runCli(["validate", "askari", "--scenario", "gren"]);
    assert.equal(scenario.code, 2, "validate refuses what run would");
    assert.match(scenario.stderr, /--scenario: expected one of red-green, green, red, found "gren" \(did you mean green\?\)/);
    const built = await runCli(["image", "pull", "debian-13-lcoal"]);
    assert.equal(built.code, 2);
    assert.match(built.stderr, /debian-13-local is made by `boma-it image build`, not pulled \(found "debian-13-lcoal": did you mean debian-13-local\?\)/);
    const report = await runCli(["reprot"]);
    assert.match(report.stderr, /unknown command "reprot" \(did you mean "report"\?\)/);
  });

  it("takes relative paths from where `npm run` was typed (INIT_CWD), not the project root npm runs in", async () => {
    const npm = { npm_package_name: "boma-it", npm_lifecycle_event: "boma-it" };
    const fromExamples = await runCli(["validate", "../profiles/askari.yml"], { ...npm, INIT_CWD: join(PROJECT_ROOT, "examples") });
    assert.equal(fromExamples.code, 0, fromExamples.stderr);
    assert.match(fromExamples.stdout, /profile askari is valid/);
    // Started elsewhere than the project root (bin/boma-it from anywhere, or a script that changed
    // directory under some npm run), the process's own directory counts.
    const direct = await runCli(["validate", "../profiles/askari.yml"], { ...npm, INIT_CWD: "/" }, join(PROJECT_ROOT, "examples"));
    assert.equal(direct.code, 0, direct.stderr);
    const wrong = await runCli(["validate", "../profiles/askari.yml"], { ...npm, INIT_CWD: join(PROJECT_ROOT, "examples", "boma-lab") });
    assert.equal(wrong.code, 2, "resolved against INIT_CWD: examples/profiles/askari.yml does not exist");
  });

  it("prints its version with --version, as JSON with --json", async () => {
    const text = await runCli(["--version"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^boma-it \d+\.\d+\.\d+\n$/);
    const json = await runCli(["-V", "--json"]);
    assert.match((JSON.parse(json.stdout) as { version: string }).version, /^\d+\.\d+\.\d+$/);
  });

  it("takes the common options before the command as after it, and --version anywhere but behind --", async () => {
    assert.deepEqual(splitCommand(["--json", "--runs-dir", "/r", "-q", "status", "--engine=direct"]), {
      name: "status",
      rest: ["--json", "--runs-dir", "/r", "-q", "--engine=direct"],
    });
    assert.deepEqual(splitCommand(["--accel=tcg", "ssh", "run1", "--", "ls", "--json"]), { name: "ssh", rest: ["--accel=tcg", "run1", "--", "ls", "--json"] });
    const before = await runCli(["--json", "runs", "--runs-dir", "/nonexistent"]);
    assert.equal(before.code, 0, before.stderr);
    assert.deepEqual(JSON.parse(before.stdout), []);
    const after = await runCli(["validate", "--version"]);
    assert.equal(after.code, 0, after.stderr);
    assert.match(after.stdout, /^boma-it \d+\.\d+\.\d+$/m);
    const help = await runCli(["-h", "runs"]);
    assert.match(help.stdout, /^Usage: boma-it runs/);
    const up = await runCli(["up", "--help"]);
    assert.doesNotMatch(up.stdout, /--group|several hosts/, "up's help says nothing of what only run does");
  });

  it("goes on when its reader went away (a closed terminal, | head): a run must still clean up", async () => {
    const child = spawn(process.execPath, [join(PROJECT_ROOT, "orchestrator/cli/main.ts"), "help", "run"], { stdio: ["ignore", "pipe", "pipe"] });
    // The reader is gone before the CLI writes: its write meets EPIPE.
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += String(chunk)));
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /EPIPE|Unhandled 'error' event/);
  });

  it("refuses help on an unknown command with exit 2", async () => {
    const result = await runCli(["help", "nosuch"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /unknown command "nosuch"/);
    const known = await runCli(["help", "run"]);
    assert.equal(known.code, 0);
    assert.match(known.stdout, /^Usage: boma-it run/);
    assert.equal((known.stdout.match(/^Options:/gm) ?? []).length, 1, "one Options: heading");
  });

  it("refuses an unknown option with exit 2, naming it, without a stack trace", async () => {
    const result = await runCli(["validate", "askari", "--frobnicate"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^boma-it: unknown option --frobnicate for `boma-it validate`; expected one of /);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
  });

  it("refuses a bad option value with exit 2", async () => {
    const result = await runCli(["up", "askari", "--keep", "forever"]);
    assert.equal(result.code, 2);
    assert.equal(result.stderr.trim(), 'boma-it: --keep: expected one of on-failure, always, never, found "forever"');
  });

  it("refuses what only the apply reads with up --keep-at boot (it applies nothing), exit 2", async () => {
    const result = await runCli(["up", "askari", "--keep-at", "boot", "--tags", "base", "-e", "x=1"]);
    assert.equal(result.code, 2);
    assert.equal(
      result.stderr.trim(),
      "boma-it: --keep-at boot applies nothing, so --extra-vars, --tags would do nothing: give them to `boma-it apply <run>` once the VM is up",
    );
    const typo = await runCli(["up", "askari", "--keep-at", "boots"]);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /--keep-at: expected one of boot, apply, reboot, found "boots" \(did you mean boot\?\)/);
  });

  it("reports bad input as a JSON error document with --json", async () => {
    const result = await runCli(["validate", "nosuch", "--json"]);
    assert.equal(result.code, 2);
    const document = JSON.parse(result.stdout) as { error: { kind: string; exitCode: number; message: string } };
    assert.equal(document.error.kind, "BadInputError");
    assert.equal(document.error.exitCode, 2);
    assert.match(document.error.message, /no profile named "nosuch"/);
  });

  it("has --help for every command", async () => {
    for (const command of COMMANDS) {
      const result = await runCli([command.name, "--help"]);
      assert.equal(result.code, 0, `${command.name}: ${result.stderr}`);
      assert.match(result.stdout, new RegExp(`^Usage: boma-it ${command.name}`), command.name);
    }
    const top = await runCli(["--help"]);
    assert.equal(top.code, 0);
    for (const command of COMMANDS) assert.match(top.stdout, new RegExp(`\\n  ${command.name}\\s`));
  });

  it("asks for a command when given none (exit 2)", async () => {
    const result = await runCli([]);
    assert.equal(result.code, 2);
    assert.match(result.stdout, /Usage: boma-it <command>/);
  });
});
