/**
 * A verify playbook's tasks as checks and a second apply's changed tasks: first through the real
 * `ansible-playbook` in the real jail with boma-it's callback recording each task (to a fake VM
 * behind a fake SSH master), then the rules on outcomes written out.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runPlaybook, writeTransientInventory } from "../../../../orchestrator/ansible/apply.ts";
import { parseTaskRecords, readTaskRecords, type TaskOutcome } from "../../../../orchestrator/ansible/task-records.ts";
import { REDACTED } from "../../../../orchestrator/ansible/secrets.ts";
import { changedTasks, verifyFindings } from "../../../../orchestrator/ansible/verify.ts";
import { applyFixture } from "../../../helpers/apply-fixture.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const INVENTORY = "all:\n  children:\n    docker_hosts:\n      hosts:\n        askari: { ansible_host: 10.20.0.11 }\n";
const TOKEN = "verify-sentinel-token-4c1d9e0b7a";

function outcome(task: string, status: TaskOutcome["status"], extra: Partial<TaskOutcome> = {}): TaskOutcome {
  return { task, action: "ansible.builtin.command", handler: false, status, ignored: false, msg: "", ...extra };
}

describe("a verify playbook through the real ansible-playbook", { timeout: 5 * 60_000 }, () => {
  it("each assert is a check, passed or failed with its message; a failed task is a failed check; an ignored failure still fails; a secret in a message is redacted; the changed tasks are listed", async () => {
    const setup = await applyFixture(
      { "inventory/hosts.yml": INVENTORY },
      {
        playbook: `- hosts: all
  gather_facts: false
  tasks:
    - name: the page is there
      ansible.builtin.assert: { that: ["1 == 1"], success_msg: "page found" }
    - name: the port answers
      ansible.builtin.assert: { that: ["2 == 3"], fail_msg: "port 443 is closed" }
      ignore_errors: true
    - name: a command that changes
      ansible.builtin.command: "true"
    - name: a command that does not
      ansible.builtin.command: "true"
      changed_when: false
    - name: never
      ansible.builtin.assert: { that: ["false"] }
      when: false
    - name: the token is refused
      ansible.builtin.fail: { msg: "the API refused {{ token }}" }
`,
        vars: { token: TOKEN },
      },
    );
    try {
      setup.input.secrets.add(TOKEN);
      const recordFolders = async () => (await readdir("/dev/shm").catch(() => [] as string[])).filter((name) => name.startsWith("boma-it-tasks-"));
      const before = new Set(await recordFolders());
      const run = await runPlaybook(setup.input, await writeTransientInventory(setup.input), setup.input.profile.playbookFile);
      assert.equal(run.failed, true, "the play failed at its last task");
      const findings = verifyFindings(run, "site.yml");
      assert.deepEqual(
        findings.map((finding) => [finding.name, finding.ok]),
        [
          ["verify: the page is there", true],
          ["verify: the port answers", false],
          ["verify: the token is refused", false],
        ],
      );
      assert.equal(findings[0]!.detail, "page found");
      assert.match(findings[1]!.detail, /^port 443 is closed.*\(the play ignored it and went on\)$/);
      assert.equal(findings[2]!.detail, `the API refused ${REDACTED}`);
      assert.ok(!JSON.stringify(run.outcomes).includes(TOKEN), "no outcome holds the token");
      assert.deepEqual(changedTasks(run.outcomes), ["a command that changes"]);
      assert.deepEqual(
        run.outcomes.map((entry) => [entry.task, entry.status]),
        [
          ["the page is there", "ok"],
          ["the port answers", "failed"],
          ["a command that changes", "changed"],
          ["a command that does not", "ok"],
          ["never", "skipped"],
          ["the token is refused", "failed"],
        ],
      );
      // The records' private folder is gone. Another apply of this machine (a test beside this
      // one) may hold one of its own for a while: what appeared since this one began must go.
      let left = (await recordFolders()).filter((name) => !before.has(name));
      for (let tries = 0; tries < 120 && left.length > 0; tries += 1) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        left = (await recordFolders()).filter((name) => left.includes(name));
      }
      assert.deepEqual(left, [], "the records' private folder is gone");
    } finally {
      await setup.remove();
    }
  });

  it("a verify playbook that cannot run (an undefined role) is one failed check named after it", async () => {
    const setup = await applyFixture({ "inventory/hosts.yml": INVENTORY }, { playbook: "- hosts: all\n  gather_facts: false\n  roles: [no_such_role]\n" });
    try {
      const run = await runPlaybook(setup.input, await writeTransientInventory(setup.input), setup.input.profile.playbookFile);
      const findings = verifyFindings(run, "molecule/default/verify.yml");
      assert.equal(findings.length, 1);
      assert.equal(findings[0]!.name, "verify: molecule/default/verify.yml");
      assert.equal(findings[0]!.ok, false);
      assert.match(findings[0]!.detail, /no_such_role/);
    } finally {
      await setup.remove();
    }
  });
});

describe("verify findings and changed tasks from outcomes", () => {
  it("a playbook with no assert and no failure is one passing check; skipped tasks are not counted", () => {
    const findings = verifyFindings({ failed: false, why: "", outcomes: [outcome("gather", "ok"), outcome("skip me", "skipped")] }, "verify.yml");
    assert.deepEqual(findings, [{ name: "verify: verify.yml", ok: true, detail: "1 task(s) ran, none failed (it has no assert)" }]);
  });

  it("a task name that comes twice is numbered; an assert's failed condition is said when its message does not", () => {
    const assertion = { action: "assert", msg: "Assertion failed", assertion: "web_port == 443" };
    const findings = verifyFindings(
      {
        failed: true,
        why: "fatal",
        outcomes: [outcome("port", "ok", { action: "assert", msg: "All assertions passed" }), outcome("port", "failed", assertion)],
      },
      "verify.yml",
    );
    assert.deepEqual(findings, [
      { name: "verify: port", ok: true, detail: "All assertions passed" },
      { name: "verify: port (2)", ok: false, detail: "Assertion failed (web_port == 443)" },
    ]);
  });

  it("changed tasks are listed once each, in order, handlers named as such", () => {
    const outcomes = [
      outcome("write config", "changed"),
      outcome("check", "ok"),
      outcome("write config", "changed"),
      outcome("base : reload nftables", "changed", { handler: true }),
    ];
    assert.deepEqual(changedTasks(outcomes), ["write config", "handler base : reload nftables"]);
    assert.deepEqual(changedTasks([outcome("check", "ok"), outcome("fail", "failed")]), []);
  });

  it("a change the recap counts but no record names is still a change: records lost never read as idempotent", () => {
    assert.deepEqual(changedTasks([], "askari : ok=30 changed=2 unreachable=0 failed=0"), ["2 task(s), by Ansible's recap (their names were not recorded)"]);
    assert.deepEqual(changedTasks([], "askari : ok=30 changed=0 unreachable=0 failed=0"), []);
    assert.deepEqual(changedTasks([outcome("write", "changed")], "askari : ok=30 changed=1"), ["write"]);
  });

  it("a message is redacted whole before it is cut, and a name with a newline stays on one line", () => {
    const secret = "s".repeat(20) + "-the-secret-value";
    const message = `${"x".repeat(1990)}${secret} and more`;
    const [entry] = parseTaskRecords(JSON.stringify({ task: "one\nFAIL forged line", status: "failed", msg: message }), (text) =>
      text.replaceAll(secret, REDACTED),
    );
    assert.ok(!entry!.msg.includes("sssss"), "no piece of the secret survives the cut");
    assert.ok(entry!.msg.startsWith("x".repeat(1990) + REDACTED));
    assert.equal(entry!.task, "one FAIL forged line");
  });

  it("records that are not the callback's are left out, and every message is redacted", () => {
    const text = [
      JSON.stringify({
        task: "t",
        action: "assert",
        handler: false,
        host: "askari",
        status: "failed",
        ignored: true,
        msg: "bad s3cret-value-long",
        assertion: "x",
      }),
      "not json",
      JSON.stringify({ task: "u", status: "exploded" }),
      JSON.stringify({ status: "ok" }),
      "",
    ].join("\n");
    const outcomes = parseTaskRecords(text, (line) => line.replaceAll("s3cret-value-long", REDACTED));
    assert.deepEqual(outcomes, [{ task: "t", action: "assert", handler: false, status: "failed", ignored: true, msg: `bad ${REDACTED}`, assertion: "x" }]);
  });
});

describe("the records file the jail could write", () => {
  it("is read only while it is a regular file: a FIFO does not hang the harness, a link is not followed", async () => {
    const tree = await tempTree({ "elsewhere.jsonl": `${JSON.stringify({ task: "forged", status: "ok" })}\n` });
    try {
      const record = `${JSON.stringify({ task: "real", action: "assert", status: "ok", msg: "fine" })}\n`;
      await writeFile(join(tree.dir, "tasks.jsonl"), record);
      assert.deepEqual(
        (await readTaskRecords(join(tree.dir, "tasks.jsonl"), (text) => text)).map((entry) => entry.task),
        ["real"],
      );
      execFileSync("mkfifo", [join(tree.dir, "fifo.jsonl")]);
      assert.deepEqual(await readTaskRecords(join(tree.dir, "fifo.jsonl"), (text) => text), []);
      await symlink(join(tree.dir, "elsewhere.jsonl"), join(tree.dir, "link.jsonl"));
      assert.deepEqual(await readTaskRecords(join(tree.dir, "link.jsonl"), (text) => text), []);
      assert.deepEqual(await readTaskRecords(join(tree.dir, "missing.jsonl"), (text) => text), []);
    } finally {
      await tree.remove();
    }
  });
});
