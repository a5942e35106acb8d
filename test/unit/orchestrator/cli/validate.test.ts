/**
 * `validate` finds before any boot what a run's apply would meet first, through the real CLI
 * and the real Ansible in its jail: a group_vars file with broken YAML and a playbook that fails
 * its syntax check are bad input (exit 2) naming the file and line, Ansible's words as lines; a
 * vaulted group_vars file without its password is refused as a run refuses it (exit 3), and
 * passes once the password is given.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runCli } from "../../../helpers/cli.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const FILES = {
  "p.yml": "host: askari\nrepo: repo\ninventory: inventory/hosts.yml\nplaybook: site.yml\nchecks: [{ name: x, unit: docker.service }]\n",
  "repo/inventory/hosts.yml": "all:\n  children:\n    docker_hosts:\n      hosts:\n        askari:\n",
  "repo/inventory/group_vars/docker_hosts.yml": "docker_port: 8080\n",
  "repo/site.yml": "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: say it\n      ansible.builtin.debug:\n        msg: '{{ docker_port }}'\n",
};

async function validate(tree: { dir: string }, env: Record<string, string> = {}) {
  return runCli(["validate", join(tree.dir, "p.yml")], { BOMA_IT_STACKS_DIR: join(tree.dir, "stacks"), ...env });
}

describe("validate runs what can fail before a boot", { timeout: 120_000 }, () => {
  it("a repo that is well: exit 0, and it says what it checked", async () => {
    const tree = await tempTree(FILES);
    try {
      const result = await validate(tree);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /vars: Ansible resolves every var of askari/);
      assert.match(result.stderr, /playbook: .*site\.yml passes ansible-playbook --syntax-check/);
    } finally {
      await tree.remove();
    }
  });

  it("a group_vars file with broken YAML: exit 2, its file and line, Ansible's words as lines", async () => {
    const tree = await tempTree({ ...FILES, "repo/inventory/group_vars/docker_hosts.yml": "docker_port: 8080\ndocker_x: [unclosed\n  y: 1\n" });
    try {
      const result = await validate(tree);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /group_vars\/docker_hosts\.yml:\d+:\d+: Ansible cannot resolve the vars of askari:\n {4}ERROR! /);
      assert.match(result.stderr, /\n {4}Syntax Error while loading YAML\.\n/);
      assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
    } finally {
      await tree.remove();
    }
  });

  it("a playbook that fails its syntax check: exit 2, its file and line", async () => {
    const tree = await tempTree({
      ...FILES,
      "repo/site.yml": "- hosts: all\n  tasks:\n    - name: two actions\n      ansible.builtin.debug: msg=x\n      bogus_keyword: 1\n",
    });
    try {
      const result = await validate(tree);
      assert.equal(result.code, 2, result.stderr);
      assert.match(
        result.stderr,
        /site\.yml:3:7: the playbook .*site\.yml does not pass `ansible-playbook --syntax-check`:\n {4}ERROR! conflicting action statements: ansible\.builtin\.debug, bogus_keyword/,
      );
    } finally {
      await tree.remove();
    }
  });

  it("a vaulted group_vars file without its password: refused as a run refuses it (exit 3); with it, well", async () => {
    const tree = await tempTree(FILES);
    try {
      const password = join(tree.dir, "vault-pass");
      await writeFile(password, "correct horse battery staple\n", { mode: 0o600 });
      const vault = join(tree.dir, "repo/inventory/group_vars/docker_hosts");
      await mkdir(vault, { recursive: true });
      await writeFile(join(vault, "vault.yml"), "docker_token: s3cret-token-value\n");
      execFileSync("ansible-vault", ["encrypt", join(vault, "vault.yml")], { env: { ...process.env, ANSIBLE_VAULT_PASSWORD_FILE: password }, stdio: "pipe" });
      const without = await validate(tree);
      assert.equal(without.code, 3, without.stderr);
      assert.match(without.stderr, /cannot decrypt .*docker_hosts\/vault\.yml.*: .*no vault secrets found\n {2}fix: give Ansible the vault password/);
      const withIt = await validate(tree, { ANSIBLE_VAULT_PASSWORD_FILE: password });
      assert.equal(withIt.code, 0, withIt.stderr);
      assert.doesNotMatch(`${withIt.stdout}${withIt.stderr}`, /s3cret-token-value/, "the vaulted value is never printed");
    } finally {
      await tree.remove();
    }
  });
});
