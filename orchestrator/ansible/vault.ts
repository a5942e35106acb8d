/**
 * Vaulted values, learnt before anything runs so they can be redacted everywhere: which files of
 * the infrastructure repo hold vaulted vars of the impersonated host (vault-encrypted files and
 * inline `!vault` strings in its group_vars/host_vars, next to the inventory and the playbook, and
 * the inventory itself), and their plaintext, read with Ansible's own loader and vault settings
 * (vault_values.py, on the interpreter Ansible runs on). Nothing here logs or keeps a value.
 */
import { lstat, mkdtemp, open, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, extname, join } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { JAIL_RUN_DIR, jailEnv, programFolders, runJailed } from "../host/jail.ts";

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
    for (const [folder, wanted] of [
      ["group_vars", profile.inventoryHost.groups],
      ["host_vars", [profile.inventoryHost.name]],
    ] as const) {
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
 * Decrypts `files` with Ansible (one process for all, in the jail; in `cwd`, the repo, so its
 * ansible.cfg applies) with the vault passwords obtained before (see {@link vaultPasswords}). The
 * output holds plaintext: it is never recorded.
 */
export async function readVaultedValues(files: readonly string[], context: { runner: Runner; cwd: string; vaultRepoDir?: string }): Promise<VaultedValues> {
  if (files.length === 0) return { files: new Map(), passwordProblem: undefined };
  const python = await ansiblePython(context.runner);
  const vault = await vaultPasswords(context.runner, context.vaultRepoDir ?? context.cwd);
  const client = vaultClient(vault.passwords, python);
  const result = await runJailed(
    context.runner,
    python,
    [join(import.meta.dirname, "vault_values.py"), ...files],
    {
      cwd: context.cwd,
      readable: [context.cwd, import.meta.dirname, ...files, ...(await programFolders(python))],
      env: jailEnv(context.runner.env, client.env),
      ...(client.stdinFile ? { stdinFile: client.stdinFile } : {}),
    },
    { check: false, secretOutput: true, timeoutMs: 120_000 },
  );
  let parsed: { files?: ({ file: string; values: string[] } | { file: string; error: string })[]; error?: string };
  try {
    parsed = JSON.parse(result.stdout) as typeof parsed;
  } catch {
    // The helper itself failed (no Ansible for that interpreter): nothing it printed is shown, it may hold plaintext.
    return {
      files: new Map(files.map((file) => [file, { error: `Ansible's loader did not run (${python} exited with ${result.exitCode ?? "a signal"})` }])),
      passwordProblem: vault.problem,
    };
  }
  const map = new Map<string, { values: string[] } | { error: string }>();
  for (const entry of parsed.files ?? []) map.set(entry.file, "values" in entry ? { values: entry.values } : { error: entry.error });
  return { files: map, passwordProblem: vault.problem ?? parsed.error };
}

/** The vault passwords of a repo as the user's Ansible gets them, or why it could not. */
export interface VaultPasswords {
  /** By vault id (`default` for a password file without one). Secrets: never logged. */
  passwords: { id: string; password: string }[];
  /** The password file or script failed (its message, without content). */
  problem: string | undefined;
}

const passwordsByRepo = new Map<string, Promise<VaultPasswords>>();

/**
 * The vault passwords for Ansible in `repoDir`, obtained once per process, before any jail and
 * outside one, the way the user's Ansible gets them: ANSIBLE_VAULT_PASSWORD_FILE,
 * ANSIBLE_VAULT_IDENTITY_LIST or the repo's ansible.cfg, a file or the user's own password script
 * (which may need the user's agent or network: it is the one piece of the user's that runs
 * outside the jail, and it runs here only). Every jailed Ansible gets them from
 * {@link vaultClient}.
 */
export function vaultPasswords(runner: Runner, repoDir: string): Promise<VaultPasswords> {
  // Once per repo and per way of giving the password (one process has one, tests several).
  const key = JSON.stringify([
    repoDir,
    ...["ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST", "ANSIBLE_CONFIG", "HOME"].map((name) => runner.env[name] ?? null),
  ]);
  let known = passwordsByRepo.get(key);
  if (!known) {
    known = (async () => {
      const python = await ansiblePython(runner);
      // Ansible makes its local temp folder as it loads (~/.ansible/tmp): one of ours instead.
      const temp = await mkdtemp(join(tmpdir(), "boma-it-vault-"));
      const result = await runner
        .run(python, [join(import.meta.dirname, "vault_values.py"), "--passwords"], {
          cwd: repoDir,
          env: { ANSIBLE_LOG_PATH: "/dev/null", ANSIBLE_NOCOLOR: "True", ANSIBLE_LOCAL_TEMP: temp },
          check: false,
          secretOutput: true,
          timeoutMs: 120_000,
        })
        .finally(() => rm(temp, { recursive: true, force: true }));
      try {
        const parsed = JSON.parse(result.stdout) as { passwords?: { id: string; password: string }[]; error?: string };
        return { passwords: parsed.passwords ?? [], problem: parsed.error };
      } catch {
        return { passwords: [], problem: `Ansible's vault settings could not be read (${python} exited with ${result.exitCode ?? "a signal"})` };
      }
    })();
    passwordsByRepo.set(key, known);
  }
  return known;
}

/** Where a jail finds the vault passwords: a vault password client script of its own. */
const VAULT_CLIENT = `${JAIL_RUN_DIR}/vault-client`;

/**
 * What gives a jailed Ansible the vault passwords: a vault password client script (Ansible runs a
 * password file named `*-client` with `--vault-id ID` and reads the password on its stdout) made
 * inside the jail from stdin, never on disk, and the settings that point every vault id, the
 * default one included, at it (they win over the repo's ansible.cfg, whose own password script
 * is not run again in the jail). No passwords: nothing.
 */
export function vaultClient(
  passwords: VaultPasswords["passwords"],
  python: string,
): { env: Record<string, string>; stdinFile?: { path: string; mode: number; content: string } } {
  if (passwords.length === 0) return { env: {} };
  const byId = Object.fromEntries(passwords.map(({ id, password }) => [id, password]));
  // JSON's string escapes are Python's too: the literal below is the JSON text of the map.
  const content = `#!${python}
import json, sys
passwords = json.loads(${JSON.stringify(JSON.stringify(byId))})
wanted = sys.argv[sys.argv.index("--vault-id") + 1] if "--vault-id" in sys.argv else "default"
password = passwords.get(wanted, passwords.get("default"))
if password is None:
    sys.stderr.write("boma-it: no vault password for vault id %s\\n" % wanted)
    sys.exit(1)
sys.stdout.write(password)
`;
  const ids = passwords.map(({ id }) => id).filter((id) => id !== "default");
  return {
    env: {
      ANSIBLE_VAULT_PASSWORD_FILE: VAULT_CLIENT,
      // An empty list would read as one empty source (the current folder, run as a script).
      ...(ids.length > 0 ? { ANSIBLE_VAULT_IDENTITY_LIST: ids.map((id) => `${id}@${VAULT_CLIENT}`).join(",") } : {}),
    },
    stdinFile: { path: VAULT_CLIENT, mode: 0o500, content },
  };
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
