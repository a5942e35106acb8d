/**
 * SSH to a run's VM with its per-run key and its pinned host key: the known_hosts file holds
 * the key the seed gave the VM, under an alias (the run id), so the first connection is already
 * verified and StrictHostKeyChecking stays on.
 */
import { connect } from "node:net";
import type { StackOutputs } from "../infra/plan.ts";

/** Everything needed to reach a VM. */
export interface SshTarget {
  ip: string;
  user: string;
  keyFile: string;
  knownHostsFile: string;
  /** Host key alias in known_hosts (the run id). */
  alias: string;
}

/** The target of a run from its stack outputs. */
export function sshTargetOf(outputs: StackOutputs): SshTarget {
  return { ip: outputs.ip, user: outputs.user, keyFile: outputs.keyFile, knownHostsFile: outputs.knownHostsFile, alias: outputs.runId };
}

/** ssh options shared by every connection to a run's VM. */
export function sshOptions(target: SshTarget, connectTimeoutSeconds = 5): string[] {
  return ["-i", target.keyFile, ...pinnedHostKeyOptions(target, connectTimeoutSeconds)];
}

/** The `-o` options that pin the host key and bound the connection (also given to Ansible). */
export function pinnedHostKeyOptions(target: SshTarget, connectTimeoutSeconds = 5): string[] {
  return [
    "-o", "IdentitiesOnly=yes",
    "-o", `UserKnownHostsFile=${target.knownHostsFile}`,
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", `HostKeyAlias=${target.alias}`,
    "-o", "StrictHostKeyChecking=yes",
    "-o", `ConnectTimeout=${connectTimeoutSeconds}`,
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=3",
    "-o", "LogLevel=ERROR",
  ];
}

/** argv (without the program) for running `command` on the VM, non-interactively. */
export function sshCommandArgs(target: SshTarget, command: string, connectTimeoutSeconds = 5): string[] {
  return [...sshOptions(target, connectTimeoutSeconds), "-o", "BatchMode=yes", "-T", `${target.user}@${target.ip}`, "--", command];
}

/** argv for an interactive session (a TTY when there is one), or a command with the user's stdio. */
export function sshInteractiveArgs(target: SshTarget, command: readonly string[]): string[] {
  return [...sshOptions(target), ...(command.length === 0 ? ["-t"] : []), `${target.user}@${target.ip}`, ...(command.length > 0 ? ["--", ...command] : [])];
}

/** The known_hosts line that pins a run's host key. */
export function knownHostsLine(alias: string, hostPublicKey: string): string {
  const [type, key] = hostPublicKey.trim().split(/\s+/);
  return `${alias} ${type} ${key}\n`;
}

/**
 * Whether sshd at `ip:port` sends its identification banner ("SSH-2.0-...") within `timeoutMs`.
 * A TCP connect and a read: far cheaper than a login (~0.1 s against ~1 s under TCG), so it can
 * be polled tightly to notice the moment sshd starts.
 */
export function sshBanner(ip: string, port = 22, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: ip, port });
    let received = "";
    const done = (seen: boolean) => {
      socket.destroy();
      resolve(seen);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1");
      if (received.includes("\n")) done(received.startsWith("SSH-"));
    });
    socket.once("error", () => done(false));
    socket.once("end", () => done(received.startsWith("SSH-")));
  });
}
