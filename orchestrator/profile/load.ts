/**
 * Loading a profile: find it by name or path, validate it and its overlay, resolve its paths
 * and check them against the real inventory. Runs no VM and writes nothing.
 */
import { readdir, realpath, stat } from "node:fs/promises";
import { basename, dirname, extname, join, resolve, sep } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { BadInputError, type InputProblem } from "../errors.ts";
import { isInventoryScript, readInventory, type Inventory, type InventoryHost } from "./inventory.ts";
import { overlaySchema, profileSchema, type OverlayDocument, type ProfileDocument } from "./schema.ts";
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
   * Where Ansible's vault password settings are read (ansible.cfg, a password file or script):
   * the user's own checkout when the profile is taken at a git revision, whose export holds no
   * untracked password file and whose scripts are not the user's current ones. Default: repoDir.
   */
  vaultRepoDir?: string;
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
export async function resolveProfile(document: ProfileDocument, source: ProfileSource, runner: Runner, options: LoadOptions = {}): Promise<LoadedProfile> {
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

  const overlayFile = document.overrides ? resolve(source.dir, document.overrides) : join(source.overridesDir, `${document.host}.yml`);
  const overlayStats = await stat(overlayFile).catch(() => undefined);
  if (document.overrides && !overlayStats)
    problems.push({ ...where("overrides"), path: "overrides", message: `expected an overlay YAML file, found nothing at ${overlayFile}` });
  else if (overlayStats && !overlayStats.isFile())
    problems.push({ ...where("overrides"), path: "overrides", message: `expected an overlay YAML file, found ${kindOf(overlayStats)} at ${overlayFile}` });

  if (document.image.startsWith("file:")) {
    const image = document.image.slice("file:".length);
    const stats = await stat(image).catch(() => undefined);
    if (!stats?.isFile())
      problems.push({ ...where("image"), path: "image", message: `expected a qcow2 file, found ${stats ? kindOf(stats) : "nothing"} at ${image}` });
  }
  if (problems.length > 0) throw new BadInputError(problems);

  const overlay = overlayStats
    ? { file: overlayFile, document: validateYaml(await readYamlFile(overlayFile, "overlay"), overlaySchema) }
    : { file: undefined, document: overlaySchema.parse({}) };
  if (overlay.document.vault) {
    const vault = resolve(dirname(overlayFile), overlay.document.vault);
    const stats = await stat(vault).catch(() => undefined);
    if (!stats?.isFile())
      throw new BadInputError({
        file: overlayFile,
        path: "vault",
        message: `expected an Ansible vault file, found ${stats ? kindOf(stats) : "nothing"} at ${vault}`,
      });
  }

  if (await isInventoryScript(inventoryFile)) {
    options.say?.(
      `the inventory ${inventoryFile} is executable: Ansible runs it as an inventory script to list the hosts (as every ansible-playbook of this repo does)`,
    );
  }
  const inventory = await readInventory(inventoryFile, runner, repoDir);
  const inventoryHost = inventory.hosts.get(document.host);
  if (!inventoryHost) {
    const known = [...inventory.hosts.keys()].sort();
    const hint = closest(document.host, known);
    throw new BadInputError({
      ...where("host"),
      path: "host",
      message: `host ${JSON.stringify(document.host)} is not in the inventory ${inventoryFile}; expected one of ${
        known.length > 0 ? known.join(", ") : "(it has no hosts)"
      }${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ""}`,
    });
  }

  return {
    name: source.name,
    file: source.file,
    document,
    repoDir,
    inventoryFile,
    playbookFile,
    ...(verifyFile ? { verifyFile } : {}),
    overlay,
    inventoryHost,
    inventory,
  };
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
