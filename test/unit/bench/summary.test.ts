import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CheckResult } from "../../../orchestrator/guest/checks.ts";
import { parseStartupFinished } from "../../../orchestrator/guest/machine.ts";
import { findingWaitSeconds } from "../../bench/samples.ts";
import {
  acceptanceStart,
  goalLines,
  headline,
  overhead,
  sideBySide,
  stats,
  summarize,
  summarizeByStart,
  table,
  type AcceptanceSample,
  type VmSample,
} from "../../bench/summary.ts";

const vm = (overrides: Partial<VmSample> = {}): VmSample => ({
  phases: [
    { name: "provision", seconds: 2 },
    { name: "DHCP lease", seconds: 44 },
    { name: "SSH", seconds: 11 },
    { name: "cloud-init", seconds: 12 },
    { name: "apply", seconds: 90 },
    { name: "checks before the reboot", seconds: 5 },
    { name: "reboot", seconds: 70 },
    { name: "system settled", seconds: 20 },
    { name: "checks after the reboot", seconds: 5 },
    { name: "teardown", seconds: 2.5 },
  ],
  readyLagSeconds: [0.4, 0.3],
  guestBootSeconds: [45, 48],
  beforeKernelSeconds: [6, 22],
  ansibleTaskSeconds: 80,
  findingWaitSeconds: 0,
  ...overrides,
});

describe("benchmark summary", () => {
  it("median, min and max", () => {
    assert.deepEqual(stats([3, 1, 2]), { n: 3, median: 2, min: 1, max: 3 });
    assert.deepEqual(stats([4, 1, 2, 3]), { n: 4, median: 2.5, min: 1, max: 4 });
    assert.equal(stats([]), null);
  });

  it("overhead is wall time minus the guest's boots and Ansible's tasks; the harness alone also less what came before the kernels", () => {
    const run: AcceptanceSample = {
      wallSeconds: 540,
      vms: [vm(), vm({ guestBootSeconds: [44, null], beforeKernelSeconds: [5, null] })],
      peakRssMiB: 120,
      verdict: "pass",
    };
    const seconds = 540 - (45 + 48 + 44) - 160;
    assert.deepEqual(overhead(run), {
      seconds,
      ratio: Math.round((seconds / 540) * 1000) / 1000,
      harnessSeconds: seconds - (6 + 22 + 5),
      harnessRatio: Math.round(((seconds - 33) / 540) * 1000) / 1000,
      findingWaitSeconds: 0,
      harnessShareSeconds: seconds - 33,
      harnessShare: Math.round(((seconds - 33) / 540) * 1000) / 1000,
      // Each VM: checks 5 + 5, provision 2 + teardown 2.5, no snapshots; phases 261.5 of the wall.
      harnessParts: { checks: 20, snapshots: 0, provisionAndTeardown: 9, betweenPhases: 540 - 2 * 261.5, rest: seconds - 33 - 20 - 9 - 17 },
      guestBootSeconds: 137,
      beforeKernelSeconds: 33,
      ansibleSeconds: 160,
    });
  });

  it("side by side, sets the guests' work against each VM's own time, not one wall", () => {
    // Two VMs of 261.5 s each side by side in a wall of 270 s: 8.5 s outside every VM's phases.
    const run: AcceptanceSample = { wallSeconds: 270, scenariosAtOnce: 2, vms: [vm(), vm()], peakRssMiB: 120, verdict: "pass" };
    const machine = 2 * 261.5 + 8.5;
    const seconds = machine - (45 + 48) * 2 - 160;
    const result = overhead(run);
    assert.equal(result.seconds, seconds);
    assert.equal(result.ratio, Math.round((seconds / machine) * 1000) / 1000);
    assert.equal(result.harnessParts.betweenPhases, 8.5);
    assert.ok(result.harnessShare > 0 && result.harnessShare < 1, "a share, never below nothing");
  });

  it("counts a failing check's wait for its within as the finding's time, not the harness's", () => {
    const red = vm({
      phases: vm().phases.map((phase) => (phase.name === "checks after the reboot" ? { ...phase, seconds: 22 } : phase)),
      findingWaitSeconds: 20,
    });
    const run: AcceptanceSample = { wallSeconds: 557, vms: [red, vm()], peakRssMiB: 120, verdict: "pass" };
    const result = overhead(run);
    assert.equal(result.findingWaitSeconds, 20);
    assert.equal(result.harnessShareSeconds, Math.round((result.harnessSeconds - 20) * 10) / 10);
    assert.equal(result.harnessParts.checks, 5 + 22 + 5 + 5 - 20, "the checks' own time stays the harness's");
    const summary = summarize([run], [], [], []);
    assert.equal(summary.harnessShare?.median, result.harnessShare);
    assert.match(headline(summary), /^harness share: \d+\.\d % of the acceptance's wall time \(goal under 5 %; 1 run, /);
    assert.match(table(summary), /^ {2}findings' waits\s+1\s+20\.00/m);
  });

  it("takes a stage's finding wait from the longest failing check of that stage", () => {
    const checks: CheckResult[] = [
      { name: "a", stage: "post-reboot", ok: false, detail: "", seconds: 20.4 },
      { name: "b", stage: "post-reboot", ok: false, detail: "", seconds: 19.8 },
      { name: "c", stage: "post-reboot", ok: true, detail: "", seconds: 0.3 },
      { name: "d", stage: "pre-reboot", ok: true, detail: "", seconds: 0.2 },
    ];
    assert.equal(findingWaitSeconds(checks), 20.4);
    assert.equal(findingWaitSeconds(checks.filter((check) => check.ok)), 0);
  });

  it("adds report phases into bench phases, over every VM of every run and every up", () => {
    const run: AcceptanceSample = { wallSeconds: 540, vms: [vm(), vm()], peakRssMiB: 120, verdict: "pass" };
    const summary = summarize(
      [run],
      [
        vm({
          phases: [
            { name: "DHCP lease", seconds: 50 },
            { name: "SSH", seconds: 12 },
          ],
        }),
      ],
      [2.4],
      [0.9],
      [95],
    );
    assert.deepEqual(summary.phases["first boot to SSH"], { n: 3, median: 55, min: 55, max: 62 });
    assert.deepEqual(summary.phases["reboot to SSH"], { n: 2, median: 70, min: 70, max: 70 });
    assert.equal(summary.phases.diagnostics, null, "a phase that never happened has no figures");
    assert.deepEqual(summary.readyLagSeconds, { n: 6, median: 0.35, min: 0.3, max: 0.4 });
    assert.deepEqual(summary.beforeKernelSeconds, { n: 6, median: 14, min: 6, max: 22 });
    assert.deepEqual(summary.peakRssMiB, { n: 2, median: 107.5, min: 95, max: 120 });
    assert.match(table(summary), /^first boot to SSH\s+3\s+55\.00\s+55\.00\s+62\.00$/m);
    assert.match(table(summary), /^diagnostics\s+-$/m);
    assert.deepEqual(summary.harnessParts.checks, { n: 1, median: 20, min: 20, max: 20 });
    assert.match(table(summary), /^ {2}of it: checks\s+1\s+20\.00/m);
  });

  it("keeps a booted VM's first boot and a warm start apart: neither's figures blur the other's", () => {
    const warm = vm({
      firstBoot: "warm",
      phases: [
        { name: "provision", seconds: 31 },
        { name: "SSH", seconds: 4 },
        { name: "cloud-init", seconds: 1 },
      ],
    });
    const saving = vm({ phases: [...vm().phases, { name: "saving the first boot", seconds: 40 }] });
    const summary = summarize([{ wallSeconds: 540, vms: [saving, warm], peakRssMiB: 120, verdict: "pass" }], [], [], []);
    assert.deepEqual(summary.phases["first boot to SSH"], { n: 1, median: 55, min: 55, max: 55 });
    assert.deepEqual(summary.phases["warm start: restore to SSH"], { n: 1, median: 4, min: 4, max: 4 });
    assert.deepEqual(summary.phases["warm start: provision and restore"], { n: 1, median: 31, min: 31, max: 31 });
    assert.deepEqual(summary.phases.provision?.n, 1, "the warm VM's provision is its restore's row");
    assert.deepEqual(summary.phases["saving the first boot"], { n: 1, median: 40, min: 40, max: 40 });
    assert.match(table(summary), /^warm start: restore to SSH\s+1\s+4\.00/m);
  });

  it("sets acceptances that booted beside those that started from saved first boots, and judges the goals by the warm ones", () => {
    const warmVm = (provision: number) =>
      vm({
        firstBoot: "warm",
        phases: [
          { name: "provision", seconds: provision },
          { name: "SSH", seconds: 6 },
          { name: "cloud-init", seconds: 0.2 },
          ...vm().phases.filter((phase) => !["provision", "DHCP lease", "SSH", "cloud-init"].includes(phase.name)),
        ],
        // A restored VM boots once: at the reboot.
        guestBootSeconds: [48],
        beforeKernelSeconds: [22],
      });
    const cold: AcceptanceSample = { wallSeconds: 700, vms: [vm(), vm()], peakRssMiB: 120, verdict: "pass" };
    const warm: AcceptanceSample = { wallSeconds: 410, vms: [warmVm(4), warmVm(5)], peakRssMiB: 120, verdict: "pass" };
    const mixed: AcceptanceSample = { wallSeconds: 560, vms: [vm(), warmVm(4)], peakRssMiB: 120, verdict: "pass" };
    assert.deepEqual([cold, warm, mixed].map(acceptanceStart), ["cold", "warm", "mixed"]);
    assert.equal(acceptanceStart({ ...cold, vms: [{ ...vm(), firstBoot: undefined }] }), "cold", "a report before warm starts booted");

    const byStart = summarizeByStart([cold, warm], [warmVm(3)], [2.4], [0.9]);
    assert.deepEqual(Object.keys(byStart), ["cold", "warm"], "no column for a kind that was not run");
    assert.deepEqual(byStart.cold?.acceptanceWallSeconds, { n: 1, median: 700, min: 700, max: 700 });
    assert.deepEqual(byStart.warm?.phases["warm start to command-ready"], { n: 3, median: 10.2, min: 9.2, max: 11.2 }, "the warm up counts with the warm VMs");
    assert.equal(byStart.cold?.phases["warm start to command-ready"], null);

    const goals = goalLines(byStart.warm);
    assert.match(goals[0]!, /^askari RED→GREEN from saved first boots: 410\.0 s \(goal 420\.0 s or less: met\)$/);
    assert.match(goals[1]!, /^warm start to command-ready: 10\.2 s \(goal 15\.0 s or less: met\)$/);
    assert.match(goals[2]!, /^the harness's share: 26\.8 % \(goal 5\.0 % or less: not met\)$/);
    assert.match(goalLines(summarizeByStart([{ ...warm, wallSeconds: 500 }], [], [], []).warm)[0]!, /500\.0 s \(goal 420\.0 s or less: not met\)/);
    assert.deepEqual(goalLines(undefined)[0], "askari RED→GREEN from saved first boots: - (no warm acceptance measured)");

    const text = sideBySide(byStart);
    assert.match(text, /^median \(n\), s unless noted\s+cold\s+warm$/m);
    assert.match(text, /^first boot to SSH\s+55\.00 \(2\)\s+-$/m);
    assert.match(text, /^warm start to command-ready\s+-\s+10\.20 \(3\)$/m);
    assert.match(text, /^askari RED→GREEN wall\s+700\.00 \(1\)\s+410\.00 \(1\)$/m);
    assert.doesNotMatch(text, /^diagnostics/m, "a row neither kind has is left out");
  });

  it("reads the guest's boot time from systemd-analyze", () => {
    assert.equal(
      parseStartupFinished("Startup finished in 3.120s (kernel) + 41.034s (userspace) = 44.154s\ngraphical.target reached after 40.9s in userspace.\n"),
      44.2,
    );
    assert.equal(parseStartupFinished("Startup finished in 5.1s (kernel) + 1min 2.345s (userspace) = 1min 7.445s\n"), 67.4);
    assert.equal(parseStartupFinished("Startup finished in 812ms (kernel) + 2.1s (userspace) = 2.912s"), 2.9);
    assert.equal(parseStartupFinished("Bootup is not yet finished (org.freedesktop.systemd1.Manager.FinishTimestampMonotonic=0).\n"), null);
  });
});
