/**
 * The secret-sink sweep: sentinels in the repo's vault (a group_vars folder with an encrypted
 * file, an inline `!vault` string in host_vars), in the overlay's vault and in its secretVars
 * (multi-line, quoted, with backslashes, non-ASCII); a real `ansible-playbook` (against a fake
 * VM) prints them and fails with one. Every sink is grepped for every form a secret takes there
 * (as is, JSON-escaped, each line): the terminal log, the runner's records (argv and output
 * tails), the error that ends the apply, report.json and junit.xml, and every file of the run dir.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import type { StackOutputs } from "../../../../infra/plan.ts";
import { Runner } from "../../../../infra/runner.ts";
import { applyPlaybook, writeTransientInventory, type ApplyInput } from "../../../../orchestrator/ansible/apply.ts";
import { SystemUnderTestError } from "../../../../orchestrator/errors.ts";
import { Log } from "../../../../orchestrator/log.ts";
import { loadProfile } from "../../../../orchestrator/profile/load.ts";
import { planCerts } from "../../../../orchestrator/ansible/certs.ts";
import { writeReportPage } from "../../../../orchestrator/run/report-page.ts";
import { writeReport, type RunReport } from "../../../../orchestrator/run/report.ts";
import { loadSecrets, makePrivate, Redactor, REDACTED, scrubDir } from "../../../../orchestrator/ansible/secrets.ts";
import { startFakeVm } from "../../../helpers/fake-vm.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const SENTINELS = {
  repoVaultFile: "repo-vault-file-sentinel-51c2",
  repoInline: "repo-inline-vault-sentinel-8d3e",
  overlayVault: "overlay-vault-sentinel-7f40",
  multiLine: "first-line-sentinel-a1\nsecond-line-sentinel-b2",
  quoted: 'say "quoted-sentinel" c3',
  backslash: "C:\\backslash\\sentinel-d4",
  unicode: "grüße-unicode-sentinel-é5",
};

const PLAYBOOK = `- hosts: all
  gather_facts: false
  tasks:
    - debug: { var: repo_secret }
    - debug: { var: inline_secret }
    - debug: { msg: "{{ overlay_vault_secret }} {{ quoted }} {{ backslash }} {{ unicode }}" }
    - debug: { var: multi }
    - { shell: 'printf "%s\\n" "$SECRET"', environment: { SECRET: "{{ multi }}" } }
    - { fail: { msg: "{{ quoted }} / {{ unicode }}" }, ignore_errors: true }
    - fail: { msg: "{{ multi }} {{ backslash }} {{ repo_secret }}" }
`;

/**
 * Every form of every sentinel that must appear nowhere, worked out here rather than by the code
 * under test: as is, JSON-escaped (with and without \u escapes), and each line of a multi-line one.
 */
function forbiddenForms(): string[] {
  return Object.values(SENTINELS).flatMap((value) =>
    [value, ...value.split("\n")].flatMap((piece) => {
      const json = JSON.stringify(piece).slice(1, -1);
      // …and as the page (report.html) would show it, HTML-escaped.
      const html = piece.replace(/[&<>"']/g, (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[char]!);
      return [piece, json, json.replace(/[\u0080-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`), html];
    }),
  );
}

function assertClean(text: string, sink: string): void {
  for (const form of forbiddenForms())
    assert.ok(!text.includes(form), `${sink} holds ${JSON.stringify(form)}:\n${text.slice(Math.max(0, text.indexOf(form) - 200), text.indexOf(form) + 200)}`);
}

async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await filesUnder(path)));
    else if (entry.isFile()) found.push(path);
  }
  return found;
}

describe("secrets never reach a sink", { timeout: 5 * 60_000 }, () => {
  it("in any form, from the repo's vault, the overlay's vault and its secretVars", async (t) => {
    const tree = await tempTree({
      pw: "vault-password\n",
      "repo/inventory/hosts.yml": "all:\n  children:\n    docker_hosts:\n      hosts:\n        askari:\n",
      "repo/inventory/group_vars/docker_hosts/vault.yml": `repo_secret: ${SENTINELS.repoVaultFile}\n`,
      "repo/site.yml": PLAYBOOK,
      "overlay-vault.yml": `overlay_vault_secret: ${SENTINELS.overlayVault}\n`,
      "overlay.yml": `vars:\n  multi: ${JSON.stringify(SENTINELS.multiLine)}\n  quoted: ${JSON.stringify(SENTINELS.quoted)}\n  backslash: ${JSON.stringify(SENTINELS.backslash)}\n  unicode: ${JSON.stringify(SENTINELS.unicode)}\nsecretVars: [multi, quoted, backslash, unicode]\nvault: overlay-vault.yml\n`,
      "p.yml": "host: askari\nrepo: repo\ninventory: inventory/hosts.yml\nplaybook: site.yml\noverrides: overlay.yml\nchecks: [{ name: x, unit: y }]\n",
      "run/keys/id_ed25519": "k\n",
      "run/keys/known_hosts": "a ssh-ed25519 AAAA\n",
    });
    try {
      const env = { ...process.env, ANSIBLE_VAULT_PASSWORD_FILE: join(tree.dir, "pw") };
      for (const file of ["repo/inventory/group_vars/docker_hosts/vault.yml", "overlay-vault.yml"])
        execFileSync("ansible-vault", ["encrypt", join(tree.dir, file)], { env, stdio: "ignore" });
      const inline = execFileSync("ansible-vault", ["encrypt_string", "--name", "inline_secret", SENTINELS.repoInline], { env, encoding: "utf8" });
      await mkdir(join(tree.dir, "repo/inventory/host_vars"), { recursive: true });
      await writeFile(join(tree.dir, "repo/inventory/host_vars/askari.yml"), inline);

      const vm = await startFakeVm(tree.dir, "boma-it-askari-20261201-111111");
      t.after(() => vm.stop());
      const redactor = new Redactor();
      const runner = new Runner({ env, redact: redactor.redact });
      let terminal = "";
      const log = new Log({ stream: new Writable({ write: (chunk, _encoding, done) => ((terminal += String(chunk)), done()) }), redact: redactor.redact });
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: tree.dir }, runner);
      const secrets = await loadSecrets(profile, runner, redactor);
      for (const value of Object.values(SENTINELS)) assert.ok(secrets.values.includes(value), `learnt before anything runs: ${value}`);

      const runDir = join(tree.dir, "run");
      const outputs: StackOutputs = {
        runId: "boma-it-askari-20261201-111111",
        host: "askari",
        ip: "10.234.7.10",
        user: "boma",
        ssh: "",
        runDir,
        consoleLog: join(runDir, "console.log"),
        keyFile: join(runDir, "keys/id_ed25519"),
        knownHostsFile: join(runDir, "keys/known_hosts"),
        network: "n",
        mac: "52:54:00:00:00:02",
        subnet: "10.234.7.0/24",
        domain: "d",
        accel: "tcg",
        createdAt: "2026-12-01T11:11:11Z",
        ownerPid: process.pid,
      };
      const input: ApplyInput = {
        profile,
        outputs,
        target: {
          ip: outputs.ip,
          user: "boma",
          keyFile: outputs.keyFile,
          knownHostsFile: outputs.knownHostsFile,
          alias: outputs.runId,
          controlPath: vm.controlPath,
        },
        scenario: { name: "green", vars: {} },
        certs: await planCerts(profile, { certs: undefined, noEgress: false }, join(tree.dir, "certs")),
        secrets,
        dir: join(runDir, "green", "ansible"),
        runner,
        log,
        signal: new AbortController().signal,
      };
      await mkdir(input.dir, { recursive: true });
      const failure = await applyPlaybook(input, await writeTransientInventory(input)).then(
        () => assert.fail("the last task fails"),
        (error: unknown) => error,
      );
      assert.ok(failure instanceof SystemUnderTestError, String(failure));
      assert.match(failure.message, new RegExp(REDACTED.replace(/[[\]]/g, "\\$&")), "the failing task's message is there, redacted");
      const ansibleLog = await readFile(join(input.dir, "ansible.log"), "utf8");
      assert.match(ansibleLog, /TASK \[debug\]/, "the apply's log is written");
      assert.ok(ansibleLog.includes(REDACTED), "with the secrets it printed redacted");

      const report: RunReport = {
        runId: outputs.runId,
        profile: "p",
        host: "askari",
        engine: "direct",
        accel: "tcg",
        certs: "internal",
        egress: { mode: "allowlist", allowed: ["deb.debian.org"], blocked: [] },
        verdict: "fail",
        exitCode: 1,
        message: failure.message,
        readyLagSeconds: [],
        diagnostics: null,
        harness: { peakRssMiB: 0 },
        kept: null,
        error: null,
        startedAt: "",
        finishedAt: "",
        wallSeconds: 0,
        runDir,
        scenarios: [
          {
            name: "green",
            expect: "pass",
            ok: false,
            outcome: failure.message,
            stack: outputs.runId,
            bootIds: [],
            checks: [{ name: "prints", stage: "pre-reboot", ok: false, detail: `exit 1: ${SENTINELS.quoted}`, seconds: 1 }],
            phases: [],
            readyLagSeconds: [],
            guestBootSeconds: [],
            beforeKernelSeconds: [],
            bootResets: [],
            firstBoot: null,
            apply: null,
            certificate: null,
            snapshotDiff: null,
            diagnostics: null,
          },
        ],
      };
      await writeReport(report, redactor.redact);
      await writeReportPage(report, redactor.redact);

      assertClean(terminal, "the terminal log");
      assertClean(JSON.stringify(runner.history), "the runner's records");
      assertClean(`${failure.message}\n${failure.stack}`, "the error");
      for (const file of await filesUnder(runDir)) assertClean(await readFile(file, "utf8"), file);

      // The last resort finds nothing left to scrub, and the run dir is private.
      assert.deepEqual(await scrubDir(runDir, secrets), { changed: [], failed: [] });
      await makePrivate(runDir);
      assert.equal((await stat(runDir)).mode & 0o777, 0o700);
      // The owner's alone; the confinement's programs stay executable (a later verb runs them again).
      for (const file of await filesUnder(runDir)) assert.ok([0o600, 0o700].includes((await stat(file)).mode & 0o777), file);
      assert.equal((await stat(join(runDir, "green/ansible/confine/bin/ssh"))).mode & 0o777, 0o700);
    } finally {
      await tree.remove();
    }
  });

  it("a vault Ansible accepts is accepted (a duplicate key); one it cannot read is exit 2 naming the file, never its content", async () => {
    const tree = await tempTree({
      pw: "vault-password\n",
      "repo/hosts.yml": "all:\n  hosts:\n    askari:\n",
      "repo/site.yml": "- hosts: all\n",
      "dup.yml": "token: first-value-1234\ntoken: second-value-5678\n",
      "bad.yml": "token: [unclosed-secret-value-9999\n",
      "p-dup.yml": "host: askari\nrepo: repo\ninventory: hosts.yml\nplaybook: site.yml\noverrides: o-dup.yml\nchecks: [{ name: x, unit: y }]\n",
      "o-dup.yml": "vault: dup.yml\n",
      "p-bad.yml": "host: askari\nrepo: repo\ninventory: hosts.yml\nplaybook: site.yml\noverrides: o-bad.yml\nchecks: [{ name: x, unit: y }]\n",
      "o-bad.yml": "vault: bad.yml\n",
    });
    try {
      const env = { ...process.env, ANSIBLE_VAULT_PASSWORD_FILE: join(tree.dir, "pw") };
      for (const file of ["dup.yml", "bad.yml"]) execFileSync("ansible-vault", ["encrypt", join(tree.dir, file)], { env, stdio: "ignore" });
      const runner = new Runner({ env });
      const locations = { profilesDir: tree.dir, overridesDir: tree.dir };
      const accepted = await loadSecrets(await loadProfile(join(tree.dir, "p-dup.yml"), locations, runner), runner);
      assert.ok(accepted.values.includes("second-value-5678"), "as Ansible reads it: the last value wins");
      await assert.rejects(loadSecrets(await loadProfile(join(tree.dir, "p-bad.yml"), locations, runner), runner), (error: Error & { exitCode?: number }) => {
        assert.equal(error.exitCode, 2);
        assert.match(error.message, /bad\.yml: Ansible cannot read this vaulted file/);
        assert.doesNotMatch(`${error.message}\n${error.stack}`, /unclosed-secret-value-9999/);
        return true;
      });
    } finally {
      await tree.remove();
    }
  });
});
