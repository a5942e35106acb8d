/**
 * No profile needed, for real (the full suite: three more VMs): a profile-less run of kazi with
 * its reboot bug fails after the reboot naming the listener and the unit that did not come back;
 * the group `mesh` (askari and kazi) passes with survival checks, fleet.json and a junit
 * testsuite per host.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";
import type { FleetReport } from "../../orchestrator/run/fleet.ts";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { cli, fullSuiteOnly, leftovers, suiteDirs } from "./helpers.ts";

const REPO = join(PROJECT_ROOT, "examples", "boma-lab");

/** kazi-web's listener as ss shows it: busybox httpd binds the wildcard (`*` when dual-stack, `0.0.0.0` without IPv6). */
const KAZI_WEB_LISTENER = /^survives: tcp (0\.0\.0\.0|\*|\[::\]):8081 \(kazi-web\.service\)$/;

describe("survival checks without a profile, and a whole group, for real", { timeout: 90 * 60_000, skip: fullSuiteOnly("three VMs") }, () => {
  const dirs = suiteDirs();

  it("run --host kazi with its reboot bug fails after the reboot, naming the port and unit that did not come back", async () => {
    const result = await cli(
      ["run", "--host", "kazi", "--repo", REPO, "--image", "debian-13-local", "-e", "kazi_web_enabled_at_boot=false", "--keep", "never", "--json"],
      dirs.env,
    );
    assert.equal(result.code, 1, result.stderr.slice(-3000));
    const report = JSON.parse(result.stdout) as RunReport;
    const failed = report.scenarios[0]!.checks.filter((check) => !check.ok).map((check) => check.name);
    assert.ok(
      failed.some((name) => KAZI_WEB_LISTENER.test(name)),
      failed.join("\n"),
    );
    assert.ok(failed.includes("survives: kazi-web.service active"), failed.join("\n"));
    assert.deepEqual(
      failed.filter((name) => !name.includes("kazi-web")),
      [],
      "only what the bug broke fails: no noise of the boot",
    );
    assert.ok((report.scenarios[0]!.survival?.leftOut ?? []).length > 0, "what was left out is listed, with why");
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });

  it("run --group mesh: askari and kazi in turn, each with survival checks; fleet.json and a junit testsuite per host", async () => {
    const result = await cli(["run", "--group", "mesh", "--repo", REPO, "--image", "debian-13-local", "--json"], dirs.env);
    assert.equal(result.code, 0, result.stderr.slice(-3000));
    const fleet = JSON.parse(result.stdout) as FleetReport;
    assert.deepEqual(
      fleet.hosts.map((host) => [host.host, host.verdict]),
      [
        ["askari", "pass"],
        ["kazi", "pass"],
      ],
    );
    const kazi = JSON.parse(await readFile(join(fleet.hosts[1]!.runDir!, "report.json"), "utf8")) as RunReport;
    assert.ok(kazi.scenarios[0]!.checks.some((check) => KAZI_WEB_LISTENER.test(check.name) && check.ok && check.stage === "post-reboot"));
    assert.deepEqual(JSON.parse(await readFile(join(fleet.dir, "fleet.json"), "utf8")).hosts.length, 2);
    assert.equal((await readFile(join(fleet.dir, "junit.xml"), "utf8")).match(/<testsuite /g)?.length, 2);
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });
});
