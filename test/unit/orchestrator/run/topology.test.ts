/**
 * Several hosts at once, against a fake engine and fake machines: the driver makes one network
 * for all (the first VM's stack), every VM at once, and takes them down the first last; a VM
 * that fails before the network exists leaves no other made. The checks run on and from the
 * hosts they name; the reboot orders reboot in turns, each VM proven by its own boot id, and a
 * rolling reboot checks the others meanwhile.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import type { Engine, StackSummary } from "../../../../infra/engines/engine.ts";
import { ProvisionError } from "../../../../infra/errors.ts";
import type { StackOutputs } from "../../../../infra/plan.ts";
import type { Machine, RebootProof } from "../../../../orchestrator/guest/machine.ts";
import type { Libvirt } from "../../../../orchestrator/host/libvirt.ts";
import { Log } from "../../../../orchestrator/log.ts";
import type { LoadedProfile } from "../../../../orchestrator/profile/load.ts";
import type { Check } from "../../../../orchestrator/profile/schema.ts";
import { WaitError } from "../../../../orchestrator/retry.ts";
import { withRun, type DriverHooks } from "../../../../orchestrator/run/driver.ts";
import type { ProvisionOptions } from "../../../../orchestrator/run/provision.ts";
import { rebootByKinds, rebootTurns } from "../../../../orchestrator/run/reboots.ts";
import { runRedGreen } from "../../../../orchestrator/run/scenario.ts";
import { checkStage, deriveSurvival, type ScenarioVm } from "../../../../orchestrator/run/stages.ts";
import { aroundMachine } from "../../../helpers/fake-domain.ts";
import { testRunRequest } from "../../../helpers/run-request.ts";
import { tempTree } from "../../../helpers/tmp.ts";

class FakeEngine implements Engine {
  readonly name = "direct" as const;
  readonly stacks = new Map<string, StackOutputs>();
  readonly destroyed: string[] = [];
  async up(): Promise<StackOutputs> {
    throw new Error("the fake provision makes stacks itself");
  }
  async destroy(stack: string): Promise<void> {
    this.stacks.delete(stack);
    this.destroyed.push(stack);
  }
  async list(): Promise<StackSummary[]> {
    return [...this.stacks.entries()].map(([stack, outputs]) => ({ stack, engine: "direct", state: "up", outputs }));
  }
}

const HOSTS = ["askari", "kazi"];

async function fixture(options: { failFirst?: boolean; failSecond?: boolean; keep?: "never" | "on-failure"; links?: [string, string][] } = {}) {
  const tree = await tempTree();
  const engine = new FakeEngine();
  const made: { host: string; options: ProvisionOptions; runDir: string }[] = [];
  const diagnosed: string[] = [];
  const stopped: string[] = [];
  let printed = "";
  const log = new Log({ stream: new Writable({ write: (chunk, _encoding, done) => ((printed += String(chunk)), done()) }) });
  const vm = { memoryMiB: 512, vcpus: 1, diskGiB: 4 };
  const profile = {
    name: "mesh",
    file: join(tree.dir, "mesh.yml"),
    document: { host: "askari", vm, checks: [], ...(options.links ? { links: options.links } : {}) },
    overlay: { file: undefined, document: { vars: {}, secretVars: [], certs: {} } },
    topology: HOSTS.map((name) => ({
      name,
      inventoryHost: { name, groups: ["all", "mesh"] },
      overlay: { file: undefined, document: { vars: {}, secretVars: [], certs: {} } },
      vm,
    })),
  } as unknown as LoadedProfile;
  const request = testRunRequest(tree.dir, profile, log, new AbortController().signal, options.keep ?? "never");

  const hooks: DriverHooks = {
    preflight: async (_request, lock) => {
      const libvirt = { names: async () => [], usedSubnets: async () => [], uri: "qemu:///system" } as unknown as Libvirt;
      return { libvirt, accel: { accel: "tcg", reason: "test" }, engine, lock, vmsAtOnce: 2, vm };
    },
    provision: async (provisionOptions, run) => {
      const host = run.identity.host;
      const topology = provisionOptions.topology!;
      if (host === "askari" && options.failFirst)
        throw new ProvisionError("creating network failed; everything created so far was deleted again", {
          cause: new Error("x"),
          aborted: false,
          rolledBack: true,
        });
      // As makeStack does: a VM that is not the first waits for the network before its stack.
      await topology.network;
      if (host === "kazi" && options.failSecond)
        throw new ProvisionError("creating domain failed; everything created so far was deleted again", {
          cause: new Error("x"),
          aborted: false,
          rolledBack: true,
        });
      const ip = topology.place.members.find((member) => member.host === host)!.ip;
      const outputs = { runId: run.identity.runId, host, ip, runDir: run.runDir, subnet: topology.subnet.cidr } as StackOutputs;
      engine.stacks.set(run.identity.runId, outputs);
      made.push({ host, options: provisionOptions, runDir: run.runDir });
      topology.onNetworkMade?.();
      // askari's boot goes on until it is ready, or stopped.
      if (options.failSecond && host === "askari") {
        await new Promise((resolve) => provisionOptions.signal.addEventListener("abort", resolve, { once: true }));
        stopped.push(`${host}: ${String(provisionOptions.signal.reason)}`);
        // As provisioning says a stopped wait: its own error, not the stop's.
        throw new ProvisionError("gave up waiting for askari: DHCP lease: stopped", {
          cause: provisionOptions.signal.reason,
          aborted: true,
          rolledBack: false,
        });
      }
      const machine = { closeConnection: async () => undefined, target: { ip } } as unknown as Machine;
      return { outputs, machine, phases: [{ name: "SSH", seconds: 1 }], boots: [], resets: [], firstBoot: { kind: "cold" } };
    },
    collectDiagnostics: async (input) => {
      diagnosed.push(input.dir);
      return [];
    },
  };
  return { engine, request, hooks, made, diagnosed, stopped, printed: () => printed, dir: tree.dir, remove: tree.remove };
}

describe("a scenario of several hosts", () => {
  it("makes one network for all, every VM at once on its fixed address, and takes them down the first last", async () => {
    const setup = await fixture();
    let seen: ScenarioVm | undefined;
    const { report, error } = await withRun(setup.request, setup.hooks, (run) =>
      runRedGreen(run, [{ name: "green", expect: "pass", vars: {} }], {
        steps: async (_context, session) => {
          seen = session;
          return { ok: true, outcome: "GREEN survived the reboot" };
        },
      }),
    );
    assert.equal(error, undefined);
    assert.deepEqual(
      setup.made.map(({ host, options }) => [host, options.topology?.place.network, options.warmStates]),
      [
        ["askari", report.scenarios[0]!.stack, undefined],
        ["kazi", report.scenarios[0]!.stack, undefined],
      ],
      "the network is named after the first VM; no VM of a topology starts from a saved first boot",
    );
    const members = setup.made[0]!.options.topology!.place.members;
    assert.deepEqual(
      members.map((member) => [member.host, member.ip.split(".").at(-1)]),
      [
        ["askari", "10"],
        ["kazi", "11"],
      ],
    );
    assert.equal(seen?.outputs.host, "askari");
    assert.deepEqual(
      seen?.peers?.map((peer) => [peer.host, peer.outputs.ip]),
      [["kazi", members[1]!.ip]],
    );
    assert.equal(setup.made[1]!.runDir, join(setup.made[0]!.runDir, "hosts", "kazi"), "each other VM's files are in a folder of its host's");
    const stamps = setup.made.map(({ options }) => options.record?.topology?.map((member) => member.runId));
    assert.deepEqual(stamps[0], stamps[1], "each VM's record names the topology, the first first");
    assert.deepEqual(
      setup.engine.destroyed.map((stack) => stack.replace(/-\d{8}-\d{6}$/, "")),
      ["boma-it-kazi", "boma-it-askari"],
      "the network's VM last",
    );
    assert.deepEqual(
      report.scenarios[0]!.vms?.map((vm) => vm.host),
      HOSTS,
    );
    await setup.remove();
  });

  it("gives every VM the topology's links, each on a subnet of its own, and says where each end is", async () => {
    const setup = await fixture({ links: [["kazi", "askari"]] });
    const { error } = await withRun(setup.request, setup.hooks, (run) =>
      runRedGreen(run, [{ name: "green", expect: "pass", vars: {} }], { steps: async () => ({ ok: true, outcome: "GREEN survived the reboot" }) }),
    );
    assert.equal(error, undefined);
    const [first, second] = setup.made.map(({ options }) => options.topology!);
    assert.deepEqual(second!.place.links, first!.place.links, "one topology, the same links for every VM");
    const [link] = first!.place.links!;
    assert.equal(link!.network, `${first!.place.network}-link1`);
    assert.notEqual(link!.cidr, first!.subnet.cidr);
    assert.deepEqual(
      link!.ends.map((end) => [end.host, end.ip.split(".").at(-1)]),
      [
        ["kazi", "11"],
        ["askari", "10"],
      ],
    );
    const prefix = link!.cidr.split(".").slice(0, 3).join("\\.");
    assert.match(
      setup.printed(),
      new RegExp(
        `link link1 on ${link!.cidr.replace(/\./g, "\\.")}: kazi ${prefix}\\.11 \\(kazi-link1\\) and askari ${prefix}\\.10 \\(askari-link1\\), nothing else on it`,
      ),
    );
    await setup.remove();
  });

  it("makes no other VM when the first fails before the network exists, and says the first's error", async () => {
    const setup = await fixture({ failFirst: true });
    const { report, error } = await withRun(setup.request, setup.hooks, (run) =>
      runRedGreen(run, [{ name: "green", expect: "pass", vars: {} }], { steps: async () => ({ ok: true, outcome: "" }) }),
    );
    assert.match(String(error), /creating network failed/);
    assert.deepEqual(setup.made, [], "kazi waited for a network that was never made");
    assert.equal(setup.engine.stacks.size, 0);
    assert.equal(report.verdict, "error");
    await setup.remove();
  });

  it("stops the other VMs' boots when one fails, takes down what was made, and says the failure, not the stops", async () => {
    const setup = await fixture({ failSecond: true });
    const { error } = await withRun(setup.request, setup.hooks, (run) =>
      runRedGreen(run, [{ name: "green", expect: "pass", vars: {} }], { steps: async () => ({ ok: true, outcome: "" }) }),
    );
    assert.match(String(error), /creating domain failed/);
    assert.deepEqual(setup.stopped, [
      "askari: StoppedBesideError: stopped: kazi's VM failed (creating domain failed; everything created so far was deleted again)",
    ]);
    assert.equal(setup.engine.stacks.size, 0, "askari's stack (the network's) taken down");
    await setup.remove();
  });

  it("collects each VM's diagnostics into a folder named after its host, and keeps them all as one run", async () => {
    const setup = await fixture({ keep: "on-failure" });
    const { report } = await withRun(setup.request, setup.hooks, (run) =>
      runRedGreen(run, [{ name: "green", expect: "pass", vars: {} }], { steps: async () => ({ ok: false, outcome: "GREEN broke after the reboot: mesh" }) }),
    );
    assert.deepEqual(
      setup.diagnosed.map((dir) => dir.split("/").slice(-2).join("/")),
      ["diagnostics/askari", "diagnostics/kazi"],
    );
    assert.equal(setup.engine.destroyed.length, 0, "both kept");
    assert.equal(report.kept?.run, report.scenarios[0]!.stack, "kept as the first VM's run");
    await setup.remove();
  });
});

const proofOf = (host: string): RebootProof => ({
  kind: "clean",
  bootIdBefore: `${host}-before`,
  bootIdAfter: `${host}-after`,
  seconds: 40,
  ready: { bootId: `${host}-after`, readyLagSeconds: 0.2, uptimeSeconds: 20, waitedSeconds: 40, beforeKernelSeconds: 5 },
});

/** A fake VM: its reboot (each event recorded), and a TCP port reachable from it on given addresses. */
function fakeVm(
  host: string,
  ip: string,
  events: string[],
  reach: (command: string) => boolean,
  options: { notBack?: boolean; units?: string[] } = {},
): Machine {
  const execute = async (command: string) => {
    if (command.includes("/dev/tcp/")) {
      events.push(`${host}: ${command.replace(/^.*\/dev\/tcp\/([^']*)'.*$/, "tcp $1")}`);
      return { exitCode: reach(command) ? 0 : 1, stdout: "", stderr: reach(command) ? "" : "bash: connect: Connection refused", durationMs: 1 };
    }
    if (command.includes("ruleset-begin")) {
      events.push(`${host}: survival state`);
      return { exitCode: 0, stdout: `${(options.units ?? []).map((unit) => `active|${unit}||`).join("\n")}\nruleset-begin\n`, stderr: "", durationMs: 1 };
    }
    return { exitCode: 0, stdout: "running\n", stderr: "", durationMs: 1 };
  };
  return {
    name: host,
    target: { ip },
    now: () => 0,
    bootId: async () => `${host}-before`,
    reboot: async () => {
      events.push(`${host} reboots`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      events.push(`${host} is back`);
      if (options.notBack) throw new (await import("../../../../orchestrator/errors.ts")).HarnessError(`timed out waiting for ${host}: SSH after the reboot`);
      return proofOf(host);
    },
    kernelStarted: async () => true,
    domainState: async () => "running (booted)",
    currentBootConsole: async () => ["login:"],
    guestBootSeconds: async () => 20,
    execute,
    executeEach: async (commands: { command: string }[]) => Promise.all(commands.map((entry) => execute(entry.command))),
    waitFor: async <T>(what: string, _ms: number, attempt: () => Promise<{ done: true; value: T } | { done: false; seen: string }>) => {
      const outcome = await attempt();
      if (outcome.done) return outcome.value;
      throw new WaitError(`gave up waiting for ${what}`, outcome.seen, true);
    },
  } as unknown as Machine;
}

function topologySession(machines: Record<string, Machine>) {
  const [first, ...others] = Object.entries(machines);
  const ipOf = (machine: Machine) => (machine.target as { ip: string }).ip;
  const outputsOf = (host: string, machine: Machine) => ({ host, ip: ipOf(machine), runId: `boma-it-${host}-x` }) as StackOutputs;
  const { session, context, report } = aroundMachine(first![1], 1000, { outputs: outputsOf(first![0], first![1]) });
  session.peers = others.map(([host, machine]) => ({ host, machine, outputs: outputsOf(host, machine) }));
  report.vms = Object.entries(machines).map(([host, machine]) => ({ host, stack: `boma-it-${host}-x`, ip: ipOf(machine), bootIds: [] }));
  return { session, context, report };
}

const check = (fields: Partial<Check>): Check => ({ within: 1, ...fields }) as Check;

describe("checks and reboots of several hosts", () => {
  it("runs a check from one host against another's address, on the host it runs from", async () => {
    const events: string[] = [];
    const machines = {
      askari: fakeVm("askari", "10.234.7.10", events, () => true),
      kazi: fakeVm("kazi", "10.234.7.11", events, (command) => command.includes("10.234.7.10/51821")),
    };
    const { session, context } = topologySession(machines);
    const results = await checkStage(context, session, "pre-reboot", [
      check({ name: "kazi reaches askari", from: "kazi", tcp: { port: 51821 } }),
      check({ name: "askari reaches kazi's site", on: "kazi", from: "askari", tcp: { port: 8081 } }),
      check({ name: "kazi's site on kazi", on: "kazi", from: "kazi", tcp: { port: 8081 } }),
    ]);
    assert.deepEqual(
      results.map((result) => [result.name, result.ok]),
      [
        ["kazi reaches askari", true],
        ["askari reaches kazi's site", true],
        ["kazi's site on kazi", false],
      ],
      "in the checks' order",
    );
    assert.deepEqual(events.sort(), ["askari: tcp 10.234.7.11/8081", "kazi: tcp 10.234.7.10/51821", "kazi: tcp 127.0.0.1/8081"]);
    assert.match(results[0]!.detail, /TCP 10\.234\.7\.10:51821 accepts connections \(from kazi\)/);
  });

  it("runs a check over the link between two hosts against the other's address on the link", async () => {
    const events: string[] = [];
    const machines = {
      askari: fakeVm("askari", "10.234.7.10", events, (command) => command.includes("10.234.9.11/22")),
      kazi: fakeVm("kazi", "10.234.7.11", events, () => true),
    };
    const { session, context } = topologySession(machines);
    session.outputs.links = [{ network: "boma-it-askari-x-link1", interface: "link1", peer: "kazi", address: "10.234.9.10", peerAddress: "10.234.9.11" }];
    const results = await checkStage(context, session, "pre-reboot", [
      check({ name: "kazi over the link", on: "kazi", from: "askari", over: "link", tcp: { port: 22 } }),
      check({ name: "kazi over the network", on: "kazi", from: "askari", tcp: { port: 22 } }),
    ]);
    assert.deepEqual(
      results.map((result) => [result.name, result.ok]),
      [
        ["kazi over the link", true],
        ["kazi over the network", false],
      ],
    );
    assert.deepEqual(events.sort(), ["askari: tcp 10.234.7.11/22", "askari: tcp 10.234.9.11/22"]);
    assert.match(results[0]!.detail, /TCP 10\.234\.9\.11:22 accepts connections \(from askari\)/);
  });

  it("reboot orders: all in one turn, rolling one host at a time in order, a list those named", () => {
    assert.deepEqual(rebootTurns(HOSTS, "all"), [HOSTS]);
    assert.deepEqual(rebootTurns(HOSTS, "rolling"), [["askari"], ["kazi"]]);
    assert.deepEqual(rebootTurns(HOSTS, ["kazi"]), [["kazi"]]);
  });

  it("reboots all at once, proving each VM by its own boot id", async () => {
    const events: string[] = [];
    const machines = { askari: fakeVm("askari", "10.234.7.10", events, () => true), kazi: fakeVm("kazi", "10.234.7.11", events, () => true) };
    const { session, context, report } = topologySession(machines);
    await rebootByKinds(context, session, ["clean"], { checks: [], failed: () => false, order: "all" });
    assert.deepEqual(events.slice(0, 2).sort(), ["askari reboots", "kazi reboots"], "together");
    assert.deepEqual(
      report.vms?.map((vm) => vm.bootIds),
      [
        ["askari-before", "askari-after"],
        ["kazi-before", "kazi-after"],
      ],
    );
    assert.deepEqual(report.bootIds, ["askari-before", "askari-after"], "the first host's are the scenario's");
  });

  it("rolling: one at a time, the checks not involving the host rebooting run meanwhile, all checks after", async () => {
    const events: string[] = [];
    const machines = { askari: fakeVm("askari", "10.234.7.10", events, () => true), kazi: fakeVm("kazi", "10.234.7.11", events, () => true) };
    const { session, context } = topologySession(machines);
    const checks = [check({ name: "on askari", from: "askari", tcp: { port: 22 } }), check({ name: "on kazi", on: "kazi", from: "kazi", tcp: { port: 22 } })];
    const [outcome] = await rebootByKinds(context, session, ["clean"], { checks, failed: () => false, order: "rolling" });
    assert.deepEqual(
      events.filter((event) => event.includes("reboot") || event.includes("back")),
      ["askari reboots", "askari is back", "kazi reboots", "kazi is back"],
    );
    assert.deepEqual(
      outcome!.reboot.post.map((result) => [result.name, result.during]),
      [
        ["on kazi", "askari"],
        ["on askari", "kazi"],
        ["on askari", undefined],
        ["on kazi", undefined],
      ],
      "each check meanwhile under its own name (RED's expectFailing names it so), saying which host was rebooting",
    );
    assert.match(outcome!.reboot.post[0]!.detail, /^while askari rebooted: TCP 127\.0\.0\.1:22/);
  });

  it("a VM that does not come back is a failed check of its own and fails the checks about or from it; the others run", async () => {
    const events: string[] = [];
    const machines = {
      askari: fakeVm("askari", "10.234.7.10", events, () => true),
      kazi: fakeVm("kazi", "10.234.7.11", events, () => true, { notBack: true }),
    };
    const { session, context, report } = topologySession(machines);
    const checks = [check({ name: "on askari", from: "askari", tcp: { port: 22 } }), check({ name: "kazi reaches askari", from: "kazi", tcp: { port: 22 } })];
    const [outcome] = await rebootByKinds(context, session, ["clean"], { checks, failed: () => true, order: "all" });
    assert.deepEqual(
      outcome!.reboot.post.map((result) => [result.name, result.ok]),
      [
        ["kazi came back after the reboot", false],
        ["on askari", true],
        ["kazi reaches askari", false],
      ],
      "a VM not back fails the scenario even where no check is about it",
    );
    assert.match(outcome!.reboot.post[2]!.detail, /^kazi did not come back after the reboot: its new kernel started but SSH never answered/);
    assert.match(report.vms![1]!.notBack!, /its new kernel started/);
    assert.deepEqual(report.vms![1]!.bootIds, []);
  });
});

describe("the RAM a topology needs", () => {
  it("is the first VM's memory and the margin, then each other's memory and its emulator's share", async () => {
    const { topologyRamNeededMiB, ramNeededMiB, RAM_MARGIN_MIB, RAM_PER_EXTRA_VM_MIB } = await import("../../../../orchestrator/host/prerequisites.ts");
    assert.equal(topologyRamNeededMiB([3072, 2048], undefined), 3072 + RAM_MARGIN_MIB + 2048 + RAM_PER_EXTRA_VM_MIB);
    assert.equal(topologyRamNeededMiB([3072, 2048], 8000), 8000 + 2048 + RAM_PER_EXTRA_VM_MIB, "--min-free-ram stands for the first");
    assert.equal(
      topologyRamNeededMiB([3072, 3072, 3072], undefined),
      ramNeededMiB({ vmMemoryMiB: 3072, minFreeRamMiB: undefined }, 3),
      "VMs of one size as side by side",
    );
  });
});

describe("survival checks of several hosts", () => {
  it("are derived on each VM, the others' named after their host, and run on each VM after the reboot", async () => {
    const events: string[] = [];
    const machines = {
      askari: fakeVm("askari", "10.234.7.10", events, () => true, { units: ["docker.service"] }),
      kazi: fakeVm("kazi", "10.234.7.11", events, () => true, { units: ["kazi-web.service"] }),
    };
    const { session, context, report } = topologySession(machines);
    (context.profile.document as { survival?: boolean }).survival = true;
    const survival = await deriveSurvival(context, session);
    const units = (names: readonly string[] | undefined) => (names ?? []).filter((name) => name.endsWith("active"));
    assert.deepEqual(units(report.survival?.derived), ["survives: docker.service active", "kazi: survives: kazi-web.service active"]);
    assert.deepEqual(
      survival.peers?.map((peer) => [peer.host, units(peer.checks.map((check) => check.name))]),
      [["kazi", ["kazi: survives: kazi-web.service active"]]],
    );
    events.length = 0;
    const [outcome] = await rebootByKinds(context, session, ["clean"], { checks: [], survival, failed: () => false, order: "all" });
    assert.deepEqual(
      outcome!.reboot.post.filter((result) => result.name.endsWith("active")).map((result) => [result.name, result.ok]),
      [
        ["survives: docker.service active", true],
        ["kazi: survives: kazi-web.service active", true],
      ],
    );
    assert.equal(outcome!.reboot.post.length, report.survival?.derived.length, "every VM's survival checks ran");
    assert.ok(events.includes("kazi: survival state"), "kazi's checked on kazi's VM");
  });
});
