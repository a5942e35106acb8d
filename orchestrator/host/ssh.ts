/**
 * SSH to a run's VM with its per-run key and its pinned host key: the known_hosts file holds
 * the key the seed gave the VM, under an alias (the run id), so the first connection is already
 * verified and StrictHostKeyChecking stays on.
 */
import { lstat, mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";

/** Everything needed to reach a VM. */
export interface SshTarget {
  ip: string;
  user: string;
  keyFile: string;
  knownHostsFile: string;
  /** Host key alias in known_hosts (the run id). */
  alias: string;
  /**
   * Socket of the run's SSH master connection (see {@link controlPathFor}): when set, commands
   * share one connection instead of paying a login each (~0.8 s under TCG).
   */
  controlPath?: string;
}

/** The target of a run from its stack outputs. */
export function sshTargetOf(outputs: StackOutputs): SshTarget {
  return { ip: outputs.ip, user: outputs.user, keyFile: outputs.keyFile, knownHostsFile: outputs.knownHostsFile, alias: outputs.runId };
}

/** ssh options shared by every connection to a run's VM (the harness's, Ansible's, `boma-it ssh`). */
export function sshOptions(target: SshTarget, connectTimeoutSeconds = 5): string[] {
  return confinedSshOptions(target, { connectTimeoutSeconds, multiplex: false });
}

/**
 * The options that make a connection the run's and nothing else, first on every ssh command line
 * (OpenSSH keeps the first value of an option, so nothing after them changes these): no config
 * file but these (`-F /dev/null`: the user's `Host *`, ProxyJump or ControlPath never apply), the
 * VM's address, port and user, the run's key alone (no agent, no default keys, no certificate),
 * the host key pinned under the run's alias, no jump host, no forwarding, no local command, no
 * password prompt. With the target's control path (and `multiplex`), commands share the run's
 * master connection (ControlMaster=auto: the first starts it); otherwise each connects on its own.
 */
export function confinedSshOptions(target: SshTarget, options: { connectTimeoutSeconds?: number; multiplex?: boolean | "join" } = {}): string[] {
  // "join": only ever a passenger of the connection at the control path (a jailed Ansible's ssh).
  const multiplexing =
    target.controlPath === undefined || options.multiplex === false
      ? ["ControlMaster=no", "ControlPath=none"]
      : options.multiplex === "join"
        ? ["ControlMaster=no", `ControlPath=${target.controlPath}`]
        : ["ControlMaster=auto", `ControlPath=${target.controlPath}`, `ControlPersist=${MASTER_IDLE_SECONDS}`];
  return [
    "-F",
    "/dev/null",
    ...[
      `HostName=${target.ip}`,
      "Port=22",
      `User=${target.user}`,
      `IdentityFile=${target.keyFile}`,
      ...pinnedHostKeySettings(target, options.connectTimeoutSeconds ?? 5),
      ...multiplexing,
    ].flatMap((setting) => ["-o", setting]),
  ];
}

/** The `-o` options that pin the host key and bound the connection. */
export function pinnedHostKeyOptions(target: SshTarget, connectTimeoutSeconds = 5): string[] {
  return pinnedHostKeySettings(target, connectTimeoutSeconds).flatMap((setting) => ["-o", setting]);
}

function pinnedHostKeySettings(target: SshTarget, connectTimeoutSeconds: number): string[] {
  return [
    "IdentitiesOnly=yes",
    "IdentityAgent=none",
    "PKCS11Provider=none",
    `UserKnownHostsFile=${target.knownHostsFile}`,
    "GlobalKnownHostsFile=/dev/null",
    `HostKeyAlias=${target.alias}`,
    "StrictHostKeyChecking=yes",
    "UpdateHostKeys=no",
    "CheckHostIP=no",
    "KnownHostsCommand=none",
    "ProxyJump=none",
    "ProxyCommand=none",
    "ClearAllForwardings=yes",
    "ForwardAgent=no",
    "ForwardX11=no",
    "PermitLocalCommand=no",
    "Tunnel=no",
    "PasswordAuthentication=no",
    "KbdInteractiveAuthentication=no",
    "PreferredAuthentications=publickey",
    "BatchMode=yes",
    `ConnectTimeout=${connectTimeoutSeconds}`,
    "ServerAliveInterval=5",
    "ServerAliveCountMax=3",
    "LogLevel=ERROR",
  ];
}

/**
 * How long an idle master connection lives on its own. Its owner closes it long before (before a
 * reboot, at teardown); this bounds a master whose harness was killed while the VM lives on.
 */
export const MASTER_IDLE_SECONDS = 300;

/**
 * argv (without the program) for running `command` on the VM, non-interactively. With the
 * target's `controlPath` (and `multiplex` not false) the command goes through the run's master
 * connection, which the first such command starts (ControlMaster=auto: when two race, the loser
 * simply connects on its own); otherwise it makes a connection of its own, whatever the user's
 * ssh_config says about multiplexing.
 */
export function sshCommandArgs(target: SshTarget, command: string, options: { connectTimeoutSeconds?: number; multiplex?: boolean } = {}): string[] {
  return [...confinedSshOptions(target, options), "-T", `${target.user}@${target.ip}`, "--", command];
}

/**
 * Tells the master connection at `controlPath` to exit (it removes its socket as it goes). A
 * socket no master answers on any more (its ssh was killed) is removed here, so the next
 * command starts a new master. Nothing there: nothing run.
 */
export async function endMaster(runner: Runner, controlPath: string): Promise<void> {
  if (
    !(await stat(controlPath).then(
      () => true,
      () => false,
    ))
  )
    return;
  // ssh wants a destination even for -O; the master behind the socket is the one that answers.
  const result = await runner.run("ssh", ["-o", `ControlPath=${controlPath}`, "-O", "exit", "boma-it-master"], { check: false, timeoutMs: 10_000 });
  if (result.exitCode !== 0) await rm(controlPath, { force: true });
}

/**
 * Keeps the run's master connection up while `signal` is not aborted: every 2 s, when none
 * answers (a role rebooted the VM, an idle master ended), a command starts a new one as soon as
 * the VM takes it. A jailed Ansible has no network of its own: its connections only ride this
 * master (through the jail's gate), and Ansible's own retries (the reboot module's wait) go on
 * until it is back.
 */
export async function keepMaster(runner: Runner, target: SshTarget, signal: AbortSignal): Promise<void> {
  const controlPath = target.controlPath;
  if (controlPath === undefined) return;
  let checkedAt = Date.now();
  while (!signal.aborted) {
    // A master removes its socket as it ends; asking it (a command of its own) is for every 30 s.
    const present = await stat(controlPath).then(
      () => true,
      () => false,
    );
    const gone = !present || (Date.now() - checkedAt >= 30_000 && !(await masterAlive(runner, controlPath)));
    if (present && Date.now() - checkedAt >= 30_000) checkedAt = Date.now();
    if (gone) {
      if (present) await endMaster(runner, controlPath);
      await startMaster(runner, target, signal);
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2000);
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
  }
}

/** Starts the target's master connection (a command of its own, which leaves it listening); fails quietly: the caller checks. */
async function startMaster(runner: Runner, target: SshTarget, signal?: AbortSignal): Promise<void> {
  await runner
    .run("ssh", sshCommandArgs(target, "true", { connectTimeoutSeconds: 10 }), { check: false, timeoutMs: 30_000, ...(signal ? { signal } : {}) })
    .catch(() => undefined);
}

/**
 * Makes sure the target's master connection answers before something relies on it (the jail's
 * gate relays to it alone: a play that starts while no master listens cannot connect at all).
 * Whether it does in the end is returned; the caller decides.
 */
export async function ensureMaster(runner: Runner, target: SshTarget): Promise<boolean> {
  if (target.controlPath === undefined) return false;
  if (await masterAlive(runner, target.controlPath)) return true;
  await startMaster(runner, target);
  return masterAlive(runner, target.controlPath);
}

/** Whether a master connection answers at `controlPath`. */
export async function masterAlive(runner: Runner, controlPath: string): Promise<boolean> {
  if (
    !(await stat(controlPath).then(
      () => true,
      () => false,
    ))
  )
    return false;
  return (await runner.run("ssh", ["-o", `ControlPath=${controlPath}`, "-O", "check", "boma-it-master"], { check: false, timeoutMs: 10_000 })).exitCode === 0;
}

/**
 * The folder of this user's master-connection sockets: short, because a Unix socket path holds
 * at most 108 bytes and ssh binds a temporary name 17 characters longer than the ControlPath.
 */
export function controlSocketDir(uid: number = process.getuid?.() ?? 0): string {
  return join(tmpdir(), `boma-it-ssh-${uid}`);
}

/**
 * The master connection's socket of a run: `<dir>/<run id>`, so the reaper can tell whose it is;
 * undefined when that path would be too long for a socket (the run then goes without).
 */
export function controlPathFor(runId: string, dir: string = controlSocketDir()): string | undefined {
  const path = join(dir, runId);
  return Buffer.byteLength(path) <= 90 ? path : undefined;
}

/**
 * Makes the socket folder (mode 0700) and says whether it is safe to use: a folder in /tmp that
 * another user made, or that others may write to, could hand our commands to their socket.
 */
export async function prepareControlSocketDir(dir: string = controlSocketDir()): Promise<boolean> {
  await mkdir(dir, { recursive: true, mode: 0o700 }).catch(() => undefined);
  const stats = await lstat(dir).catch(() => undefined);
  return stats !== undefined && stats.isDirectory() && stats.uid === (process.getuid?.() ?? 0) && (stats.mode & 0o077) === 0;
}

/** argv for an interactive session (a TTY when there is one), or a command with the user's stdio. */
export function sshInteractiveArgs(target: SshTarget, command: readonly string[]): string[] {
  // An interactive shell may ask nothing (BatchMode) and has no master to share.
  return [...sshOptions(target), ...(command.length === 0 ? ["-t"] : []), `${target.user}@${target.ip}`, ...(command.length > 0 ? ["--", ...command] : [])];
}

/** The known_hosts lines that pin a run's host keys (public key lines, `type base64 [comment]`). */
export function knownHostsLines(alias: string, hostPublicKeys: readonly string[]): string {
  return hostPublicKeys
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length >= 2)
    .map(([type, key]) => `${alias} ${type} ${key}\n`)
    .join("");
}

/**
 * Writes the run's known_hosts (mode 0600): exactly these host keys are trusted for `alias`.
 * Written aside and renamed over: a harness killed mid-write never leaves a torn pin (which ssh
 * would take for a changed host key).
 */
export async function pinHostKeys(knownHostsFile: string, alias: string, hostPublicKeys: readonly string[]): Promise<void> {
  const aside = `${knownHostsFile}.${process.pid}.new`;
  await writeFile(aside, knownHostsLines(alias, hostPublicKeys), { mode: 0o600 });
  await rename(aside, knownHostsFile);
}

/** The host keys a known_hosts file pins, as `type base64` (alias and comments dropped). */
export function pinnedHostKeys(knownHosts: string): string[] {
  return knownHosts
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length >= 3 && !fields[0]!.startsWith("#"))
    .map(([, type, key]) => `${type} ${key}`);
}

/**
 * Whether sshd at `ip:port` sends its identification banner ("SSH-2.0-..."). A TCP connect and a
 * read: far cheaper than a login (~0.1 s against ~1 s under TCG), so it can be polled tightly to
 * notice the moment sshd starts. The connect gets `connectMs` (a guest whose network is not up
 * yet drops it); once sshd has accepted, its greeting gets `greetingMs`: right after a boot under
 * TCG, sshd takes more than a second to start the per-connection process that greets, and a
 * probe that gave up then and tried again noticed sshd seconds late.
 */
export function sshBanner(ip: string, port = 22, connectMs = 1000, greetingMs = 15_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: ip, port });
    let received = "";
    const done = (seen: boolean) => {
      socket.destroy();
      resolve(seen);
    };
    socket.setTimeout(connectMs, () => done(false));
    socket.once("connect", () => socket.setTimeout(greetingMs, () => done(false)));
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1");
      if (received.includes("\n")) done(received.startsWith("SSH-"));
    });
    socket.once("error", () => done(false));
    socket.once("end", () => done(received.startsWith("SSH-")));
  });
}
