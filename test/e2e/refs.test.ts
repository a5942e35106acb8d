/**
 * Testing the change itself, for real, on a temporary git copy of the example repo:
 * - the upgrade path catches what a fresh apply cannot: the candidate (the fix, which retires the
 *   previous version's boot-time forward unit) passes from scratch, and fails after the reboot on
 *   top of the previous version, whose forgotten unit empties the forward chain at boot;
 * - RED→GREEN by refs: RED at the commit before the fix, GREEN at the fix (the full suite).
 * The copy's checkout, index, stash and worktree list stay as they were.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { appendFile, cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { cli, FULL_SUITE, fullSuiteOnly, leftovers, profileVariant, suiteDirs } from "./helpers.ts";

/** The example repo's history as a git repository: before the fix, the fix, the previous version, the candidate. */
async function exampleHistory(dir: string) {
  const repo = join(dir, "boma-lab-git");
  await cp(join(PROJECT_ROOT, "examples", "boma-lab"), repo, { recursive: true });
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: "op",
    GIT_AUTHOR_EMAIL: "op@boma-lab.example",
    GIT_COMMITTER_NAME: "op",
    GIT_COMMITTER_EMAIL: "op@boma-lab.example",
  };
  const git = (...args: string[]) => execFileSync("git", ["-C", repo, ...args], { encoding: "utf8", env }).trim();
  const groupVars = join(repo, "inventory", "group_vars", "docker_hosts.yml");
  const fixed = await readFile(groupVars, "utf8");
  git("init", "-q", "-b", "main");
  await writeFile(groupVars, fixed.replace("docker_host_forward_dropin: true", "docker_host_forward_dropin: false"));
  git("add", "-A");
  git("commit", "-q", "-m", "docker hosts publish their web service (before the fix)");
  const beforeFix = git("rev-parse", "HEAD");
  await writeFile(groupVars, fixed);
  git("commit", "-q", "-am", "persist the container-forward accept as a drop-in (the fix)");
  const fix = git("rev-parse", "HEAD");

  // The previous version, as the live host runs it: the forward chain is emptied at every boot
  // and refilled by a unit of docker_host's (the way before drop-ins).
  git("checkout", "-q", "-b", "previous", beforeFix);
  await appendFile(
    join(repo, "roles", "base", "tasks", "main.yml"),
    `
- name: The forward chain starts empty at every boot (docker_host fills it)
  ansible.builtin.copy:
    dest: /etc/systemd/system/boma-lab-forward-reset.service
    mode: "0644"
    content: |
      [Unit]
      Description=boma-lab: empty the forward chain at boot
      After=nftables.service
      Before=docker.service
      [Service]
      Type=oneshot
      ExecStart=/usr/sbin/nft flush chain inet filter forward
      [Install]
      WantedBy=multi-user.target

- name: Enabled for the next boot
  ansible.builtin.systemd_service: { name: boma-lab-forward-reset.service, enabled: true, daemon_reload: true }
`,
  );
  await appendFile(
    join(repo, "roles", "docker_host", "tasks", "main.yml"),
    `
- name: What accepts Docker's bridges at every boot (the previous way)
  ansible.builtin.copy:
    dest: /usr/local/sbin/boma-lab-forward
    mode: "0755"
    content: |
      #!/bin/sh
      nft add rule inet filter forward ct state established,related accept
      for bridge in docker0 "br-*"; do
        for dir in iifname oifname; do nft add rule inet filter forward $dir "\\"$bridge\\"" accept; done
      done

- name: Container forwarding at every boot (the previous way)
  ansible.builtin.copy:
    dest: /etc/systemd/system/boma-lab-forward.service
    mode: "0644"
    content: |
      [Unit]
      Description=boma-lab: accept Docker's bridges in the forward chain
      After=docker.service boma-lab-forward-reset.service
      [Service]
      Type=oneshot
      ExecStart=/usr/local/sbin/boma-lab-forward
      [Install]
      WantedBy=multi-user.target

- name: Enabled for the next boot
  ansible.builtin.systemd_service: { name: boma-lab-forward.service, enabled: true, daemon_reload: true }
`,
  );
  git("commit", "-q", "-am", "previous version: forward accepts at boot by a unit");
  const previous = git("rev-parse", "HEAD");

  // The candidate: the fix, and the retirement of docker_host's boot unit; base's reset unit is forgotten.
  git("checkout", "-q", "main");
  await appendFile(
    join(repo, "roles", "docker_host", "tasks", "main.yml"),
    `
- name: The boot-time forward unit is retired (the drop-in replaces it)
  ansible.builtin.file: { path: "{{ item }}", state: absent }
  loop: [/etc/systemd/system/boma-lab-forward.service, /etc/systemd/system/multi-user.target.wants/boma-lab-forward.service]
`,
  );
  git("commit", "-q", "-am", "retire the boot-time forward unit");
  const candidate = git("rev-parse", "HEAD");
  return { repo, git, beforeFix, fix, previous, candidate };
}

describe("scenarios by git ref and the upgrade path, for real", { timeout: 90 * 60_000 }, () => {
  const dirs = suiteDirs();

  it("the upgrade path catches what a fresh apply cannot; the copy's checkout is untouched", { skip: fullSuiteOnly("two VMs") }, async () => {
    const history = await exampleHistory(join(dirs.runsDir, ".."));
    const state = () => [history.git("status", "--porcelain"), history.git("stash", "list"), history.git("worktree", "list"), history.git("rev-parse", "HEAD")];
    const before = state();
    const profile = await profileVariant(dirs.runsDir, "askari", "askari-git.yml", (yaml) => yaml.replace(/^repo: .+$/m, `repo: ${history.repo}`));

    if (FULL_SUITE) {
      const fresh = await cli(["run", profile, "--scenario", "green", "--ref", "main", "--json"], dirs.env);
      assert.equal(fresh.code, 0, fresh.stderr.slice(-3000));
      const report = JSON.parse(fresh.stdout) as RunReport;
      assert.deepEqual([report.scenarios[0]!.ref, report.scenarios[0]!.commit], ["main", history.candidate]);
    }

    const upgrade = await cli(["run", profile, "--scenario", "green", "--ref", "main", "--baseline", "previous", "--keep", "never", "--json"], dirs.env);
    assert.equal(upgrade.code, 1, upgrade.stderr.slice(-3000));
    const report = JSON.parse(upgrade.stdout) as RunReport;
    const green = report.scenarios[0]!;
    assert.deepEqual([green.ref, green.commit], ["main", history.candidate]);
    assert.deepEqual([green.baseline?.ref, green.baseline?.commit], ["previous", history.previous]);
    assert.match(green.baseline!.apply!.recap, /failed=0/, "the baseline applied");
    assert.ok(
      green.checks.filter((check) => check.stage === "pre-reboot").every((check) => check.ok),
      "the change worked right after the deploy",
    );
    assert.match(green.outcome, /^GREEN broke after the reboot: .*web through the published port/);
    assert.match(upgrade.stdout + upgrade.stderr, /on baseline previous = /);
    const junit = await readFile(join(report.runDir, "junit.xml"), "utf8");
    assert.match(junit, new RegExp(`<property name="commit" value="${history.candidate}"(/>|></property>)`));
    assert.deepEqual(state(), before, "the user's checkout, index, stash and worktree list");
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });

  it("RED→GREEN by refs: RED before the fix, GREEN at the fix; both commits named", { skip: fullSuiteOnly("two more VMs") }, async () => {
    const history = await exampleHistory(join(dirs.runsDir, "..", "by-refs"));
    const profile = await profileVariant(dirs.runsDir, "askari", "askari-by-refs.yml", (yaml) =>
      yaml
        .replace(/^repo: .+$/m, `repo: ${history.repo}`)
        .replace(/^ {2}red: .+$/m, `  red:   { ref: ${history.beforeFix} }`)
        .replace(/^ {2}green: .+$/m, `  green: { ref: ${history.fix} }`),
    );
    const result = await cli(["run", profile, "--json"], dirs.env);
    assert.equal(result.code, 0, result.stderr.slice(-3000));
    const report = JSON.parse(result.stdout) as RunReport;
    assert.deepEqual(
      report.scenarios.map((scenario) => [scenario.name, scenario.commit, scenario.ok]),
      [
        ["red", history.beforeFix, true],
        ["green", history.fix, true],
      ],
    );
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });
});
