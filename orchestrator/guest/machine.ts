/**
 * The guest as the harness sees it: a `Machine` with a small vocabulary of verbs (after the
 * NixOS test driver): `execute` (and `executeEach`, several at once), `succeed`, `fail`, `waitFor`,
 * `waitForSsh` and `reboot`, which proves itself by a changed boot id. The checks' own waits
 * (a unit, a port, a command: the driver's `wait_for_unit` and kin) are checks.ts's, on `waitFor`.
 * Commands run as root (through the harness account's sudo) over SSH with the pinned host key,
 * sharing one master connection per boot when the target has a control path: the machine owns
 * that connection and {@link Machine.closeConnection} ends it (before a reboot; its owner calls
 * it when done with the VM).
 */
import { open, readFile, stat } from "node:fs/promises";
import { lastLine, quoteArg, type Runner } from "../../infra/runner.ts";
import { HarnessError, SystemUnderTestError } from "../errors.ts";
import { guestBatch, MAX_BATCH_SCRIPT_CHARS, type BatchCommand } from "./batch.ts";
import type { RebootKind } from "../profile/schema.ts";
import { realClock, retry, WaitError, type Clock } from "../retry.ts";
import { endMaster, masterAlive, sshBanner, sshCommandArgs, type SshTarget } from "../host/ssh.ts";
import {
  consoleBlock,
  consoleLines,
  describePanic,
  findKernelPanic,
  isTcgTextPatchRace,
  KERNEL_BANNER,
  MACHINE_RESTART,
  SHUTDOWN_ENDINGS,
  type KernelPanic,
  type ShutdownEnding,
} from "./console.ts";

/** How a command runs on the machine. */
export interface ExecuteOptions {
  timeoutMs?: number;
  /** As the harness account, not root (readiness probes). */
  asUser?: boolean;
  /** false: a connection of its own, not the master's (a command that ends the boot). */
  multiplex?: boolean;
  /** Fed on the command's stdin. */
  input?: string;
  /** The input or output holds a secret: never in a record's tail. */
  secretOutput?: boolean;
  /** How long ssh waits for the connection and sshd's greeting (default 5 s). */
  connectTimeoutSeconds?: number;
}

/** What a command on the machine did. */
export interface MachineResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  durationMs: number;
  /** The harness cut it off at its time limit: no answer, whatever the exit code says. */
  timedOut: boolean;
}

/** What the harness saw when SSH first answered after a boot. */
export interface SshReady {
  bootId: string;
  /**
   * Guest uptime when the probe that got sshd's banner connected, minus the monotonic time the
   * guest became ready for a login (sshd active and systemd-user-sessions done, the later).
   */
  readyLagSeconds: number | undefined;
  /** Guest uptime (s) when the harness got in. */
  uptimeSeconds: number;
  /** Harness-side seconds from the start of the wait until SSH answered. */
  waitedSeconds: number;
  /**
   * Seconds from power-on or the reboot command until the guest kernel started: shutdown,
   * firmware and boot loader, which `systemd-analyze` does not see (only when the wait was told
   * when that began).
   */
  beforeKernelSeconds: number | undefined;
  /** systemd's SoftRebootsCount, when the wait asked for it (a soft reboot's). */
  softReboots?: number;
}

/** A proven reboot. */
export interface RebootProof {
  /** How it rebooted; each kind has its proof (see {@link Machine.reboot}, {@link Machine.powerLoss}, {@link Machine.softReboot}). */
  kind: RebootKind;
  bootIdBefore: string;
  /** A new one, but after a soft reboot (userspace only: the same kernel, the same boot id). */
  bootIdAfter: string;
  /** From the reboot command (or the power loss) to SSH answering from the new boot or userspace. */
  seconds: number;
  ready: SshReady;
  /** power-loss: what the old boot's journal on the disk says of its end (a clean end there is no power loss: a fault). */
  previousBootEnd?: "no clean shutdown in its journal" | "no journal of it on the disk";
  /** soft: systemd's SoftRebootsCount before and after (it must have moved by one). */
  softReboots?: [number, number];
}

/** How the machine reports progress (the CLI's Log implements it). */
export interface MachineLog {
  info(message: string): void;
  progress(what: string, timeoutMs: number): (lastSeen?: string) => void;
}

/** Settings of a {@link Machine}. */
export interface MachineOptions {
  /** Name for messages: the impersonated host. */
  name: string;
  target: SshTarget;
  runner: Runner;
  log: MachineLog;
  /** Serial console log of the VM (for "last seen" and for failure messages). */
  consoleLog: string;
  /** The domain's state as libvirt reports it ("running", "shut off", ...). */
  domainState: () => Promise<string>;
  /** How the domain is powered (needed by {@link Machine.reboot} and {@link Machine.powerCycle}). */
  power?: DomainPower;
  clock?: Clock;
  signal?: AbortSignal;
  /** Whether sshd's banner is there (default: {@link sshBanner} on port 22; tests fake it). */
  banner?: (ip: string) => Promise<boolean>;
}

/**
 * The VM offers an SSH host key that is not pinned. After an apply it is the role's doing (a
 * finding: the harness never trusts a key it could not learn through an authenticated connection).
 */
export class HostKeyRejectedError extends SystemUnderTestError {
  constructor(message: string) {
    super(message);
    this.name = "HostKeyRejectedError";
  }
}

/** ssh's words when the offered host key is not the pinned one. */
const HOST_KEY_REJECTED = /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/;

/** How long an unpinned host key may be offered before a wait gives up on it (the first boot's sshd may briefly run before cloud-init wrote the keys). */
const HOST_KEY_REJECTED_GRACE_MS = 60_000;

/**
 * How long one try of a wait's probe inside the guest may take. A wait's own limit says until
 * when a new try may start, never cuts a try short: under TCG a loaded guest took 21 s to run
 * `docker exec … wget -T 5` right after its boot, and a try cut at the wait's 20 s was read as the
 * service's failure though it had not answered yet.
 */
export const PROBE_TRY_MS = 60_000;

/**
 * A soft reboot's wait that ends with the old userspace's last answer at most this long before
 * was waiting on a soft reboot that never began (a login takes up to 90 s on a loaded guest).
 */
const OLD_USERSPACE_LAST_WORD_MS = 120_000;

/** How the readiness probe's line with systemd's SoftRebootsCount begins. */
const SOFT_REBOOTS_LINE = "soft-reboots=";

/**
 * A clean end of a boot as its journal (`journalctl -o cat`) shows it: PID 1 reaching the target
 * of a reboot, power-off, halt or kexec, or handing over to systemd-shutdown. A soft reboot's
 * target is not one: the kernel runs on.
 */
const CLEAN_END_IN_JOURNAL = /^(Reached target (reboot|poweroff|halt|kexec)\.target\b.*|Shutting down\.)$/m;

/** The SSH exit status meaning "could not connect", not "the command failed". */
const SSH_CONNECTION_FAILED = 255;

/**
 * How long a boot may go from power-on, a reset or the old system's "reboot: machine restart"
 * without its kernel's first line before it counts as stalled (the firmware under TCG now and
 * then hangs there: 25-98 s seen; a kernel normally starts within 10 s).
 */
export const KERNEL_STALL_MS = 150_000;

/**
 * The domain's power, as the harness controls it (libvirt's, for a run's VM). A reboot of the
 * harness's own ends in a power-off and a fresh start, never a reset in place: see
 * {@link Machine.reboot}.
 */
export interface DomainPower {
  /** The guest's next reset powers the domain off instead (this boot only; the definition keeps restart). */
  powerOffOnReset(): Promise<void>;
  /** Undoes {@link powerOffOnReset} on a domain that still runs (a reboot given up on), so a kept VM reboots as usual. */
  restartOnReset(): Promise<void>;
  /** Starts the domain, which is off: a cold boot. */
  start(): Promise<void>;
  /** Off at once and on again (no shutdown): for a boot that never reached its kernel. */
  powerCycle(): Promise<void>;
}

/**
 * How long after libvirt says the domain is off the console may still lack the kernel's last
 * line (virtlogd drains QEMU's output on its own time).
 */
const CONSOLE_DRAIN_MS = 3000;

/** The guest under test. */
export class Machine {
  readonly name: string;
  readonly #options: MachineOptions;
  readonly #clock: Clock;
  /** Where the current boot's output begins in the console log (moved by {@link markNewBoot}). */
  #bootConsoleStart = 0;

  constructor(options: MachineOptions) {
    this.name = options.name;
    this.#options = options;
    this.#clock = options.clock ?? realClock;
  }

  /** How the machine is reached: its address, pinned key and master connection. */
  get target(): SshTarget {
    return this.#options.target;
  }

  /**
   * Runs a shell command as root; never throws for a non-zero exit (255 = SSH itself failed).
   * `multiplex: false` makes a connection of its own (for a command that ends the boot).
   */
  async execute(command: string, options: ExecuteOptions = {}): Promise<MachineResult> {
    const remote = options.asUser ? command : `sudo -n -- sh -c ${quoteArg(command)}`;
    const connection = {
      multiplex: options.multiplex ?? true,
      ...(options.connectTimeoutSeconds ? { connectTimeoutSeconds: options.connectTimeoutSeconds } : {}),
    };
    const result = await this.#options.runner.run("ssh", sshCommandArgs(this.#options.target, remote, connection), {
      check: false,
      timeoutMs: options.timeoutMs ?? 120_000,
      ...(options.input !== undefined ? { input: options.input } : {}),
      ...(options.secretOutput ? { secretOutput: true } : {}),
      ...(this.#options.signal ? { signal: this.#options.signal } : {}),
    });
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr, durationMs: result.durationMs, timedOut: result.timedOut };
  }

  /**
   * Runs several commands as root side by side through one SSH session (see batch.ts), each cut
   * off after `timeoutMs`: one result per command, in order, as {@link execute} gives it. When the
   * batch cannot be sent or its answer is not whole, each command runs on its own instead.
   */
  async executeEach(commands: readonly BatchCommand[], options: { timeoutMs?: number } = {}): Promise<MachineResult[]> {
    const tryMs = options.timeoutMs ?? 120_000;
    const alone = () =>
      Promise.all(commands.map((entry) => this.execute(entry.command, { timeoutMs: tryMs, ...(entry.input !== undefined ? { input: entry.input } : {}) })));
    if (commands.length < 2) return alone();
    const batch = guestBatch(commands, tryMs);
    if (batch.script.length > MAX_BATCH_SCRIPT_CHARS) return alone();
    // The guest cuts each command off itself; the session gets the time to say so.
    const result = await this.execute(batch.script, { timeoutMs: tryMs + 15_000 });
    if (result.timedOut) return commands.map(() => ({ ...result, stdout: "" }));
    const results = batch.read(result.stdout);
    if (results === undefined) return alone();
    return results.map((entry) => ({ ...entry, durationMs: result.durationMs }));
  }

  /** Runs a command that must succeed; returns its stdout. */
  async succeed(command: string, options: ExecuteOptions = {}): Promise<string> {
    const result = await this.execute(command, options);
    if (result.exitCode === 0) return result.stdout;
    if (result.exitCode === SSH_CONNECTION_FAILED || result.exitCode === undefined) throw this.#sshFailure(command, result.stderr);
    throw new SystemUnderTestError(`${this.name}: \`${command}\` failed with exit ${result.exitCode}: ${lastLine(result.stderr || result.stdout)}`);
  }

  /** Runs a command that must fail; returns its output. */
  async fail(command: string, options: { timeoutMs?: number } = {}): Promise<string> {
    const result = await this.execute(command, options);
    if (result.exitCode === SSH_CONNECTION_FAILED || result.exitCode === undefined) throw this.#sshFailure(command, result.stderr);
    if (result.exitCode === 0) throw new SystemUnderTestError(`${this.name}: \`${command}\` succeeded but was expected to fail`);
    return `${result.stdout}${result.stderr}`;
  }

  /** Why SSH itself failed: an unpinned host key is the VM's doing, anything else the harness's or the network's. */
  #sshFailure(command: string, stderr: string): Error {
    if (HOST_KEY_REJECTED.test(stderr)) {
      return new HostKeyRejectedError(
        `${this.name}: cannot run \`${command}\`: the VM offers an SSH host key that is not pinned (a role changed the host keys and the harness could not follow): refusing to trust it`,
      );
    }
    return new HarnessError(`${this.name}: cannot run \`${command}\`: SSH failed: ${lastLine(stderr)}`);
  }

  /** Now, on the clock this machine's waits use (for {@link waitForSsh}'s `bootBeganAt`). */
  now(): number {
    return this.#clock.now();
  }

  /**
   * Says that a new boot begins now (a reboot or a reset), or that the guest was restored from a
   * saved state: from here on, waits look for a kernel panic only in the console output that
   * follows, so a panic of a boot before does not count.
   */
  async markNewBoot(): Promise<void> {
    this.#bootConsoleStart = await stat(this.#options.consoleLog).then(
      (stats) => stats.size,
      () => 0,
    );
  }

  /**
   * For a machine made for a VM that was running before it (a verb on a kept run): the current
   * boot's output begins at the last kernel's first line on the console, so a panic of a boot
   * before it (one the run already dealt with) does not count. A VM restored since shows its
   * panics after that line too.
   */
  async markCurrentBoot(): Promise<void> {
    const console = await readFile(this.#options.consoleLog).catch(() => Buffer.alloc(0));
    const text = console.toString("latin1");
    const banner = [...text.matchAll(new RegExp(KERNEL_BANNER.source, "g"))].at(-1);
    // latin1 keeps one character per byte: the index is the byte offset; from its line's start.
    this.#bootConsoleStart = banner ? text.lastIndexOf("\n", banner.index) + 1 : 0;
  }

  /** The domain's state as libvirt says it, with its reason (`shut off (destroyed)`); empty when libvirt cannot say. */
  async domainState(): Promise<string> {
    return this.#options.domainState().catch(() => "");
  }

  /** Whether the current boot's kernel has started (its first line is on the console since {@link markNewBoot}). */
  async kernelStarted(): Promise<boolean> {
    return KERNEL_BANNER.test(await this.#consoleSince(this.#bootConsoleStart));
  }

  /** The last lines of the console since {@link markNewBoot}: what the current boot showed. */
  async currentBootConsole(lines = 20): Promise<string[]> {
    return consoleLines(await this.#consoleSince(this.#bootConsoleStart))
      .filter((line) => line.trim() !== "")
      .slice(-lines);
  }

  /**
   * A check for a wait of the current boot: says the boot stalled once {@link KERNEL_STALL_MS}
   * went by without the kernel's first line since `restartAt` (this machine's clock: power-on or
   * a reset), or, without it, since the console showed the old system restart. Read at most
   * every 2 s.
   */
  stallCheck(restartAt?: number, withinMs: number = KERNEL_STALL_MS): () => Promise<string | undefined> {
    let since = restartAt;
    let readAt = -Infinity;
    return async () => {
      if (this.#clock.now() - readAt < 2000) return undefined;
      readAt = this.#clock.now();
      const text = await this.#consoleSince(this.#bootConsoleStart);
      const restart = [...text.matchAll(new RegExp(MACHINE_RESTART, "g"))].at(-1);
      const afterRestart = restart ? text.slice(restart.index + restart[0].length) : text;
      if (KERNEL_BANNER.test(restart ? afterRestart : text)) return undefined;
      if (since === undefined && restart) since = this.#clock.now();
      if (since === undefined || this.#clock.now() - since < withinMs) return undefined;
      return `no kernel started within ${Math.round(withinMs / 1000)} s of ${restartAt === undefined ? "the old system's restart" : "power-on"} (the firmware stalled)`;
    };
  }

  /** Whether the run's master connection is up (false when it has none). */
  async hasMaster(): Promise<boolean> {
    return this.#options.target.controlPath !== undefined && masterAlive(this.#options.runner, this.#options.target.controlPath);
  }

  /** Ends the master connection, if one is open (idempotent; see {@link endMaster}). */
  async closeConnection(): Promise<void> {
    if (this.#options.target.controlPath !== undefined) await endMaster(this.#options.runner, this.#options.target.controlPath);
  }

  /** The current boot id. */
  /**
   * Sets the guest's clock to the host's now, after a saved state was restored (its clock is the
   * moment it was saved: the guest has no network time to catch up with). The active timers are
   * stopped across the jump and started again after it: a calendar timer (apt-daily, logrotate)
   * whose time the jump passed would otherwise fire at once, in the middle of the apply, where a
   * boot at this time would have scheduled it hours ahead. Commands `alongside` go through the
   * same session (each one of its own costs the guest ~0.7 s under TCG); their results are returned.
   */
  async setClockToNow(now: Date = new Date(), alongside: readonly BatchCommand[] = []): Promise<MachineResult[]> {
    const command =
      `timers=$(systemctl list-units --type=timer --state=active --plain --no-legend | awk '{print $1}'); ` +
      `[ -z "$timers" ] || systemctl stop $timers; date -u -s @${Math.floor(now.getTime() / 1000)} >/dev/null; [ -z "$timers" ] || systemctl start $timers`;
    if (alongside.length === 0) {
      await this.succeed(command);
      return [];
    }
    const [clock, ...others] = await this.executeEach([{ command }, ...alongside], { timeoutMs: 60_000 });
    if (clock!.exitCode !== 0) await this.succeed(command);
    return others;
  }

  async bootId(): Promise<string> {
    return (await this.succeed("cat /proc/sys/kernel/random/boot_id")).trim();
  }

  /**
   * Waits until SSH answers with the pinned key. sshd's banner is polled tightly (a TCP connect,
   * no login) so its start is noticed within a few hundred milliseconds; then one login reads the
   * guest's uptime, and the uptime at the moment the probe that got the banner connected is that
   * minus the harness-side time since (neither sshd's greeting nor the login's own cost is counted
   * as lag). Fails fast when the domain is off
   * and on timeout shows the console tail. `bootBeganAt` (this machine's clock) is when the VM was
   * powered on or told to reboot.
   */
  async waitForSsh(
    timeoutMs: number,
    options: {
      notBootId?: string;
      bootBeganAt?: number;
      restartAt?: number;
      /** A soft reboot's wait: the boot and userspace it began in, which do not count (a new boot id does, to be judged). */
      softRebootOf?: { bootId: string; softReboots: number };
      /** Told of every answer a login got (the boot id, and the soft reboots when asked for). */
      onAnswer?: (answer: { bootId: string; softReboots: number | undefined }) => void;
    } = {},
  ): Promise<SshReady> {
    const started = this.#clock.now();
    // A login as the harness's account is refused (pam_nologin) until systemd-user-sessions has
    // run, so the guest is ready for it when both that and sshd are.
    const probe =
      "cat /proc/uptime; systemctl show -P ActiveEnterTimestampMonotonic ssh.service systemd-user-sessions.service; " +
      `${options.softRebootOf === undefined ? "" : `echo "${SOFT_REBOOTS_LINE}$(systemctl show -P SoftRebootsCount)"; `}cat /proc/sys/kernel/random/boot_id`;
    let bannerAt: number | undefined;
    let rejectedSince: number | undefined;
    const console = this.#throttledConsoleLine();
    return this.waitFor(
      `SSH on ${this.#options.target.ip}${options.notBootId ? " after the reboot" : ""}`,
      timeoutMs,
      async () => {
        if (bannerAt === undefined) {
          // sshd accepted the probe's connect within milliseconds of its start (a port nobody
          // listens on refuses at once): that is when sshd was noticed, however long it then took to greet.
          const probedAt = this.#clock.now();
          if (!(await (this.#options.banner ?? sshBanner)(this.#options.target.ip))) return { done: false, seen: await console() };
          bannerAt = probedAt;
        }
        // This login starts the boot's master connection, which the commands after it share.
        // sshd has greeted: a login that is slow is the guest's load, not a guest that is not
        // ready. Under TCG on a busy host the first login of a boot took 20 s and more (key
        // exchange, then the session waiting for the account's user manager); one given up and
        // tried again only came later. ssh's own limit on sshd's greeting is as long: a loaded
        // guest's sshd took over 5 s to greet the login after it had greeted the probe.
        const result = await this.execute(probe, { timeoutMs: 90_000, asUser: true, connectTimeoutSeconds: 60 });
        const answeredAt = this.#clock.now();
        if (result.exitCode !== 0 && HOST_KEY_REJECTED.test(result.stderr)) {
          rejectedSince ??= answeredAt;
          if (answeredAt - rejectedSince >= HOST_KEY_REJECTED_GRACE_MS) {
            const message = `${this.name}: the VM's sshd offers a host key that is not pinned (for ${Math.round((answeredAt - rejectedSince) / 1000)} s)`;
            if (options.notBootId)
              throw new HostKeyRejectedError(
                `${message} after the reboot: a role changed the host keys in a way the harness could not follow (at boot, or after the apply's connection ended); refusing to trust it`,
              );
            throw new HarnessError(`${message} on the first boot: the seed's keys did not reach it`);
          }
        } else rejectedSince = undefined;
        if (result.exitCode !== 0) {
          bannerAt = undefined;
          await this.closeConnection();
          return { done: false, seen: lastLine(result.stderr) || (await console()) };
        }
        const all = result.stdout
          .trim()
          .split("\n")
          .filter((line) => line.trim() !== "");
        const softLine = all.find((line) => line.startsWith(SOFT_REBOOTS_LINE));
        const softReboots = softLine === undefined ? undefined : parseCount(softLine.slice(SOFT_REBOOTS_LINE.length));
        const lines = all.filter((line) => line !== softLine);
        const [uptimeLine = ""] = lines;
        const bootId = lines.at(-1) ?? "";
        const loginsSince = lines.slice(1, -1).map((line) => Number(line.trim()));
        options.onAnswer?.({ bootId: bootId.trim(), softReboots });
        const oldBoot = options.notBootId !== undefined && bootId.trim() === options.notBootId;
        const of = options.softRebootOf;
        const oldUserspace = of !== undefined && bootId.trim() === of.bootId && (softReboots === undefined || softReboots <= of.softReboots);
        if (oldBoot || oldUserspace) {
          // The old boot's (or userspace's) sshd, still up while the reboot begins: its banner does
          // not count, and the master connection this login started dies with it.
          bannerAt = undefined;
          await this.closeConnection();
          return {
            done: false,
            seen: oldBoot ? "still the old boot (reboot not started yet)" : `still the old userspace (soft reboots: ${softReboots ?? "unknown"})`,
          };
        }
        const uptimeAtBanner = Number(uptimeLine.split(" ")[0]) - (answeredAt - bannerAt) / 1000;
        const activeMicros = loginsSince.length > 0 && loginsSince.every(Number.isFinite) ? Math.max(...loginsSince) : NaN;
        const readyLagSeconds = Number.isFinite(activeMicros) && activeMicros > 0 ? Math.max(0, round2(uptimeAtBanner - activeMicros / 1e6)) : undefined;
        const uptimeSeconds = Number(uptimeLine.split(" ")[0]);
        const beforeKernelSeconds =
          options.bootBeganAt === undefined ? undefined : Math.max(0, round1((answeredAt - options.bootBeganAt) / 1000 - uptimeSeconds));
        return {
          done: true,
          value: {
            bootId: bootId.trim(),
            uptimeSeconds,
            readyLagSeconds,
            waitedSeconds: round1((answeredAt - started) / 1000),
            beforeKernelSeconds,
            ...(softReboots === undefined ? {} : { softReboots }),
          },
        };
      },
      { intervalMs: 100, maxIntervalMs: 200, withConsole: true, stall: this.stallCheck(options.restartAt) },
    );
  }

  /** The console's last line, read at most every 2 s (polling runs 5-10 times a second). */
  #throttledConsoleLine(): () => Promise<string> {
    let line = "";
    let readAt = -Infinity;
    return async () => {
      if (this.#clock.now() - readAt >= 2000) {
        line = (await this.consoleTail(1))[0] ?? "";
        readAt = this.#clock.now();
      }
      return line;
    };
  }

  /**
   * What the guest needed to boot, from `systemd-analyze time` ("Startup finished in ... =
   * 43.2s"); undefined while the boot has not finished or when it says nothing parseable.
   */
  async guestBootSeconds(): Promise<number | null> {
    const result = await this.execute("systemd-analyze time", { timeoutMs: 30_000 });
    return parseStartupFinished(result.stdout);
  }

  /**
   * Reboots and proves it: the boot id changes and SSH answers again. The guest reboots itself
   * (`systemctl reboot`: every unit stops, state saved at stop is saved, file systems are
   * unmounted, the kernel restarts the machine), and that restart powers the domain off instead
   * of resetting it in place; the harness then starts it afresh. Why: under TCG, OVMF now and then
   * stalls after a reset in place and no kernel ever starts (about one reboot in fifteen, and a
   * reset in the same process stalled again). To the guest the new boot is a cold one, as after a
   * real host's power cycle: new boot id, firmware from the start, the same disk.
   * `timeoutMs` bounds the whole reboot, shutdown and boot.
   */
  async reboot(timeoutMs: number, options: { bootIdBefore?: string } = {}): Promise<RebootProof> {
    const power = this.#power();
    const bootIdBefore = options.bootIdBefore ?? (await this.bootId());
    const started = this.#clock.now();
    this.#options.log.info(`${this.name}: rebooting (boot id ${bootIdBefore.slice(0, 8)}…)`);
    await this.markNewBoot();
    // The master connection would hang on the dead boot until ServerAlive gives up (15 s).
    await this.closeConnection();
    try {
      await power.powerOffOnReset();
    } catch (error) {
      // A domain that is no longer running cannot be told anything: say what it is, not how the telling failed.
      const state = await this.domainState();
      if (!state.startsWith("running"))
        throw new VmDownError(`${this.name}: the VM is ${state || "gone"} as its reboot begins`, state || "gone (no such domain)");
      throw error;
    }
    try {
      // The connection may drop before ssh returns: any outcome of the command itself is fine.
      await this.execute("systemctl reboot", { timeoutMs: 30_000, multiplex: false });
      await this.#waitForRestartPowerOff(timeoutMs);
    } catch (error) {
      // A guest still running (its shutdown never ended, the wait was interrupted) would power off
      // at its next reset, even one its user asks for on a kept VM: it restarts again, as defined.
      // One that is off has lost the setting with its QEMU process.
      if ((await this.domainState()).startsWith("running")) await power.restartOnReset().catch(() => undefined);
      throw error;
    }
    await power.start();
    const poweredOnAt = this.#clock.now();
    this.#options.log.info(
      `${this.name}: the old system shut down and restarted after ${round1((poweredOnAt - started) / 1000)} s; the VM powered off as told and is started afresh`,
    );
    return this.provenNewBoot("clean", { bootIdBefore, started, poweredOnAt }, Math.max(60_000, timeoutMs - (poweredOnAt - started)));
  }

  /**
   * The proof of a reboot of `kind` begun at `started` whose new boot was powered on at
   * `poweredOnAt`: SSH answers from a boot other than `bootIdBefore` within `timeoutMs`; for a
   * power loss, the old boot's journal lacks a clean end (see {@link endOfBoot}). Also what proves
   * a reboot whose first boot stalled and was powered off and on again (`bootBeganAt`: then).
   */
  async provenNewBoot(
    kind: Exclude<RebootKind, "soft">,
    boot: { bootIdBefore: string; started: number; poweredOnAt: number; bootBeganAt?: number },
    timeoutMs: number,
  ): Promise<RebootProof> {
    const { bootIdBefore, started, poweredOnAt } = boot;
    const ready = await this.waitForSsh(timeoutMs, { notBootId: bootIdBefore, bootBeganAt: boot.bootBeganAt ?? started, restartAt: poweredOnAt });
    const seconds = round1((this.#clock.now() - started) / 1000);
    if (kind === "clean") return { kind, bootIdBefore, bootIdAfter: ready.bootId, seconds, ready };
    return { kind, bootIdBefore, bootIdAfter: ready.bootId, seconds, ready, previousBootEnd: await this.endOfBoot(bootIdBefore) };
  }

  /**
   * A power loss, and proves it: the domain goes off at once, with no shutdown (nothing is
   * flushed but what the guest had written to its disk), and on again. Proven by a new boot id
   * and, when the guest keeps its journal on the disk, by the old boot's journal lacking a clean
   * end (one with a clean end was shut down, not powered off: a {@link RebootUnprovenError}).
   * The harness's own power-off is the test; a domain already off as it begins was someone
   * else's doing ({@link VmDownError}).
   */
  async powerLoss(timeoutMs: number, options: { bootIdBefore?: string } = {}): Promise<RebootProof> {
    const power = this.#power();
    const bootIdBefore = options.bootIdBefore ?? (await this.bootId());
    const state = await this.domainState();
    if (!state.startsWith("running"))
      throw new VmDownError(`${this.name}: the VM is ${state || "gone"} as its power loss begins`, state || "gone (no such domain)");
    const started = this.#clock.now();
    this.#options.log.info(`${this.name}: power loss (boot id ${bootIdBefore.slice(0, 8)}…): off at once, no shutdown, then on`);
    await this.markNewBoot();
    await this.closeConnection();
    await power.powerCycle();
    const poweredOnAt = this.#clock.now();
    return this.provenNewBoot("power-loss", { bootIdBefore, started, poweredOnAt }, Math.max(60_000, timeoutMs - (poweredOnAt - started)));
  }

  /** What boot `bootId`'s journal on the disk says of its end; throws when it ended cleanly (see {@link powerLoss}). */
  async endOfBoot(bootId: string): Promise<NonNullable<RebootProof["previousBootEnd"]>> {
    // PID 1's own words only: a service that logs "Shutting down." is no clean end.
    const command = `journalctl -q -o cat --no-pager -n 400 -b ${bootId.replace(/-/g, "")} _PID=1`;
    const journal = await this.execute(command, { timeoutMs: 60_000 });
    if (journal.exitCode === SSH_CONNECTION_FAILED || journal.exitCode === undefined) throw this.#sshFailure(command, journal.stderr);
    if (journal.exitCode !== 0 || journal.stdout.trim() === "") return "no journal of it on the disk";
    const end = CLEAN_END_IN_JOURNAL.exec(journal.stdout);
    if (end) {
      throw new RebootUnprovenError(
        `${this.name}: the boot before the power loss (${bootId}) ends cleanly by its journal ("${end[0]}"): it was shut down, not powered off; that was no power loss`,
      );
    }
    return "no clean shutdown in its journal";
  }

  /**
   * A soft reboot (`systemctl soft-reboot`: every unit stops and the userspace starts again on the
   * same kernel), and proves it by systemd's SoftRebootsCount moving by one with the same boot
   * id. A userspace that answers throughout with the counter unmoved never soft-rebooted, and a
   * new boot id is a full reboot: neither is a pass, both a {@link RebootUnprovenError}.
   */
  async softReboot(timeoutMs: number): Promise<RebootProof> {
    const bootIdBefore = await this.bootId();
    const counted = (await this.succeed("systemctl show -P SoftRebootsCount")).trim();
    const before = parseCount(counted);
    if (before === undefined) {
      throw new RebootUnprovenError(
        `${this.name}: the guest's systemd cannot prove a soft reboot: it has no SoftRebootsCount (systemd 256 or later has), found ${JSON.stringify(counted)}`,
      );
    }
    const started = this.#clock.now();
    this.#options.log.info(`${this.name}: soft reboot (userspace only; boot id ${bootIdBefore.slice(0, 8)}…, soft reboots so far: ${before})`);
    await this.closeConnection();
    // The connection may drop before ssh returns (255), or the command may be cut off: both fine.
    const asked = await this.execute("systemctl soft-reboot", { timeoutMs: 30_000, multiplex: false });
    // Refused as root on a guest that knows soft reboots (its counter was read above): the guest
    // as the change left it will not soft-reboot (a masked target, a unit that conflicts), which
    // the real host would refuse too: the change's finding, not the harness's.
    if (asked.exitCode !== 0 && asked.exitCode !== SSH_CONNECTION_FAILED && !asked.timedOut) {
      throw new SystemUnderTestError(
        `${this.name}: the guest refused a soft reboot: \`systemctl soft-reboot\` failed with exit ${asked.exitCode}: ${lastLine(asked.stderr || asked.stdout)}`,
      );
    }
    // When the old userspace last answered: until the wait's end, the soft reboot never began;
    // long before it, it began and the new userspace never answered (the change's finding).
    let oldAnsweredAt: number | undefined;
    let ready: SshReady;
    try {
      ready = await this.waitForSsh(timeoutMs, {
        softRebootOf: { bootId: bootIdBefore, softReboots: before },
        onAnswer: (answer) => {
          if (answer.bootId === bootIdBefore && answer.softReboots === before) oldAnsweredAt = this.#clock.now();
        },
      });
    } catch (error) {
      if (oldAnsweredAt !== undefined && this.#clock.now() - oldAnsweredAt <= OLD_USERSPACE_LAST_WORD_MS) {
        throw new RebootUnprovenError(
          `${this.name}: the soft reboot never happened: the old userspace answered until the wait ended, its SoftRebootsCount still ${before}`,
          { cause: error },
        );
      }
      throw error;
    }
    if (ready.bootId !== bootIdBefore) {
      throw new RebootUnprovenError(
        `${this.name}: after \`systemctl soft-reboot\` the boot id changed (${bootIdBefore.slice(0, 8)}… → ${ready.bootId.slice(0, 8)}…): the kernel was rebooted, which a soft reboot never does`,
      );
    }
    return {
      kind: "soft",
      bootIdBefore,
      bootIdAfter: ready.bootId,
      seconds: round1((this.#clock.now() - started) / 1000),
      ready,
      softReboots: [before, ready.softReboots ?? before],
    };
  }

  /**
   * Off at once and on again, no shutdown (a boot that stalled before its kernel, or hit QEMU's
   * race before it could write the disk: the next boot is the same boot). Waits
   * of the new boot look at its console only.
   */
  async powerCycle(): Promise<void> {
    await this.markNewBoot();
    await this.#power().powerCycle();
  }

  #power(): DomainPower {
    if (!this.#options.power) throw new HarnessError(`${this.name}: the harness has no power control over this VM: it cannot reboot it`);
    return this.#options.power;
  }

  /** How the current boot's shutdown ended, by the kernel's last line on the console (undefined: it says nothing yet). */
  async shutdownEnding(): Promise<ShutdownEnding | undefined> {
    const text = await this.#consoleSince(this.#bootConsoleStart);
    let last: { ending: ShutdownEnding; at: number } | undefined;
    for (const [ending, pattern] of SHUTDOWN_ENDINGS) {
      const found = [...text.matchAll(new RegExp(pattern, "g"))].at(-1);
      if (found && (!last || found.index > last.at)) last = { ending, at: found.index };
    }
    return last?.ending;
  }

  /**
   * Waits until the old system has shut down and its restart powered the domain off. Any other
   * end is thrown as a {@link VmDownError} with libvirt's state and the console's word on it: the
   * guest powered off or halted instead (the change's finding), the domain was destroyed from
   * the host or vanished (not the guest's doing), or it crashed.
   */
  async #waitForRestartPowerOff(timeoutMs: number): Promise<void> {
    let offSince: number | undefined;
    await this.waitFor(
      "the old system to shut down and restart (the restart powers the VM off)",
      timeoutMs,
      async () => {
        const state = await this.#options.domainState();
        if (state === "" || state.startsWith("running") || state.startsWith("in shutdown")) {
          return { done: false, seen: (await this.currentBootConsole(1))[0] ?? "no console output yet" };
        }
        const ending = await this.shutdownEnding();
        // A libvirt that handles the reset itself (no QEMU set-action) reports it as destroyed.
        if (/^shut off \((shutdown|destroyed)\)/.test(state) && ending === "restart") return { done: true, value: undefined };
        if (/^shut off \(shutdown\)/.test(state)) {
          offSince ??= this.#clock.now();
          if (ending === undefined && this.#clock.now() - offSince < CONSOLE_DRAIN_MS)
            return { done: false, seen: "the VM is off; reading the console's last lines" };
        }
        const word = ending === undefined ? "its console does not say how the shutdown ended" : `its kernel's last word: ${ending}`;
        throw new VmDownError(
          `${this.name}: the VM is ${state} where its reboot should have restarted it (${word})${consoleBlock(this.#options.consoleLog, await this.currentBootConsole(15))}`,
          state,
          ending,
        );
      },
      { intervalMs: 500, maxIntervalMs: 1000, domainMayStop: true, withConsole: true },
    );
  }

  /** The last lines of the serial console (empty when there is none yet). */
  async consoleTail(lines = 20): Promise<string[]> {
    try {
      const text = await readFile(this.#options.consoleLog, "utf8");
      return consoleLines(text)
        .filter((line) => line.trim() !== "")
        .slice(-lines);
    } catch {
      return [];
    }
  }

  /**
   * The panic of the current boot as the serial console shows it (see {@link findKernelPanic}),
   * read at most every 2 s: a panicked guest stays "running" for libvirt, so without this a wait
   * would sit out its whole timeout.
   */
  #throttledPanicCheck(): () => Promise<KernelPanic | undefined> {
    let readAt = -Infinity;
    return async () => {
      if (this.#clock.now() - readAt < 2000) return undefined;
      readAt = this.#clock.now();
      return findKernelPanic(await this.#consoleSince(this.#bootConsoleStart));
    };
  }

  /** The console log from a byte offset on (all of it when the log is shorter: rotated). */
  async #consoleSince(offset: number): Promise<string> {
    let file;
    try {
      file = await open(this.#options.consoleLog, "r");
    } catch {
      return "";
    }
    try {
      const { size } = await file.stat();
      const from = offset <= size ? offset : 0;
      const buffer = Buffer.alloc(size - from);
      await file.read(buffer, 0, buffer.length, from);
      return buffer.toString("utf8");
    } finally {
      await file.close();
    }
  }

  /**
   * The machine's one way of waiting: retries `attempt` with progress lines, gives up at once when
   * the VM is no longer running or its kernel panicked, and (withConsole) puts the serial console's
   * tail into the error.
   */
  async waitFor<T>(
    what: string,
    timeoutMs: number,
    attempt: () => Promise<{ done: true; value: T } | { done: false; seen: string }>,
    options: {
      intervalMs?: number;
      maxIntervalMs?: number;
      withConsole?: boolean;
      /** Says why the boot will never come (it stalled before its kernel), or undefined while it may. */
      stall?: () => Promise<string | undefined>;
      /** The domain going off is what `attempt` waits for and judges: no fail-fast on it. */
      domainMayStop?: boolean;
    } = {},
  ): Promise<T> {
    const progress = this.#options.log.progress(`${this.name}: ${what}`, timeoutMs);
    const panicked = this.#throttledPanicCheck();
    let panic: KernelPanic | undefined;
    try {
      return await retry(attempt, {
        what: `${this.name}: ${what}`,
        timeoutMs,
        clock: this.#clock,
        onAttempt: progress,
        ...(options.intervalMs ? { intervalMs: options.intervalMs } : {}),
        ...(options.maxIntervalMs ? { maxIntervalMs: options.maxIntervalMs } : {}),
        ...(this.#options.signal ? { signal: this.#options.signal } : {}),
        failFast: async () => {
          const state = options.domainMayStop ? "" : await this.#options.domainState();
          if (state !== "" && !state.startsWith("running")) {
            const tail = await this.consoleTail(15);
            throw new VmDownError(`gave up waiting for ${this.name}: ${what}: the VM is ${state}${consoleBlock(this.#options.consoleLog, tail)}`, state);
          }
          const stalled = await options.stall?.();
          if (stalled)
            throw new BootStallError(
              `gave up waiting for ${this.name}: ${what}: ${stalled}${consoleBlock(this.#options.consoleLog, await this.consoleTail(15))}`,
            );
          panic = await panicked();
          return panic ? `the guest kernel panicked: ${describePanic(panic)}` : undefined;
        },
      });
    } catch (error) {
      if (!(error instanceof WaitError)) throw error;
      const tail = options.withConsole || panic ? await this.consoleTail(15) : [];
      const message = `${error.message}${consoleBlock(this.#options.consoleLog, tail)}`;
      if (panic) throw new GuestPanicError(message, panic, { cause: error });
      if (!options.withConsole) throw error;
      throw new HarnessError(message, { cause: error });
    }
  }
}

/** A count as a command prints it; undefined when it is none (empty: systemd does not know the property). */
function parseCount(text: string): number | undefined {
  return /^\d+$/.test(text.trim()) ? Number(text.trim()) : undefined;
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}

/** The panic, when `error` is QEMU TCG's text-patching race in a guest that runs under TCG. */
export function tcgRaceOf(error: unknown, accel: string): KernelPanic | undefined {
  return error instanceof GuestPanicError && accel === "tcg" && isTcgTextPatchRace(error.panic) ? error.panic : undefined;
}

/** A wait ended because the guest kernel panicked (exit 4 unless the caller decides otherwise). */
export class GuestPanicError extends HarnessError {
  readonly panic: KernelPanic;
  constructor(message: string, panic: KernelPanic, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = "GuestPanicError";
    this.panic = panic;
  }
}

/** A wait ended because the domain is not running any more (`state` as libvirt says it, with its reason). */
export class VmDownError extends HarnessError {
  readonly state: string;
  /** How the guest's shutdown ended by its console, when it shut down (see {@link Machine.shutdownEnding}). */
  readonly ending: ShutdownEnding | undefined;
  constructor(message: string, state: string, ending?: ShutdownEnding) {
    super(message);
    this.name = "VmDownError";
    this.state = state;
    this.ending = ending;
  }

  /** Whether the guest itself powered off (as opposed to the host destroying it, or a crash). */
  get guestShutdown(): boolean {
    return /\(shutdown\)/.test(this.state);
  }
}

/**
 * A reboot's proof failed: it was not the kind of reboot the harness asked for (a soft reboot
 * whose counter never moved, a power loss whose old boot ended cleanly). The harness's fault,
 * never a verdict.
 */
export class RebootUnprovenError extends HarnessError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = "RebootUnprovenError";
  }
}

/** A boot stalled before its kernel started (the firmware under TCG): nothing of the guest ran. */
export class BootStallError extends HarnessError {
  constructor(message: string) {
    super(message);
    this.name = "BootStallError";
  }
}

/** The total of systemd-analyze's "Startup finished in ... = 1min 2.345s" line, in seconds. */
export function parseStartupFinished(text: string): number | null {
  const total = /Startup finished in .*= ((?:\d+min )?[\d.]+(?:ms|s))\s*$/m.exec(text)?.[1];
  if (!total) return null;
  const minutes = Number(/(\d+)min/.exec(total)?.[1] ?? 0);
  const rest = /([\d.]+)(ms|s)$/.exec(total)!;
  const seconds = Number(rest[1]) / (rest[2] === "ms" ? 1000 : 1);
  return round1(minutes * 60 + seconds);
}
