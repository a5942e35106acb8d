/**
 * A fake VM with a power switch, for the reboot's judgement: a real {@link Machine} whose `ssh`
 * is a tiny fake guest (boot id, uptime, `systemctl reboot`) and whose domain plays libvirt's
 * states and the serial console as a real one does through a reboot. How each shutdown ends is
 * scripted: the restart the guest asked for (which powers the domain off when the harness said
 * so, as QEMU's set-action does, and resets it in place otherwise), a power-off or a halt of the
 * guest's own, a destroy from outside, a crash, or no end at all; and whether each boot after a
 * start reaches its kernel. Time is a fake clock that sleeping advances.
 */
import { appendFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Runner } from "../../infra/runner.ts";
import { secretsOf } from "../../orchestrator/ansible/secrets.ts";
import { Machine } from "../../orchestrator/guest/machine.ts";
import type { Libvirt } from "../../orchestrator/host/libvirt.ts";
import { NO_ANSIBLE_ARGS } from "../../orchestrator/run/options.ts";
import type { ScenarioReport } from "../../orchestrator/run/report.ts";
import type { ScenarioVm, StepContext } from "../../orchestrator/run/stages.ts";
import { writeFake } from "./fakes.ts";
import { silentLog } from "./fixtures.ts";

/** How the old system's shutdown ends. */
export type ShutdownEnd = "restart" | "power-off" | "halt" | "destroyed" | "crashed" | "never" | "silent-power-off";

/**
 * How a boot after a power-on goes: its kernel starts and SSH answers with a new boot id; it
 * stalls before its kernel; its kernel panics (QEMU's TCG race, 3 s in); or it answers with the
 * boot id of the boot before (a guest that never rebooted).
 */
export type BootStart = "kernel" | "stall" | "panic" | "same-boot-id";

/** The tail of a real serial console of a guest that panicked 3 s into boot under TCG (CI, 2026-11-22). */
export const PANICKED_BOOT = [
  "[    2.634922] clocksource: Switched to clocksource tsc",
  "[    2.840010] sched_clock: Marking stable (2800069033, 37211961)->(2889610973, -52329979)",
  "[    2.842217] Oops: int3: 0000 [#1] PREEMPT SMP PTI",
  "[    2.842509] CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.107+deb13-amd64 #1  Debian 6.12.107-1",
  "[    2.842677] RIP: 0010:sched_clock_cpu+0x9/0x1d0",
  "[    2.844449] Kernel panic - not syncing: Fatal exception in interrupt",
  "[    2.858578] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---",
  "",
].join("\r\n");

/**
 * What `systemctl soft-reboot` does: the userspace restarts (SoftRebootsCount one up); nothing
 * happens; the kernel reboots instead (a new boot id); the guest's systemd does not know soft
 * reboots (no SoftRebootsCount); the new userspace never answers SSH, at once or after the old
 * one answered one more login while it stopped; the guest refuses it (a unit masks its target).
 */
export type SoftReboot = "restarts" | "nothing" | "new-boot" | "unsupported" | "no-answer" | "old-once-then-no-answer" | "masked";

/** What the fake domain was told, in order ("power-off-on-reset", "start", "power-cycle"). */
export interface FakeDomain {
  machine: Machine;
  consoleLog: string;
  calls: string[];
  clock: { now(): number };
  /** libvirt's state now. */
  state(): string;
  /** Sets libvirt's state (someone else's doing). */
  setState(state: string): void;
}

const RESTART_LINES = "[  222.1] systemd-shutdown[1]: Rebooting.\r\n[  222.2] reboot: Restarting system\r\n[  222.2] reboot: machine restart\r\n";
const SHUTDOWN_LINES: Record<ShutdownEnd, string> = {
  restart: RESTART_LINES,
  "power-off": "[  222.1] systemd-shutdown[1]: Powering off.\r\n[  222.2] reboot: Power down\r\n",
  halt: "[  222.1] systemd-shutdown[1]: Halting system.\r\n[  222.2] reboot: System halted\r\n",
  destroyed: "[  221.0] systemd[1]: Stopping docker.service...\r\n",
  crashed: "[  221.0] systemd[1]: Stopping docker.service...\r\n",
  never: "[  221.0] systemd-shutdown[1]: Waiting for process: 812 (hang-on-stop)\r\n",
  "silent-power-off": "",
};

/**
 * A Machine on a fake domain. `ends[i]` is how the i-th shutdown ends, `starts[i]` how the i-th
 * boot after a power-on goes (the last entry repeats).
 */
export async function fakeDomain(
  dir: string,
  script: {
    ends: ShutdownEnd[];
    starts?: BootStart[];
    console?: string;
    /** Someone destroys the domain just as the reboot begins. */ destroyedAtReboot?: boolean;
    /** What `systemctl soft-reboot` does (default: the userspace restarts, SoftRebootsCount one up). */
    soft?: SoftReboot;
    /** What the journal holds of the boot before (default: it ends without a clean shutdown). */
    journal?: "crash" | "clean" | "none";
  },
): Promise<FakeDomain> {
  await mkdir(dir, { recursive: true });
  const bootFile = join(dir, "boot");
  const upFile = join(dir, "up");
  await writeFile(bootFile, "1\n");
  await writeFile(upFile, "yes\n");
  const rebootAsked = join(dir, "reboot-asked");
  const softFile = join(dir, "soft-reboots");
  await writeFile(softFile, script.soft === "unsupported" ? "\n" : "0\n");
  const soft = script.soft ?? "restarts";
  const onSoftReboot = {
    restarts: `echo $(( $(cat "${softFile}") + 1 )) > "${softFile}"; exit 255`,
    nothing: "exit 0",
    "new-boot": `echo $(( boot + 1 )) > "${bootFile}"; exit 255`,
    unsupported: "echo \"Unknown command verb 'soft-reboot'.\" >&2; exit 1",
    "no-answer": `echo no > "${upFile}"; exit 255`,
    "old-once-then-no-answer": `touch "${join(dir, "stopping")}"; exit 255`,
    masked: "echo 'Failed to start soft-reboot.target: Unit soft-reboot.target is masked.' >&2; exit 1",
  }[soft];
  const journal = {
    crash: 'printf "Started kazi-web.service - kazi web site.\\nnftables: ruleset loaded\\n"',
    clean: 'printf "Stopped kazi-web.service.\\nReached target reboot.target - System Reboot.\\nShutting down.\\n"',
    none: 'echo "No journal files were found." >&2; exit 1',
  }[script.journal ?? "crash"];
  await writeFake(
    join(dir, "bin"),
    "ssh",
    `boot=$(cat "${bootFile}")
id="0f1e2d3c-aaaa-bbbb-cccc-00000000000$boot"
command="\${@: -1}"
[ "$(cat "${upFile}")" = yes ] || { echo "ssh: connect to host 10.234.7.10 port 22: No route to host" >&2; exit 255; }
case "$command" in
  *"systemctl reboot"*) echo yes > "${rebootAsked}"; exit 255 ;;
  *"systemctl soft-reboot"*) ${onSoftReboot} ;;
  *"cat /proc/uptime"*)
    [ -e "${join(dir, "stopping")}" ] && { rm "${join(dir, "stopping")}"; echo no > "${upFile}"; }
    printf "31.00 50.00\\n29000000\\n\\n28000000\\n"
    case "$command" in *SoftRebootsCount*) echo "soft-reboots=$(cat "${softFile}")" ;; esac
    echo "$id" ;;
  *"SoftRebootsCount"*) cat "${softFile}" ;;
  *"journalctl"*) ${journal} ;;
  *"random/boot_id"*) echo "$id" ;;
esac`,
  );
  const consoleLog = join(dir, "console.log");
  await writeFile(consoleLog, script.console ?? "[    0.000000] Linux version 6.12.57+deb13-cloud-amd64\r\n");
  let now = 0;
  const clock = { now: () => now, sleep: async (ms: number) => void (now += ms) };
  const calls: string[] = [];
  let state = "running (booted)";
  let powerOffOnReset = false;
  let shutdowns = 0;
  let starts = 0;
  let shutdownPolls = 0;
  const pick = <T>(list: readonly T[], index: number): T => list[Math.min(index, list.length - 1)]!;
  const setUp = (up: boolean) => writeFile(upFile, up ? "yes\n" : "no\n");

  const powerOn = async () => {
    state = "running (booted)";
    powerOffOnReset = false;
    const start = pick(script.starts ?? ["kernel"], starts++);
    if (start === "stall") {
      await appendFile(consoleLog, 'BdsDxe: loading Boot0001 "debian"\r\n');
      return;
    }
    await appendFile(consoleLog, "BdsDxe: starting Boot0001\r\n[    0.000000] Linux version 6.12.57+deb13-cloud-amd64\r\n");
    if (start === "panic") {
      await appendFile(consoleLog, PANICKED_BOOT);
      return;
    }
    if (start === "kernel") await writeFile(bootFile, `${Number(await readFile(bootFile, "utf8")) + 1}\n`);
    await appendFile(consoleLog, "[    4.7] Run /init as init process\r\n");
    await setUp(true);
  };

  // The guest's shutdown takes a few of the harness's polls, then ends as scripted.
  const domainState = async (): Promise<string> => {
    const asked = (await readFile(rebootAsked, "utf8").catch(() => "")) === "yes\n";
    if (!asked || !state.startsWith("running")) return state;
    await setUp(false);
    if (++shutdownPolls < 3) return state;
    const end = pick(script.ends, shutdowns++);
    shutdownPolls = 0;
    if (end === "never") {
      await appendFile(consoleLog, SHUTDOWN_LINES.never);
      shutdowns -= 1;
      return state;
    }
    await writeFile(rebootAsked, "");
    await appendFile(consoleLog, SHUTDOWN_LINES[end]);
    if (end === "restart" && !powerOffOnReset) {
      // A reset in place: the same process boots again.
      await powerOn();
      return state;
    }
    state = {
      restart: "shut off (shutdown)",
      "power-off": "shut off (shutdown)",
      halt: "shut off (shutdown)",
      "silent-power-off": "shut off (shutdown)",
      destroyed: "shut off (destroyed)",
      crashed: "shut off (crashed)",
    }[end];
    return state;
  };

  const machine = new Machine({
    name: "askari",
    target: { ip: "10.234.7.10", user: "boma", keyFile: "/k", knownHostsFile: "/kh", alias: "boma-it-askari" },
    runner: new Runner({ env: { PATH: `${join(dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: join(dir, "log") } }).withRedaction((text) => text),
    log: silentLog(),
    consoleLog,
    domainState,
    power: {
      powerOffOnReset: async () => {
        calls.push("power-off-on-reset");
        if (script.destroyedAtReboot) {
          state = "shut off (destroyed)";
          throw new Error("error: Requested operation is not valid: domain is not running");
        }
        powerOffOnReset = true;
      },
      restartOnReset: async () => {
        calls.push("restart-on-reset");
        powerOffOnReset = false;
      },
      start: async () => {
        calls.push("start");
        if (state.startsWith("running")) throw new Error("virsh: error: Domain is already active");
        await powerOn();
      },
      powerCycle: async () => {
        calls.push("power-cycle");
        await powerOn();
      },
    },
    clock,
    banner: async () => (await readFile(upFile, "utf8")) === "yes\n" && state.startsWith("running"),
  });
  return {
    machine,
    consoleLog,
    calls,
    clock,
    state: () => state,
    setState: (next) => {
      state = next;
    },
  };
}

/**
 * A scenario's step context and session around a machine (real or played by a method-level
 * fake): the profile has one check ("web"), `libvirt` and `runner` are the caller's when given.
 */
export function aroundMachine(
  machine: Machine,
  sshMs = 1000,
  extra: { libvirt?: Libvirt; runner?: Runner; outputs?: Partial<ScenarioVm["outputs"]>; dir?: string } = {},
) {
  const report = {
    bootIds: [],
    readyLagSeconds: [],
    beforeKernelSeconds: [],
    guestBootSeconds: [],
    bootResets: [],
    firstBoot: null,
    phases: [],
    checks: [],
    snapshotDiff: null,
  } as unknown as ScenarioReport;
  const session: ScenarioVm = {
    machine,
    outputs: { domain: "boma-it-askari-x", ip: "10.234.7.10", ...extra.outputs } as ScenarioVm["outputs"],
    report,
    dir: extra.dir ?? "/nonexistent",
    timed: (_name, body) => body(),
  };
  const context = {
    profile: { document: { checks: [{ name: "web", tcp: { port: 8080 }, within: 1 }] } },
    certs: { tier: "internal" },
    secrets: secretsOf([]),
    log: silentLog(),
    signal: new AbortController().signal,
    accel: { accel: "tcg", reason: "" },
    libvirt: extra.libvirt ?? ({} as Libvirt),
    ...(extra.runner ? { runner: extra.runner } : {}),
    timeouts: { leaseMs: sshMs, sshMs, cloudInitMs: sshMs },
    ansible: NO_ANSIBLE_ARGS,
  } as unknown as StepContext;
  return { session, context, report };
}
