/**
 * Past runs read from run dirs as runs leave them (report.json): a pass, a RED finding whose
 * GREEN broke and kept its VM, a harness fault (exit 4), and a fleet's host. `runs` lists them
 * newest first under headings; `report` finds one by any unique part and says what it came to.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BadInputError } from "../../../../orchestrator/errors.ts";
import { listPastRuns, pastRunsTable, rebootEntryLine, resolvePastRun, runReportText } from "../../../../orchestrator/run/past-runs.ts";
import { provenInWords, rebootedAs, reportedProof, vmEntryLine, vmEntryOf, type RebootEntry } from "../../../../orchestrator/run/report.ts";
import type { StackOutputs } from "../../../../infra/plan.ts";
import { runCli } from "../../../helpers/cli.ts";
import { recordedRuns } from "../../../helpers/past-runs.ts";
import { tempTree } from "../../../helpers/tmp.ts";

describe("past runs", () => {
  it("are listed newest first, a fleet's hosts too, under headings", async () => {
    const tree = await tempTree();
    try {
      await recordedRuns(tree.dir);
      const runs = await listPastRuns(tree.dir);
      assert.deepEqual(
        runs.map((run) => [run.name, run.verdict, run.kept, run.fleet !== undefined]),
        [
          ["20261203-120500-kazi", "pass", null, true],
          ["20261203-110000-askari", "error", null, false],
          ["20261202-100000-askari", "fail", "boma-it-askari-20261202-101500", false],
          ["20261201-090000-askari", "pass", null, false],
        ],
      );
      const table = pastRunsTable(runs, tree.dir).split("\n");
      assert.match(table[1]!, /^RUN +HOST +STARTED \(UTC\) +VERDICT +TOOK +VM$/);
      assert.match(table[4]!, /^20261202-100000-askari {2}askari {2}2026-12-02 10:00 {2}fail \(1\) +748 s {2}kept boma-it-askari-20261202-101500$/);
      assert.equal(pastRunsTable([], tree.dir), `no past runs in ${tree.dir}`);
    } finally {
      await tree.remove();
    }
  });

  it("are found by any part only one has, the newest without one; a typo gets the closest name", async () => {
    const tree = await tempTree();
    try {
      await recordedRuns(tree.dir);
      const runs = await listPastRuns(tree.dir);
      assert.equal(resolvePastRun(runs, undefined, tree.dir).name, "20261203-120500-kazi");
      assert.equal(resolvePastRun(runs, "20261202", tree.dir).name, "20261202-100000-askari");
      assert.equal(resolvePastRun(runs, "boma-it-askari-20261201-090000", tree.dir).name, "20261201-090000-askari");
      assert.throws(
        () => resolvePastRun(runs, "askari", tree.dir),
        (error: unknown) => error instanceof BadInputError && /"askari" names 3 past runs .*; give more of the name/.test(error.message),
      );
      assert.throws(
        () => resolvePastRun(runs, "20261202-100000-askary", tree.dir),
        (error: unknown) => error instanceof BadInputError && /no past run .* \(did you mean "20261202-100000-askari"\?\)/.test(error.message),
      );
      assert.throws(
        () => resolvePastRun([], undefined, tree.dir),
        (error: unknown) => error instanceof BadInputError && /no past runs in /.test(error.message),
      );
    } finally {
      await tree.remove();
    }
  });

  it("read as a person reads them: a finding's failed checks, what the reboot changed, the diagnostics and the way in", async () => {
    const tree = await tempTree();
    try {
      const { finding, fault, passing } = await recordedRuns(tree.dir);
      const text = runReportText(finding, { short: false });
      assert.match(text, /^FAIL: askari \(748\.2 s, exit 1, started 2026-12-02 10:00:00 UTC, run boma-it-askari-20261202-100000\)$/m);
      assert.match(text, /^ {2}GREEN \(expect: pass; ref fix-forward = 1a2b3c4d5e6f\): NOT as expected$/m);
      assert.match(text, /^ {4}rebooted: boot id 68aeaa18… → b4a817f2…$/m);
      assert.match(text, /^ {4}FAIL after the reboot: web through the published port: GET http:\/\/10\.234\.7\.10:8080\/: no answer within 5 s$/m);
      assert.match(text, /^ {4}checks: 1 of 2 passed/m);
      assert.match(text, /^ {4}idempotence: a second apply changed 1 task\(s\): Import the image \(offline\)$/m);
      assert.match(
        text,
        /^ {4}the reboot changed nft ruleset:\n {6}- iifname "docker0" accept\n {6}- oifname "docker0" accept\n {6}- a\n {6}- b\n {6}- … and 2 more$/m,
      );
      assert.doesNotMatch(text, /the reboot changed containers/, "an item the reboot left alone is not shown");
      assert.match(text, /^ {2}the allowlist refused: 0\.debian\.pool\.ntp\.org$/m);
      assert.match(text, /^ {2}the VM is kept: get in with `npm run boma-it -- ssh boma-it-askari-20261202-101500`$/m);

      assert.doesNotMatch(text, /VMs of/, "a report made before the VMs' size was recorded says none");
      assert.match(runReportText(passing, { short: false }), /^ {2}VMs of 1 vCPU and 3072 MiB, 2 side by side$/m);

      const faulted = runReportText(fault, { short: false });
      assert.match(faulted, /^ERROR: askari /);
      assert.match(faulted, /^ {2}after the reboot the VM stalled before its kernel started, twice\n {4}caused by: Error: no kernel within 150 s$/m);

      assert.equal(
        runReportText(passing, { short: true }).split("\n").slice(0, 3).join("\n"),
        "PASS: askari (748.2 s)\n  RED (worktree): RED is faithful: it passed before the reboot and broke after it (web through the published port)\n  GREEN (worktree): GREEN survived the reboot",
      );
    } finally {
      await tree.remove();
    }
  });

  it("put a reboot's proof in one wording per kind, the same for the log, a verb and `report`", () => {
    const ids = ["68aeaa18-0000-0000-0000-000000000000", "b4a817f2-0000-0000-0000-000000000000"] as const;
    const ready = { bootId: ids[1], readyLagSeconds: 0, uptimeSeconds: 40, waitedSeconds: 38, beforeKernelSeconds: 12 };
    const clean = reportedProof({ kind: "clean", bootIdBefore: ids[0], bootIdAfter: ids[1], seconds: 99.1, ready });
    const powerLoss = reportedProof({
      kind: "power-loss",
      bootIdBefore: ids[0],
      bootIdAfter: ids[1],
      seconds: 74,
      ready,
      previousBootEnd: "no clean shutdown in its journal",
    });
    const soft = reportedProof({ kind: "soft", bootIdBefore: ids[0], bootIdAfter: ids[0], seconds: 58, ready, softReboots: [0, 1] });
    assert.deepEqual(soft, { bootIds: [ids[0], ids[0]], seconds: 58, softReboots: [0, 1], userspaceOnly: true });
    assert.equal(`${rebootedAs("clean")}: ${provenInWords(clean)}`, "rebooted: boot id 68aeaa18… → b4a817f2… in 99.1 s");
    assert.equal(
      `${rebootedAs("power-loss")}: ${provenInWords(powerLoss)}`,
      "powered off without a shutdown and on again: boot id 68aeaa18… → b4a817f2… in 74 s; the old boot: no clean shutdown in its journal",
    );
    assert.equal(`${rebootedAs("soft")}: ${provenInWords(soft)}`, "soft-rebooted: userspace only, boot id 68aeaa18… unchanged, soft reboots 0 → 1, in 58 s");
    const entry = (kind: RebootEntry["kind"], proof: RebootEntry["proof"], ok: boolean): RebootEntry => ({
      kind,
      expect: "pass",
      ok,
      proof,
      checks: [{ name: "web", stage: "post-reboot", ok, detail: ok ? "200" : "refused", seconds: 1 }],
      snapshotDiff: null,
      diagnostics: ok ? null : "diagnostics-soft",
    });
    assert.equal(
      rebootEntryLine(entry("soft", soft, false)),
      "soft: userspace only, boot id 68aeaa18… unchanged, soft reboots 0 → 1, in 58 s; 0 of 1 checks passed after it (NOT as expected); diagnostics: diagnostics-soft",
    );
    assert.equal(rebootEntryLine(entry("clean", clean, true)), "clean: boot id 68aeaa18… → b4a817f2… in 99.1 s; 1 of 1 checks passed after it (as expected)");
    // Each VM of several hosts: the same words.
    assert.equal(
      vmEntryLine({ host: "kazi", stack: "s", ip: "10.234.7.11", bootIds: clean.bootIds, proof: clean }),
      "kazi (10.234.7.11): boot id 68aeaa18… → b4a817f2… in 99.1 s",
    );
    assert.equal(
      vmEntryLine({ host: "kazi", stack: "s", ip: "10.234.7.11", bootIds: [], notBack: "its kernel panicked" }),
      "kazi (10.234.7.11): did not come back: its kernel panicked",
    );
    // At an extra link: its address there, and to whom.
    const linked = vmEntryOf({
      host: "kazi",
      runId: "boma-it-kazi-20261205-090000",
      ip: "10.234.7.11",
      links: [{ network: "boma-it-askari-20261205-090000-link1", interface: "link1", peer: "askari", address: "10.234.9.11", peerAddress: "10.234.9.10" }],
    } as StackOutputs);
    assert.deepEqual(linked.links, [{ interface: "link1", peer: "askari", address: "10.234.9.11" }]);
    assert.equal(
      vmEntryLine({ ...linked, bootIds: clean.bootIds, proof: clean }),
      "kazi (10.234.7.11, link1 10.234.9.11 to askari): boot id 68aeaa18… → b4a817f2… in 99.1 s",
    );
  });

  it("through the CLI: `runs` and `report <run>`, --json as report.json is", async () => {
    const tree = await tempTree();
    try {
      const { finding } = await recordedRuns(tree.dir);
      const listed = await runCli(["runs", "--runs-dir", tree.dir, "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
      assert.equal((JSON.parse(listed.stdout) as unknown[]).length, 4);
      const read = await runCli(["--runs-dir", tree.dir, "report", "20261202"]);
      assert.equal(read.code, 0, read.stderr);
      assert.match(read.stdout, /^FAIL: askari/);
      const json = await runCli(["report", "20261202", "--json", "--runs-dir", tree.dir]);
      assert.deepEqual(JSON.parse(json.stdout), finding);
      const typo = await runCli(["report", "nobody", "--runs-dir", tree.dir]);
      assert.equal(typo.code, 2);
    } finally {
      await tree.remove();
    }
  });
});
