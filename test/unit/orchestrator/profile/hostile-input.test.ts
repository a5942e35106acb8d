/**
 * Input that crashes, hangs or lies, through the real CLI (`validate`): each is exit 2 with the
 * file, what was expected and what was found, within a few seconds (the test runner's timeout
 * is the bound), and never a stack trace. Where the inventory matters, Ansible reads it: what it
 * accepts works (host ranges, duplicate keys, many aliases, plugins, scripts) and what it refuses
 * is refused with its own words.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmod, symlink } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runCli, type CliRun } from "../../../helpers/cli.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const PROFILE = (extra = "", inventory = "inventory/hosts.yml", host = "askari") =>
  `host: ${host}\nrepo: repo\ninventory: ${inventory}\nplaybook: site.yml\nchecks: [{ name: x, unit: y }]\n${extra}`;
const REPO = {
  "repo/inventory/hosts.yml": "all:\n  children:\n    docker_hosts:\n      hosts:\n        askari:\n",
  "repo/site.yml": "- hosts: all\n  tasks: []\n",
};
/** A bomb: nine levels of nine aliases each expand to 9^9 nodes. */
const BOMB = `a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: [*g,*g,*g,*g,*g,*g,*g,*g,*g]
`;

/** Runs `validate <profile>` in a tree. */
async function validate(files: Record<string, string>, profile = "p.yml", prepare?: (dir: string) => Promise<void>): Promise<CliRun & { dir: string }> {
  const tree = await tempTree({ ...REPO, "p.yml": PROFILE(), ...files });
  try {
    await prepare?.(tree.dir);
    const result = await runCli(["validate", join(tree.dir, profile)], {
      BOMA_IT_STACKS_DIR: join(tree.dir, "stacks"),
      BOMA_IT_RUN_LOCK: join(tree.dir, "run.lock"),
    });
    return { ...result, dir: tree.dir };
  } finally {
    await tree.remove();
  }
}

function assertBadInput(result: CliRun, pattern: RegExp): void {
  assert.equal(result.code, 2, `exit 2 expected:\n${result.stderr}`);
  assert.match(result.stderr, pattern);
  assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
}

describe("hostile input", { timeout: 60_000 }, () => {
  it("an alias bomb in a profile, an overlay or scenario vars", { timeout: 20_000 }, async () => {
    assertBadInput(
      await validate({ "p.yml": `${PROFILE()}x-bomb:\n  ${BOMB.split("\n").join("\n  ")}` }),
      /p\.yml: expected YAML whose aliases expand to a reasonable size; found an alias bomb/,
    );
    assertBadInput(
      await validate({ "p.yml": PROFILE("overrides: o.yml\n"), "o.yml": `vars:\n  ${BOMB.split("\n").join("\n  ")}` }),
      /o\.yml: expected YAML whose aliases expand to a reasonable size/,
    );
    assertBadInput(
      await validate({ "p.yml": `${PROFILE()}scenarios:\n  red:\n    vars:\n      ${BOMB.split("\n").join("\n      ")}` }),
      /p\.yml: expected YAML whose aliases expand/,
    );
  });

  it("a recursive alias in scenario vars", async () => {
    assertBadInput(
      await validate({ "p.yml": `${PROFILE()}scenarios:\n  red:\n    vars: &loop\n      again: *loop\n` }),
      /p\.yml: scenarios\.red\.vars\.again: expected data, found a recursive alias/,
    );
  });

  it("a FIFO, a device, a directory and a 2 MiB file as the profile", { timeout: 20_000 }, async () => {
    assertBadInput(
      await validate({}, "fifo.yml", async (dir) => void execFileSync("mkfifo", [join(dir, "fifo.yml")])),
      /fifo\.yml: expected profile as a YAML file, found a named pipe/,
    );
    assertBadInput(await runCli(["validate", "/dev/zero"]), /\/dev\/zero: expected profile as a YAML file, found a device/);
    assertBadInput(await validate({ "dir.yml/x": "" }, "dir.yml"), /dir\.yml: expected profile as a YAML file, found a directory/);
    assertBadInput(
      await validate({ "big.yml": `host: askari\n# ${"x".repeat(2 * 1024 * 1024)}\n` }, "big.yml"),
      /big\.yml: expected profile of at most 1024 KiB, found 2048 KiB/,
    );
  });

  it("a profile of 40 000 keys is read in linear time; a duplicate key is named with its line", { timeout: 20_000 }, async () => {
    const keys = Array.from({ length: 40_000 }, (_, index) => `        k${index}: ${index}`).join("\n");
    const many = await validate({ "p.yml": `${PROFILE()}scenarios:\n  green:\n    vars:\n${keys}\n` });
    assert.equal(many.code, 0, many.stderr);
    assertBadInput(await validate({ "p.yml": `${PROFILE()}host: simba\n` }), /p\.yml:6:1: duplicate key "host" \(expected each key once in a mapping\)/);
  });

  it("paths the contract keeps inside the repo, and paths that are not what they say", async () => {
    assertBadInput(
      await validate({ "p.yml": PROFILE().replace("playbook: site.yml", "playbook: ../../../../etc/hostname") }),
      /playbook: expected a playbook file inside repo \(.*\), found \/etc\/hostname, outside it/,
    );
    assertBadInput(
      await validate({ "p.yml": PROFILE().replace("repo: repo", "repo: root") }, "p.yml", (dir) => symlink("/", join(dir, "root"))),
      /repo: expected the infrastructure repo, found the root of the file system/,
    );
    assertBadInput(
      await validate({ "p.yml": PROFILE("overrides: overlays\n"), "overlays/askari.yml": "" }),
      /overrides: expected an overlay YAML file, found a directory at/,
    );
    assertBadInput(
      await validate({ "p.yml": PROFILE("image: file:/nonexistent/disk.qcow2\n") }),
      /image: expected a qcow2 file, found nothing at \/nonexistent\/disk\.qcow2/,
    );
    assertBadInput(
      await validate({ "p.yml": PROFILE("overrides: o.yml\n"), "o.yml": "vault: missing-vault.yml\n" }),
      /o\.yml: vault: expected an Ansible vault file, found nothing at .*missing-vault\.yml/,
    );
  });

  it("inventories as Ansible reads them: ranges, duplicate keys, many aliases, plugins, a folder", async () => {
    const range = await validate({
      "p.yml": PROFILE("", "inventory/hosts.yml", "web02"),
      "repo/inventory/hosts.yml": "all:\n  children:\n    web:\n      hosts:\n        web[01:03]:\n",
    });
    assert.equal(range.code, 0, range.stderr);
    const duplicate = await validate({ "repo/inventory/hosts.yml": "all:\n  hosts:\n    askari:\n      a: 1\n    askari:\n      a: 2\n" });
    assert.equal(duplicate.code, 0, duplicate.stderr);
    const aliases = Array.from({ length: 150 }, (_, index) => `    h${index}: *vars`).join("\n");
    const many = await validate({ "repo/inventory/hosts.yml": `all:\n  vars: &vars { x: 1 }\n  hosts:\n    askari:\n${aliases}\n` });
    assert.equal(many.code, 0, many.stderr);
    const plugin = await validate({
      "p.yml": PROFILE("", "inventory/generated.yml", "web2"),
      "repo/inventory/generated.yml": 'plugin: ansible.builtin.generator\nhosts:\n  name: "web{{ n }}"\nlayers:\n  n: ["1", "2"]\n',
    });
    assert.equal(plugin.code, 0, plugin.stderr);
    const folder = await validate({ "p.yml": PROFILE("", "inventory") });
    assert.equal(folder.code, 0, folder.stderr);
  });

  it("an inventory Ansible refuses is refused with Ansible's own words", async () => {
    assertBadInput(
      await validate({ "p.yml": PROFILE("", "inventory/hosts.ini"), "repo/inventory/hosts.ini": "[web\nhost1\n" }),
      // Ansible's message as its own lines, not squashed into one.
      /hosts\.ini(:\d+:\d+)?: Ansible cannot read this inventory:\n {4}\[WARNING\]: +\* Failed to parse .*hosts\.ini/,
    );
    assertBadInput(
      await validate({ "repo/inventory/hosts.yml": "all:\n  vars: &loop\n    again: *loop\n  hosts:\n    askari:\n" }),
      /hosts\.yml: Ansible cannot read this inventory/,
    );
    const missing = await validate({
      "p.yml": PROFILE("", "inventory/hosts.yml", "simbaa"),
      "repo/inventory/hosts.yml": "all:\n  hosts:\n    simba:\n    askari:\n",
    });
    assertBadInput(missing, /host "simbaa" is not in the inventory .*; expected one of askari, simba \(did you mean "simba"\?\)/);
  });

  it("an executable inventory is said to be run as a script before it runs", async () => {
    const result = await validate(
      {
        "p.yml": PROFILE("", "inventory/hosts.sh"),
        "repo/inventory/hosts.sh": '#!/bin/sh\necho \'{"all": {"hosts": ["askari"]}, "_meta": {"hostvars": {}}}\'\n',
      },
      "p.yml",
      (dir) => chmod(join(dir, "repo/inventory/hosts.sh"), 0o755),
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /the inventory .*hosts\.sh is executable: Ansible runs it as an inventory script/);
  });
});
