/**
 * Revisions of the infrastructure repo, on a temporary git repository: refs, tags and shas
 * resolve to full commits; a ref that names nothing, or a repo outside git, is bad input naming
 * both; a checkout is read-only, comes from git's objects only (the user's checkout, index, stash
 * and worktree list unchanged, uncommitted changes left out), and works for a repo that is a
 * folder of a larger repository; the worktree says whether it is dirty. The upgrade path's
 * baseline is applied first, through real Ansible against a fake VM, and its failure is its own.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdir, readFile, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { StackOutputs } from "../../../../infra/plan.ts";
import { Runner } from "../../../../infra/runner.ts";
import { BadInputError, SystemUnderTestError } from "../../../../orchestrator/errors.ts";
import type { Machine } from "../../../../orchestrator/guest/machine.ts";
import { loadProfile } from "../../../../orchestrator/profile/load.ts";
import { checkoutRevision, profileAtRevision, resolveRevision, worktreeRevision } from "../../../../orchestrator/profile/revision.ts";
import { profileAsApplied } from "../../../../orchestrator/run/attach.ts";
import { planCerts } from "../../../../orchestrator/ansible/certs.ts";
import { NO_ANSIBLE_ARGS } from "../../../../orchestrator/run/options.ts";
import type { ScenarioReport } from "../../../../orchestrator/run/report.ts";
import { baselineStep, profileAt, resolveScenarioRevisions } from "../../../../orchestrator/run/scenario.ts";
import type { ScenarioSpec, StepContext } from "../../../../orchestrator/run/stages.ts";
import { secretsOf } from "../../../../orchestrator/ansible/secrets.ts";
import { startFakeVm } from "../../../helpers/fake-vm.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const git = (dir: string, ...args: string[]) =>
  execFileSync("git", ["-C", dir, ...args], {
    encoding: "utf8",
    env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" },
  }).trim();

const PLAY = (task: string) => `- hosts: all\n  gather_facts: false\n  tasks:\n    - ${task}\n`;

/** A repository whose infrastructure repo is its `infra/` folder, with two commits, a tag and a dirty file. */
async function repository() {
  const tree = await tempTree({
    "repo/infra/inventory/hosts.yml": "all:\n  hosts:\n    askari:\n",
    "repo/infra/site.yml": PLAY("debug: { msg: v1 }"),
    "repo/README": "the whole repository\n",
    "p.yml": "host: askari\nrepo: repo/infra\ninventory: inventory/hosts.yml\nplaybook: site.yml\nchecks: [{ name: x, unit: y }]\n",
  });
  const repo = join(tree.dir, "repo");
  git(repo, "init", "-q", "-b", "main");
  git(repo, "add", "-A");
  git(repo, "commit", "-q", "-m", "v1");
  git(repo, "tag", "v1");
  const v1 = git(repo, "rev-parse", "HEAD");
  await writeFile(join(repo, "infra/site.yml"), PLAY("fail: { msg: the v2 baseline breaks }"));
  git(repo, "commit", "-q", "-am", "v2");
  const v2 = git(repo, "rev-parse", "HEAD");
  // Uncommitted: must never reach a checkout.
  await writeFile(join(repo, "infra/site.yml"), PLAY("debug: { msg: uncommitted }"));
  return { tree, repo, infra: join(repo, "infra"), v1, v2 };
}

const state = (repo: string) => [git(repo, "status", "--porcelain"), git(repo, "stash", "list"), git(repo, "worktree", "list"), git(repo, "rev-parse", "HEAD")];

describe("revisions of the infrastructure repo", () => {
  it("resolve refs, tags and abbreviated shas to full commits; refuse what names nothing and a repo outside git", async () => {
    const { tree, infra, v1, v2 } = await repository();
    try {
      const runner = new Runner();
      const source = { file: "/p.yml", path: "scenarios.green.ref" };
      assert.equal((await resolveRevision(infra, "v1", runner, source)).commit, v1);
      assert.equal((await resolveRevision(infra, "main", runner, source)).commit, v2);
      assert.equal((await resolveRevision(infra, v1.slice(0, 8), runner, source)).commit, v1);
      assert.equal((await resolveRevision(infra, "HEAD~1", runner, source)).place.prefix, "infra");
      await assert.rejects(resolveRevision(infra, "no-such-branch", runner, source), (error: unknown) => {
        assert.ok(error instanceof BadInputError);
        assert.match(
          error.message,
          /^\/p\.yml: scenarios\.green\.ref: expected a git revision of .*\/repo, found "no-such-branch", which names no commit there$/,
        );
        return true;
      });
      await assert.rejects(resolveRevision(infra, "--output=/tmp/x", runner, source), /names no commit there/, "a ref that looks like an option is only a ref");
      await assert.rejects(
        resolveRevision(join(tree.dir, "p.yml").replace("p.yml", ""), "v1", runner, source),
        /is not in a git repository \(found ref "v1"\)/,
      );
      assert.deepEqual(await worktreeRevision(infra, runner), { ref: null, commit: "worktree", dirty: true });
      assert.deepEqual(await worktreeRevision(tree.dir, runner), { ref: null, commit: "worktree", dirty: null }, "not a git repo");
    } finally {
      await tree.remove();
    }
  });

  it("the user's repository stays byte-identical, .git included, and runs nothing its config names (an fsmonitor, hooks)", async () => {
    const { tree, repo, infra } = await repository();
    try {
      const ran = join(tree.dir, "fsmonitor-ran");
      const monitor = join(tree.dir, "fsmonitor.sh");
      await writeFile(monitor, `#!/bin/sh\ntouch ${ran}\n`, { mode: 0o755 });
      git(repo, "config", "core.fsmonitor", monitor);
      // An index whose stat data is stale: a `git status` that may write would refresh it.
      await utimes(join(repo, "README"), new Date("2030-01-01T00:00:00Z"), new Date("2030-01-01T00:00:00Z"));
      const hash = () =>
        execFileSync("bash", ["-c", `cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum; find . -printf '%p %m %T@\\n' | sort`, "hash", repo], {
          encoding: "utf8",
        });
      const before = hash();
      const runner = new Runner();
      await worktreeRevision(infra, runner);
      const revision = await resolveRevision(infra, "v1", runner, { file: "/p.yml", path: "ref" });
      await checkoutRevision(revision, join(tree.dir, "run", "refs"), runner);
      assert.equal(hash(), before, "every file of the repository, .git's included, with its mode and time");
      await assert.rejects(stat(ran), "the fsmonitor the repository's config names never ran");
    } finally {
      await tree.remove();
    }
  });

  it("a revision's verify playbook is its own when it has one, else the one on disk (a baseline that predates it still loads)", async () => {
    const { tree, repo, infra } = await repository();
    try {
      await writeFile(
        join(tree.dir, "p.yml"),
        "host: askari\nrepo: repo/infra\ninventory: inventory/hosts.yml\nplaybook: site.yml\nverify: verify.yml\nchecks: [{ name: x, unit: y }]\n",
      );
      await writeFile(join(infra, "verify.yml"), PLAY("debug: { msg: on disk }"));
      const runner = new Runner();
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, runner);
      const older = await checkoutRevision(await resolveRevision(infra, "v1", runner, { file: "/p.yml", path: "ref" }), join(tree.dir, "run", "a"), runner);
      const lines: string[] = [];
      const atV1 = await profileAtRevision(profile, older, runner, { info: (line) => lines.push(line) });
      assert.equal(atV1.verifyFile, join(infra, "verify.yml"), "v1 has none: the one on disk");
      assert.equal(atV1.document.verify, "verify.yml");
      assert.match(lines.join("\n"), /verify: verify\.yml is not in this revision: the one on disk is used/);
      git(repo, "add", "infra/verify.yml");
      git(repo, "commit", "-q", "-m", "v3 with verify");
      const newer = await checkoutRevision(await resolveRevision(infra, "HEAD", runner, { file: "/p.yml", path: "ref" }), join(tree.dir, "run", "b"), runner);
      const atV3 = await profileAtRevision(profile, newer, runner, { info: () => undefined });
      assert.equal(atV3.verifyFile, join(newer, "verify.yml"), "the revision's own");
    } finally {
      await tree.remove();
    }
  });

  it("check out read-only from git's objects alone: the user's checkout, index, stash and worktree list stay as they were", async () => {
    const { tree, repo, infra, v1 } = await repository();
    try {
      const runner = new Runner();
      const before = state(repo);
      const resolved = await resolveRevision(infra, "v1", runner, { file: "", path: "--ref" });
      const checkout = await checkoutRevision(resolved, join(tree.dir, "run", "refs"), runner);
      assert.match(checkout, new RegExp(`run/refs/${v1.slice(0, 12)}/infra$`));
      assert.equal(await readFile(join(checkout, "site.yml"), "utf8"), PLAY("debug: { msg: v1 }"), "the commit's content, not the worktree's");
      assert.equal((await stat(join(checkout, "site.yml"))).mode & 0o222, 0, "read-only");
      await assert.rejects(stat(join(checkout, "..", "README")), "only the infrastructure repo's folder");
      assert.deepEqual(state(repo), before);
    } finally {
      await tree.remove();
    }
  });

  it("the upgrade path: the baseline is applied first from its own checkout; a baseline that fails is named as the baseline", async (t) => {
    const { tree, v2 } = await repository();
    try {
      const vm = await startFakeVm(tree.dir, "boma-it-askari-20261201-130000");
      t.after(() => vm.stop());
      const runner = new Runner({ env: process.env });
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: tree.dir }, runner);
      const scenarios: ScenarioSpec[] = [{ name: "green", expect: "pass", vars: {} }];
      await resolveScenarioRevisions(profile, scenarios, { ref: "v1", baseline: "main", target: "green" }, runner);
      assert.equal(scenarios[0]!.baseline?.commit, v2);
      const context = {
        profile,
        certs: await planCerts(profile, { certs: undefined, noEgress: false }, join(tree.dir, "certs")),
        secrets: secretsOf([]),
        runner,
        log: silentLog(),
        signal: new AbortController().signal,
        ansible: NO_ANSIBLE_ARGS,
      } as unknown as StepContext;
      const outputs = {
        runId: "boma-it-askari-20261201-130000",
        host: "askari",
        ip: "10.234.7.10",
        user: "boma",
        keyFile: join(tree.dir, "k"),
        knownHostsFile: join(tree.dir, "kh"),
        subnet: "10.234.7.0/24",
      } as StackOutputs;
      const machine = {
        target: {
          ip: outputs.ip,
          user: "boma",
          keyFile: outputs.keyFile,
          knownHostsFile: outputs.knownHostsFile,
          alias: outputs.runId,
          controlPath: vm.controlPath,
        },
        // As the fake VM's ssh does: the command runs here (where no seed put the harness's python3).
        execute: async (command: string) => {
          const result = spawnSync("/bin/sh", ["-c", command], { encoding: "utf8" });
          return { exitCode: result.status ?? 255, stdout: result.stdout, stderr: result.stderr };
        },
      } as unknown as Machine;
      const report = {} as ScenarioReport;
      const said: string[] = [];
      context.log.transcribe((line) => said.push(line));
      const session = {
        machine,
        outputs,
        report,
        dir: join(tree.dir, "run", "green"),
        timed: (_name: string, body: () => Promise<unknown>) => body(),
      } as never;
      const candidate = await profileAt(context, session, scenarios[0]!.revision);
      assert.match(candidate.playbookFile, /refs\/[0-9a-f]{12}\/infra\/site\.yml$/);
      assert.deepEqual([report.ref, report.commit], ["v1", scenarios[0]!.revision!.commit]);
      await assert.rejects(baselineStep(context, session, scenarios[0]!, await profileAt(context, session, scenarios[0]!.baseline)), (error: unknown) => {
        assert.ok(error instanceof SystemUnderTestError);
        assert.match(
          error.message,
          new RegExp(
            `^the baseline main \\(${v2.slice(0, 12)}\\) failed to apply, not the change: applying .*site\\.yml to askari failed: .*the v2 baseline breaks`,
          ),
        );
        return true;
      });
      assert.deepEqual(report.baseline, { ref: "main", commit: v2, apply: null });
      assert.ok(
        said.some((line) => line.includes(`on baseline main = ${v2.slice(0, 12)}: what the live host runs is applied first`)),
        said.join("\n"),
      );
    } finally {
      await tree.remove();
    }
  });

  it("a verb on a kept VM works with the revision its run applied, not the worktree, or the one --ref names", async () => {
    const { tree, v1, v2 } = await repository();
    try {
      const runner = new Runner({ env: process.env });
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: tree.dir }, runner);
      const runId = "boma-it-askari-20261201-130000";
      const outputs = { runId, runDir: join(tree.dir, "run", "green") } as StackOutputs;
      const reportFile = join(tree.dir, "run", "report.json");
      await mkdir(outputs.runDir, { recursive: true });
      const record = { ...outputs, engine: "direct" as const, reportFile };
      await writeFile(reportFile, JSON.stringify({ scenarios: [{ name: "green", stack: runId, ref: "v1", commit: v1 }] }));
      const applied = await profileAsApplied(profile, record, outputs, { runner, log: silentLog() });
      assert.match(applied.profile.playbookFile, new RegExp(`run/green/refs/${v1.slice(0, 12)}/infra/site\\.yml$`));
      assert.match(await readFile(applied.profile.playbookFile, "utf8"), /msg: v1/);
      assert.deepEqual(applied.revision, { ref: "v1", commit: v1 });

      const asked = await profileAsApplied(profile, record, outputs, { runner, log: silentLog(), ref: "main" });
      assert.deepEqual(asked.revision, { ref: "main", commit: v2 });
      assert.match(await readFile(asked.profile.playbookFile, "utf8"), /the v2 baseline breaks/);
      await assert.rejects(
        profileAsApplied(profile, record, outputs, { runner, log: silentLog(), ref: "nosuch" }),
        /BadInputError: --ref: expected a git revision of .*, found "nosuch", which names no commit there/,
      );

      await writeFile(reportFile, JSON.stringify({ scenarios: [{ name: "green", stack: runId, ref: null, commit: "worktree" }] }));
      assert.equal((await profileAsApplied(profile, record, outputs, { runner, log: silentLog() })).profile.playbookFile, profile.playbookFile);
    } finally {
      await tree.remove();
    }
  });
});
