/**
 * Reading the real Ansible inventory (never writing it): which hosts it has, which groups each
 * belongs to, and the vars written inline in it. Ansible reads it (`ansible-inventory --list
 * --export`, in the repo so its ansible.cfg's inventory settings apply), so whatever Ansible
 * accepts works here (YAML, INI, host ranges, plugins, scripts, folders) and whatever it refuses
 * is refused with Ansible's own message. Vars plugins are off for this listing: the vars of
 * group_vars/ and host_vars/ stay where they are, and the transient inventory links them in.
 */
import { access, constants, stat } from "node:fs/promises";
import { dirname } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { BadInputError } from "../errors.ts";
import { jailEnv, NEEDS_NETWORK, programFoldersOf, runJailed } from "../host/jail.ts";

/** A host as the real inventory defines it. */
export interface InventoryHost {
  name: string;
  /** Every group the host belongs to, directly or through a parent group, `all` included. */
  groups: string[];
}

/** The hosts of an inventory with their groups. */
export interface Inventory {
  /** The inventory source as the profile names it (a file or a folder). */
  file: string;
  /** Where Ansible looks for this inventory's group_vars/ and host_vars/. */
  varsDir: string;
  hosts: Map<string, InventoryHost>;
  /** The group tree (groups, their children and hosts, inline group vars). */
  groups: Map<string, GroupNode>;
  /**
   * Vars written inline for each host (not those of host_vars/). Values Ansible marks keep their
   * marks: `{__ansible_vault: ciphertext}`, `{__ansible_unsafe: text}` (see infra/pyyaml.ts).
   */
  hostVars: Map<string, Record<string, unknown>>;
}

/** One group of the inventory. */
export interface GroupNode {
  hosts: Set<string>;
  children: Set<string>;
  /** The group's inline `vars:`. */
  vars: Record<string, unknown>;
}

/** The hosts of a group (directly or through its children), in the inventory's order. */
export function groupMembers(inventory: Pick<Inventory, "hosts">, group: string): string[] {
  return [...inventory.hosts.values()].filter((host) => host.groups.includes(group)).map((host) => host.name);
}

/** How long Ansible may take to read an inventory (a plugin may ask a cloud API). */
const INVENTORY_TIMEOUT_MS = 120_000;

/** Output larger than this is not an inventory of a small fleet but an expanding alias bomb. */
const MAX_LISTING_BYTES = 64 * 1024 * 1024;

/** Whether Ansible would run the inventory as a script (an executable file) rather than read it. */
export async function isInventoryScript(file: string): Promise<boolean> {
  const stats = await stat(file).catch(() => undefined);
  if (!stats?.isFile()) return false;
  return access(file, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/**
 * Reads an inventory with Ansible, in `repoDir`, in a jail (host/jail.ts): an inventory plugin or
 * script runs without network and writes nothing. Inline `!vault` values stay encrypted in the
 * listing, so no vault password is given; an inventory file vaulted as a whole is not read.
 */
export async function readInventory(file: string, runner: Runner, repoDir: string): Promise<Inventory> {
  const result = await runJailed(
    runner,
    "ansible-inventory",
    ["-i", file, "--list", "--export"],
    {
      cwd: repoDir,
      readable: [repoDir, file, ...(await programFoldersOf(runner, "ansible-inventory"))],
      // Inline vars only: group_vars/ and host_vars/ are linked into the transient inventory as they are.
      env: jailEnv(runner.env, { ANSIBLE_VARS_ENABLED: "", ANSIBLE_INVENTORY_UNPARSED_FAILED: "True" }),
    },
    { check: false, timeoutMs: INVENTORY_TIMEOUT_MS, maxBufferBytes: MAX_LISTING_BYTES },
  );
  if (result.timedOut) {
    throw new BadInputError({
      file,
      message: `expected an inventory Ansible reads within ${INVENTORY_TIMEOUT_MS / 1000} s; ansible-inventory was still reading it`,
    });
  }
  if (result.failed) {
    const told = ansibleComplaint(result.stderr);
    const complaint = told.lines.join(" ") || result.tail.split("\n").at(-1) || `exit ${result.exitCode ?? "by a signal"}`;
    const offline = NEEDS_NETWORK.test(complaint)
      ? " (boma-it reads the inventory in a jail without network: an inventory plugin that asks a cloud API cannot; export it once, `ansible-inventory -i <yours> --list --export -y > static.yml`, and name that file in the profile's `inventory:`)"
      : /no vault secrets|vault password/i.test(complaint)
        ? " (an inventory file vaulted as a whole is not read: keep its secrets in `!vault` strings or group_vars/host_vars)"
        : "";
    const said = told.lines.length > 0 ? `\n    ${told.lines.join("\n    ")}` : ` ${complaint}`;
    throw new BadInputError({
      file,
      ...(told.line !== undefined ? { line: told.line, column: told.column! } : {}),
      message: `Ansible cannot read this inventory${offline}:${said}`,
    });
  }
  let listing: Record<string, { hosts?: string[]; children?: string[]; vars?: Record<string, unknown>; hostvars?: Record<string, Record<string, unknown>> }>;
  try {
    listing = JSON.parse(result.stdout) as typeof listing;
  } catch {
    throw new BadInputError({ file, message: "expected ansible-inventory to list this inventory as JSON; it printed something else" });
  }
  const groups = new Map<string, GroupNode>();
  for (const [name, body] of Object.entries(listing)) {
    if (name === "_meta") continue;
    groups.set(name, { hosts: new Set(body.hosts ?? []), children: new Set(body.children ?? []), vars: body.vars ?? {} });
  }
  const hostVars = new Map(Object.entries(listing._meta?.hostvars ?? {}));
  const varsDir = (await stat(file).catch(() => undefined))?.isDirectory() ? file : dirname(file);
  return { file, varsDir, ...hostsOf(groups, hostVars), groups, hostVars };
}

/** The lines of Ansible's stderr that say what is wrong (its errors and parse warnings, unwrapped). */
/**
 * What Ansible said against an inventory, as its own lines: the first message that says why
 * (an ERROR!, or a plugin's "Failed to parse"; the same complaint from the other plugins left
 * out), and the line and column it points at.
 */
function ansibleComplaint(stderr: string): { lines: string[]; line?: number; column?: number } {
  const messages: string[][] = [];
  for (const line of stderr.split("\n").map((text) => text.trimEnd())) {
    if (line.trim() === "") continue;
    // Ansible starts each message with its kind; the lines after it continue the message.
    if (/^(\[WARNING\]|\[DEPRECATION|ERROR!|Error)/.test(line.trim()) || messages.length === 0) messages.push([line.trim()]);
    else messages[messages.length - 1]!.push(line);
  }
  const wanted = messages.find((message) => /^(ERROR!|\[WARNING\]:\s+\* Failed to parse)/.test(message[0]!)) ?? messages.at(-1) ?? [];
  const where = /The (?:error|offending line) appears to be in '[^']+': line (\d+), column (\d+)/.exec(wanted.join(" "));
  return { lines: wanted.slice(0, 14), ...(where ? { line: Number(where[1]), column: Number(where[2]) } : {}) };
}

function hostsOf(groups: Map<string, GroupNode>, hostVars: Map<string, Record<string, unknown>>): { hosts: Map<string, InventoryHost> } {
  const parents = new Map<string, Set<string>>();
  for (const [name, node] of groups) {
    for (const child of node.children) {
      const set = parents.get(child) ?? new Set<string>();
      set.add(name);
      parents.set(child, set);
    }
  }
  const ancestors = (group: string, seen = new Set<string>()): Set<string> => {
    if (seen.has(group)) return seen;
    seen.add(group);
    for (const parent of parents.get(group) ?? []) ancestors(parent, seen);
    return seen;
  };
  const hosts = new Map<string, InventoryHost>();
  for (const [name, node] of groups) {
    for (const host of node.hosts) {
      const entry = hosts.get(host) ?? { name: host, groups: ["all"] };
      for (const group of ancestors(name)) if (!entry.groups.includes(group)) entry.groups.push(group);
      hosts.set(host, entry);
    }
  }
  // A host Ansible knows only through its vars (a plugin's): it is in `all`.
  for (const host of hostVars.keys()) if (!hosts.has(host)) hosts.set(host, { name: host, groups: ["all"] });
  for (const entry of hosts.values()) entry.groups.sort((a, b) => (a === "all" ? -1 : b === "all" ? 1 : a.localeCompare(b)));
  return { hosts };
}
