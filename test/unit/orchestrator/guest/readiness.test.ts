/**
 * Readiness by banner: sshd's banner is polled without logging in, and the lag is the guest's
 * uptime at the banner (from one login's uptime minus the harness time since) minus the moment
 * systemd says sshd became active. Timing is driven by a fake clock, so nothing here is timed.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { HarnessError } from "../../../../orchestrator/errors.ts";
import { withOneReset } from "../../../../orchestrator/run/provision.ts";
import { describePanic, findKernelPanic, isTcgTextPatchRace } from "../../../../orchestrator/guest/console.ts";
import { GuestPanicError, Machine } from "../../../../orchestrator/guest/machine.ts";
import type { Clock } from "../../../../orchestrator/retry.ts";
import { sshBanner } from "../../../../orchestrator/host/ssh.ts";
import { fakeDomain, PANICKED_BOOT } from "../../../helpers/fake-domain.ts";
import { fakeCalls, writeFake } from "../../../helpers/fakes.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

async function listen(onConnection: (socket: import("node:net").Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onConnection).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return { server, port: (server.address() as { port: number }).port };
}

describe("SSH readiness", () => {
  it("the banner probe tells sshd from anything else, without logging in", async () => {
    const sshd = await listen((socket) => socket.end("SSH-2.0-OpenSSH_10.0p2 Debian-7\r\n"));
    const web = await listen((socket) => socket.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    const silent = await listen(() => undefined);
    // sshd right after a boot under TCG: it accepts at once and greets 1.5 s later.
    const slow = await listen((socket) => setTimeout(() => socket.end("SSH-2.0-OpenSSH_10.0p2 Debian-7\r\n"), 1500));
    try {
      assert.equal(await sshBanner("127.0.0.1", sshd.port), true);
      assert.equal(await sshBanner("127.0.0.1", web.port), false);
      assert.equal(await sshBanner("127.0.0.1", silent.port, 1000, 300), false, "no banner within the greeting's time");
      assert.equal(await sshBanner("127.0.0.1", slow.port, 1000), true, "a slow greeting after the connect is waited for, not retried");
      assert.equal(await sshBanner("127.0.0.1", 1), false, "nothing listens");
    } finally {
      for (const { server } of [sshd, web, silent, slow]) server.close();
    }
  });

  it("the guest is ready when sshd is and logins are allowed (systemd-user-sessions): the later of the two counts", async () => {
    const tree = await tempTree();
    try {
      // sshd active at 99.0 s, user sessions allowed only at 100.2 s: the probe's login at 101.0
      // came 0.8 s after the guest would take it, not 2.0 s.
      const { machine } = await fakeGuest(tree.dir, async () => true, { sshd: 99_000_000, sessions: 100_200_000 });
      const ready = await machine.waitForSsh(60_000);
      assert.equal(ready.readyLagSeconds, 0.8);
      assert.equal(ready.bootId, "0f1e2d3c-aaaa-bbbb-cccc-000000000001", "the boot id is the last line, after both timestamps");
      // sshd greeted the probe: a loaded guest's slow greeting of the login is waited for, not given up after 5 s.
      const [login] = (await fakeCalls(join(tree.dir, "log"))).filter(([program]) => program === "ssh");
      assert.ok(login?.includes("ConnectTimeout=60"), `the login's ssh: ${login?.join(" ")}`);
    } finally {
      await tree.remove();
    }
  });

  it("sshd is noticed when the probe that got its banner connected, not when the greeting came", async () => {
    const tree = await tempTree();
    try {
      let probes = 0;
      // Two polls find nothing; the third connects and sshd greets 1.2 s later; the login takes 0.5 s.
      const { machine, clock } = await fakeGuest(tree.dir, async () => {
        probes += 1;
        if (probes < 3) return false;
        clock.advance(1200);
        return true;
      });
      everyLoginTakes(machine, clock, 500);
      const ready = await machine.waitForSsh(60_000);
      assert.equal(probes, 3);
      // Uptime 101.0 at the answer, 1.7 s after the probe connected: 99.3 then, 0.3 after sshd
      // became active (counted from the greeting it would be 1.5).
      assert.equal(ready.readyLagSeconds, 0.3);
    } finally {
      await tree.remove();
    }
  });

  it("lag = uptime at the banner minus sshd's activation: the login's own time does not count", async () => {
    const tree = await tempTree();
    try {
      let probes = 0;
      // No banner for three polls, then sshd answers; the login that follows takes 1.5 s.
      const { machine, clock } = await fakeGuest(tree.dir, async () => {
        probes += 1;
        return probes >= 4;
      });
      everyLoginTakes(machine, clock, 1500);
      const ready = await machine.waitForSsh(60_000);
      assert.equal(probes, 4);
      assert.equal(ready.bootId, "0f1e2d3c-aaaa-bbbb-cccc-000000000001");
      // Uptime 101.0 at the answer, 1.5 s after the banner: 99.5 at the banner, 0.5 after sshd.
      assert.equal(ready.readyLagSeconds, 0.5);
      assert.equal(ready.beforeKernelSeconds, undefined, "not told when the boot began");
    } finally {
      await tree.remove();
    }
  });

  it("the time before the kernel (firmware, boot loader) is the wait since power-on minus the guest's uptime", async () => {
    const tree = await tempTree();
    try {
      let probes = 0;
      // Three silent polls 40 s apart, then sshd; the guest says it has been up 101.0 s.
      const { machine, clock } = await fakeGuest(tree.dir, async () => {
        probes += 1;
        if (probes < 4) clock.advance(40_000);
        return probes >= 4;
      });
      const ready = await machine.waitForSsh(360_000, { bootBeganAt: 0 });
      // Answered at 120.5 s (3 × 40 s + the polls' 0.5 s of sleep): the kernel started at 19.5 s.
      assert.equal(ready.beforeKernelSeconds, 19.5);
    } finally {
      await tree.remove();
    }
  });
});

describe("a guest kernel that panics", () => {
  it("is found in the console with the oops that caused it; a healthy boot log has none", () => {
    const race = findKernelPanic(PANICKED_BOOT)!;
    assert.equal(describePanic(race), "Oops: int3: 0000 [#1] PREEMPT SMP PTI → Kernel panic - not syncing: Fatal exception in interrupt");
    assert.equal(isTcgTextPatchRace(race), true, "a kernel int3 nobody expects: TCG ran a stale patch");
    const noRoot = findKernelPanic("\x1b[0m[    9.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n")!;
    assert.equal(describePanic(noRoot), "Kernel panic - not syncing: VFS: Unable to mount root fs");
    assert.equal(isTcgTextPatchRace(noRoot), false, "a root fs that does not mount is the guest's own failure");
    const nullDeref = findKernelPanic(
      "[ 5.0] BUG: kernel NULL pointer dereference, address: 0000000000000008\n[ 5.1] Kernel panic - not syncing: Fatal exception\n",
    )!;
    assert.equal(isTcgTextPatchRace(nullDeref), false);
    const healthy =
      "[    0.159342] Kernel command line: BOOT_IMAGE=/vmlinuz ro panic=0 console=ttyS0\n[    3.1] Run /init as init process\nDebian GNU/Linux 13 askari ttyS0\n";
    assert.equal(findKernelPanic(healthy), undefined);
  });

  it("says whether it came before the boot could write the disk: before init, or with the root still read-only", () => {
    assert.equal(findKernelPanic(PANICKED_BOOT)!.diskUntouched, true, "before init ran");
    const race = "[   18.978670] Oops: int3: 0000 [#1] PREEMPT SMP PTI\n[   18.983702] Kernel panic - not syncing: Fatal exception in interrupt\n";
    // As the console showed it after a reboot on 2026-12-03: the initramfs's udev, root not yet mounted.
    const inInitramfs = `[    7.295541] Run /init as init process\nLoading, please wait...\nStarting systemd-udevd version 257.13-1~deb13u1\n${race}`;
    assert.equal(findKernelPanic(inInitramfs)!.diskUntouched, true, "the initramfs had not mounted the root");
    const rootReadOnly = `[    7.3] Run /init as init process\n[   16.127460] EXT4-fs (vda2): mounted filesystem a5e75160 ro with ordered data mode. Quota mode: none.\n[   18.819100] systemd[1]: systemd 257.13-1~deb13u1 running in system mode\n${race}`;
    assert.equal(findKernelPanic(rootReadOnly)!.diskUntouched, true, "systemd runs, the root still read-only");
    const writable = `[    7.3] Run /init as init process\n[   16.1] EXT4-fs (vda2): mounted filesystem a5e75160 ro with ordered data mode.\n[   35.768909] EXT4-fs (vda2): re-mounted a5e75160-c5dd-42b8-993e-44255a778f2f r/w.\n${race}`;
    assert.equal(findKernelPanic(writable)!.diskUntouched, false, "the root remounted read-write: the boot may have written");
    const otherFs = `[    3.1] Run /init as init process\n[   12.0] XFS (vda1): Mounting V5 Filesystem\n${race}`;
    assert.equal(findKernelPanic(otherFs)!.diskUntouched, false, "a file system whose mounts are not said read-only counts as written");
  });

  it("ends the wait for SSH at once instead of sitting out its timeout, with the console tail", async () => {
    const tree = await tempTree();
    try {
      const { machine, clock, consoleLog } = await fakeGuest(tree.dir, async () => false);
      await writeFile(consoleLog, PANICKED_BOOT);
      await assert.rejects(machine.waitForSsh(360_000), (error: Error) => {
        assert.ok(error instanceof HarnessError, "exit 4: infrastructure, unless the caller knows better");
        assert.ok(error instanceof GuestPanicError && error.panic.oops?.startsWith("Oops: int3"), "the panic travels with the error");
        assert.match(error.message, /gave up waiting for askari: SSH on 10\.234\.7\.10: the guest kernel panicked: Oops: int3/);
        assert.match(error.message, /last lines of the serial console/);
        return true;
      });
      assert.ok(clock.now() < 10_000, `gave up after ${clock.now()} ms of a 360 s wait`);
    } finally {
      await tree.remove();
    }
  });

  it("after a reboot, only a panic of the new boot counts", async () => {
    const tree = await tempTree();
    try {
      // The boot before panicked (an earlier run of this console): the reboot still succeeds.
      const healthy = await fakeDomain(join(tree.dir, "healthy"), { ends: ["restart"], console: PANICKED_BOOT });
      const proof = await healthy.machine.reboot(360_000);
      assert.equal(proof.bootIdBefore, "0f1e2d3c-aaaa-bbbb-cccc-000000000001");
      assert.equal(proof.bootIdAfter, "0f1e2d3c-aaaa-bbbb-cccc-000000000002", "a real change of boot id");

      const panicking = await fakeDomain(join(tree.dir, "panicking"), { ends: ["restart"], starts: ["panic"] });
      await assert.rejects(panicking.machine.reboot(360_000), /after the reboot: the guest kernel panicked: Oops: int3/);
    } finally {
      await tree.remove();
    }
  });
});

describe("the proof of a reboot", () => {
  it("is a new boot id: a guest that answers with the old one after `systemctl reboot` never counts as rebooted", async () => {
    const tree = await tempTree();
    try {
      const { machine } = await fakeDomain(tree.dir, { ends: ["restart"], starts: ["same-boot-id"] });
      await assert.rejects(
        machine.reboot(60_000),
        /timed out after 60 s waiting for askari: SSH on 10\.234\.7\.10 after the reboot; last seen: still the old boot/,
      );
    } finally {
      await tree.remove();
    }
  });
});

describe("the first boot under QEMU's text-patching race", () => {
  const racePanic = () => new GuestPanicError("gave up waiting: the guest kernel panicked", findKernelPanic(PANICKED_BOOT)!);

  /** A first boot that panics `panics` times before it comes up, counting boots and resets. */
  function flakyBoot(panics: number, panic: () => Error = racePanic) {
    const seen = { boots: 0, resets: 0, warnings: [] as string[] };
    const boot = async () => {
      seen.boots += 1;
      if (seen.boots <= panics) throw panic();
      return "ready";
    };
    const options = (accel: string, onlyDiskUntouched = false) => ({
      what: "the first boot",
      accel,
      onlyDiskUntouched,
      reset: async () => void (seen.resets += 1),
      log: { warn: (message: string) => void seen.warnings.push(message) },
    });
    return { seen, boot, options };
  }

  it("resets the VM once under TCG, says why, and records it", async () => {
    const flaky = flakyBoot(1);
    const result = await withOneReset(flaky.boot, flaky.options("tcg"));
    assert.equal(result.value, "ready");
    assert.deepEqual([flaky.seen.boots, flaky.seen.resets], [2, 1]);
    assert.equal(result.resets.length, 1);
    assert.match(
      result.resets[0]!,
      /first boot panicked under TCG \(Oops: int3: .* → Kernel panic - not syncing: Fatal exception in interrupt\): QEMU's text-patching race/,
    );
    assert.deepEqual(flaky.seen.warnings, result.resets);
  });

  it("a boot that comes up has no resets", async () => {
    const flaky = flakyBoot(0);
    assert.deepEqual(await withOneReset(flaky.boot, flaky.options("tcg")), { value: "ready", resets: [] });
  });

  it("never twice, never under KVM, never for another panic or failure", async () => {
    const twice = flakyBoot(2);
    await assert.rejects(withOneReset(twice.boot, twice.options("tcg")), GuestPanicError);
    assert.equal(twice.seen.resets, 1);

    const kvm = flakyBoot(1);
    await assert.rejects(withOneReset(kvm.boot, kvm.options("kvm")), GuestPanicError);
    assert.equal(kvm.seen.resets, 0, "under KVM an int3 oops is a real kernel bug");

    const noRoot = flakyBoot(1, () => new GuestPanicError("panicked", findKernelPanic("Kernel panic - not syncing: VFS: Unable to mount root fs")!));
    await assert.rejects(withOneReset(noRoot.boot, noRoot.options("tcg")), /panicked/);
    assert.equal(noRoot.seen.resets, 0);

    const timeout = flakyBoot(1, () => new HarnessError("timed out after 360 s waiting for a DHCP lease"));
    await assert.rejects(withOneReset(timeout.boot, timeout.options("tcg")), /timed out/);
    assert.equal(timeout.seen.resets, 0);
  });

  it("after the reboot, only a race before the boot could write the disk is reset: a later one is exit 4 for the caller", async () => {
    const early = flakyBoot(1);
    assert.equal((await withOneReset(early.boot, early.options("tcg", true))).value, "ready");
    assert.equal(early.seen.resets, 1);

    const readOnlyRace = `[ 3.1] Run /init as init process\n[ 16.1] EXT4-fs (vda2): mounted filesystem a5e7 ro with ordered data mode.\n[ 18.9] Oops: int3: 0000 [#1] PREEMPT SMP PTI\n[ 19.0] Kernel panic - not syncing: Fatal exception in interrupt\n`;
    const readOnly = flakyBoot(1, () => new GuestPanicError("panicked", findKernelPanic(readOnlyRace)!));
    assert.equal((await withOneReset(readOnly.boot, readOnly.options("tcg", true))).value, "ready");
    assert.equal(readOnly.seen.resets, 1, "init ran, the root was still read-only: booting again is the same boot");

    const lateRace = `[ 3.1] Run /init as init process\n[ 35.7] EXT4-fs (vda2): re-mounted a5e7 r/w.\n[ 40.2] Oops: int3: 0000 [#1] PREEMPT SMP PTI\n[ 40.3] Kernel panic - not syncing: Fatal exception in interrupt\n`;
    const late = flakyBoot(1, () => new GuestPanicError("panicked", findKernelPanic(lateRace)!));
    await assert.rejects(withOneReset(late.boot, late.options("tcg", true)), GuestPanicError);
    assert.equal(late.seen.resets, 0, "the boot could have written the disk: a reset would not be the same boot");
  });
});

/** Makes each of `machine`'s commands take `ms` on the fake clock (a login under TCG). */
function everyLoginTakes(machine: Machine, clock: { advance(ms: number): void }, ms: number): void {
  const execute = machine.execute.bind(machine);
  machine.execute = async (command, options) => {
    const result = await execute(command, options);
    clock.advance(ms);
    return result;
  };
}

/**
 * A Machine whose `ssh` is a fake guest that answers like the real one: up 101.0 s, sshd active
 * since 99.0 s, a boot id that `systemctl reboot` changes (boot 1, 2, ...); whose banner probe is
 * `banner`, on a fake clock that sleeping advances.
 */
async function fakeGuest(
  dir: string,
  banner: () => Promise<boolean>,
  /** When sshd and systemd-user-sessions became active (µs of uptime): sshd last unless told. */
  active: { sshd: number; sessions: number } = { sshd: 99_000_000, sessions: 98_500_000 },
): Promise<{ machine: Machine; clock: Clock & { advance(ms: number): void }; consoleLog: string }> {
  await writeFile(join(dir, "boot"), "1\n");
  await writeFake(
    join(dir, "bin"),
    "ssh",
    `boot=$(cat "${join(dir, "boot")}")
id="0f1e2d3c-aaaa-bbbb-cccc-00000000000$boot"
command="\${@: -1}"
case "$command" in
  *"systemctl reboot"*) echo $((boot + 1)) > "${join(dir, "boot")}"; exit 255 ;;
  *"cat /proc/uptime"*) printf "101.00 180.00\n${active.sshd}\n\n${active.sessions}\n%s\n" "$id" ;;
  *"random/boot_id"*) echo "$id" ;;
esac`,
  );
  let now = 0;
  const clock = { now: () => now, sleep: async (ms: number) => void (now += ms), advance: (ms: number) => void (now += ms) };
  const consoleLog = join(dir, "console.log");
  const machine = new Machine({
    name: "askari",
    target: { ip: "10.234.7.10", user: "boma", keyFile: "/k", knownHostsFile: "/kh", alias: "boma-it-askari" },
    runner: new Runner({ env: { PATH: `${join(dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: join(dir, "log") } }).withRedaction((text) => text),
    log: silentLog(),
    consoleLog,
    domainState: async () => "running (booted)",
    clock,
    banner,
  });
  return { machine, clock, consoleLog };
}

describe("the clock of a restored guest", () => {
  it("is set to now with the active timers stopped across the jump and started after it: a calendar timer the jump passed does not fire", async () => {
    const tree = await tempTree();
    try {
      const bin = join(tree.dir, "bin");
      const trace = join(tree.dir, "trace");
      // ssh runs the remote command here, in a shell whose sudo, systemctl and date are fakes that leave a trace.
      await writeFake(bin, "ssh", `exec /bin/sh -c "\${@: -1}"`);
      await writeFake(bin, "sudo", `while [ "$1" != "--" ]; do shift; done; shift; exec "$@"`);
      await writeFake(
        bin,
        "systemctl",
        `if [ "$1" = list-units ]; then printf 'apt-daily.timer loaded active waiting Daily apt download activities\\nlogrotate.timer loaded active waiting Daily rotation of log files\\n'; else echo "systemctl $*" >> "${trace}"; fi`,
      );
      await writeFake(bin, "date", `echo "date $*" >> "${trace}"`);
      const machine = new Machine({
        name: "askari",
        target: { ip: "10.234.7.10", user: "boma", keyFile: "/k", knownHostsFile: "/kh", alias: "boma-it-askari" },
        runner: new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "log") } }),
        log: silentLog(),
        consoleLog: join(tree.dir, "console.log"),
        domainState: async () => "running (booted)",
      });
      await machine.setClockToNow(new Date("2026-12-03T19:00:00Z"));
      assert.deepEqual((await readFile(trace, "utf8")).trim().split("\n"), [
        "systemctl stop apt-daily.timer logrotate.timer",
        `date -u -s @${Date.parse("2026-12-03T19:00:00Z") / 1000}`,
        "systemctl start apt-daily.timer logrotate.timer",
      ]);
    } finally {
      await tree.remove();
    }
  });
});
