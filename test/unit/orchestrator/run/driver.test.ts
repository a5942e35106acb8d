/**
 * The run driver against a fake engine and a fake machine: keep policies × outcomes × signals,
 * the RED→GREEN loop, and every exit writing report.json and run.log. A harness fault is never a
 * verdict; a teardown failure is one fault, said once.
 */
import assert from "node:assert/strict";
import { access, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Writable } from "node:stream";
import type { Engine, StackSummary } from "../../../../infra/engines/engine.ts";
import { ProvisionError, TeardownError } from "../../../../infra/errors.ts";
import type { StackOutputs } from "../../../../infra/plan.ts";
import type { RunIdentity } from "../../../../infra/spec.ts";
import { HarnessError, InterruptedError, SystemUnderTestError } from "../../../../orchestrator/errors.ts";
import type { Machine } from "../../../../orchestrator/guest/machine.ts";
import type { Libvirt } from "../../../../orchestrator/host/libvirt.ts";
import type { WarmStateCache } from "../../../../orchestrator/host/warm-states.ts";
import { Log } from "../../../../orchestrator/log.ts";
import type { LoadedProfile } from "../../../../orchestrator/profile/load.ts";
import { keepVm, withRun, type DriverHooks, type RunRequest } from "../../../../orchestrator/run/driver.ts";
import type { KeepPolicy } from "../../../../orchestrator/run/options.ts";
import type { FirstBoot, ProvisionOptions } from "../../../../orchestrator/run/provision.ts";
import type { RunReport } from "../../../../orchestrator/run/report.ts";
import { runRedGreen } from "../../../../orchestrator/run/scenario.ts";
import type { ScenarioVm, StepContext, Verdict } from "../../../../orchestrator/run/stages.ts";
import { testRunRequest } from "../../../helpers/run-request.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** An engine that keeps its stacks in memory and can be told to fail a destroy. */
class FakeEngine implements Engine {
  readonly name = "direct" as const;
  readonly stacks = new Map<string, StackOutputs>();
  readonly destroyed: string[] = [];
  failDestroy = false;
  async up(): Promise<StackOutputs> {
    throw new Error("the fake provision makes stacks itself");
  }
  async destroy(stack: string): Promise<void> {
    if (this.failDestroy) throw new TeardownError(stack, [`volume ${stack}-overlay.qcow2: vol-delete exploded`]);
    this.stacks.delete(stack);
    this.destroyed.push(stack);
  }
  async list(): Promise<StackSummary[]> {
    return [...this.stacks.entries()].map(([stack, outputs]) => ({ stack, engine: "direct", state: "up", outputs }));
  }
}

interface Fixture {
  engine: FakeEngine;
  request: RunRequest;
  hooks: DriverHooks;
  controller: AbortController;
  log: () => string;
  closed: string[];
  diagnosed: string[];
  remove: () => Promise<void>;
}

async function fixture(keep: KeepPolicy = "on-failure", options: { provisionFails?: boolean } = {}): Promise<Fixture> {
  const tree = await tempTree();
  const engine = new FakeEngine();
  const controller = new AbortController();
  let printed = "";
  const log = new Log({ stream: new Writable({ write: (chunk, _encoding, done) => ((printed += String(chunk)), done()) }) });
  const closed: string[] = [];
  const diagnosed: string[] = [];
  const profile = {
    name: "askari",
    file: join(tree.dir, "askari.yml"),
    document: { host: "askari", vm: { memoryMiB: 512, vcpus: 2, diskGiB: 4 }, checks: [] },
  } as unknown as LoadedProfile;
  const request = testRunRequest(tree.dir, profile, log, controller.signal, keep);

  const hooks: DriverHooks = {
    preflight: async (_request, lock) => {
      const libvirt = { names: async () => [], uri: "qemu:///system" } as unknown as Libvirt;
      return { libvirt, accel: { accel: "tcg", reason: "test" }, engine, lock, vmsAtOnce: 2, vm: RUN_VM };
    },
    provision: async (provisionOptions, run) => {
      if (options.provisionFails)
        throw new ProvisionError("creating domain failed; everything created so far was deleted again: virsh start exploded", {
          cause: new Error("virsh start exploded"),
          aborted: false,
          rolledBack: true,
        });
      // As provisioning does: the subnet is the run's from its pick on.
      const subnet = `subnet of ${run.identity.runId}`;
      provisionOptions.subnetsInUse?.add(subnet);
      const outputs = { runId: run.identity.runId, host: "askari", ip: "10.234.7.10", runDir: run.runDir, subnet } as StackOutputs;
      engine.stacks.set(run.identity.runId, outputs);
      const machine = { closeConnection: async () => void closed.push(run.identity.runId), target: { ip: "10.234.7.10" } } as unknown as Machine;
      return { outputs, machine, phases: [{ name: "provision", seconds: 1 }], boots: [], resets: [], firstBoot: { kind: "cold" } };
    },
    collectDiagnostics: async (input) => {
      diagnosed.push(input.outputs.runId);
      return [{ file: "console.log", ok: true, detail: "" }];
    },
  };
  return { engine, request, hooks, controller, log: () => printed, closed, diagnosed, remove: tree.remove };
}

/** Runs one GREEN scenario whose steps do `body`. */
async function oneScenario(setup: Fixture, body: (setup: Fixture) => Promise<Verdict>): Promise<{ report: RunReport; error: unknown }> {
  return withRun(setup.request, setup.hooks, (run) => runRedGreen(run, [{ name: "green", expect: "pass", vars: {} }], { steps: () => body(setup) }));
}

/** Runs RED and GREEN (side by side unless told otherwise) whose steps do `steps`. */
async function redAndGreen(
  setup: Fixture,
  steps: (context: StepContext, session: ScenarioVm) => Promise<Verdict>,
  sideBySide = true,
): Promise<{ report: RunReport; error: unknown }> {
  return withRun(setup.request, setup.hooks, (run) =>
    runRedGreen(
      run,
      [
        { name: "red", expect: "fail", vars: {} },
        { name: "green", expect: "pass", vars: {} },
      ],
      { sideBySide, steps },
    ),
  );
}

/** The VM shape the fake preflight chose: fewer vCPUs than the profile's 2, as side by side under TCG on 2 cores. */
const RUN_VM = { memoryMiB: 512, vcpus: 1, diskGiB: 4 };

/** Lets `watch` see what each scenario's provisioning is given, before the fake provisions. */
function watchProvision(setup: Fixture, watch: (options: ProvisionOptions, run: { identity: RunIdentity; runDir: string }) => void): void {
  const provision = setup.hooks.provision!;
  setup.hooks.provision = async (options, run) => {
    watch(options, run);
    return provision(options, run);
  };
}

/** Resolves when `signal` says stop, as a boot wait does. */
function untilStopped(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
}

const OUTCOMES: Record<string, (setup: Fixture) => Promise<Verdict>> = {
  pass: async () => ({ ok: true, outcome: "GREEN survived the reboot" }),
  "judged failure": async () => ({ ok: false, outcome: "GREEN broke after the reboot: web" }),
  "apply failure": async () => {
    throw new SystemUnderTestError("applying site.yml to askari failed: fatal: [askari]: FAILED!");
  },
  "harness fault": async () => {
    throw new HarnessError("after the reboot the domain was shut off (destroyed) from the host", { cause: new Error("virsh: domain is not running") });
  },
  interrupted: async (setup) => {
    setup.controller.abort(new InterruptedError("interrupted by SIGINT"));
    throw new Error("the wait was cancelled");
  },
};

/** What each outcome must come to: verdict, exit code, whether diagnostics are collected. */
const EXPECTED: Record<string, { verdict: string; exitCode: number; diagnostics: boolean; failedSut: boolean }> = {
  pass: { verdict: "pass", exitCode: 0, diagnostics: false, failedSut: false },
  "judged failure": { verdict: "fail", exitCode: 1, diagnostics: true, failedSut: true },
  "apply failure": { verdict: "fail", exitCode: 1, diagnostics: true, failedSut: true },
  "harness fault": { verdict: "error", exitCode: 4, diagnostics: true, failedSut: false },
  interrupted: { verdict: "error", exitCode: 130, diagnostics: false, failedSut: false },
};

describe("run driver", () => {
  for (const policy of ["on-failure", "always", "never"] as const) {
    for (const [name, body] of Object.entries(OUTCOMES)) {
      it(`--keep ${policy}, ${name}`, async () => {
        const setup = await fixture(policy);
        try {
          const { report } = await oneScenario(setup, body);
          const expected = EXPECTED[name]!;
          assert.equal(report.verdict, expected.verdict);
          assert.equal(report.exitCode, expected.exitCode);
          const kept = policy === "always" || (policy === "on-failure" && expected.failedSut);
          assert.equal(report.kept !== null, kept, "kept as the policy says");
          assert.deepEqual(setup.engine.destroyed.length, kept ? 0 : 1, "torn down otherwise");
          assert.equal(setup.closed.length, 1, "the machine's connection is closed either way");
          assert.equal(setup.diagnosed.length, expected.diagnostics ? 1 : 0);
          // Every exit writes the report and the step log.
          const written = JSON.parse(await readFile(join(report.runDir, "report.json"), "utf8")) as RunReport;
          assert.equal(written.verdict, expected.verdict);
          assert.match(await readFile(join(report.runDir, "run.log"), "utf8"), /▸ GREEN/);
          assert.match(await readFile(join(report.runDir, "report.html"), "utf8"), new RegExp(`<title>${expected.verdict.toUpperCase()}: askari</title>`));
          if (expected.verdict === "error") {
            assert.equal(written.error?.kind, name === "interrupted" ? "InterruptedError" : "HarnessError");
            if (name === "harness fault") assert.deepEqual(written.error?.causes, ["Error: virsh: domain is not running"]);
            assert.match(written.scenarios[0]!.outcome, name === "interrupted" ? /^interrupted$/ : /^not judged: a fault of the harness/);
          } else assert.equal(written.error, null);
        } finally {
          await setup.remove();
        }
      });
    }
  }

  it("holds a scenario's subnet while its VM lives: GREEN after RED may take RED's (a first boot saved there), GREEN beside RED may not", async () => {
    for (const sideBySide of [false, true]) {
      const setup = await fixture();
      try {
        const held = new Map<string, string[]>();
        let greenMade = () => {};
        const greenProvisioned = new Promise<void>((resolve) => (greenMade = resolve));
        watchProvision(setup, (options, run) => {
          const name = run.runDir.endsWith("red") ? "red" : "green";
          held.set(name, [...(options.subnetsInUse ?? [])]);
          if (name === "green") greenMade();
        });
        const { report } = await redAndGreen(
          setup,
          async (_context, session) => {
            // Beside each other, RED's VM lives until GREEN's is made.
            if (sideBySide && session.dir.endsWith("red")) await greenProvisioned;
            return { ok: true, outcome: "done" };
          },
          sideBySide,
        );
        assert.equal(report.scenarios.length, 2);
        assert.deepEqual(held.get("red"), []);
        const red = report.scenarios[0]!.stack;
        assert.deepEqual(held.get("green"), sideBySide ? [`subnet of ${red}`] : [], sideBySide ? "RED's VM still lives" : "RED's VM is gone");
      } finally {
        await setup.remove();
      }
    }
  });

  it("gives each VM the user's saved first boots, none with --cold-boot, and reports how each VM began", async () => {
    for (const coldBoot of [false, true]) {
      const setup = await fixture();
      try {
        const given: (WarmStateCache | undefined)[] = [];
        watchProvision(setup, (options) => given.push(options.warmStates));
        setup.request.env.BOMA_IT_STATE_CACHE = "/var/tmp/states-of-op";
        setup.request.env.BOMA_IT_STATE_CACHE_MAX_GIB = "3";
        if (coldBoot) setup.request.options.coldBoot = true;
        const { report } = await oneScenario(setup, OUTCOMES.pass!);
        assert.deepEqual(given, [coldBoot ? undefined : { dir: "/var/tmp/states-of-op", kept: 8, maxBytes: 3 * 2 ** 30 }]);
        assert.deepEqual(report.scenarios[0]!.firstBoot, { kind: "cold" }, "what provisioning said, in report.json");
      } finally {
        await setup.remove();
      }
    }
  });

  it("counts no readiness lag for a warm start: its sshd became active in the saved run's boot", async () => {
    for (const kind of ["cold", "warm"] as const) {
      const setup = await fixture();
      try {
        const provision = setup.hooks.provision!;
        setup.hooks.provision = async (options, run) => {
          const live = await provision(options, run);
          const ready = { bootId: "b", uptimeSeconds: 300, readyLagSeconds: kind === "warm" ? 41.2 : 0.3, waitedSeconds: 5, beforeKernelSeconds: undefined };
          const firstBoot: FirstBoot = kind === "warm" ? { kind, from: "boma-it-askari-20261204-171445", savedAt: "2026-12-04T17:17:21Z" } : { kind };
          return { ...live, boots: [ready], firstBoot };
        };
        const { report } = await oneScenario(setup, OUTCOMES.pass!);
        assert.deepEqual(report.scenarios[0]!.readyLagSeconds, [kind === "warm" ? null : 0.3], kind);
      } finally {
        await setup.remove();
      }
    }
  });

  it("RED→GREEN: a RED that is not faithful stops the run before GREEN; a faithful one goes on", async () => {
    for (const [redOk, scenarios] of [
      [false, ["red"]],
      [true, ["red", "green"]],
    ] as const) {
      const setup = await fixture();
      try {
        const { report } = await redAndGreen(
          setup,
          async (_context, session) =>
            session.report.name === "red"
              ? { ok: redOk, outcome: redOk ? "RED is faithful" : "RED passed after the reboot: the harness is not faithful" }
              : { ok: true, outcome: "GREEN survived" },
          false,
        );
        assert.deepEqual(
          report.scenarios.map((scenario) => scenario.name),
          scenarios,
        );
        assert.equal(report.verdict, redOk ? "pass" : "fail");
        assert.equal(report.scenarios[0]!.faithful, redOk);
        assert.notEqual(report.scenarios[0]!.stack, report.scenarios[1]?.stack, "each scenario its own VM");
      } finally {
        await setup.remove();
      }
    }
  });

  it("side by side: RED and GREEN at once, each line labelled, each its own VM of the shape chosen, reported in order; an unfaithful RED fails the run and GREEN is not judged", async () => {
    for (const redOk of [true, false]) {
      const setup = await fixture();
      const shapes: unknown[] = [];
      watchProvision(setup, (options) => shapes.push(options.profile.document.vm));
      try {
        // Each scenario waits until the other has started: only side by side do both finish.
        const started: string[] = [];
        let bothStarted: () => void = () => undefined;
        const together = new Promise<void>((resolve) => (bothStarted = resolve));
        const { report } = await redAndGreen(setup, async (context, session) => {
          started.push(session.report.name);
          if (started.length === 2) bothStarted();
          await together;
          context.log.info(`applying for ${session.report.name}`);
          // GREEN finishes first: the report still lists RED first.
          if (session.report.name === "red") await new Promise((resolve) => setTimeout(resolve, 20));
          return session.report.name === "red"
            ? { ok: redOk, outcome: redOk ? "RED is faithful" : "RED passed after the reboot: the harness is not faithful" }
            : { ok: true, outcome: "GREEN survived" };
        });
        assert.deepEqual(
          report.scenarios.map((scenario) => scenario.name),
          ["red", "green"],
        );
        assert.notEqual(report.scenarios[0]!.stack, report.scenarios[1]!.stack, "each scenario its own VM");
        assert.deepEqual(shapes, [RUN_VM, RUN_VM], "each VM of the shape the preflight chose");
        assert.deepEqual(report.vm, RUN_VM, "and the report says which");
        assert.match(setup.log(), /^red {3}│ {3}applying for red$/m);
        assert.match(setup.log(), /^green │ {3}applying for green$/m);
        assert.match(setup.log(), /^green │ ✓ GREEN \(expect: pass before and after the reboot\)/m);
        assert.equal(report.verdict, redOk ? "pass" : "fail");
        assert.equal(report.exitCode, redOk ? 0 : 1);
        if (redOk) assert.equal(report.scenarios[1]!.outcome, "GREEN survived");
        else {
          assert.equal(report.scenarios[1]!.outcome, "GREEN survived (not judged: RED was not faithful, so GREEN's result proves nothing of the fix)");
          assert.match(report.message, /^RED passed after the reboot/);
          assert.equal(report.scenarios[1]!.judged, false);
          const junit = await readFile(join(report.runDir, "junit.xml"), "utf8");
          assert.match(junit, /<skipped message="GREEN survived \(not judged: RED was not faithful/, "neither a pass nor a failure in JUnit");
          assert.doesNotMatch(junit, /<failure message="GREEN/);
        }
        assert.match(await readFile(join(report.runDir, "run.log"), "utf8"), /^red {3}│ ▸ RED/m, "run.log has the labelled lines");
      } finally {
        await setup.remove();
      }
    }
  });

  it("side by side: a fault of GREEN stops RED (its VM removed, said why) and ends the run with GREEN's fault, exit 4", async () => {
    const setup = await fixture();
    try {
      const { report } = await redAndGreen(setup, async (context, session) => {
        if (session.report.name === "green") throw new HarnessError("after the reboot the VM stalled before its kernel started");
        // RED waits as a boot wait does, until its signal says stop; its ssh, killed then, fails
        // as a fault of its own would.
        await untilStopped(context.signal);
        throw new HarnessError("SSH failed (exit 255): killed");
      });
      assert.equal(report.verdict, "error");
      assert.equal(report.exitCode, 4);
      assert.equal(report.error?.kind, "HarnessError");
      assert.match(report.message, /stalled before its kernel/);
      const red = report.scenarios.find((scenario) => scenario.name === "red")!;
      assert.equal(red.outcome, "stopped: GREEN ended the run (after the reboot the VM stalled before its kernel started)");
      assert.deepEqual(setup.engine.destroyed.length, 2, "both VMs are removed (a stopped one is never kept)");
      assert.equal(report.kept, null);
      assert.equal(report.scenariosAtOnce, 2);
      // RED was stopped as GREEN's fault happened, not once GREEN was cleaned up.
      assert.ok(setup.log().indexOf("red   │   red: stopped") < setup.log().indexOf("green │   ▸ teardown"), setup.log());
    } finally {
      await setup.remove();
    }
  });

  it("side by side: Ctrl-C stops both, exit 130, nothing kept", async () => {
    const setup = await fixture();
    try {
      const { report } = await redAndGreen(setup, async (context, session) => {
        if (session.report.name === "green") setTimeout(() => setup.controller.abort(new InterruptedError("interrupted by SIGINT")), 5);
        await untilStopped(context.signal);
        throw new Error("the wait was cancelled");
      });
      assert.equal(report.exitCode, 130);
      assert.deepEqual(
        report.scenarios.map((scenario) => scenario.outcome),
        ["interrupted", "interrupted"],
      );
      assert.equal(setup.engine.destroyed.length, 2);
    } finally {
      await setup.remove();
    }
  });

  it("a provision that failed and rolled back keeps nothing, even with --keep always, and is exit 4", async () => {
    const setup = await fixture("always", { provisionFails: true });
    try {
      const { report } = await oneScenario(setup, OUTCOMES.pass!);
      assert.equal(report.exitCode, 4);
      assert.equal(report.kept, null, "nothing is there to keep");
      assert.doesNotMatch(setup.log(), /keeping the VM/);
      assert.match(report.error!.message, /^provisioning failed: creating domain failed/);
    } finally {
      await setup.remove();
    }
  });

  it("a teardown that fails makes a passing run exit 4, said once", async () => {
    const setup = await fixture();
    try {
      setup.engine.failDestroy = true;
      const { report } = await oneScenario(setup, OUTCOMES.pass!);
      assert.equal(report.verdict, "error");
      assert.equal(report.exitCode, 4);
      assert.match(report.message, /vol-delete exploded/);
      assert.equal(setup.log().match(/vol-delete exploded/g)?.length, 1, "the leftover is said once");
    } finally {
      await setup.remove();
    }
  });

  it("the run dir is private and the lock is free again afterwards", async () => {
    const setup = await fixture();
    try {
      // Both runs start in the same second: the second's run dir name is taken.
      const second = new Date("2026-12-02T10:11:12Z");
      setup.hooks.now = () => second;
      const { report } = await oneScenario(setup, OUTCOMES.pass!);
      assert.match(report.runDir, /20261202-101112-askari$/);
      const { stat } = await import("node:fs/promises");
      assert.equal((await stat(report.runDir)).mode & 0o777, 0o700);
      await access(join(report.runDir, "commands.log"));
      const again = await oneScenario(setup, OUTCOMES.pass!);
      assert.match(again.report.runDir, /20261202-101113-askari$/, "a run of the same second gets the next second's run dir");
    } finally {
      await setup.remove();
    }
  });

  it("keeps by one rule", () => {
    assert.equal(keepVm({ policy: "on-failure", onPass: true }, undefined, false), true, "up keeps what passed");
    assert.equal(keepVm({ policy: "on-failure", onPass: false }, "harness", false), false);
    assert.equal(keepVm({ policy: "on-failure", onPass: false }, "sut", true), false, "Ctrl-C tears down");
    assert.equal(keepVm({ policy: "always", onPass: false }, "interrupted", true), true);
  });
});
