import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ansibleArgs, oneOf, rebootKindsOption } from "../../../../orchestrator/cli/options.ts";
import { BadInputError } from "../../../../orchestrator/errors.ts";
import { ansiblePlaybookArgs } from "../../../../orchestrator/run/options.ts";

describe("what reaches ansible-playbook", () => {
  it("takes -e key=value and -e JSON objects in order, a later one winning, and passes the rest as they are", () => {
    const args = ansibleArgs({
      "extra-vars": ["fix=true", '  {"base_ssh_host_key_types": ["rsa", "ed25519"], "port": 8081, "serial": 12345678901234567890}', "port=9090"],
      tags: "base",
      "skip-tags": "docker",
      diff: true,
      verbose: [true, true, true],
    });
    // Each -e as Ansible takes it, in order (a later one wins there); JSON as written, so a number
    // JavaScript cannot hold reaches Ansible intact, without the blanks before its brace.
    assert.deepEqual(ansiblePlaybookArgs(args), [
      "-e",
      '{"fix":"true"}',
      "-e",
      '{"base_ssh_host_key_types": ["rsa", "ed25519"], "port": 8081, "serial": 12345678901234567890}',
      "-e",
      '{"port":"9090"}',
      "--tags",
      "base",
      "--skip-tags",
      "docker",
      "--diff",
      "-vvv",
    ]);
    assert.deepEqual(ansiblePlaybookArgs(ansibleArgs({})), []);
  });

  it("refuses what Ansible would not take as variables, saying what it found", () => {
    const refuses = (value: string, pattern: RegExp) =>
      assert.throws(
        () => ansibleArgs({ "extra-vars": [value] }),
        (error: unknown) => error instanceof BadInputError && pattern.test(error.message),
      );
    refuses("no-equals-sign", /^-e: expected key=value with an Ansible variable name as key, or a JSON object, found "no-equals-sign"$/);
    refuses("1abc=x", /found "1abc=x"/);
    refuses('{"fix": tru}', /^-e: expected key=value or a JSON object, found .* \(/);
    refuses('{"bad-name": 1}', /"bad-name" is not an Ansible variable name/);
  });

  it("reads --kind as reboot kinds in order, each at most once", () => {
    assert.equal(rebootKindsOption(undefined), undefined);
    assert.deepEqual(rebootKindsOption("soft"), ["soft"]);
    assert.deepEqual(rebootKindsOption("power-loss, clean"), ["power-loss", "clean"]);
    assert.throws(
      () => rebootKindsOption("clean,powerloss"),
      /--kind: expected one of clean, power-loss, soft, found "powerloss" \(did you mean power-loss\?\)/,
    );
    assert.throws(() => rebootKindsOption("soft,soft"), /--kind: expected each kind at most once, found soft twice/);
  });

  it("names the allowed words and the closest one for a bad value", () => {
    assert.throws(
      () => oneOf("keep", "alway", ["on-failure", "always", "never"] as const),
      /--keep: expected one of on-failure, always, never, found "alway" \(did you mean always\?\)/,
    );
    assert.throws(
      () => oneOf("image", "frobnicate", ["ls", "pull", "build"] as const, "`boma-it image <action>`"),
      (error: unknown) => error instanceof BadInputError && error.message === '`boma-it image <action>`: expected one of ls, pull, build, found "frobnicate"',
    );
  });
});
