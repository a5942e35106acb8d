import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readFile, symlink } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { RefusedError } from "../../../../orchestrator/errors.ts";
import { loadProfile } from "../../../../orchestrator/profile/load.ts";
import { loadSecrets, REDACTED, scrubDir, secretsOf } from "../../../../orchestrator/run/secrets.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const SENTINEL = "boma-sentinel-7f3a9c";
const PROFILE = "host: askari\nrepo: repo\ninventory: hosts.yml\nplaybook: site.yml\noverrides: overlay.yml\nchecks: [{ name: x, unit: y }]\n";
const REPO = { "repo/hosts.yml": "all:\n  hosts:\n    askari:\n", "repo/site.yml": "- hosts: all\n" };

const hasAnsibleVault = (() => {
  try {
    execFileSync("ansible-vault", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

describe("secrets", () => {
  it("come from secretVars and the overlay's vault, decrypted with Ansible's own password settings", { skip: hasAnsibleVault ? false : "ansible-vault is not installed (apt-get install ansible-core)" }, async () => {
    const tree = await tempTree({ ...REPO, "p.yml": PROFILE, "overlay.yml": "vars: { token: plain-secret-value, region: eu }\nsecretVars: [token]\nvault: vault.yml\n", "pw": "vault-password\n", "vault.yml": `mesh_setup_key: ${SENTINEL}\nnested: { api: another-secret-42 }\n` });
    try {
      execFileSync("ansible-vault", ["encrypt", "--vault-password-file", join(tree.dir, "pw"), join(tree.dir, "vault.yml")], { stdio: "ignore" });
      assert.doesNotMatch(await readFile(join(tree.dir, "vault.yml"), "utf8"), new RegExp(SENTINEL));
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: tree.dir }, new Runner());

      const secrets = await loadSecrets(profile, new Runner({ env: { ...process.env, ANSIBLE_VAULT_PASSWORD_FILE: join(tree.dir, "pw") } }));
      assert.deepEqual([...secrets.values].sort(), ["another-secret-42", SENTINEL, "plain-secret-value"].sort());
      assert.deepEqual(secrets.secretVars, { token: "plain-secret-value" });
      assert.equal(secrets.vaultFile, join(tree.dir, "vault.yml"));

      await assert.rejects(loadSecrets(profile, new Runner({ env: { ...process.env, ANSIBLE_VAULT_PASSWORD_FILE: "" } })), (error: unknown) => {
        assert.ok(error instanceof RefusedError);
        assert.match(error.message, /cannot decrypt the overlay's vault .*vault\.yml/);
        assert.match(error.message, /fix: give Ansible the vault password as usual: ANSIBLE_VAULT_PASSWORD_FILE/);
        return true;
      });
    } finally {
      await tree.remove();
    }
  });

  it("refuses a secretVars name that is not among vars", async () => {
    const tree = await tempTree({ ...REPO, "p.yml": PROFILE, "overlay.yml": "vars: { token: x }\nsecretVars: [tokn]\n" });
    try {
      await assert.rejects(loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: tree.dir }, new Runner()), /secretVars\[0\]: expected the name of one of vars \(token\), found "tokn"/);
    } finally {
      await tree.remove();
    }
  });

  it("are redacted from command records and never redact short common values", async () => {
    const secrets = secretsOf([SENTINEL, "true", "22"]);
    const runner = new Runner().withRedaction(secrets.redact);
    const result = await runner.run("echo", [`key=${SENTINEL}`, "true", "22"]);
    assert.equal(result.stdout, `key=${REDACTED} true 22\n`);
    assert.deepEqual(result.argv, ["echo", `key=${REDACTED}`, "true", "22"]);
    assert.doesNotMatch(JSON.stringify(runner.history), new RegExp(SENTINEL));
  });

  it("are scrubbed from every file of a run dir, but never through a link into the real repo", async () => {
    const tree = await tempTree({
      "run/green/ansible/ansible.log": `ok: [askari] => {"msg": "${SENTINEL}"}\n`,
      "run/green/diagnostics/journal.txt": `Nov 22 x: token ${SENTINEL} seen\n`,
      "run/report.json": `{"detail": "exit 0: ${SENTINEL}"}\n`,
      "real-repo/group_vars/all.yml": `key: ${SENTINEL}\n`,
    });
    try {
      await mkdir(join(tree.dir, "run/green/ansible/inventory"), { recursive: true });
      await symlink(join(tree.dir, "real-repo/group_vars"), join(tree.dir, "run/green/ansible/inventory/group_vars"));
      const changed = await scrubDir(join(tree.dir, "run"), secretsOf([SENTINEL]));
      assert.equal(changed.length, 3);
      for (const file of ["run/green/ansible/ansible.log", "run/green/diagnostics/journal.txt", "run/report.json"]) {
        const text = await readFile(join(tree.dir, file), "utf8");
        assert.doesNotMatch(text, new RegExp(SENTINEL), file);
        assert.ok(text.includes(REDACTED), file);
      }
    } finally {
      assert.equal(await readFile(join(tree.dir, "real-repo/group_vars/all.yml"), "utf8"), `key: ${SENTINEL}\n`, "the real repo is never written");
      await tree.remove();
    }
  });
});
