/**
 * The VM's SSH host keys after a role had its way with them. Every key the VM starts with is
 * pinned (rsa, ecdsa, ed25519: see infra/seed.ts). A role that removes or regenerates host keys
 * is followed, never trusted blindly: the keys sshd serves are read through a connection that a
 * pinned key authenticated (the run's master connection, which outlives an sshd restart, or a
 * new login whose offered key is still pinned), and the pin becomes exactly those keys. When no
 * such connection is left, the new key is refused: a finding when the role ended it, a harness
 * fault (not judged) when the run's own connection had gone first; never a silent trust.
 */
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { HOST_KEY_TYPES } from "../../infra/seed.ts";
import { pinHostKeys, pinnedHostKeys } from "../host/ssh.ts";
import type { Log } from "../log.ts";
import { HarnessError } from "../errors.ts";
import { HostKeyRejectedError, type Machine } from "./machine.ts";
import type { SshTarget } from "../host/ssh.ts";

/** What changed in the VM's host keys, by type. */
export interface HostKeyChange {
  /** Key types the VM has now that are new (a rotated key counts here and in `removed`). */
  added: string[];
  removed: string[];
  /** In words, for the log and the report. */
  detail: string;
}

/**
 * The public halves of the host keys sshd serves: the `hostkey` files of its effective
 * configuration (a role may move them or add its own), each's public key from the private one,
 * or the files in /etc/ssh when sshd cannot say. Runs as root on the VM.
 */
// Each key on a line of its own: cloud-init writes .pub files without a final newline, and
// `cat` of several would run them into one line.
export const SERVED_HOST_KEYS = `served=$(sshd -T 2>/dev/null | awk '$1 == "hostkey" { print $2 }')
if [ -n "$served" ]; then
  for key in $served; do ssh-keygen -y -f "$key" 2>/dev/null || { cat "$key.pub" 2>/dev/null; echo; }; done
else
  for pub in /etc/ssh/ssh_host_*_key.pub; do [ -e "$pub" ] && { cat "$pub"; echo; }; done
fi
true`;

/** Public key lines (`type base64 [comment]`) as `type base64`. */
export function parseHostPublicKeys(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length >= 2 && /^(ssh-|ecdsa-)/.test(fields[0]!))
    .map(([type, key]) => `${type} ${key}`);
}

/** What differs between the pinned keys and the VM's, or undefined when nothing does. */
export function compareHostKeys(pinned: readonly string[], now: readonly string[]): HostKeyChange | undefined {
  const added = now.filter((key) => !pinned.includes(key));
  const removed = pinned.filter((key) => !now.includes(key));
  if (added.length === 0 && removed.length === 0) return undefined;
  const typeOf = (key: string) => key.split(" ")[0]!;
  const rotated = added.map(typeOf).filter((type) => removed.map(typeOf).includes(type));
  const parts = [
    ...(rotated.length > 0 ? [`rotated: ${rotated.join(", ")}`] : []),
    ...(added.filter((key) => !rotated.includes(typeOf(key))).length > 0
      ? [
          `new: ${added
            .map(typeOf)
            .filter((type) => !rotated.includes(type))
            .join(", ")}`,
        ]
      : []),
    ...(removed.filter((key) => !rotated.includes(typeOf(key))).length > 0
      ? [
          `removed: ${removed
            .map(typeOf)
            .filter((type) => !rotated.includes(type))
            .join(", ")}`,
        ]
      : []),
  ];
  return { added: added.map(typeOf), removed: removed.map(typeOf), detail: parts.join("; ") };
}

/**
 * Re-pins the VM's host keys to what is on it now (after an apply). Returns what changed, or
 * undefined. Throws {@link HostKeyRejectedError} when no pinned key authenticates the VM anymore.
 */
export async function followHostKeys(machine: Machine, log: Log): Promise<HostKeyChange | undefined> {
  const { knownHostsFile, alias } = machine.target;
  const known = await readFile(knownHostsFile, "utf8").catch(() => undefined);
  if (known === undefined) {
    log.warn(`cannot read ${knownHostsFile}: the VM's host keys were not compared after the apply`);
    return undefined;
  }
  const pinned = pinnedHostKeys(known);
  // Whether the master connection (authenticated by a pinned key when it started) is still
  // there decides who is to blame when no pinned key gets in any more.
  const hadMaster = await machine.hasMaster();
  const result = await machine.execute(SERVED_HOST_KEYS, { timeoutMs: 60_000 });
  if (result.exitCode !== 0) {
    if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/.test(result.stderr)) {
      const message = `${machine.name}: after the apply, the VM offers an SSH host key that is not pinned, and no connection authenticated by a pinned key is left to learn it: refusing to trust it`;
      if (machine.target.controlPath !== undefined && !hadMaster) {
        // The run's own connection was gone before the role's change could be followed: not judged.
        throw new HarnessError(`${message} (the run's master connection had ended before the keys could be read: the change cannot be judged)`);
      }
      throw new HostKeyRejectedError(
        `${message} (a role replaced every host key sshd offers${machine.target.controlPath === undefined ? ", and this run has no master connection to learn them through" : " and ended the run's connection"})`,
      );
    }
    log.warn(`could not read the VM's host keys after the apply (exit ${result.exitCode}): they stay pinned as they were`);
    return undefined;
  }
  const now = parseHostPublicKeys(result.stdout);
  if (now.length === 0) {
    log.warn("the VM has no host public keys in /etc/ssh after the apply: the pinned keys stay as they were");
    return undefined;
  }
  const change = compareHostKeys(pinned, now);
  if (!change) return undefined;
  await pinHostKeys(knownHostsFile, alias, now);
  log.warn(
    `the VM's SSH host keys changed during the apply (${change.detail}), as when a role manages host keys; re-pinned to the VM's keys, read through a connection a pinned key authenticated`,
  );
  return change;
}

/**
 * Pins the host keys the run gave the VM in its seed again (next to known_hosts in the run's
 * keys folder): after a reset the VM is back to them, whatever an apply since re-pinned.
 */
export async function pinSeedHostKeys(target: Pick<SshTarget, "knownHostsFile" | "alias">): Promise<void> {
  const keys: string[] = [];
  for (const type of HOST_KEY_TYPES) {
    const line = await readFile(join(dirname(target.knownHostsFile), `ssh_host_${type}_key.pub`), "utf8").catch(() => undefined);
    if (line) keys.push(line);
  }
  if (keys.length > 0) await pinHostKeys(target.knownHostsFile, target.alias, keys);
}
