/**
 * Reading the real Ansible inventory (never writing it): which hosts it has and which groups
 * each belongs to. YAML inventories are read directly; any other format is listed through
 * `ansible-inventory --list`, which Ansible itself uses to resolve them.
 */
import { extname } from "node:path";
import { BadInputError } from "../errors.ts";
import type { Runner } from "../../infra/runner.ts";
import { PYTHON_YAML } from "../../infra/pyyaml.ts";
import { readYamlFile } from "./yaml.ts";

/** A host as the real inventory defines it. */
export interface InventoryHost {
  name: string;
  /** Every group the host belongs to, directly or through a parent group, `all` included. */
  groups: string[];
}

/** The hosts of an inventory with their groups. */
export interface Inventory {
  file: string;
  hosts: Map<string, InventoryHost>;
  /** The group tree as written (groups, their children, inline vars and inline host vars). */
  groups: Map<string, GroupNode>;
}

/** One group of the inventory as written. */
export interface GroupNode {
  hosts: Set<string>;
  children: Set<string>;
  /** The group's inline `vars:`. */
  vars: Record<string, unknown>;
  /** Vars written inline under each host of this group. */
  hostVars: Map<string, Record<string, unknown>>;
}

function emptyGroup(): GroupNode {
  return { hosts: new Set<string>(), children: new Set<string>(), vars: {}, hostVars: new Map() };
}

/** Reads an inventory file. */
export async function readInventory(file: string, runner: Runner): Promise<Inventory> {
  const extension = extname(file);
  if (extension === ".yml" || extension === ".yaml") {
    // Values as Ansible sees them (YAML 1.1: `yes` is true, `1:20` is 80), to be written back for it.
    const yaml = await readYamlFile(file, "inventory", PYTHON_YAML);
    return fromGroups(file, groupsOfYaml(yaml.data, file));
  }
  return fromGroups(file, await groupsOfAnsibleInventory(file, runner));
}

function groupsOfYaml(data: unknown, file: string): Map<string, GroupNode> {
  if (!isMapping(data)) {
    throw new BadInputError({ file, message: `expected a YAML inventory (a mapping of groups such as all:), found ${data === null ? "an empty file" : "something else"}` });
  }
  const groups = new Map<string, GroupNode>();
  const visit = (name: string, body: unknown, path: string): void => {
    const node = groups.get(name) ?? emptyGroup();
    groups.set(name, node);
    if (body === null || body === undefined) return;
    if (!isMapping(body)) {
      throw new BadInputError({ file, path, message: "expected a group (a mapping with hosts, children or vars)" });
    }
    const hosts = body.hosts;
    if (hosts !== undefined && hosts !== null) {
      if (!isMapping(hosts)) throw new BadInputError({ file, path: `${path}.hosts`, message: "expected a mapping of host names" });
      for (const [host, hostVars] of Object.entries(hosts)) {
        node.hosts.add(host);
        if (isMapping(hostVars)) node.hostVars.set(host, { ...(node.hostVars.get(host) ?? {}), ...hostVars });
      }
    }
    if (isMapping(body.vars)) node.vars = { ...node.vars, ...body.vars };
    const children = body.children;
    if (children !== undefined && children !== null) {
      if (!isMapping(children)) throw new BadInputError({ file, path: `${path}.children`, message: "expected a mapping of group names" });
      for (const [child, childBody] of Object.entries(children)) {
        node.children.add(child);
        visit(child, childBody, `${path}.children.${child}`);
      }
    }
  };
  for (const [name, body] of Object.entries(data)) visit(name, body, name);
  return groups;
}

async function groupsOfAnsibleInventory(file: string, runner: Runner): Promise<Map<string, GroupNode>> {
  const result = await runner.run("ansible-inventory", ["-i", file, "--list"], { check: false });
  if (result.failed) {
    throw new BadInputError({ file, message: `ansible-inventory could not read this inventory: ${result.tail.split("\n").at(-1) ?? ""}` });
  }
  const listing = JSON.parse(result.stdout) as Record<string, { hosts?: string[]; children?: string[] }>;
  const groups = new Map<string, GroupNode>();
  for (const [name, body] of Object.entries(listing)) {
    if (name === "_meta") continue;
    groups.set(name, { ...emptyGroup(), hosts: new Set(body.hosts ?? []), children: new Set(body.children ?? []) });
  }
  return groups;
}

function fromGroups(file: string, groups: Map<string, GroupNode>): Inventory {
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
  for (const entry of hosts.values()) entry.groups.sort((a, b) => (a === "all" ? -1 : b === "all" ? 1 : a.localeCompare(b)));
  return { file, hosts, groups };
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
