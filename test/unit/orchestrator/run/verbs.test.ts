/**
 * Verbs on a kept VM, against a fake virsh on PATH and a fake machine: a run found through
 * libvirt and its record (made from another stacks dir), the verb's own folder and the line it
 * adds to the run's report, a run that is not running refused, `reset` restoring the saved state
 * onto a fresh top volume, and the console read as boots.
 */
import assert from "node:assert/strict";
import { chown, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { StackOutputs } from "../../../../infra/plan.ts";
import { Runner } from "../../../../infra/runner.ts";
import { BadInputError, HarnessError, InterruptedError, RefusedError, SystemUnderTestError } from "../../../../orchestrator/errors.ts";
import { consoleBoots } from "../../../../orchestrator/guest/console.ts";
import { Libvirt } from "../../../../orchestrator/host/libvirt.ts";
import { findVerbRun, withAttachedRun } from "../../../../orchestrator/run/attach.ts";
import { attachedReset } from "../../../../orchestrator/run/verbs.ts";
import { Redactor } from "../../../../orchestrator/ansible/secrets.ts";
import { resolveRun } from "../../../../orchestrator/run/live-runs.ts";
import { fakeCalls, writeFake } from "../../../helpers/fakes.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const RUN = "boma-it-askari-20261201-120000";

/** A virsh that knows one domain (its state in $FAKE_STATE), its metadata, and accepts every change. */
const FAKE_VIRSH = `
args=(); for a in "$@"; do case "$a" in -q|-c|qemu:*) ;; *) args+=("$a") ;; esac; done
case "\${args[0]}" in
  version) echo "Compiled against library: libvirt 9.0.0" ;;
  list) echo ${RUN}; [ -n "$FAKE_PEER" ] && echo "$FAKE_PEER" ;;
  net-list|pool-list|nwfilter-list) ;;
  metadata) if [ "\${args[1]}" = "$FAKE_PEER" ]; then echo "<run pid=\\"999999\\" runDir=\\"$FAKE_RUN_DIR/hosts/kazi\\"/>"; else echo "<run pid=\\"999999\\" runDir=\\"$FAKE_RUN_DIR\\"/>"; fi ;;
  domstate) echo "$FAKE_STATE" ;;
  vol-path) echo "/var/lib/libvirt/images/${RUN}/\${args[1]}" ;;
  vol-dumpxml) echo "<volume><capacity unit='bytes'>21474836480</capacity></volume>" ;;
  save-image-dumpxml) echo "<domain><devices><disk><source pool='${RUN}' volume='${RUN}-overlay.qcow2'/></disk></devices></domain>" ;;
  restore) cp "\${args[3]}" "$FAKE_RUN_DIR/restored.xml" ;;
  vol-create) cat > "$FAKE_RUN_DIR/top.xml" ;;
esac
exit 0
`;

async function setup(state: string, record: Record<string, unknown> = {}) {
  const tree = await tempTree();
  const bin = join(tree.dir, "bin");
  await writeFake(bin, "virsh", FAKE_VIRSH);
  const runDir = join(tree.dir, "runs", "20261201-120000-askari");
  await mkdir(runDir, { recursive: true });
  const outputs: StackOutputs = {
    runId: RUN,
    host: "askari",
    ip: "10.234.7.10",
    user: "boma",
    ssh: `npm run boma-it -- ssh ${RUN}`,
    runDir,
    consoleLog: join(runDir, "console.log"),
    keyFile: join(runDir, "keys/id"),
    knownHostsFile: join(runDir, "keys/kh"),
    network: RUN,
    mac: "52:54:00:00:00:09",
    subnet: "10.234.7.0/24",
    domain: RUN,
    accel: "tcg",
    createdAt: "2026-12-01T12:00:00Z",
    ownerPid: 999999,
  };
  await writeFile(
    join(runDir, "run.json"),
    JSON.stringify({
      ...outputs,
      engine: "direct",
      stacksDir: join(tree.dir, "another-checkout"),
      purpose: "up",
      reportFile: join(runDir, "report.json"),
      ...record,
    }),
  );
  await writeFile(join(runDir, "report.json"), JSON.stringify({ runId: RUN, verdict: "pass", scenarios: [] }));
  const env = {
    PATH: `${bin}:/usr/bin:/bin`,
    FAKE_LOG: join(tree.dir, "calls.log"),
    FAKE_STATE: state,
    FAKE_RUN_DIR: runDir,
    BOMA_IT_STACKS_DIR: join(tree.dir, "my-stacks"),
    BOMA_IT_RUN_LOCK: join(tree.dir, "run.lock"),
  };
  const runner = new Runner({ env });
  const request = {
    verb: "reset",
    reference: "askari",
    runner,
    log: silentLog(),
    env,
    signal: new AbortController().signal,
    redactor: new Redactor(),
    locations: { profilesDir: tree.dir, overridesDir: tree.dir },
  };
  return { tree, runDir, outputs, request, runner, calls: () => fakeCalls(join(tree.dir, "calls.log")) };
}

describe("verbs on a kept VM", () => {
  it("find a run made from another checkout through libvirt and its record, and keep their own folder and a line in its report", async () => {
    const { tree, runDir, request } = await setup("running (booted)");
    try {
      const result = await withAttachedRun(request, { needsProfile: false }, async (run) => {
        assert.equal(run.found.elsewhere, join(tree.dir, "another-checkout"));
        return { ok: true, outcome: "did it" };
      });
      assert.equal(result.exitCode, 0);
      assert.match(result.dir, new RegExp(`${runDir}/verbs/\\d{8}-\\d{6}-reset$`));
      const written = JSON.parse(await readFile(join(result.dir, "result.json"), "utf8")) as { verdict: string; message: string };
      assert.deepEqual([written.verdict, written.message], ["pass", "did it"]);
      const report = JSON.parse(await readFile(join(runDir, "report.json"), "utf8")) as { verbs: { verb: string; verdict: string; exitCode: number }[] };
      assert.deepEqual(
        report.verbs.map((verb) => [verb.verb, verb.verdict, verb.exitCode]),
        [["reset", "pass", 0]],
      );
    } finally {
      await tree.remove();
    }
  });

  it("end as a run ends: a failure of the system under test is verdict fail (exit 1); a fault is error with its causes; the lock is free after either", async () => {
    const { tree, runDir, request } = await setup("running (booted)");
    try {
      const failed = await withAttachedRun(request, { needsProfile: false }, async () => {
        throw new SystemUnderTestError("askari: `nft -c -f /etc/nftables.conf` failed with exit 1");
      });
      assert.deepEqual([failed.verdict, failed.exitCode, failed.error], ["fail", 1, null]);
      assert.match(failed.message, /nftables\.conf` failed/);
      const faulted = await withAttachedRun(request, { needsProfile: false }, async () => {
        throw new HarnessError("virsh save failed", { cause: new Error("disk full") });
      });
      assert.deepEqual([faulted.verdict, faulted.exitCode, faulted.error?.kind], ["error", 4, "HarnessError"]);
      assert.deepEqual(faulted.error?.causes, ["Error: disk full"]);
      const written = JSON.parse(await readFile(join(faulted.dir, "result.json"), "utf8")) as { verdict: string; wallSeconds: number; finishedAt: string };
      assert.equal(written.verdict, "error");
      assert.ok(written.finishedAt !== "" && written.wallSeconds >= 0);
      const report = JSON.parse(await readFile(join(runDir, "report.json"), "utf8")) as { verbs: { verdict: string; exitCode: number }[] };
      assert.deepEqual(
        report.verbs.map((verb) => [verb.verdict, verb.exitCode]),
        [
          ["fail", 1],
          ["error", 4],
        ],
      );
    } finally {
      await tree.remove();
    }
  });

  it("end as interrupted (130) when stopped mid-verb, whatever failed after the stop", async () => {
    const { tree, request } = await setup("running (booted)");
    try {
      const controller = new AbortController();
      const result = await withAttachedRun({ ...request, signal: controller.signal }, { needsProfile: false }, async () => {
        controller.abort(new InterruptedError());
        // The ssh the stop killed: read as a failed command, which it is not.
        throw new SystemUnderTestError("askari: `systemctl is-active docker` failed with exit 255");
      });
      assert.deepEqual([result.verdict, result.exitCode, result.message], ["error", 130, "interrupted"]);
    } finally {
      await tree.remove();
    }
  });

  it(
    "down without a run takes the one this user made; another user's only when named",
    { skip: process.getuid?.() !== 0 && "needs root to give a run dir to another user" },
    async () => {
      const { tree, runDir, request } = await setup("running (booted)");
      try {
        const unnamed = { ...request, verb: "take down", reference: undefined };
        assert.equal((await findVerbRun(unnamed, { onlyMine: true })).found.runId, RUN);
        await chown(runDir, 65534, 65534);
        await assert.rejects(findVerbRun(unnamed, { onlyMine: true }), (error: unknown) => {
          assert.ok(error instanceof BadInputError);
          assert.equal(error.message, `no live run of yours to take down; the one live run was made by another user: ${RUN}; name the one to take down`);
          return true;
        });
        assert.equal((await findVerbRun({ ...unnamed, reference: RUN }, { onlyMine: true })).found.runId, RUN, "named, it is found");
        assert.equal((await findVerbRun(unnamed)).found.runId, RUN, "the other verbs still take the only live run");
      } finally {
        await tree.remove();
      }
    },
  );

  it("--host picks a VM of the run's topology: the run itself for its own host; a host it lacks, or a run of one VM, is bad input naming what it has", async () => {
    const kazi = "boma-it-kazi-20261201-120000";
    const topology = [
      { host: "askari", runId: RUN, runDir: "/runs/a" },
      { host: "kazi", runId: kazi, runDir: "/runs/a/kazi" },
    ];
    const { tree, request, outputs, runDir } = await setup("running (booted)", { topology });
    const alone = await setup("running (booted)");
    try {
      assert.equal((await findVerbRun(request, { host: "askari" })).found.runId, RUN);
      await assert.rejects(
        findVerbRun(request, { host: "pwani" }),
        /--host: expected one of the hosts of boma-it-askari-20261201-120000's run \(askari, kazi\), found "pwani"/,
      );
      // kazi is a host of the run; its VM is gone (the fake libvirt lists askari's alone).
      await assert.rejects(findVerbRun(request, { host: "kazi" }), new RegExp(`no live run matches "${kazi}"`));
      // The verbs work on a run of several hosts as a whole: one of its VMs gone is refused, naming it.
      await assert.rejects(
        withAttachedRun(request, { needsProfile: false }, async () => ({ ok: true, outcome: "" })),
        (error: unknown) =>
          error instanceof RefusedError &&
          /boma-it-kazi-20261201-120000 \(kazi's VM of boma-it-askari-20261201-120000\) is gone: .*fix: `reset` works on the run's VMs together; take the rest down with `npm run boma-it -- down boma-it-askari-20261201-120000`/s.test(
            error.message,
          ),
      );
      // Both live: the verb gets the run as a whole, through its first VM, whichever VM was named.
      const kaziDir = join(runDir, "hosts", "kazi");
      await mkdir(kaziDir, { recursive: true });
      const kaziOutputs = { ...outputs, runId: kazi, host: "kazi", ip: "10.234.7.11", domain: kazi, runDir: kaziDir };
      await writeFile(join(kaziDir, "run.json"), JSON.stringify({ ...kaziOutputs, engine: "direct", stacksDir: join(tree.dir, "another-checkout"), topology }));
      const both = { ...request, reference: kazi, env: { ...request.env, FAKE_PEER: kazi }, runner: new Runner({ env: { ...request.env, FAKE_PEER: kazi } }) };
      const attached = await withAttachedRun(both, { needsProfile: false }, async (run) => ({
        ok: true,
        outcome: `${run.found.runId} with ${(run.session.peers ?? []).map((peer) => `${peer.host} at ${peer.outputs.ip}`).join(", ")}`,
      }));
      assert.equal(attached.message, `${RUN} with kazi at 10.234.7.11`);
      // Its two VMs are one run: named by none, it is found by its first.
      assert.equal((await findVerbRun({ ...both, reference: undefined })).found.runId, RUN);
      await assert.rejects(
        findVerbRun(alone.request, { host: "kazi" }),
        /--host: boma-it-askari-20261201-120000 is one VM, of askari; expected --host askari or none, found "kazi"/,
      );
    } finally {
      await tree.remove();
      await alone.tree.remove();
    }
  });

  it("refuse a run whose VM is not running (exit 3), naming what to do", async () => {
    const { tree, request } = await setup("shut off (shutdown)");
    try {
      await assert.rejects(
        withAttachedRun(request, { needsProfile: false }, async () => ({ ok: true, outcome: "" })),
        (error: unknown) => {
          assert.ok(error instanceof RefusedError);
          assert.match(error.message, /is shut off \(shutdown\), not running: `reset` works on a live VM/);
          return true;
        },
      );
    } finally {
      await tree.remove();
    }
  });

  it("reset: refused without a reset point; with one, the saved state is restored onto a fresh top volume and the boot id said", async () => {
    const without = await setup("running (booted)");
    try {
      const result = await withAttachedRun(without.request, { needsProfile: false }, attachedReset).catch((error: unknown) => error);
      assert.ok(result instanceof RefusedError);
      assert.match(result.message, /has no reset point: only `boma-it up` takes one/);
    } finally {
      await without.tree.remove();
    }

    const point = {
      memory: `/var/lib/libvirt/images/${RUN}/${RUN}-reset.mem`,
      base: `${RUN}-overlay.qcow2`,
      top: `${RUN}-top.qcow2`,
      at: "2026-12-01T12:03:00Z",
      bootId: "first-boot",
    };
    const { tree, runDir, outputs, runner, calls } = await setup("running (booted)", { resetPoint: point });
    try {
      // An apply since dropped the ecdsa key from the pin; the reset brings back the seed's three.
      const keys = join(runDir, "keys");
      await mkdir(keys, { recursive: true });
      for (const type of ["rsa", "ecdsa", "ed25519"]) await writeFile(join(keys, `ssh_host_${type}_key.pub`), `ssh-${type} AAAA${type} boma-it host\n`);
      await writeFile(join(keys, "known_hosts"), `${RUN} ssh-rsa AAAArsa\n${RUN} ssh-ed25519 AAAAed25519\n`);
      const target = { knownHostsFile: join(keys, "known_hosts"), alias: RUN };
      let clockSet = false;
      const marks: string[] = [];
      const machine = {
        target,
        closeConnection: async () => undefined,
        // What the console showed before the restore is not the restored guest's.
        markNewBoot: async () => void marks.push("restored"),
        waitForSsh: async () => (marks.push("waited"), { bootId: "first-boot" }),
        setClockToNow: async () => void (clockSet = true),
      };
      const record = { ...outputs, engine: "direct" as const, resetPoint: point };
      const found = { runId: RUN, outputs, state: "running" as const, engine: undefined, elsewhere: undefined, record };
      const outcome = await attachedReset({
        found,
        record,
        machine: machine as never,
        libvirt: new Libvirt(runner, "qemu:///system"),
        dir: runDir,
        stepContext: { runner, timeouts: { sshMs: 1000 } } as never,
        session: { machine, outputs, timed: (_name: string, body: () => Promise<unknown>) => body() } as never,
        members: [found],
      });
      assert.equal(outcome.ok, true);
      assert.match(outcome.outcome, /boot id first-boot \(that boot's, no boot was needed\)/);
      assert.ok(clockSet, "the restored guest's clock is set to now");
      assert.deepEqual(marks, ["restored", "waited"], "the console is marked at the restore, before the wait reads it");
      assert.equal(
        await readFile(target.knownHostsFile, "utf8"),
        `${RUN} ssh-rsa AAAArsa\n${RUN} ssh-ecdsa AAAAecdsa\n${RUN} ssh-ed25519 AAAAed25519\n`,
        "the seed's host keys are pinned again",
      );
      const virsh = (await calls())
        .filter((call) => call[0] === "virsh")
        .map((call) => call.filter((arg) => !["virsh", "-q", "-c", "qemu:///system"].includes(arg))[0]);
      assert.deepEqual(virsh, ["destroy", "vol-delete", "vol-path", "vol-dumpxml", "vol-create", "save-image-dumpxml", "restore"]);
      assert.match(await readFile(join(runDir, "restored.xml"), "utf8"), new RegExp(`volume='${RUN}-top\\.qcow2'`), "the saved state runs on the top volume");
      assert.match(
        await readFile(join(runDir, "top.xml"), "utf8"),
        new RegExp(`<backingStore><path>/var/lib/libvirt/images/${RUN}/${RUN}-overlay\\.qcow2</path>`),
        "backed by the frozen overlay",
      );
    } finally {
      await tree.remove();
    }
  });

  it("reset a run of several hosts only when every VM has its point, naming each that has none", async () => {
    const kazi = "boma-it-kazi-20261201-120000";
    const outputsOf = (runId: string, host: string) => ({ runId, host, ip: "10.234.7.10", runDir: `/runs/${host}` }) as StackOutputs;
    const member = (runId: string, host: string, resetPoint?: object) => ({
      runId,
      outputs: outputsOf(runId, host),
      state: "running" as const,
      engine: undefined,
      elsewhere: undefined,
      record: { ...outputsOf(runId, host), engine: "direct" as const, ...(resetPoint ? { resetPoint } : {}) } as never,
    });
    const point = { memory: "m", base: "b", top: "t", at: "2026-12-01T12:03:00Z" };
    const members = [member(RUN, "askari", point), member(kazi, "kazi")];
    const machine = {} as never;
    const refused = await attachedReset({
      found: members[0]!,
      record: members[0]!.record,
      machine,
      libvirt: {} as never,
      dir: "/nonexistent",
      stepContext: {} as never,
      session: {
        machine,
        outputs: members[0]!.outputs,
        peers: [{ host: "kazi", machine, outputs: members[1]!.outputs }],
        timed: (_name: string, body: () => Promise<unknown>) => body(),
      } as never,
      members,
    }).catch((error: unknown) => error);
    assert.ok(refused instanceof RefusedError);
    assert.match(refused.message, new RegExp(`^${kazi} has no reset point: only \`boma-it up\` takes one`));
  });

  it("resolve a run by any unique part, and suggest the closest one for a typo", () => {
    const runs = [
      { runId: RUN, outputs: { runDir: "/r/20261201-120000-askari" } },
      { runId: "boma-it-simba-20261201-130000", outputs: { runDir: "/r/20261201-130000-simba" } },
    ];
    assert.equal(resolveRun(runs, "simba", "reach").runId, "boma-it-simba-20261201-130000");
    assert.equal(resolveRun(runs, "20261201-120000-askari", "reach").runId, RUN);
    assert.throws(() => resolveRun(runs, "boma-it-askary-20261201-120000", "reach"), new RegExp(`did you mean ${RUN}\\?`));
    assert.throws(() => resolveRun(runs, undefined, "reach"), /2 live runs; name the one to reach/);
  });

  it("read a console log as boots: each begins where the firmware loads the boot loader", () => {
    const log =
      "BdsDxe: loading Boot0001\n[    0.0] Linux version 6.12\n[  222.6] reboot: machine restart\n\x1b[2JBdsDxe: loading Boot0001\n[    0.0] Linux version 6.12\nlogin:\n";
    const boots = consoleBoots(log);
    assert.equal(boots.length, 2);
    assert.deepEqual(boots[1], ["BdsDxe: loading Boot0001", "[    0.0] Linux version 6.12", "login:"]);
  });
});
