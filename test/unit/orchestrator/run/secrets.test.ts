import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmod, mkdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { RefusedError } from "../../../../orchestrator/errors.ts";
import { loadProfile } from "../../../../orchestrator/profile/load.ts";
import {
  loadProfileSecrets,
  loadSecrets,
  makePrivate,
  Redactor,
  REDACTED,
  scrubDir,
  secretForms,
  secretsOf,
  unscrubbed,
} from "../../../../orchestrator/ansible/secrets.ts";
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
  it(
    "come from secretVars and the overlay's vault, decrypted with Ansible's own password settings",
    { skip: hasAnsibleVault ? false : "ansible-vault is not installed (apt-get install ansible-core)" },
    async () => {
      const tree = await tempTree({
        ...REPO,
        "p.yml": PROFILE,
        "overlay.yml": "vars: { token: plain-secret-value, region: eu }\nsecretVars: [token]\nvault: vault.yml\n",
        pw: "vault-password\n",
        "vault.yml": `mesh_setup_key: ${SENTINEL}\nnested: { api: another-secret-42 }\n`,
      });
      try {
        execFileSync("ansible-vault", ["encrypt", "--vault-password-file", join(tree.dir, "pw"), join(tree.dir, "vault.yml")], { stdio: "ignore" });
        assert.doesNotMatch(await readFile(join(tree.dir, "vault.yml"), "utf8"), new RegExp(SENTINEL));
        const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: tree.dir }, new Runner());

        const secrets = await loadSecrets(profile, new Runner({ env: { ...process.env, ANSIBLE_VAULT_PASSWORD_FILE: join(tree.dir, "pw") } }));
        assert.deepEqual(
          [...secrets.values].sort(),
          ["another-secret-42", SENTINEL, "plain-secret-value", "vault-password"].sort(),
          "the vault's password is a secret too",
        );
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
    },
  );

  it("take every form a sink shows: JSON and JSON inside JSON, Python's repr, shell-quoted as a failing task's cmd, URL-encoded, line by line", () => {
    const secret = `it's "a" \\ sécret/x y`;
    const forms = new Set(secretForms(secret));
    const expected: [string, string][] = [
      ["as is", secret],
      ["JSON", JSON.stringify(secret).slice(1, -1)],
      ["JSON inside JSON (to_json, a command printing JSON)", JSON.stringify(JSON.stringify(secret).slice(1, -1)).slice(1, -1)],
      ["Python's json.dumps (non-ASCII as \\u)", String.raw`it's \"a\" \\ s\u00e9cret/x y`],
      ["Python's repr", String.raw`it\'s "a" \\ sécret/x y`],
      ["shell-quoted by Ansible's quote filter (shlex)", `it'"'"'s "a" \\ sécret/x y`],
      ["shell-quoted by bash", `it'\\''s "a" \\ sécret/x y`],
      ["inside double quotes for a shell", String.raw`it's \"a\" \\ sécret/x y`],
      ["URL-encoded (encodeURIComponent)", encodeURIComponent(secret)],
      ["URL-encoded (Python's quote)", "it%27s%20%22a%22%20%5C%20s%C3%A9cret%2Fx%20y"],
      ["form-encoded", "it%27s+%22a%22+%5C+s%C3%A9cret%2Fx+y"],
      ["JSON of the shell-quoted cmd", JSON.stringify(`it'"'"'s "a" \\ sécret/x y`).slice(1, -1)],
    ];
    for (const [how, form] of expected) assert.ok(forms.has(form), `${how}: ${form}`);
    const redactor = new Redactor();
    redactor.add(secret);
    const sink = `{"cmd": ${JSON.stringify(`curl -d 'token=${encodeURIComponent(secret)}' && echo ${`'${secret.replaceAll("'", `'"'"'`)}'`}`)}, "stdout": ${JSON.stringify(JSON.stringify({ value: secret }))}}`;
    assert.equal(redactor.redact(sink).includes("cret"), false, redactor.redact(sink));
  });

  it("of a profile of several hosts are every host's, from each one's overlay (what a run, a verb and a scenario at a revision all learn them by)", async () => {
    const tree = await tempTree({
      "repo/hosts.yml": "all:\n  hosts:\n    askari:\n    kazi:\n",
      "repo/site.yml": "- hosts: all\n",
      "p.yml": "hosts: [askari, kazi]\nrepo: repo\ninventory: hosts.yml\nplaybook: site.yml\nchecks: [{ name: x, unit: y }]\n",
      "overrides/askari.yml": "vars: { askari_token: askari-secret-value-1 }\nsecretVars: [askari_token]\n",
      "overrides/kazi.yml": "vars: { kazi_token: kazi-secret-value-2, region: eu }\nsecretVars: [kazi_token]\n",
    });
    try {
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, new Runner());
      const redactor = new Redactor();
      const secrets = await loadProfileSecrets(profile, new Runner(), redactor);
      assert.deepEqual(secrets.secretVars, { askari_token: "askari-secret-value-1" }, "the run carries the first host's");
      assert.deepEqual([...redactor.values].sort(), ["askari-secret-value-1", "kazi-secret-value-2"], "the redactor knows every host's");
      assert.equal(redactor.redact("kazi-secret-value-2 in eu"), `${REDACTED} in eu`);
    } finally {
      await tree.remove();
    }
  });

  it("refuses a secretVars name that is not among vars", async () => {
    const tree = await tempTree({ ...REPO, "p.yml": PROFILE, "overlay.yml": "vars: { token: x }\nsecretVars: [tokn]\n" });
    try {
      await assert.rejects(
        loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: tree.dir }, new Runner()),
        /secretVars\[0\]: expected the name of one of vars \(token\), found "tokn"/,
      );
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

  it("a value no URL encoder takes (a lone surrogate) is still kept with all its other forms", () => {
    const redactor = new Redactor();
    const odd = `${SENTINEL}\ud800`;
    redactor.add(odd, `${SENTINEL}-second`);
    assert.deepEqual(redactor.values, [odd, `${SENTINEL}-second`]);
    assert.equal(redactor.redact(`a ${odd} b ${JSON.stringify(`${SENTINEL}-second`)}`), `a ${REDACTED} b "${REDACTED}"`);
  });

  it("are scrubbed from every file of a run dir, but never through a link into the real repo nor in its checkouts of the repo; the dir is made private, executables kept executable", async () => {
    const tree = await tempTree({
      "run/green/refs/0123456789ab/group_vars/all.yml": `key: ${SENTINEL}\n`,
      "run/green/refs/0123456789ab/inventory.sh": "#!/bin/sh\necho '{}'\n",
      "run/green/ansible/ansible.log": `ok: [askari] => {"msg": "${SENTINEL}"}\n`,
      "run/green/diagnostics/journal.txt": `Nov 22 x: token ${SENTINEL} seen\n`,
      "run/report.json": `{"detail": "exit 0: ${SENTINEL}"}\n`,
      "real-repo/group_vars/all.yml": `key: ${SENTINEL}\n`,
    });
    try {
      await mkdir(join(tree.dir, "run/green/ansible/inventory"), { recursive: true });
      await symlink(join(tree.dir, "real-repo/group_vars"), join(tree.dir, "run/green/ansible/inventory/group_vars"));
      const { changed, failed } = await scrubDir(join(tree.dir, "run"), secretsOf([SENTINEL]));
      assert.equal(changed.length, 3);
      assert.deepEqual(failed, []);
      for (const file of ["run/green/ansible/ansible.log", "run/green/diagnostics/journal.txt", "run/report.json"]) {
        const text = await readFile(join(tree.dir, file), "utf8");
        assert.doesNotMatch(text, new RegExp(SENTINEL), file);
        assert.ok(text.includes(REDACTED), file);
      }
      assert.equal(
        await readFile(join(tree.dir, "run/green/refs/0123456789ab/group_vars/all.yml"), "utf8"),
        `key: ${SENTINEL}\n`,
        "a checkout is the commit as git has it",
      );
      await chmod(join(tree.dir, "run/green/refs/0123456789ab/inventory.sh"), 0o555);
      await makePrivate(join(tree.dir, "run"));
      assert.equal(
        (await stat(join(tree.dir, "run/green/refs/0123456789ab/inventory.sh"))).mode & 0o777,
        0o500,
        "an executable stays executable, by its owner alone",
      );
      assert.equal((await stat(join(tree.dir, "run/report.json"))).mode & 0o777, 0o600);
      assert.equal((await stat(join(tree.dir, "run/green"))).mode & 0o777, 0o700);
    } finally {
      assert.equal(await readFile(join(tree.dir, "real-repo/group_vars/all.yml"), "utf8"), `key: ${SENTINEL}\n`, "the real repo is never written");
      await tree.remove();
    }
  });

  it("large files are scrubbed a piece at a time, a secret across a piece's end included; a file it cannot rewrite is named and the rest still scrubbed", async () => {
    const tree = await tempTree({ "run/z-small.log": `late ${SENTINEL}\n` });
    try {
      const piece = 16 * 1024 * 1024;
      // 65 MiB of console, a secret straddling the end of the first piece and another at the very end.
      const large = Buffer.alloc(65 * 1024 * 1024, "a");
      large.write(SENTINEL, piece - 5, "latin1");
      large.write(SENTINEL, large.length - SENTINEL.length, "latin1");
      await writeFile(join(tree.dir, "run/console.log"), large);
      await writeFile(join(tree.dir, "run/blocked.log"), large);
      // Its scrubbed copy cannot be made: a folder stands where it would go.
      await mkdir(join(tree.dir, `run/blocked.log.scrub-${process.pid}`));
      const { changed, failed } = await scrubDir(join(tree.dir, "run"), secretsOf([SENTINEL]));
      assert.deepEqual(changed.map((path) => path.split("/").at(-1)).sort(), ["console.log", "z-small.log"]);
      assert.deepEqual(
        failed.map(({ path, reason }) => [path.split("/").at(-1), reason]),
        [["blocked.log", "EISDIR"]],
      );
      const scrubbed = await readFile(join(tree.dir, "run/console.log"), "latin1");
      assert.ok(!scrubbed.includes(SENTINEL), "both occurrences replaced");
      assert.equal(scrubbed.split(REDACTED).length, 3);
      assert.match(unscrubbed(failed).message, /a secret may remain in the run dir: boma-it could not scrub .*blocked\.log \(EISDIR\)/);
    } finally {
      await tree.remove();
    }
  });
});
