/**
 * Reboot kinds, each proven as its kind (a real Machine on a fake domain): a power loss pulls the
 * plug with no shutdown and proves itself by a new boot id and an old boot without a clean end; a
 * soft reboot restarts the userspace only and proves itself by systemd's SoftRebootsCount with
 * the same boot id. A proof that fails is the harness's fault (exit 4), never a pass and never a
 * verdict. Several kinds run each from one applied state: the VM is saved once and restored
 * before each kind after the first, and the saved state is deleted on every exit path.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { access, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { HarnessError, SystemUnderTestError } from "../../../../orchestrator/errors.ts";
import { RebootUnprovenError, type RebootProof } from "../../../../orchestrator/guest/machine.ts";
import { Libvirt } from "../../../../orchestrator/host/libvirt.ts";
import { domainXml } from "../../../../infra/xml.ts";
import { diskOfDomainXml } from "../../../../orchestrator/host/libvirt.ts";
import { takeRewindPoint } from "../../../../orchestrator/host/rewind.ts";
import type { RebootKind } from "../../../../orchestrator/profile/schema.ts";
import { judge, judgeKinds, rebootByKinds, rebootStep } from "../../../../orchestrator/run/reboots.ts";
import { aroundMachine, fakeDomain, type SoftReboot } from "../../../helpers/fake-domain.ts";
import { fakeCalls, writeFake } from "../../../helpers/fakes.ts";
import { FIXED_IDENTITY, fixedSpec } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** One reboot of `kind` on a fake domain scripted by `script`; what came of it and what the guest was told. */
async function rebootBy(kind: RebootKind, script: { soft?: SoftReboot; journal?: "crash" | "clean" | "none"; offBefore?: string } = {}, sshMs = 20_000) {
  const tree = await tempTree();
  try {
    const domain = await fakeDomain(tree.dir, { ends: ["restart"], ...script });
    if (script.offBefore) domain.setState(script.offBefore);
    const { session, context, report } = aroundMachine(domain.machine, sshMs);
    const outcome = await rebootStep(context, session, undefined, undefined, undefined, kind).catch((error: unknown) => error);
    const told = (await fakeCalls(join(tree.dir, "log"))).map((call) => call.at(-1) ?? "");
    return { outcome, report, domain, told };
  } finally {
    await tree.remove();
  }
}

function proofOf(outcome: unknown): RebootProof {
  assert.ok(!(outcome instanceof Error), String(outcome));
  const proof = (outcome as { proof?: RebootProof }).proof;
  assert.ok(proof, "proven");
  return proof;
}

describe("a power loss", () => {
  it("pulls the plug (no shutdown, nothing asked of the guest) and is proven by a new boot id and an old boot without a clean end", async () => {
    const { outcome, domain, told } = await rebootBy("power-loss");
    const proof = proofOf(outcome);
    assert.deepEqual(domain.calls, ["power-cycle"], "off at once and on again: no power-off on reset, no guest reboot");
    assert.ok(!told.some((command) => /systemctl (reboot|poweroff|soft-reboot)/.test(command)), "the guest was never told to shut down");
    assert.equal(proof.kind, "power-loss");
    assert.notEqual(proof.bootIdAfter, proof.bootIdBefore);
    assert.equal(proof.previousBootEnd, "no clean shutdown in its journal");
    assert.ok(told.some((command) => command.includes(`journalctl -q -o cat --no-pager -n 400 -b ${proof.bootIdBefore.replace(/-/g, "")}`)));
  });

  it("whose old boot ends cleanly by its journal was a shutdown, not a power loss: exit 4, never a pass", async () => {
    const { outcome } = await rebootBy("power-loss", { journal: "clean" });
    assert.ok(outcome instanceof RebootUnprovenError && outcome.exitCode === 4, String(outcome));
    assert.match(outcome.message, /ends cleanly by its journal \("Reached target reboot\.target - System Reboot\."\).*that was no power loss/);
  });

  it("on a guest that keeps no journal on its disk is proven by the new boot id alone, and says so", async () => {
    const proof = proofOf((await rebootBy("power-loss", { journal: "none" })).outcome);
    assert.equal(proof.previousBootEnd, "no journal of it on the disk");
  });

  it("on a domain already off as it begins is someone else's doing: exit 4, and the harness pulls no plug", async () => {
    const { outcome, domain } = await rebootBy("power-loss", { offBefore: "shut off (destroyed)" });
    assert.ok(outcome instanceof HarnessError && outcome.exitCode === 4, String(outcome));
    assert.match(outcome.message, /the domain was shut off \(destroyed\) from the host: that says nothing about the change under test/);
    assert.deepEqual(domain.calls, []);
  });
});

describe("a soft reboot", () => {
  it("restarts the userspace only and is proven by SoftRebootsCount one up with the same boot id", async () => {
    const { outcome, domain, told } = await rebootBy("soft");
    const proof = proofOf(outcome);
    assert.deepEqual(domain.calls, [], "the domain's power is not touched");
    assert.ok(told.some((command) => command.includes("systemctl soft-reboot")));
    assert.equal(proof.kind, "soft");
    assert.equal(proof.bootIdAfter, proof.bootIdBefore);
    assert.deepEqual(proof.softReboots, [0, 1]);
  });

  it("whose counter never moves never happened: a harness fault (exit 4), not a pass", async () => {
    const { outcome } = await rebootBy("soft", { soft: "nothing" }, 5000);
    assert.ok(outcome instanceof RebootUnprovenError && outcome.exitCode === 4, String(outcome));
    assert.match(outcome.message, /the soft reboot never happened: the old userspace answered until the wait ended, its SoftRebootsCount still 0/);
  });

  it("that comes back with a new boot id was a full reboot: exit 4", async () => {
    const { outcome } = await rebootBy("soft", { soft: "new-boot" });
    assert.ok(outcome instanceof RebootUnprovenError, String(outcome));
    assert.match(outcome.message, /the boot id changed .*a soft reboot never does/);
  });

  it("that the guest refuses (a unit masks its target) is the change's finding (exit 1), not a fault", async () => {
    const { outcome } = await rebootBy("soft", { soft: "masked" });
    assert.ok(outcome instanceof SystemUnderTestError && outcome.exitCode === 1, String(outcome));
    assert.match(
      outcome.message,
      /the guest refused a soft reboot: `systemctl soft-reboot` failed with exit 1: Failed to start soft-reboot\.target: Unit soft-reboot\.target is masked\./,
    );
  });

  it("on a systemd without SoftRebootsCount cannot be proven: exit 4 before anything is asked of the guest", async () => {
    const { outcome, told } = await rebootBy("soft", { soft: "unsupported" });
    assert.ok(outcome instanceof RebootUnprovenError, String(outcome));
    assert.match(outcome.message, /cannot prove a soft reboot: it has no SoftRebootsCount \(systemd 256 or later has\)/);
    assert.ok(!told.some((command) => command.includes("systemctl soft-reboot")));
  });

  it("whose old userspace answered once more as it stopped, and whose new one never answers, is the change's finding, not a fault", async () => {
    const { outcome, report } = await rebootBy("soft", { soft: "old-once-then-no-answer" }, 600_000);
    assert.ok(!(outcome instanceof Error), String(outcome));
    assert.match(report.notBack!.reason, /SSH never answered after the soft reboot/);
  });

  it("after which SSH never answers is the change's finding (the kernel ran on), every check failed", async () => {
    const { outcome, report } = await rebootBy("soft", { soft: "no-answer" }, 5000);
    assert.ok(!(outcome instanceof Error), String(outcome));
    const post = (outcome as { post: { name: string; ok: boolean; detail: string }[] }).post;
    assert.deepEqual(
      post.map((check) => [check.name, check.ok]),
      [["web", false]],
    );
    assert.match(report.notBack!.reason, /SSH never answered after the soft reboot \(the kernel ran on/);
    assert.match(post[0]!.detail, /did not come back after the soft reboot/);
  });
});

/**
 * A run's pool folder with its disk, and a fake virsh for it: the run's domain as boma-it defines
 * it (its disk a pool volume), `save` writes the memory file, a restore says what it found on the
 * disk (in `<dir>/restores`).
 */
async function fakePool(dir: string) {
  const pool = join(dir, "pool");
  await mkdir(pool);
  const runId = FIXED_IDENTITY.runId;
  const disk = join(pool, `${runId}-overlay.qcow2`);
  await writeFile(disk, "applied\n");
  await writeFile(join(dir, "domain.xml"), domainXml(fixedSpec()));
  const bin = join(dir, "bin");
  await writeFake(
    bin,
    "virsh",
    `case "$4" in
  dumpxml) cat "${join(dir, "domain.xml")}" ;;
  vol-path) echo "${pool}/$5" ;;
  save) echo memory > "$6" ;;
  restore) echo "restored onto: $(cat "${disk}")" >> "${join(dir, "restores")}" ;;
esac`,
  );
  const runner = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(dir, "log") } }).withRedaction((text) => text);
  return { pool, runId, disk, runner };
}

describe("several kinds from one applied state", () => {
  /** A fake domain with a fake virsh that keeps a disk file in a pool folder. */
  async function kindsOn(kinds: RebootKind[], script: { soft?: SoftReboot } = {}) {
    const tree = await tempTree();
    const { pool, runId, disk, runner } = await fakePool(tree.dir);
    const domain = await fakeDomain(tree.dir, { ends: ["restart"], ...script });
    const { session, context, report } = aroundMachine(domain.machine, 5000, {
      runner,
      libvirt: new Libvirt(runner, "qemu:///system"),
      outputs: { runId, domain: runId },
    });
    // Each kind writes to the disk, as a guest does: the next must not see it.
    const failed = () => {
      writeFileSync(disk, "written after a reboot\n");
      return false;
    };
    const outcome = await rebootByKinds(context, session, kinds, { checks: [], failed }).catch((error: unknown) => error);
    const virsh = (await fakeCalls(join(tree.dir, "log"))).filter((call) => call[0] === "virsh").map((call) => call[4]);
    const restores = (await readFile(join(tree.dir, "restores"), "utf8").catch(() => "")).trim().split("\n");
    const left = await Promise.all(
      [`${runId}-applied.mem`, `${runId}-applied.qcow2`].map((name) =>
        access(join(pool, name)).then(
          () => name,
          () => undefined,
        ),
      ),
    );
    await tree.remove();
    return { outcome, report, virsh, restores, left: left.filter(Boolean), domain };
  }

  it("saves the applied state once, restores it (memory and disk) before each kind after the first, and deletes it at the end", async () => {
    const { outcome, report, virsh, restores, left } = await kindsOn(["clean", "power-loss", "soft"]);
    assert.ok(!(outcome instanceof Error), String(outcome));
    assert.deepEqual(virsh, ["dumpxml", "vol-path", "save", "restore", "pool-refresh", "destroy", "restore", "destroy", "restore", "pool-refresh"]);
    assert.deepEqual(
      restores,
      ["restored onto: applied", "restored onto: applied", "restored onto: applied"],
      "every restore finds the disk as it was when the state was saved, whatever the kind before wrote",
    );
    assert.deepEqual(left, [], "the saved memory (the run's secrets) and disk are gone");
    assert.deepEqual(
      report.reboots!.map((entry) => [entry.kind, entry.ok, entry.proof?.softReboots ?? null]),
      [
        ["clean", true, null],
        ["power-loss", true, null],
        ["soft", true, [0, 1]],
      ],
    );
    assert.equal(report.reboots![1]!.proof!.previousBootEnd, "no clean shutdown in its journal");
    assert.equal(report.reboots![2]!.proof!.userspaceOnly, true);
  });

  it("deletes the saved state when a kind ends the run (exit 4) too", async () => {
    const { outcome, left } = await kindsOn(["clean", "soft"], { soft: "nothing" });
    assert.ok(outcome instanceof RebootUnprovenError, String(outcome));
    assert.deepEqual(left, []);
  });

  it("one kind alone saves nothing, and a single clean reboot is recorded as before (no reboots[])", async () => {
    const clean = await kindsOn(["clean"]);
    assert.deepEqual(clean.virsh, []);
    assert.equal(clean.report.reboots, undefined);
    const power = await kindsOn(["power-loss"]);
    assert.deepEqual(power.virsh, []);
    assert.deepEqual(
      power.report.reboots!.map((entry) => entry.kind),
      ["power-loss"],
    );
  });
});

describe("a verdict per kind", () => {
  const pre = [{ name: "web", stage: "pre-reboot" as const, ok: true, detail: "", seconds: 1 }];
  const broken = [{ name: "web", stage: "post-reboot" as const, ok: false, detail: "refused", seconds: 1 }];
  const fine = [{ name: "web", stage: "post-reboot" as const, ok: true, detail: "", seconds: 1 }];

  it("names the kind it judges, and the scenario is ok only when every kind is", () => {
    assert.equal(judge("pass", pre, broken, undefined, "power-loss").outcome, "GREEN broke after the power loss: web");
    assert.equal(judge("fail", pre, broken, undefined, "power-loss").outcome, "RED is faithful: it passed before the power loss and broke after it (web)");
    assert.equal(judge("pass", pre, fine).outcome, "GREEN survived the reboot: every check passed before and after");
    const green = judgeKinds({ name: "green", expect: "pass" }, [
      { kind: "clean", verdict: judge("pass", pre, fine, undefined, "clean") },
      { kind: "power-loss", verdict: judge("pass", pre, broken, undefined, "power-loss") },
      { kind: "soft", verdict: judge("pass", pre, fine, undefined, "soft") },
    ]);
    assert.deepEqual(green, { ok: false, outcome: "GREEN broke after the power loss: web" });
    const all = judgeKinds({ name: "green", expect: "pass" }, [
      { kind: "clean", verdict: judge("pass", pre, fine, undefined, "clean") },
      { kind: "soft", verdict: judge("pass", pre, fine, undefined, "soft") },
    ]);
    assert.deepEqual(all, { ok: true, outcome: "GREEN survived every kind of reboot (clean, soft): every check passed before and after each" });
  });

  it("RED per kind: it must break exactly as named after one kind, and survive a kind named with no checks", () => {
    const expectFailing = { clean: [], "power-loss": ["web"] };
    const survived = judge("fail", pre, fine, expectFailing, "clean");
    assert.deepEqual(survived, { ok: true, outcome: "RED survived the reboot, as expected (every check passed before and after)" });
    const broke = judge("fail", pre, broken, expectFailing, "power-loss");
    assert.equal(broke.ok, true, broke.outcome);
    assert.deepEqual(
      judgeKinds({ name: "red", expect: "fail" }, [
        { kind: "clean", verdict: survived },
        { kind: "power-loss", verdict: broke },
      ]),
      {
        ok: true,
        outcome:
          "RED is faithful: survived the reboot, as expected (every check passed before and after); it passed before the power loss and broke after it exactly as expected (web), every other check passed",
      },
    );
    // Broken where it must survive, or surviving where it must break: not faithful.
    assert.deepEqual(judge("fail", pre, broken, expectFailing, "clean"), {
      ok: false,
      outcome: "RED broke after the reboot where it is expected to survive it (web): the harness is not faithful",
    });
    assert.equal(judge("fail", pre, fine, expectFailing, "power-loss").ok, false);
    // A kind not named breaks RED as usual.
    assert.equal(judge("fail", pre, broken, expectFailing, "soft").ok, true);
    assert.equal(judge("fail", pre, fine, expectFailing, "soft").ok, false);
  });
});

describe("a rewind point that fails half way", () => {
  it("brings the VM back from its saved state and leaves none of the point's files (the memory holds the run's secrets)", async () => {
    const tree = await tempTree();
    try {
      const { pool, runId, runner } = await fakePool(tree.dir);
      // The copy runs out of space.
      await writeFake(join(tree.dir, "bin"), "cp", 'echo "cp: error writing: No space left on device" >&2; exit 1');
      const outputs = { runId, domain: runId } as Parameters<typeof takeRewindPoint>[2];
      await assert.rejects(takeRewindPoint(new Libvirt(runner, "qemu:///system"), runner, outputs), /No space left on device/);
      const virsh = (await fakeCalls(join(tree.dir, "log"))).filter((call) => call[0] === "virsh").map((call) => call[4]);
      assert.deepEqual(virsh, ["dumpxml", "vol-path", "save", "restore"], "the VM runs again from what was saved");
      assert.deepEqual(await readdir(pool), [`${runId}-overlay.qcow2`]);
    } finally {
      await tree.remove();
    }
  });
});

describe("the disk a rewind point copies", () => {
  it("is the domain's one disk as boma-it defines it (a volume of the run's pool), not its seed's cdrom; none or two is a harness fault", () => {
    const spec = fixedSpec();
    assert.deepEqual(diskOfDomainXml(domainXml(spec), spec.identity.runId), { pool: spec.pool.name, volume: spec.volumes.overlay });
    const file = "<domain><devices><disk type='file' device='disk'><source file='/var/lib/libvirt/images/x.qcow2'/></disk></devices></domain>";
    assert.deepEqual(diskOfDomainXml(file, "d"), { file: "/var/lib/libvirt/images/x.qcow2" });
    assert.throws(() => diskOfDomainXml("<domain><devices><disk type='volume' device='cdrom'/></devices></domain>", "d"), /d: expected one disk .*found 0/);
    const two = "<domain><devices><disk device='disk'><source file='/a'/></disk><disk device='disk'><source file='/b'/></disk></devices></domain>";
    assert.throws(() => diskOfDomainXml(two, "d"), /found 2/);
  });
});
