import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { COMMANDS } from "../../../../orchestrator/cli/commands/index.ts";
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
