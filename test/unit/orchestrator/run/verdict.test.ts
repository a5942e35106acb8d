import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CheckResult } from "../../../../orchestrator/guest/checks.ts";
import { junitXml, type RunReport } from "../../../../orchestrator/run/report.ts";
import { judge } from "../../../../orchestrator/run/reboots.ts";

const pass = (name: string, stage: CheckResult["stage"]): CheckResult => ({ name, stage, ok: true, detail: "ok", seconds: 1 });
const fail = (name: string, stage: CheckResult["stage"]): CheckResult => ({ name, stage, ok: false, detail: "HTTP timeout", seconds: 60 });

describe("RED→GREEN verdicts", () => {
  it("RED is faithful when it passes before and fails after the reboot", () => {
    const verdict = judge("fail", [pass("web", "pre-reboot")], [fail("web", "post-reboot")]);
    assert.deepEqual(verdict, { ok: true, outcome: "RED is faithful: it passed before the reboot and broke after it (web)" });
  });

  it("RED that passes after the reboot means the harness is not faithful", () => {
    const verdict = judge("fail", [pass("web", "pre-reboot")], [pass("web", "post-reboot")]);
    assert.equal(verdict.ok, false);
    assert.match(verdict.outcome, /not faithful/);
  });

  it("RED that fails before the reboot proves nothing about reboots", () => {
    const verdict = judge("fail", [fail("web", "pre-reboot")], []);
    assert.equal(verdict.ok, false);
    assert.match(verdict.outcome, /failed before the reboot \(web\): this is not a reboot bug/);
  });

  it("GREEN passes only when every check passes before and after", () => {
    assert.equal(judge("pass", [pass("a", "pre-reboot")], [pass("a", "post-reboot")]).ok, true);
    assert.deepEqual(judge("pass", [pass("a", "pre-reboot")], [fail("a", "post-reboot")]), { ok: false, outcome: "GREEN broke after the reboot: a" });
    assert.deepEqual(judge("pass", [fail("a", "pre-reboot")], []), { ok: false, outcome: "GREEN failed before the reboot: a" });
  });
});

describe("RED with expectFailing", () => {
  const pre = [pass("web", "pre-reboot"), pass("docker", "pre-reboot"), pass("containers", "pre-reboot")];
  it("is faithful only when exactly the named checks fail after the reboot", () => {
    const verdict = judge("fail", pre, [fail("web", "post-reboot"), pass("docker", "post-reboot"), fail("containers", "post-reboot")], ["web", "containers"]);
    assert.equal(verdict.ok, true);
    assert.match(verdict.outcome, /broke after it exactly as expected \(web, containers\), every other check passed/);
  });

  it("says which did what when the failure is not the incident's", () => {
    const extra = judge("fail", pre, [fail("web", "post-reboot"), fail("docker", "post-reboot"), fail("containers", "post-reboot")], ["web", "containers"]);
    assert.deepEqual(extra, {
      ok: false,
      outcome: "RED broke after the reboot, but not as the incident did (failed but not expected to: docker): the harness is not faithful",
    });
    const missing = judge("fail", pre, [fail("web", "post-reboot"), pass("docker", "post-reboot"), pass("containers", "post-reboot")], ["web", "containers"]);
    assert.deepEqual(missing, {
      ok: false,
      outcome:
        "RED broke after the reboot, but not as the incident did (expected to fail but did not (passed, or never ran): containers): the harness is not faithful",
    });
  });
});

describe("junit.xml", () => {
  it("does not count RED's expected failures after the reboot as failures", () => {
    const report: RunReport = {
      runId: "boma-it-askari-20261122-034000",
      profile: "askari",
      host: "askari",
      engine: "direct",
      accel: "tcg",
      certs: "internal",
      egress: { mode: "allowlist", allowed: ["deb.debian.org"], blocked: [] },
      verdict: "pass",
      exitCode: 0,
      message: "",
      readyLagSeconds: [],
      diagnostics: null,
      harness: { peakRssMiB: 0 },
      kept: null,
      error: null,
      startedAt: "",
      finishedAt: "",
      wallSeconds: 600,
      runDir: "/r",
      scenarios: [
        {
          name: "red",
          expect: "fail",
          faithful: true,
          ok: true,
          outcome: "RED is faithful",
          stack: "s1",
          bootIds: ["a", "b"],
          checks: [pass("web", "pre-reboot"), fail("web", "post-reboot")],
          phases: [{ name: "apply", seconds: 10 }],
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
        {
          name: "green",
          expect: "pass",
          ok: false,
          outcome: "GREEN broke after the reboot: web",
          stack: "s2",
          bootIds: ["c", "d"],
          checks: [pass("web", "pre-reboot"), fail("web", "post-reboot")],
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
    const xml = junitXml(report);
    assert.match(xml, /<testsuite name="askari.red" tests="3" failures="0"/);
    assert.match(xml, /<testsuite name="askari.green" tests="3" failures="2"/);
    assert.match(xml, /<failure message="GREEN broke after the reboot: web">/);

    // Several kinds: a case per check and kind, and one per kind.
    const green = report.scenarios[1]!;
    green.checks = [pass("web", "pre-reboot"), { ...pass("web", "post-reboot"), reboot: "clean" }, { ...fail("web", "post-reboot"), reboot: "power-loss" }];
    green.outcome = "GREEN broke after the power loss: web";
    green.reboots = [
      {
        kind: "clean",
        expect: "pass",
        ok: true,
        proof: { bootIds: ["c", "d"], seconds: 90 },
        checks: [green.checks[1]!],
        snapshotDiff: null,
        diagnostics: null,
      },
      {
        kind: "power-loss",
        expect: "pass",
        ok: false,
        proof: { bootIds: ["c", "e"], seconds: 80, previousBootEnd: "no clean shutdown in its journal" },
        checks: [green.checks[2]!],
        snapshotDiff: null,
        diagnostics: "/runs/x/green/diagnostics-power-loss",
      },
    ];
    const kinds = junitXml(report);
    assert.match(kinds, /<testsuite name="askari.green" tests="6" failures="3"/);
    assert.match(kinds, /<testcase classname="askari.green.post-reboot.power-loss" name="web"/);
    assert.match(
      kinds,
      /<testcase classname="askari.green.clean" name="survives a clean reboot" time="90.0"><\/testcase>|<testcase classname="askari.green.clean" name="survives a clean reboot" time="90.0"\/>/,
    );
    assert.match(kinds, /<testcase classname="askari.green.power-loss" name="survives a power-loss reboot" time="80.0">\s*<failure message="not as expected">/);
  });
});
