/**
 * Reboot kinds, for real: `npm run it -- kazi-power-loss`. RED keeps kazi's status page open
 * through an accept a unit saves only when it stops: it survives a clean reboot, and after a
 * power loss (no shutdown, nothing saved) the page is closed, exactly as expected. GREEN persists it as a drop-in and survives a
 * clean reboot, a power loss and a soft reboot, each from the same applied state on one VM, each
 * proven as its kind. Exit 0, nothing left (the saved applied state included). In the full suite:
 * CI's time cannot hold three more reboots.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { cli, fullSuiteOnly, leftovers, suiteDirs } from "./helpers.ts";

describe("reboot kinds, for real", { timeout: 90 * 60_000, skip: fullSuiteOnly("three reboot kinds of GREEN on top of RED's power loss") }, () => {
  const dirs = suiteDirs();

  it("kazi-power-loss: RED's accept saved only at a clean stop survives a clean reboot and is lost to a power loss; GREEN survives clean, power-loss and soft from one applied state; exit 0, nothing left", async () => {
    const result = await cli(["run", "kazi-power-loss", "--json"], dirs.env);
    assert.equal(result.code, 0, result.stderr.slice(-4000));
    const report = JSON.parse(result.stdout) as RunReport;
    assert.equal(report.verdict, "pass");
    const [red, green] = report.scenarios;

    // RED: survives a clean reboot (the saver ran at the shutdown); a power loss, proven by a new
    // boot id, closes the status page and nothing else.
    assert.equal(red!.ok, true, red!.outcome);
    assert.match(
      red!.outcome,
      /RED is faithful: survived the reboot, as expected .*; it passed before the power loss and broke after it exactly as expected \(the status page from the host\)/,
    );
    assert.deepEqual(
      red!.reboots!.map((entry) => [entry.kind, entry.expect, entry.ok]),
      [
        ["clean", "pass", true],
        ["power-loss", "fail", true],
      ],
    );
    const redProof = red!.reboots![1]!.proof!;
    assert.notEqual(redProof.bootIds[0], redProof.bootIds[1]);
    // Debian 13 keeps its journal on the disk: the old boot's shows no clean end.
    assert.equal(redProof.previousBootEnd, "no clean shutdown in its journal");
    assert.deepEqual(
      red!.checks.filter((check) => !check.ok).map((check) => [check.name, check.reboot]),
      [["the status page from the host", "power-loss"]],
    );

    // GREEN: each kind, each proven as its kind, each from the same applied state (the same boot before).
    assert.equal(green!.ok, true, green!.outcome);
    assert.deepEqual(
      green!.reboots!.map((entry) => [entry.kind, entry.ok]),
      [
        ["clean", true],
        ["power-loss", true],
        ["soft", true],
      ],
    );
    const [clean, power, soft] = green!.reboots!.map((entry) => entry.proof!);
    assert.equal(new Set([clean!, power!, soft!].map((proof) => proof.bootIds[0])).size, 1, "every kind began in the applied state's boot");
    assert.notEqual(clean!.bootIds[1], clean!.bootIds[0]);
    assert.notEqual(power!.bootIds[1], power!.bootIds[0]);
    assert.equal(power!.previousBootEnd, "no clean shutdown in its journal");
    assert.equal(soft!.bootIds[1], soft!.bootIds[0], "a soft reboot keeps the kernel and its boot id");
    assert.deepEqual(soft!.softReboots, [0, 1]);
    assert.equal(soft!.userspaceOnly, true);
    for (const entry of green!.reboots!) assert.equal(entry.checks.length, 3, `${entry.kind}: the three checks ran after it`);
    assert.match(green!.outcome, /GREEN survived every kind of reboot \(clean, power-loss, soft\)/);
    assert.ok(
      green!.phases.some((phase) => phase.name.startsWith("rewind point")) &&
        green!.phases.filter((phase) => phase.name.startsWith("back to the applied state")).length === 2,
      "saved once, restored twice",
    );

    const junit = await readFile(join(report.runDir, "junit.xml"), "utf8");
    for (const kind of ["clean", "power-loss", "soft"])
      assert.match(junit, new RegExp(`<testcase classname="kazi\\.green\\.${kind}" name="survives a ${kind} reboot"`));
    assert.match(junit, /<testcase classname="kazi\.red\.power-loss" name="RED is faithful under a power-loss reboot"/);
    assert.match(junit, /<testcase classname="kazi\.red\.clean" name="survives a clean reboot"/);
    const text = await cli(["report", report.runId], dirs.env);
    assert.match(text.stdout, /soft: userspace only, boot id \w{8}… unchanged, soft reboots 0 → 1/);
    process.stderr.write(
      `    measured: wall ${report.wallSeconds} s; ${report.scenarios.map((scenario) => `${scenario.name}: ${scenario.phases.map((phase) => `${phase.name} ${phase.seconds}`).join(", ")}`).join(" | ")}\n`,
    );
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });
});
