/**
 * Day one on a control host: the integration_test role applied for real to this machine (root,
 * as CI runs), then `npm run boma-it -- doctor --json` through npm finds every required
 * prerequisite. No VM.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { PROJECT_ROOT } from "../../orchestrator/host/paths.ts";
import { requireSandbox } from "./helpers.ts";

function run(file: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, timeout: 15 * 60_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ANSIBLE_NOCOLOR: "1" } }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

describe("the control host's toolchain, for real", { timeout: 20 * 60_000 }, () => {
  it("the integration_test role applies to this machine, and doctor passes after it", async () => {
    requireSandbox();
    // The suite runs in a network namespace without Debian's mirror: the package lists CI (or
    // whoever set this machine up) fetched are taken as they are.
    const apply = await run(
      "ansible-playbook",
      ["-i", "localhost,", "-c", "local", "setup/control-host.yml", "-e", '{"integration_test_apt_cache_valid_time": 2592000}'],
      PROJECT_ROOT,
    );
    assert.equal(apply.code, 0, `${apply.stdout.slice(-4000)}\n${apply.stderr.slice(-2000)}`);
    assert.match(apply.stdout, /localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0/);

    const doctor = await run("npm", ["run", "boma-it", "--", "doctor", "--json"], join(PROJECT_ROOT, "examples"));
    const report = JSON.parse(doctor.stdout) as { ok: boolean; checks: { name: string; ok: boolean; required: boolean; detail: string }[] };
    const missing = report.checks.filter((check) => check.required && !check.ok);
    assert.deepEqual(missing, [], "every required prerequisite is there");
    assert.equal(report.ok, true);
    assert.equal(doctor.code, 0, doctor.stderr);
  });
});
