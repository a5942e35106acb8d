/**
 * Confinement of an apply (ADR-025 invariant 1): Ansible's only destination is the test VM with
 * its pinned host key, whatever the infrastructure repo holds. Three layers:
 *
 * - The jail (jail.ts): Ansible's controller side has no network at all; its one way out is the
 *   run's SSH master to the VM, through a gate that lets only commands on the VM pass (gate.ts).
 *   What runs on the controller (synchronize's rsync, lookups, callbacks, plugins) is confined
 *   with it, listed or not.
 * - A guard that configuration cannot switch off: every ssh Ansible (or anything in the jail that
 *   takes `ssh` from PATH, as rsync does) runs is a harness-owned program (confined_ssh.py) that
 *   refuses any other destination, port, user, identity, config file or side effect before
 *   anything runs, and forces the pin (host key, the run's key alone, no agent, no jump host,
 *   the user's ssh config left out, a passenger of the run's connection). sftp and scp are
 *   refused outright: files go over that ssh (`ssh_transfer_method: piped`).
 * - So that a repo written for the real fleet still applies to the VM, every variable of
 *   Ansible's ssh connection that says where and how to connect (every name Ansible's own
 *   documentation gives it, `ansible_ssh_host` as well as `ansible_host`) is set for the VM as an
 *   extra var, which wins over every inventory, group_vars/host_vars and play source.
 *
 * An apply of several hosts (a topology) reaches each host's VM by its inventory name: the
 * address and key vars are then templates over a map of the VMs (an extra var too), keyed by the
 * host the connection is for. Ansible templates a delegated task's connection vars with the
 * delegated host's vars but the task host's `inventory_hostname`, so the transient inventory
 * gives each host its own name in {@link TOPOLOGY_HOST_VAR}: `delegate_to: kazi` reaches kazi's
 * VM, and a task delegated to a host that is no VM (`localhost`, a real host) runs on the VM of
 * the host it runs for, as with one host.
 */
import { chmod, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { quoteArg, type Runner } from "../../infra/runner.ts";
import { HarnessError } from "../errors.ts";
import { confinedSshOptions, type SshTarget } from "../host/ssh.ts";
import { gateSocketOf, tellSocketOf } from "./gate.ts";
import { jailEnv, runJailed } from "../host/jail.ts";
import { ansiblePython } from "./vault.ts";

/** What confines one apply: its programs, the extra vars and environment that route Ansible through them. */
export interface Confinement {
  /** The ssh Ansible runs. */
  sshProgram: string;
  /** What Ansible runs for sftp and scp: a refusal. */
  transferProgram: string;
  /** A folder with `ssh`, `scp` and `sftp` (the programs above), first on the jail's PATH. */
  binDir: string;
  /** Where the jail's ssh joins each VM's connection: the gates' sockets (see gate.ts), in the order of the VMs. */
  gateSockets: string[];
  /** Where the jail tells the harness (see gate.ts). */
  tellSocket: string;
  /**
   * Where what the confinement saw is written down, JSON lines of a `kind`: `refusal` (the
   * confined ssh's and the gate's), `note`, `connection` (the argv, less the remote command, of
   * every connection let through). Outside the jail's reach: told through the teller.
   */
  recordsFile: string;
  /** What the jail must read for these programs to run (their folder, the real ssh's). */
  readable: string[];
  /** Extra vars that point every connection variable at the VM (the last word over the repo's). */
  extraVars: Record<string, unknown>;
  /** Environment for Ansible's processes (PATH is the jail's: this folder first, then `path`). */
  env(path: string): Record<string, string>;
  /** Connections the guard refused, in order. */
  refusals(): Promise<Refusal[]>;
  /** What the guard overrode in Ansible's ssh arguments (a jump host, host key checking off), once each. */
  notes(): Promise<string[]>;
  /** Where each connection let through went: its ssh argv less the remote command. */
  connections(): Promise<string[][]>;
}

/** A VM an apply reaches: the inventory host it impersonates, and how (with a master connection). */
export interface ConfinedVm {
  host: string;
  target: SshTarget;
}

/** The inventory var that names a topology's host to its own connection vars (see the module's comment). */
export const TOPOLOGY_HOST_VAR = "__boma_it_host";

/** The extra var that maps each host of a topology to its VM's address and key. */
export const TOPOLOGY_VMS_VAR = "__boma_it_vms";

/** A connection the guard refused. */
export interface Refusal {
  what: string;
  detail: string;
}

/**
 * The value each ssh connection option gets for the VM, by the option's name in Ansible's ssh
 * plugin. Empty strings switch an option off: no ssh_args of the repo's, no password (sshpass).
 */
function forcedOptionValues(vms: readonly ConfinedVm[], programs: { ssh: string; transfer: string }): Record<string, unknown> {
  const only = vms.length === 1 ? vms[0]!.target : undefined;
  // Several VMs: each connection's own, by the host it is for (see the module's comment).
  const ofHost = (field: "ip" | "key") => `{{ ${TOPOLOGY_VMS_VAR}[${TOPOLOGY_HOST_VAR} | default(inventory_hostname)].${field} }}`;
  return {
    host: only ? only.ip : ofHost("ip"),
    port: 22,
    remote_user: vms[0]!.target.user,
    private_key_file: only ? only.keyFile : ofHost("key"),
    password: "",
    sshpass_prompt: "",
    pkcs11_provider: "",
    ssh_executable: programs.ssh,
    sftp_executable: programs.transfer,
    scp_executable: programs.transfer,
    ssh_args: "",
    ssh_common_args: "",
    ssh_extra_args: "",
    scp_extra_args: "",
    sftp_extra_args: "",
    ssh_transfer_method: "piped",
    host_key_checking: true,
  };
}

/**
 * The variables of each option of Ansible's ssh connection plugin in ansible-core 2.14 (from its
 * documentation). Used when `ansible-doc` cannot say; otherwise what it says is added to these.
 */
const KNOWN_OPTION_VARS: Readonly<Record<string, readonly string[]>> = {
  host: ["ansible_host", "ansible_ssh_host"],
  port: ["ansible_port", "ansible_ssh_port"],
  remote_user: ["ansible_user", "ansible_ssh_user"],
  private_key_file: ["ansible_private_key_file", "ansible_ssh_private_key_file"],
  password: ["ansible_password", "ansible_ssh_pass", "ansible_ssh_password"],
  sshpass_prompt: ["ansible_sshpass_prompt"],
  pkcs11_provider: ["ansible_ssh_pkcs11_provider"],
  ssh_executable: ["ansible_ssh_executable"],
  sftp_executable: ["ansible_sftp_executable"],
  scp_executable: ["ansible_scp_executable"],
  ssh_args: ["ansible_ssh_args"],
  ssh_common_args: ["ansible_ssh_common_args"],
  ssh_extra_args: ["ansible_ssh_extra_args"],
  scp_extra_args: ["ansible_scp_extra_args"],
  sftp_extra_args: ["ansible_sftp_extra_args"],
  ssh_transfer_method: ["ansible_ssh_transfer_method"],
  host_key_checking: ["ansible_host_key_checking", "ansible_ssh_host_key_checking"],
};

let documentedVars: Promise<Record<string, string[]>> | undefined;

/** The variables of each ssh connection option, as the installed Ansible documents them. */
function optionVars(runner: Runner): Promise<Record<string, string[]>> {
  documentedVars ??= (async () => {
    const merged: Record<string, string[]> = Object.fromEntries(Object.entries(KNOWN_OPTION_VARS).map(([option, names]) => [option, [...names]]));
    const doc = await runJailed(
      runner,
      "ansible-doc",
      ["-t", "connection", "ansible.builtin.ssh", "--json"],
      { cwd: "/", env: jailEnv(runner.env) },
      { check: false, timeoutMs: 60_000 },
    );
    if (doc.failed) return merged;
    try {
      const options =
        (JSON.parse(doc.stdout) as Record<string, { doc?: { options?: Record<string, { vars?: { name: string }[] }> } }>)["ansible.builtin.ssh"]?.doc
          ?.options ?? {};
      for (const [option, spec] of Object.entries(options)) {
        if (!(option in merged)) continue;
        // Only plain variable names: `inventory_hostname` and `delegated_vars[...]` are not set by a repo.
        for (const { name } of spec.vars ?? []) if (/^ansible_\w+$/.test(name) && !merged[option]!.includes(name)) merged[option]!.push(name);
      }
    } catch {
      // An Ansible that documents nothing parseable: the known names stand.
    }
    return merged;
  })();
  return documentedVars;
}

/**
 * Writes the apply's confined ssh (and the sftp/scp refusal) into `dir` and says how to route
 * Ansible through it to `vms` (the first is the run's own; an apply of several hosts has one VM
 * per host). The jail's ssh joins each VM's master connection through its gate, so every target
 * needs a master socket: without one, a jailed Ansible has no way to the VM at all.
 * `guestPython` is the Python Ansible's modules run with on the VMs.
 */
export async function prepareConfinement(dir: string, vms: readonly ConfinedVm[], runner: Runner, guestPython = "/usr/bin/python3"): Promise<Confinement> {
  const [lead] = vms;
  if (!lead) throw new HarnessError("an apply without a VM: nothing to confine it to");
  if (vms.some(({ target }) => target.controlPath === undefined)) {
    throw new HarnessError(
      "this run has no SSH master connection (no safe, short enough socket path), and a jailed Ansible reaches the VM only through one: set TMPDIR to a short folder of your own",
    );
  }
  if (
    vms.some(({ target }) => target.user !== lead.target.user) ||
    new Set(vms.map(({ target }) => target.ip)).size !== vms.length ||
    new Set(vms.map(({ host }) => host)).size !== vms.length
  ) {
    throw new HarnessError(
      `the VMs of one apply must each be another host's, with an address of its own and the same user: ${vms.map(({ host, target }) => `${host} ${target.user}@${target.ip}`).join(", ")}`,
    );
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const realSsh = await runner.which("ssh");
  if (!realSsh) throw new HarnessError("ssh is not on PATH (apt-get install openssh-client): Ansible cannot reach the VM");
  const recordsFile = join(dir, "records.jsonl");
  const settingsFile = join(dir, "settings.json");
  // One teller for the apply: the run's own VM's.
  const tellSocket = tellSocketOf(lead.target.controlPath!);
  // Ansible's connections ride each VM's master connection, through the jail's gate to it, as passengers.
  const targets = vms.map(({ host, target }) => {
    const gateSocket = gateSocketOf(target.controlPath!);
    const forcedOptions = confinedSshOptions({ ...target, controlPath: gateSocket }, { connectTimeoutSeconds: 10, multiplex: "join" });
    return { host, ip: target.ip, keyFile: target.keyFile, alias: target.alias, controlPath: gateSocket, forcedOptions };
  });
  await writeFile(
    settingsFile,
    `${JSON.stringify({ realSsh, port: 22, user: lead.target.user, targets, tell: tellSocket, records: recordsFile }, null, 2)}\n`,
    { mode: 0o600 },
  );
  const python = await ansiblePython(runner);
  const binDir = join(dir, "bin");
  await mkdir(binDir, { recursive: true, mode: 0o700 });
  const confined = `exec ${quoteArg(python)} ${quoteArg(join(import.meta.dirname, "confined_ssh.py"))} ${quoteArg(settingsFile)}`;
  const sshProgram = join(binDir, "ssh");
  await writeFile(sshProgram, `#!/bin/sh\n# boma-it: the only ssh of this apply (see orchestrator/ansible/confine.ts)\n${confined} "$@"\n`, { mode: 0o700 });
  const transferProgram = join(binDir, "no-file-transfer");
  // sftp and scp would bypass the confined ssh: refused, and told as a refusal.
  await writeFile(transferProgram, `#!/bin/sh\n# boma-it: sftp and scp would bypass the confined ssh\n${confined} --refuse-transfer\n`, { mode: 0o700 });
  for (const name of ["scp", "sftp"]) await symlink(transferProgram, join(binDir, name));

  const values = forcedOptionValues(vms, { ssh: sshProgram, transfer: transferProgram });
  const extraVars: Record<string, unknown> = {};
  if (vms.length > 1) extraVars[TOPOLOGY_VMS_VAR] = Object.fromEntries(vms.map(({ host, target }) => [host, { ip: target.ip, key: target.keyFile }]));
  for (const [option, names] of Object.entries(await optionVars(runner))) for (const name of names) extraVars[name] = values[option];
  // The builtin plugin by its full name: a repo's connection_plugins/ssh.py cannot stand in for it.
  extraVars.ansible_connection = "ansible.builtin.ssh";
  extraVars.ansible_python_interpreter = guestPython;

  const readLines = async (file: string): Promise<Record<string, unknown>[]> =>
    (await readFile(file, "utf8").catch(() => ""))
      .split("\n")
      .filter(Boolean)
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  const ofKind = async (kind: string) => (await readLines(recordsFile)).filter((entry) => entry.kind === kind);
  return {
    sshProgram,
    transferProgram,
    binDir,
    gateSockets: targets.map((target) => target.controlPath),
    tellSocket,
    recordsFile,
    readable: [dir, import.meta.dirname, dirname(realSsh)],
    extraVars,
    env: (path) => ({
      PATH: `${binDir}:${path}`,
      ANSIBLE_SSH_EXECUTABLE: sshProgram,
      ANSIBLE_SSH_TRANSFER_METHOD: "piped",
      ANSIBLE_PIPELINING: "True",
      ANSIBLE_HOST_KEY_CHECKING: "True",
    }),
    refusals: async () => (await ofKind("refusal")).map((entry) => ({ what: String(entry.what ?? "a connection"), detail: String(entry.detail ?? "") })),
    notes: async () => [...new Set((await ofKind("note")).map((entry) => String(entry.note ?? "")).filter(Boolean))],
    connections: async () => (await ofKind("connection")).map((entry) => (Array.isArray(entry.argv) ? (entry.argv as unknown[]).map(String) : [])),
  };
}
