/**
 * The reboot's power-off, judged (a real Machine on a fake domain): the harness's reboot ends in
 * the power-off it asked for and starts the VM afresh; the guest's own shutdown runs, and only a
 * restart the guest itself asked for counts as one.
 */
/**
 * After the reboot, a harness fault is never a verdict: a VM that did not come back is the
 * change's finding only when its new kernel ran (or the guest itself powered off, or its kernel
 * panicked); a boot that stalled before its kernel is reset once, then exit 4; a domain destroyed
 * from the host is exit 4. A fake machine plays each case.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HarnessError } from "../../../../orchestrator/errors.ts";
import { BootStallError, GuestPanicError, VmDownError, type Machine, type RebootProof } from "../../../../orchestrator/guest/machine.ts";
import { rebootStep } from "../../../../orchestrator/run/reboots.ts";
import { aroundMachine as around, fakeDomain, type BootStart, type ShutdownEnd } from "../../../helpers/fake-domain.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const PROOF: RebootProof = {
  kind: "clean",
  bootIdBefore: "aaaaaaaa-0000-0000-0000-000000000001",
  bootIdAfter: "bbbbbbbb-0000-0000-0000-000000000002",
  seconds: 50,
  ready: { bootId: "bbbbbbbb-0000-0000-0000-000000000002", readyLagSeconds: 0.2, uptimeSeconds: 30, waitedSeconds: 50, beforeKernelSeconds: 6 },
};

interface Guest {
  /** What each reboot (and each wait after a reset) does, in turn. */
  boots: (() => Promise<RebootProof>)[];
  kernelStarted?: boolean;
  console?: string[];
  /** libvirt's word on the domain when the harness asks (default: running). */
  state?: string;
}

function setup(guest: Guest) {
  const resets: string[] = [];
  let boot = 0;
  const next = () => guest.boots[Math.min(boot++, guest.boots.length - 1)]!();
  const machine = {
    target: { ip: "10.234.7.10" },
    now: () => 0,
    bootId: async () => PROOF.bootIdBefore,
    markNewBoot: async () => undefined,
    powerCycle: async () => void resets.push("boma-it-askari-x"),
    reboot: async () => next(),
    // The boot after a power cycle, proven as the machine proves it.
    provenNewBoot: async () => next(),
    execute: async () => ({ exitCode: 0, stdout: "running\n", stderr: "", durationMs: 1 }),
    executeEach: async (commands: unknown[]) => commands.map(() => ({ exitCode: 0, stdout: "running\n", stderr: "", durationMs: 1 })),
    guestBootSeconds: async () => 30,
    kernelStarted: async () => guest.kernelStarted ?? false,
    domainState: async () => guest.state ?? "running (booted)",
    currentBootConsole: async (lines = 20) => (guest.console ?? []).slice(-lines),
  } as unknown as Machine;
  return { ...around(machine), resets };
}

const stall = async (): Promise<RebootProof> => {
  throw new BootStallError("gave up waiting for askari: SSH: no kernel started within 150 s of the old system's restart (the firmware stalled)");
};
const timeout = async (): Promise<RebootProof> => {
  throw new HarnessError("timed out after 480 s waiting for askari: SSH on 10.234.7.10 after the reboot");
};

describe("after the reboot", () => {
  it("a proven reboot records both boot ids and runs the checks again", async () => {
    const { session, context, report } = setup({ boots: [async () => PROOF] });
    const outcome = await rebootStep(context, session, []);
    assert.deepEqual(report.bootIds, [PROOF.bootIdBefore, PROOF.bootIdAfter]);
    assert.deepEqual(outcome.post, []);
    assert.equal(report.notBack, undefined);
  });

  it("a boot that stalled before its kernel is powered off and on once and waited for again", async () => {
    const { session, context, report, resets } = setup({ boots: [stall, async () => PROOF] });
    await rebootStep(context, session, []);
    assert.deepEqual(resets, ["boma-it-askari-x"]);
    assert.equal(report.bootResets.length, 1);
    assert.match(report.bootResets[0]!, /stalled before its kernel started .*powering the VM off and on once/);
  });

  it("a second stall is exit 4: no verdict, whatever the scenario expects", async () => {
    const { session, context } = setup({ boots: [stall, stall] });
    await assert.rejects(rebootStep(context, session), (error: unknown) => {
      assert.ok(error instanceof HarnessError && error.exitCode === 4);
      assert.match(error.message, /stalled before its kernel started, twice .*nothing of the change under test ran; run it again/);
      return true;
    });
  });

  it("any failure with the domain destroyed from the host is exit 4, never a finding (an old system that never shut down included)", async () => {
    const failing = async (): Promise<RebootProof> => {
      throw new HarnessError("libvirt cannot set what boma-it-askari-x does on a reset: error: Requested operation is not valid: domain is not running");
    };
    for (const boots of [[failing], [timeout]]) {
      const { session, context } = setup({ boots, state: "shut off (destroyed)" });
      await assert.rejects(rebootStep(context, session), (error: unknown) => {
        assert.ok(error instanceof HarnessError && error.exitCode === 4, String(error));
        assert.match(error.message, /the domain was shut off \(destroyed\) from the host: that says nothing about the change under test; run it again/);
        return true;
      });
    }
  });

  it("a domain destroyed from the host is exit 4; a guest that powered itself off is the finding", async () => {
    const destroyed = setup({
      boots: [
        async () => {
          throw new VmDownError("gave up: the VM is shut off (destroyed)", "shut off (destroyed)");
        },
      ],
    });
    await assert.rejects(
      rebootStep(destroyed.context, destroyed.session),
      /the domain was shut off \(destroyed\) from the host: that says nothing about the change under test; run it again/,
    );
    const poweredOff = setup({
      boots: [
        async () => {
          throw new VmDownError("gave up: the VM is shut off (shutdown)", "shut off (shutdown)");
        },
      ],
    });
    const outcome = await rebootStep(poweredOff.context, poweredOff.session);
    assert.deepEqual(
      outcome.post.map((check) => [check.name, check.ok]),
      [["web", false]],
    );
    assert.match(outcome.post[0]!.detail, /the VM did not come back after the reboot: the VM powered itself off instead of rebooting/);
  });

  it("a timeout after the new kernel ran is the finding, with that boot's console in the report", async () => {
    const { session, context, report } = setup({
      boots: [timeout],
      kernelStarted: true,
      console: ["[    4.7] Run /init as init process", "[  OK  ] Reached target emergency.target - Emergency Mode."],
    });
    const outcome = await rebootStep(context, session);
    assert.equal(outcome.post[0]!.ok, false);
    assert.match(report.notBack!.reason, /its new kernel started but SSH never answered \(last console line: \[ {2}OK {2}\] Reached target emergency\.target/);
    assert.deepEqual(report.notBack!.console.length, 2);
  });

  it("a timeout with no new kernel: the old system never finished shutting down is the finding; after its restart it is exit 4", async () => {
    const hung = setup({ boots: [timeout], console: ["[  222.1] systemd-shutdown[1]: Waiting for process: 812 (hang-on-stop)"] });
    const outcome = await rebootStep(hung.context, hung.session);
    assert.match(outcome.post[0]!.detail, /the old system never finished shutting down/);
    const restarted = setup({ boots: [timeout], console: ["[  222.6] reboot: machine restart"] });
    await assert.rejects(
      rebootStep(restarted.context, restarted.session),
      /no kernel started and the wait ran out: nothing of the change under test ran; run it again/,
    );
  });

  it("a kernel panic of the new boot is the finding; QEMU's TCG race after init is exit 4", async () => {
    const panicked = setup({
      boots: [
        async () => {
          throw new GuestPanicError("panicked", { panic: "Kernel panic - not syncing: VFS: Unable to mount root fs", oops: undefined, diskUntouched: true });
        },
      ],
    });
    const outcome = await rebootStep(panicked.context, panicked.session);
    assert.match(outcome.post[0]!.detail, /its kernel panicked: Kernel panic - not syncing: VFS: Unable to mount root fs/);
    const race = setup({
      boots: [
        async () => {
          throw new GuestPanicError("panicked", {
            panic: "Kernel panic - not syncing: Fatal exception in interrupt",
            oops: "Oops: int3: 0000 [#1] PREEMPT SMP PTI",
            diskUntouched: false,
          });
        },
      ],
    });
    await assert.rejects(rebootStep(race.context, race.session), /QEMU TCG's text-patching race .*run it again/);
  });
});

describe("a reboot ends in a power-off the harness expects, and a fresh start", () => {
  /** rebootStep on a real Machine whose domain ends each shutdown as scripted. */
  async function reboot(ends: ShutdownEnd[], starts?: BootStart[], options: { destroyedAtReboot?: boolean } = {}) {
    const tree = await tempTree();
    const domain = await fakeDomain(tree.dir, { ends, ...(starts ? { starts } : {}), ...options });
    const { session, context, report } = around(domain.machine, 480_000);
    try {
      // A VM that comes back runs no checks here; one that does not fails the profile's (no probe runs).
      const outcome = await rebootStep(context, session, ends[0] === "restart" ? [] : undefined).catch((error: unknown) => error);
      return { outcome, report, domain };
    } finally {
      await tree.remove();
    }
  }

  it("the restart the guest asked for powers the VM off; the harness starts it and proves the reboot by a new boot id", async () => {
    const { outcome, report, domain } = await reboot(["restart"]);
    assert.ok(!(outcome instanceof Error), String(outcome));
    assert.deepEqual(domain.calls, ["power-off-on-reset", "start"], "told the domain to power off on the reset, then started it once: no reset in place");
    assert.deepEqual(report.bootIds, ["0f1e2d3c-aaaa-bbbb-cccc-000000000001", "0f1e2d3c-aaaa-bbbb-cccc-000000000002"]);
    assert.equal(report.notBack, undefined);
    assert.deepEqual(report.bootResets, []);
    assert.equal(domain.state(), "running (booted)");
  });

  it("a guest that powers off (or halts) when it should reboot is the finding, and is not started again", async () => {
    for (const [end, reason] of [
      ["power-off", /the VM powered itself off instead of rebooting$/],
      ["halt", /the VM halted instead of rebooting$/],
      ["silent-power-off", /the VM powered itself off instead of rebooting \(its console does not say how its shutdown ended\)/],
    ] as const) {
      const { outcome, report, domain } = await reboot([end]);
      assert.ok(!(outcome instanceof Error), `${end}: ${String(outcome)}`);
      assert.match(report.notBack!.reason, reason, end);
      assert.deepEqual(domain.calls, ["power-off-on-reset"], `${end}: the harness does not start a VM that powered itself off`);
      assert.equal(domain.state(), "shut off (shutdown)");
      assert.equal((outcome as { post: { ok: boolean }[] }).post[0]!.ok, false);
    }
  });

  it("a domain destroyed from outside during the shutdown is exit 4, never a verdict", async () => {
    const { outcome, domain } = await reboot(["destroyed"]);
    assert.ok(outcome instanceof HarnessError && outcome.exitCode === 4, String(outcome));
    assert.match(
      outcome.message,
      /after the reboot the domain was shut off \(destroyed\) from the host: that says nothing about the change under test; run it again/,
    );
    assert.deepEqual(domain.calls, ["power-off-on-reset"]);
  });

  it("a domain destroyed from outside as the reboot begins is exit 4, never a verdict", async () => {
    const { outcome, domain } = await reboot(["restart"], undefined, { destroyedAtReboot: true });
    assert.ok(outcome instanceof HarnessError && outcome.exitCode === 4, String(outcome));
    assert.match(
      outcome.message,
      /after the reboot the domain was shut off \(destroyed\) from the host: that says nothing about the change under test; run it again/,
    );
    assert.deepEqual(domain.calls, ["power-off-on-reset"]);
  });

  it("a guest that crashes on the way down is the finding", async () => {
    const { outcome, report } = await reboot(["crashed"]);
    assert.ok(!(outcome instanceof Error), String(outcome));
    assert.match(report.notBack!.reason, /the guest crashed \(libvirt: shut off \(crashed\)\)/);
  });

  it("a shutdown that never ends is the finding (the old system never finished shutting down)", async () => {
    const { outcome, report, domain } = await reboot(["never"]);
    assert.ok(!(outcome instanceof Error), String(outcome));
    assert.match(report.notBack!.reason, /the old system never finished shutting down \(last console line: .*hang-on-stop/);
    assert.deepEqual(
      domain.calls,
      ["power-off-on-reset", "restart-on-reset"],
      "the guest, still running, restarts again on its next reset (a kept VM reboots as usual)",
    );
  });

  it("a fresh start that stalls before its kernel is powered off and on once; a second stall is exit 4", async () => {
    const once = await reboot(["restart"], ["stall", "kernel"]);
    assert.ok(!(once.outcome instanceof Error), String(once.outcome));
    assert.deepEqual(once.domain.calls, ["power-off-on-reset", "start", "power-cycle"]);
    assert.match(once.report.bootResets[0]!, /the boot after the reboot stalled before its kernel started \(no kernel started within 150 s of power-on/);
    assert.equal(once.report.bootIds[1], "0f1e2d3c-aaaa-bbbb-cccc-000000000002");

    const twice = await reboot(["restart"], ["stall"]);
    assert.ok(twice.outcome instanceof HarnessError && twice.outcome.exitCode === 4, String(twice.outcome));
    assert.match(twice.outcome.message, /stalled before its kernel started, twice/);
  });
});
