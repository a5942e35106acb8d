/**
 * Loading a profile: find it by name or path, validate it and its overlay, resolve its paths
 * and check them against the real inventory. Runs no VM and writes nothing.
 */
import { readdir, realpath, stat } from "node:fs/promises";
import { basename, dirname, extname, join, resolve, sep } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { BadInputError, type InputProblem } from "../errors.ts";
import { groupMembers, isInventoryScript, readInventory, type Inventory, type InventoryHost } from "./inventory.ts";
import {
  HOST_NAME,
  MAX_TOPOLOGY_HOSTS,
  overlaySchema,
  profileSchema,
  topologyProblems,
  type OverlayDocument,
  type ProfileDocument,
  type ProfileInput,
  type VmShape,
} from "./schema.ts";
import { closest } from "../did-you-mean.ts";
import { kindOf, readYamlFile, validateYaml, type YamlFile } from "./yaml.ts";

/** What a profile-less run is given on the command line (`run --host H --repo P`). */
export interface ProfileArgs {
  host: string;
  /** The infrastructure repo (absolute, or relative to where the user typed it). */
  repo: string;
  inventory?: string;
  playbook?: string;
  overrides?: string;
  image?: string;
}

/** A profile ready to run: validated, paths resolved and checked, inventory host found. */
export interface LoadedProfile {
  /** Set when there is no profile file: the run synthesized the profile from these. */
  synthesized?: ProfileArgs;
  /** Profile name: its file name without extension. */
  name: string;
  /** Absolute path of the profile file. */
  file: string;
  document: ProfileDocument;
  /** Absolute paths resolved from the profile. */
  repoDir: string;
  inventoryFile: string;
  playbookFile: string;
  /** The repo's verify playbook (`verify:`), when the profile names one. */
  verifyFile?: string;
  overlay: { file: string | undefined; document: OverlayDocument };
  /** The impersonated host as the real inventory defines it. */
  inventoryHost: InventoryHost;
  /** The real inventory (read, never written). */
  inventory: Inventory;
  /**
   * Several hosts (`hosts:`): each, in order, with its inventory host, its overlay and its VM's
   * shape; the first is `document.host`, whose overlay and inventory host are the fields above.
   * Absent: one host.
   */
  topology?: TopologyHost[];
  /**
   * Where Ansible's vault password settings are read (ansible.cfg, a password file or script):
   * the user's own checkout when the profile is taken at a git revision, whose export holds no
   * untracked password file and whose scripts are not the user's current ones. Default: repoDir.
   */
  vaultRepoDir?: string;
}

/** One host of a topology (see {@link LoadedProfile.topology}). */
export interface TopologyHost {
  name: string;
  inventoryHost: InventoryHost;
  overlay: LoadedProfile["overlay"];
  /** Its VM's shape: the profile's `vm:` with its `vmFor:` over it. */
  vm: VmShape;
}

/**
 * The profile as one host of its topology sees it: that host's name, inventory host, overlay and
 * VM shape in the fields a one-host profile has them (its VM is provisioned, its secrets loaded
 * and its vars checked as one host's are). A one-host profile is itself.
 */
export function profileForHost(profile: LoadedProfile, host: string): LoadedProfile {
  if (!profile.topology) {
    if (host === profile.document.host) return profile;
    throw new Error(`${host} is no host of the profile ${profile.name} (it is ${profile.document.host}'s alone)`);
  }
  const member = profile.topology.find((candidate) => candidate.name === host);
  if (!member) throw new Error(`${host} is no host of the profile ${profile.name} (${profile.topology.map((candidate) => candidate.name).join(", ")})`);
  const { topology: _topology, ...alone } = profile;
  return { ...alone, document: { ...profile.document, host, vm: member.vm }, overlay: member.overlay, inventoryHost: member.inventoryHost };
}

/** Where to look for profiles and default overlays. */
export interface ProfileLocations {
  /** Folder of named profiles (`profiles/`). */
  profilesDir: string;
  /** Folder of default overlays (`overrides/`). */
  overridesDir: string;
  /** Where the user typed the command: relative paths resolve against it (default: this process's cwd). */
  cwd?: string;
}

/** Resolves `<profile>`: a name in `profiles/` or a path to a YAML file. */
export async function findProfileFile(reference: string, locations: ProfileLocations): Promise<string> {
  const looksLikePath = reference.includes("/") || [".yml", ".yaml"].includes(extname(reference));
  if (looksLikePath) return resolve(locations.cwd ?? process.cwd(), reference);
  for (const extension of [".yml", ".yaml"]) {
    const candidate = join(locations.profilesDir, `${reference}${extension}`);
    if (await isFile(candidate)) return candidate;
  }
  const known = await listProfiles(locations.profilesDir);
  const hint = closest(reference, known);
  throw new BadInputError({
    message: `no profile named ${JSON.stringify(reference)} in ${locations.profilesDir}; expected one of ${
      known.length > 0 ? known.join(", ") : "(none there)"
    } or a path to a YAML file${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}`,
  });
}

/** Names of the profiles in a folder. */
export async function listProfiles(profilesDir: string): Promise<string[]> {
  try {
    return (await readdir(profilesDir))
      .filter((entry) => entry.endsWith(".yml") || entry.endsWith(".yaml"))
      .map((entry) => entry.replace(/\.ya?ml$/, ""))
      .sort();
  } catch {
    return [];
  }
}

/** What loading may say before it does something a user should know of (an inventory script runs). */
export interface LoadOptions {
  say?: (line: string) => void;
}

/** Loads and checks a profile, its overlay and its inventory host. */
export async function loadProfile(reference: string, locations: ProfileLocations, runner: Runner, options: LoadOptions = {}): Promise<LoadedProfile> {
  const file = await findProfileFile(reference, locations);
  const yaml = await readYamlFile(file, "profile");
  const document = validateYaml(yaml, profileSchema);
  return resolveProfile(
    document,
    { name: basename(file).replace(/\.ya?ml$/, ""), file, dir: dirname(file), yaml, overridesDir: locations.overridesDir },
    runner,
    options,
  );
}

/**
 * A profile for a host with no profile file (`run --host H --repo P`): GREEN only, survival checks
 * (derived from the state before the reboot) and the VM and image defaults; the overlay only when
 * given. Paths are relative to `cwd`, where the user typed them.
 */
export async function synthesizeProfile(args: ProfileArgs, cwd: string, runner: Runner, options: LoadOptions = {}): Promise<LoadedProfile> {
  const repo = resolve(cwd, args.repo);
  const raw = {
    host: args.host,
    repo,
    inventory: args.inventory ?? "inventory/hosts.yml",
    playbook: args.playbook ?? "site.yml",
    ...(args.overrides ? { overrides: resolve(cwd, args.overrides) } : {}),
    ...(args.image ? { image: args.image } : {}),
    survival: true,
  };
  const parsed = profileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new BadInputError(
      parsed.error.issues.map((issue) => ({
        path: `--${String(issue.path[0] ?? "host")}`,
        message: `${issue.message}, found ${JSON.stringify((raw as Record<string, unknown>)[String(issue.path[0])])}`,
      })),
    );
  }
  const profile = await resolveProfile(
    parsed.data,
    { name: args.host, file: `${repo} (no profile: --host ${args.host})`, dir: cwd, overridesDir: join(repo, ".boma-it-no-default-overlay") },
    runner,
    options,
  );
  return { ...profile, synthesized: { ...args, repo, ...(args.overrides ? { overrides: resolve(cwd, args.overrides) } : {}) } };
}

/** Where a profile document came from: its file (absent when synthesized) and the folder its paths are relative to. */
export interface ProfileSource {
  name: string;
  file: string;
  dir: string;
  /** The parsed file, for positions in messages (absent when synthesized). */
  yaml?: YamlFile;
  overridesDir: string;
}

/**
 * Resolves and checks a profile document: the repo a directory (not `/`), the inventory and the
 * playbook inside it (symlinks resolved: the contract keeps them there), the overlay and its
 * vault regular files, a `file:` image present, and the host in the inventory as Ansible reads it.
 */
export async function resolveProfile(document: ProfileInput, source: ProfileSource, runner: Runner, options: LoadOptions = {}): Promise<LoadedProfile> {
  const where = (field: string) => (source.yaml ? positionOfField(source.yaml, field) : { file: source.file });
  const problems: InputProblem[] = [];
  const given = resolve(source.dir, document.repo);
  const repoDir = await realpath(given).catch(() => undefined);
  if (!repoDir || !(await isDirectory(repoDir))) {
    throw new BadInputError({
      ...where("repo"),
      path: "repo",
      message: `expected a directory (the infrastructure repo), found ${repoDir ? "a file" : "nothing"} at ${given}`,
    });
  }
  if (repoDir === "/")
    throw new BadInputError({
      ...where("repo"),
      path: "repo",
      message: `expected the infrastructure repo, found the root of the file system (${given} leads to /)`,
    });

  const inside = async (field: "inventory" | "playbook" | "verify", relative: string, kind: "inventory" | "file") => {
    const path = resolve(repoDir, relative);
    const real = await realpath(path).catch(() => undefined);
    const stats = real ? await stat(real).catch(() => undefined) : undefined;
    const expected = field === "inventory" ? "an inventory (a file or a folder) inside repo" : "a playbook file inside repo";
    if (!real || !stats) problems.push({ ...where(field), path: field, message: `expected ${expected}, found nothing at ${path}` });
    else if (real !== repoDir && !real.startsWith(`${repoDir}${sep}`))
      problems.push({ ...where(field), path: field, message: `expected ${expected} (${repoDir}), found ${real}, outside it` });
    else if (kind === "file" && !stats.isFile())
      problems.push({ ...where(field), path: field, message: `expected ${expected}, found ${kindOf(stats)} at ${real}` });
    else if (kind === "inventory" && !stats.isFile() && !stats.isDirectory())
      problems.push({ ...where(field), path: field, message: `expected ${expected}, found ${kindOf(stats)} at ${real}` });
    return real ?? path;
  };
  const inventoryFile = await inside("inventory", document.inventory, "inventory");
  const playbookFile = await inside("playbook", document.playbook, "file");
  const verifyFile = document.verify === undefined ? undefined : await inside("verify", document.verify, "file");

  // One host's overlay is found before its inventory is read (each problem of the profile at once);
  // a topology's are each host's, known once its hosts are.
  const lead = document.host === undefined ? undefined : await findOverlay(document.host, document.overrides, source, where, problems);

  if (document.image.startsWith("file:")) {
    const image = document.image.slice("file:".length);
    const stats = await stat(image).catch(() => undefined);
    if (!stats?.isFile())
      problems.push({ ...where("image"), path: "image", message: `expected a qcow2 file, found ${stats ? kindOf(stats) : "nothing"} at ${image}` });
  }
  if (problems.length > 0) throw new BadInputError(problems);

  if (await isInventoryScript(inventoryFile)) {
    options.say?.(
      `the inventory ${inventoryFile} is executable: Ansible runs it as an inventory script to list the hosts (as every ansible-playbook of this repo does)`,
    );
  }
  const inventory = await readInventory(inventoryFile, runner, repoDir);
  const hostNames = topologyHostNames(document, inventory, where);
  const inventoryHosts = hostNames.map((name) => {
    const found = inventory.hosts.get(name);
    if (found) return found;
    const known = [...inventory.hosts.keys()].sort();
    const hint = closest(name, known);
    const field = document.host === undefined ? "hosts" : "host";
    throw new BadInputError({
      ...where(field),
      path: field,
      message: `host ${JSON.stringify(name)} is not in the inventory ${inventoryFile}; expected one of ${
        known.length > 0 ? known.join(", ") : "(it has no hosts)"
      }${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}`,
    });
  });
  const loaded: ProfileDocument = { ...document, host: hostNames[0]! };
  const topology =
    hostNames.length === 1
      ? undefined
      : await Promise.all(
          inventoryHosts.map(async (inventoryHost) => {
            const found = await findOverlay(inventoryHost.name, undefined, source, where, problems);
            return { name: inventoryHost.name, inventoryHost, overlayFile: found, vm: { ...document.vm, ...document.vmFor?.[inventoryHost.name] } };
          }),
        );
  if (problems.length > 0) throw new BadInputError(problems);
  const overlays = new Map<string, LoadedProfile["overlay"]>();
  for (const { name, overlayFile } of topology ?? [{ name: loaded.host, overlayFile: lead }]) overlays.set(name, await readOverlay(overlayFile));

  return {
    name: source.name,
    file: source.file,
    document: loaded,
    repoDir,
    inventoryFile,
    playbookFile,
    ...(verifyFile ? { verifyFile } : {}),
    overlay: overlays.get(loaded.host)!,
    inventoryHost: inventoryHosts[0]!,
    inventory,
    ...(topology ? { topology: topology.map(({ name, inventoryHost, vm }) => ({ name, inventoryHost, overlay: overlays.get(name)!, vm })) } : {}),
  };
}

/**
 * The hosts a profile names, in order: its `host:`, its `hosts:` list, or every host of the
 * group `hosts: { group }` names (at least two); the group's checked as a list's is by the schema.
 */
function topologyHostNames(document: ProfileInput, inventory: Inventory, where: (field: string) => Pick<InputProblem, "file" | "line" | "column">): string[] {
  if (document.host !== undefined) return [document.host];
  if (Array.isArray(document.hosts)) return document.hosts;
  const group = document.hosts!.group;
  if (!inventory.groups.has(group)) {
    const known = [...inventory.groups.keys()].filter((name) => name !== "all" && name !== "ungrouped").sort();
    const hint = closest(group, known);
    throw new BadInputError({
      ...where("hosts"),
      path: "hosts.group",
      message: `group ${JSON.stringify(group)} is not in the inventory ${inventory.file}; expected one of ${known.join(", ") || "(it has no groups)"}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}`,
    });
  }
  const members = groupMembers(inventory, group);
  // Names from the inventory become VM and folder names: each must be one a profile may write.
  const unnamed = members.filter((name) => !HOST_NAME.test(name));
  if (unnamed.length > 0) {
    throw new BadInputError({
      ...where("hosts"),
      path: "hosts.group",
      message: `expected inventory hostnames of letters, digits, '.', '_' and '-' in group ${group}, found ${unnamed.map((name) => JSON.stringify(name)).join(", ")}`,
    });
  }
  if (members.length < 2 || members.length > MAX_TOPOLOGY_HOSTS) {
    throw new BadInputError({
      ...where("hosts"),
      path: "hosts.group",
      message: `expected a group of 2 to ${MAX_TOPOLOGY_HOSTS} hosts (one host: host:), found ${members.length} in ${group}${members.length > 0 ? ` (${members.join(", ")})` : ""}`,
    });
  }
  const problems = topologyProblems(document, members);
  if (problems.length > 0)
    throw new BadInputError(problems.map((problem) => ({ ...where(String(problem.path[0])), path: formatFieldPath(problem.path), message: problem.message })));
  return members;
}

/** A field's path as the profile's errors write it (`checks[2].from`). */
function formatFieldPath(path: readonly (string | number)[]): string {
  return path.map((part, index) => (typeof part === "number" ? `[${part}]` : `${index > 0 ? "." : ""}${part}`)).join("");
}

/**
 * Where a host's overlay is: the profile's `overrides:` (which must exist) or `overrides/<host>.yml`
 * when there is one; a problem is added when it is no file.
 */
async function findOverlay(
  host: string,
  overrides: string | undefined,
  source: ProfileSource,
  where: (field: string) => Pick<InputProblem, "file" | "line" | "column">,
  problems: InputProblem[],
): Promise<string | undefined> {
  const file = overrides ? resolve(source.dir, overrides) : join(source.overridesDir, `${host}.yml`);
  const stats = await stat(file).catch(() => undefined);
  if (overrides && !stats) problems.push({ ...where("overrides"), path: "overrides", message: `expected an overlay YAML file, found nothing at ${file}` });
  else if (stats && !stats.isFile())
    problems.push({ ...where("overrides"), path: "overrides", message: `expected an overlay YAML file, found ${kindOf(stats)} at ${file}` });
  return stats?.isFile() ? file : undefined;
}

/** An overlay read and validated, its vault a file (no overlay: an empty one). */
async function readOverlay(file: string | undefined): Promise<LoadedProfile["overlay"]> {
  if (file === undefined) return { file: undefined, document: overlaySchema.parse({}) };
  const overlay = { file, document: validateYaml(await readYamlFile(file, "overlay"), overlaySchema) };
  if (overlay.document.vault) {
    const vault = resolve(dirname(file), overlay.document.vault);
    const stats = await stat(vault).catch(() => undefined);
    if (!stats?.isFile())
      throw new BadInputError({ file, path: "vault", message: `expected an Ansible vault file, found ${stats ? kindOf(stats) : "nothing"} at ${vault}` });
  }
  return overlay;
}

function positionOfField(yaml: YamlFile, field: string): Pick<InputProblem, "file" | "line" | "column"> {
  const node = yaml.document.get(field, true) as { range?: [number, number, number] } | undefined;
  if (!node?.range) return { file: yaml.file };
  const position = yaml.lineCounter.linePos(node.range[0]);
  return { file: yaml.file, line: position.line, column: position.col };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
