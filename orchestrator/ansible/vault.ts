/**
 * Vaulted values, learnt before anything runs so they can be redacted everywhere: which files of
 * the infrastructure repo hold vaulted vars of the impersonated host (vault-encrypted files and
 * inline `!vault` strings in its group_vars/host_vars, next to the inventory and the playbook, and
 * the inventory itself), and their plaintext, read with Ansible's own loader and vault settings
 * (vault_values.py, on the interpreter Ansible runs on). Nothing here logs or keeps a value.
 */
import { lstat, open, readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, extname, join } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import type { LoadedProfile } from "../profile/load.ts";

/** What Ansible writes at the start of vault ciphertext (a whole file or an inline `!vault`). */
const VAULT_MARK = "$ANSIBLE_VAULT;";

/** Files larger than this are not vars files: never scanned. */
const MAX_SCANNED_BYTES = 4 * 1024 * 1024;

/** Files of a repo scanned for vaulted content at most (a repo is a few hundred files; a mistake is not). */
const MAX_SCANNED_FILES = 20_000;

/** Vaulted files of a repo: those the host's vars come from, and the rest. */
export interface HostVaultFiles {
  /** The host's inventory vars: they must decrypt, or the apply would fail the same way later. */
  host: string[];
  /** Vaulted files elsewhere in the repo (roles' vars, other hosts'): redacted when they decrypt. */
  elsewhere: string[];
}

/** The vaulted files of the repo, split by whether the impersonated host's vars come from them. */
export async function hostVaultFiles(profile: Pick<LoadedProfile, "repoDir" | "inventoryFile" | "playbookFile" | "inventoryHost">): Promise<HostVaultFiles> {
  const inventoryDir = (await isDirectory(profile.inventoryFile)) ? profile.inventoryFile : dirname(profile.inventoryFile);
  const varsRoots = [...new Set([inventoryDir, dirname(profile.playbookFile)])];
  const host = new Set<string>();
  // The host_group_vars plugin's files: <root>/group_vars/<group>[.yml|.yaml|.json] or a folder of that name.
  for (const root of varsRoots) {
    for (const [folder, wanted] of [["group_vars", profile.inventoryHost.groups], ["host_vars", [profile.inventoryHost.name]]] as const) {
      for (const entry of await readdir(join(root, folder)).catch(() => [] as string[])) {
        const stem = [".yml", ".yaml", ".json"].includes(extname(entry)) ? entry.slice(0, -extname(entry).length) : entry;
        if (!(wanted as readonly string[]).includes(stem)) continue;
        // Links are followed here, as Ansible does (group_vars/all -> ../common is common).
        for (const file of await filesUnder(join(root, folder, entry), true)) if (await holdsVault(file)) host.add(file);
      }
    }
  }
  if (!(await isDirectory(profile.inventoryFile)) && (await holdsVault(profile.inventoryFile))) host.add(profile.inventoryFile);
  const elsewhere: string[] = [];
  for (const file of await filesUnder(profile.repoDir, false)) {
    if (!host.has(file) && (await holdsVault(file))) elsewhere.push(file);
  }
  return { host: [...host].sort(), elsewhere };
}

/** What Ansible made of each vaulted file: its secret values, or why it could not read it. */
export interface VaultedValues {
  files: Map<string, { values: string[] } | { error: string }>;
  /** The vault password itself could not be had (a password file missing or failing). */
  passwordProblem: string | undefined;
}

/**
 * Decrypts `files` with Ansible (one process for all; in `cwd`, the repo, so its ansible.cfg's
 * vault settings apply). The output holds plaintext: it is never recorded.
 */
export async function readVaultedValues(files: readonly string[], context: { runner: Runner; cwd: string }): Promise<VaultedValues> {
  if (files.length === 0) return { files: new Map(), passwordProblem: undefined };
  const python = await ansiblePython(context.runner);
  const result = await context.runner.run(python, [join(import.meta.dirname, "vault_values.py"), ...files], {
    cwd: context.cwd,
    // Ansible's own log would hold nothing secret here, but it is the user's file: left alone.
    env: { ANSIBLE_LOG_PATH: "/dev/null", ANSIBLE_NOCOLOR: "True" },
    check: false,
    secretOutput: true,
    timeoutMs: 120_000,
  });
  let parsed: { files?: ({ file: string; values: string[] } | { file: string; error: string })[]; error?: string };
  try {
    parsed = JSON.parse(result.stdout) as typeof parsed;
  } catch {
    // The helper itself failed (no Ansible for that interpreter): nothing it printed is shown, it may hold plaintext.
    return { files: new Map(files.map((file) => [file, { error: `Ansible's loader did not run (${python} exited with ${result.exitCode ?? "a signal"})` }])), passwordProblem: undefined };
  }
  const map = new Map<string, { values: string[] } | { error: string }>();
  for (const entry of parsed.files ?? []) map.set(entry.file, "values" in entry ? { values: entry.values } : { error: entry.error });
  return { files: map, passwordProblem: parsed.error };
}

let pythonOfAnsible: Promise<string> | undefined;

/**
 * The interpreter Ansible runs on (the shebang of `ansible-playbook`): the `python3` on PATH may
 * be another one without Ansible's modules (pyenv, a venv).
 */
export function ansiblePython(runner: Runner): Promise<string> {
  pythonOfAnsible ??= (async () => {
    const playbook = await runner.which("ansible-playbook");
    if (!playbook) return "python3";
    const first = (await readFile(playbook, "utf8").catch(() => "")).split("\n")[0] ?? "";
    const shebang = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(first);
    if (!shebang) return "python3";
    // `#!/usr/bin/env python3`: the interpreter is the argument.
    return basename(shebang[1]!) === "env" && shebang[2] ? shebang[2] : shebang[1]!;
  })();
  return pythonOfAnsible;
}

/** Whether a file holds vault ciphertext (as a whole, or an inline `!vault`), read from its start. */
async function holdsVault(file: string): Promise<boolean> {
  const stats = await stat(file).catch(() => undefined);
  if (!stats?.isFile() || stats.size > MAX_SCANNED_BYTES) return false;
  const handle = await open(file, "r").catch(() => undefined);
  if (!handle) return false;
  try {
    const buffer = Buffer.alloc(stats.size);
    await handle.read(buffer, 0, stats.size, 0);
    return buffer.includes(VAULT_MARK);
  } finally {
    await handle.close();
  }
}

/**
 * Regular files under `path` (itself when it is one), skipping VCS and dependency folders; links
 * are followed only when asked (a link in a repo may lead anywhere, `/` included).
 */
async function filesUnder(path: string, followLinks: boolean): Promise<string[]> {
  const found: string[] = [];
  const walk = async (current: string, depth = 0): Promise<void> => {
    // Bounded: a link cycle (a -> ..) must not walk forever.
    if (found.length >= MAX_SCANNED_FILES || depth > 16) return;
    const stats = await (followLinks ? stat(current) : lstat(current)).catch(() => undefined);
    if (!stats) return;
    if (stats.isFile()) {
      found.push(current);
      return;
    }
    if (!stats.isDirectory()) return;
    for (const entry of (await readdir(current).catch(() => [] as string[])).sort()) {
      if ([".git", "node_modules", ".venv", "__pycache__"].includes(entry)) continue;
      await walk(join(current, entry), depth + 1);
    }
  };
  await walk(path);
  return found;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}
