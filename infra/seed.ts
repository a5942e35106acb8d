/**
 * The cloud-init NoCloud seed of a run: hostname = the impersonated host, the harness's per-run
 * public key, and per-run SSH host keys so the harness pins the host key (no
 * StrictHostKeyChecking=no anywhere). Pure rendering; the plan writes and packs the files.
 * cloud-init reads YAML 1.1: the files are written for it (a MAC of digits only must stay a string).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { stringifyForPython as stringify } from "./pyyaml.ts";
import { linksOf, TOPOLOGY_DOMAIN, type StackSpec } from "./spec.ts";

/**
 * Where the seed puts the Python that runs Ansible's modules on the VM (infra/guest/ansible_python.py):
 * python3 with each module payload's code compiled once instead of at every task.
 */
export const GUEST_ANSIBLE_PYTHON = "/var/lib/boma-it/python3";

const ANSIBLE_PYTHON_SOURCE = readFileSync(join(import.meta.dirname, "guest", "ansible_python.py"), "utf8");

/** The SSH host key types a Debian host has (what cloud-init on genericcloud and the installer make). */
export const HOST_KEY_TYPES = ["rsa", "ecdsa", "ed25519"] as const;
export type HostKeyType = (typeof HOST_KEY_TYPES)[number];

/** One SSH host key pair of the VM: OpenSSH private key text and its public line. */
export interface HostKeyPair {
  type: HostKeyType;
  privateKey: string;
  publicKey: string;
}

/** Per-run keys the seed carries. */
export interface SeedKeys {
  /** The harness's public key (`ssh-ed25519 AAAA... comment`). */
  clientPublicKey: string;
  /** The VM's SSH host keys, one of each of {@link HOST_KEY_TYPES}: all known, so all pinned, before the boot. */
  hostKeys: readonly HostKeyPair[];
}

/** The three NoCloud files. `userData` holds a private host key: treat it as a secret. */
export interface SeedFiles {
  metaData: string;
  userData: string;
  networkConfig: string;
}

/** Renders the NoCloud files of a run. */
export function seedFiles(spec: StackSpec, keys: SeedKeys): SeedFiles {
  const metaData = stringify({ "instance-id": spec.identity.runId, "local-hostname": spec.identity.host });
  const userData = `#cloud-config\n${stringify({
    hostname: spec.identity.host,
    manage_etc_hosts: true,
    users: [
      {
        name: spec.guestUser,
        gecos: "boma-it harness",
        sudo: "ALL=(ALL) NOPASSWD:ALL",
        shell: "/bin/bash",
        lock_passwd: true,
        ssh_authorized_keys: [keys.clientPublicKey.trim()],
      },
    ],
    disable_root: true,
    // No ssh_pwauth: setting it makes cloud-init restart sshd in the middle of boot, just when
    // the harness gets in. The account has no password anyway; the profile's roles harden sshd.
    // The host keys come from the harness, so every one is pinned before the first connection:
    // the types a real Debian host has, since roles that manage host keys expect them (sshd may
    // offer any of them once a role reorders or removes some). Nothing is left to generate.
    ssh_deletekeys: true,
    ssh_genkeytypes: [...HOST_KEY_TYPES],
    ssh_keys: Object.fromEntries(
      keys.hostKeys.flatMap((key) => [
        [`${key.type}_private`, key.privateKey],
        [`${key.type}_public`, key.publicKey.trim()],
      ]),
    ),
    package_update: false,
    package_upgrade: false,
    write_files: [
      // Before sshd starts (cloud-init's network stage), so the first apply finds it.
      { path: GUEST_ANSIBLE_PYTHON, owner: "root:root", permissions: "0755", content: ANSIBLE_PYTHON_SOURCE },
      // `loginctl enable-linger` for the harness's account: its user manager, which runs anyway
      // while the harness is logged in (all the time), starts with the boot instead of holding up
      // the first login of every boot (5-10 s under TCG, more on a busy host).
      { path: `/var/lib/systemd/linger/${spec.guestUser}`, owner: "root:root", permissions: "0644", content: "" },
    ],
  })}`;
  const networkConfig = stringify({
    version: 2,
    ethernets: {
      primary: {
        match: { macaddress: spec.network.mac },
        "set-name": "eth0",
        dhcp4: true,
        // Several VMs: the others' inventory names resolve under the topology's domain (systemd-resolved
        // sends a single-label name to DNS only with a search domain).
        ...(spec.network.members.length > 1 ? { nameservers: { search: [TOPOLOGY_DOMAIN] } } : {}),
      },
      // A topology's extra links: a fixed address each, no route beyond the link.
      ...Object.fromEntries(
        linksOf(spec).map(({ link, own }) => [
          link.interface,
          { match: { macaddress: own.mac }, "set-name": link.interface, dhcp4: false, addresses: [`${own.ip}/${link.cidr.split("/")[1]}`] },
        ]),
      ),
    },
  });
  return { metaData, userData, networkConfig };
}
