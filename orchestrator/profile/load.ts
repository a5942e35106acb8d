/**
 * Loading a profile: find it by name or path, validate it and its overlay, resolve its paths
 * and check them against the real inventory. Runs no VM and writes nothing.
 */
import { stat, readdir } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { BadInputError, type InputProblem } from "../errors.ts";
import { readInventory, type Inventory, type InventoryHost } from "./inventory.ts";
import { overlaySchema, profileSchema, type OverlayDocument, type ProfileDocument } from "./schema.ts";
import { readYamlFile, validateYaml, type YamlFile } from "./yaml.ts";

/** A profile ready to run: validated, paths resolved and checked, inventory host found. */
export interface LoadedProfile {
  /** Profile name: its file name without extension. */
  name: string;
  /** Absolute path of the profile file. */
  file: string;
  document: ProfileDocument;
  /** Absolute paths resolved from the profile. */
  repoDir: string;
  inventoryFile: string;
  playbookFile: string;
  overlay: { file: string | undefined; document: OverlayDocument };
  /** The impersonated host as the real inventory defines it. */
  inventoryHost: InventoryHost;
  /** The real inventory (read, never written). */
  inventory: Inventory;
}

/** Where to look for profiles and default overlays. */
export interface ProfileLocations {
  /** Folder of named profiles (`profiles/`). */
  profilesDir: string;
  /** Folder of default overlays (`overrides/`). */
  overridesDir: string;
}

/** Resolves `<profile>`: a name in `profiles/` or a path to a YAML file. */
export async function findProfileFile(reference: string, locations: ProfileLocations, cwd = process.cwd()): Promise<string> {
  const looksLikePath = reference.includes("/") || [".yml", ".yaml"].includes(extname(reference));
  if (looksLikePath) return resolve(cwd, reference);
  for (const extension of [".yml", ".yaml"]) {
    const candidate = join(locations.profilesDir, `${reference}${extension}`);
    if (await isFile(candidate)) return candidate;
  }
  const known = await listProfiles(locations.profilesDir);
  throw new BadInputError({
    message: `no profile named ${JSON.stringify(reference)} in ${locations.profilesDir}; expected one of ${
      known.length > 0 ? known.join(", ") : "(none there)"
    } or a path to a YAML file`,
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

/** Loads and checks a profile, its overlay and its inventory host. */
export async function loadProfile(reference: string, locations: ProfileLocations, runner: Runner): Promise<LoadedProfile> {
  const file = await findProfileFile(reference, locations);
  const yaml = await readYamlFile(file, "profile");
  const document = validateYaml(yaml, profileSchema);
  const profileDir = dirname(file);

  const problems: InputProblem[] = [];
  const repoDir = resolve(profileDir, document.repo);
  if (!(await isDirectory(repoDir))) problems.push(missing(yaml, "repo", repoDir, "a directory (the infrastructure repo)"));
  const inventoryFile = resolve(repoDir, document.inventory);
  const playbookFile = resolve(repoDir, document.playbook);
  if (problems.length === 0) {
    if (!(await isFile(inventoryFile))) problems.push(missing(yaml, "inventory", inventoryFile, "an inventory file inside repo"));
    if (!(await isFile(playbookFile))) problems.push(missing(yaml, "playbook", playbookFile, "a playbook file inside repo"));
  }
  const overlayFile = document.overrides
    ? resolve(profileDir, document.overrides)
    : join(locations.overridesDir, `${document.host}.yml`);
  const overlayExists = await isFile(overlayFile);
  if (document.overrides && !overlayExists) problems.push(missing(yaml, "overrides", overlayFile, "an overlay YAML file"));
  if (problems.length > 0) throw new BadInputError(problems);

  const overlay = overlayExists
    ? { file: overlayFile, document: validateYaml(await readYamlFile(overlayFile, "overlay"), overlaySchema) }
    : { file: undefined, document: overlaySchema.parse({}) };

  const inventory = await readInventory(inventoryFile, runner);
  const inventoryHost = inventory.hosts.get(document.host);
  if (!inventoryHost) {
    const known = [...inventory.hosts.keys()].sort();
    throw new BadInputError({
      ...positionOfField(yaml, "host"),
      path: "host",
      message: `host ${JSON.stringify(document.host)} is not in the inventory ${inventoryFile}; expected one of ${
        known.length > 0 ? known.join(", ") : "(it has no hosts)"
      }`,
    });
  }

  return {
    name: basename(file).replace(/\.ya?ml$/, ""),
    file,
    document,
    repoDir,
    inventoryFile,
    playbookFile,
    overlay,
    inventoryHost,
    inventory,
  };
}

function missing(yaml: YamlFile, field: string, path: string, expected: string): InputProblem {
  return { ...positionOfField(yaml, field), path: field, message: `expected ${expected}, found nothing at ${path}` };
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
