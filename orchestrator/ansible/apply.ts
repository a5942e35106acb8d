/**
 * Applying the impersonated host's configuration to the test VM (ADR-025 §7): a transient
 * inventory that holds only the VM, under the host's name and groups, with the real inventory's
 * group_vars/host_vars in effect; stubs from the overlay, the cert tier's vars and the
 * scenario's vars as extra vars; every connection confined to the VM (confine.ts). It is checked
 * with Ansible itself before anything is applied. The real inventory is never written.
 *
 * Several hosts (a topology) are applied in one run of Ansible, as a real deploy is: the
 * transient inventory then holds each of them, each reached on its own VM, and each host's
 * overlay vars (stubs, secrets, its vault) are its own: included for that host alone by a play
 * of boma-it's before the repo's playbook (`include_vars`, which only `set_fact`, role and
 * include parameters and extra vars outrank: unlike one host's overlay, a repo's `set_fact` of a
 * stubbed name wins), since an extra var would be every host's. That play runs whatever
 * `--tags` say (`always`; `--skip-tags always` is refused), and first checks that no source of
 * the repo's renames a host for its connections (vars named `__boma_it_*` are boma-it's).
 */
import { closeSync, createWriteStream, openSync, readSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import { stringifyForPython } from "../../infra/pyyaml.ts";
import type { CommandResult, Runner } from "../../infra/runner.ts";
import { BadInputError, HarnessError, RefusedError, SystemUnderTestError } from "../errors.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { needsEgress, withheldVars, type CertPlan } from "./certs.ts";
import { leaves, overlayPlainVars, type RunSecrets } from "./secrets.ts";
import { ensureMaster, keepMaster, type SshTarget } from "../host/ssh.ts";
import { prepareConfinement, TOPOLOGY_HOST_VAR, type Confinement, type ConfinedVm } from "./confine.ts";
import { openGate, type Gate } from "./gate.ts";
import { jailEnv, NEEDS_NETWORK, programFolders, programFoldersOf, readableAsWhole, runJailed, type JailSpec } from "../host/jail.ts";
import { ansiblePython, vaultClient, vaultPasswords } from "./vault.ts";
import { privateTempBase } from "../host/paths.ts";
import { taskRecords, type TaskOutcome } from "./task-records.ts";

/** What one apply needs. */
export interface ApplyInput {
  profile: LoadedProfile;
  outputs: StackOutputs;
  /** How to reach the VM (the machine's target: its pinned key and master connection). */
  target: SshTarget;
  scenario: { name: string; vars: Record<string, unknown> };
  certs: CertPlan;
  /** The run's secrets: passed to Ansible, never written into the run dir. */
  secrets: RunSecrets;
  /** Folder for this apply's inventory, extra vars and log. */
  dir: string;
  runner: Runner;
  log: Log;
  signal: AbortSignal;
  /** More arguments for ansible-playbook (`--tags`, `--skip-tags`, `-e`, `--diff`, `-v`), after the harness's. */
  playbookArgs?: readonly string[];
  /** The Python on the VM that runs Ansible's modules (default /usr/bin/python3). */
  guestPython?: string;
  /** The other hosts of a topology, applied with the profile's host in the same run of Ansible. */
  peers?: readonly ApplyPeer[];
}

/** Another host of a topology: its VM, and its own overlay's vars (the profile's host's are the profile's and the run's secrets). */
export interface ApplyPeer {
  host: string;
  outputs: StackOutputs;
  target: SshTarget;
  /** Its overlay's plain vars (stubs). */
  vars: Record<string, unknown>;
  /** Its overlay's secret vars (never written to the run dir). */
  secretVars: Record<string, unknown>;
  /** Its overlay's vault, if any. */
  vaultFile?: string;
}

/** The hosts an apply reaches, the profile's first, each with its VM. */
function appliedVms(input: Pick<ApplyInput, "profile" | "target" | "peers">): ConfinedVm[] {
  return [{ host: input.profile.document.host, target: input.target }, ...(input.peers ?? []).map(({ host, target }) => ({ host, target }))];
}

/** Files of a transient inventory, and the confinement of the apply that uses it. */
export interface TransientInventory {
  inventoryFile: string;
  extraVarsFile: string;
  confinement: Confinement;
  /** Several hosts: boma-it's play that gives each host its own overlay vars, run before the repo's playbook. */
  overlayPlaybook?: string;
}

/** The play of a topology's apply that includes each host's overlay vars for that host alone (see the module's comment). */
export const OVERLAY_PLAY_NAME = "boma-it: each host's own overlay vars";

/** The extra var that lists, per host, the files its overlay vars are included from. */
const OVERLAY_FILES_VAR = "__boma_it_overlay_files";

/** Writes the transient inventory, the extra vars of one scenario and the apply's confinement. */
export async function writeTransientInventory(input: ApplyInput): Promise<TransientInventory> {
  const { profile, outputs } = input;
  const vms = appliedVms(input);
  const confinement = await prepareConfinement(join(input.dir, "confine"), vms, input.runner, input.guestPython);
  const inventoryFile = await writeHostInventory(
    profile,
    vms.map((vm) => vm.host),
    input.dir,
    vms.length === 1
      ? `Transient inventory of ${outputs.runId}: only the test VM, as ${profile.document.host}.`
      : `Transient inventory of ${outputs.runId}: only the test VMs, as ${vms.map((vm) => vm.host).join(", ")}.`,
    new Set(Object.keys(confinement.extraVars)),
  );
  // Extra vars have the highest precedence, and the confinement's come last: nothing in the real
  // vars, the overlay or a scenario can point Ansible elsewhere. One host's overlay is an extra
  // var; several hosts' are each host's own (see the module's comment).
  const overlay = vms.length === 1 ? plainOverlayVars(input) : {};
  const extraVarsFile = await writeExtraVars(input.dir, { ...overlay, ...input.certs.vars, ...input.scenario.vars, ...confinement.extraVars });
  return { inventoryFile, extraVarsFile, confinement, ...(vms.length > 1 ? { overlayPlaybook: await writeOverlayPlaybook(input.dir) } : {}) };
}

/** The play that includes each host's overlay files, listed per host in {@link OVERLAY_FILES_VAR}; it prints no value. */
async function writeOverlayPlaybook(dir: string): Promise<string> {
  const file = join(dir, "overlay-vars.yml");
  const play = [
    {
      name: OVERLAY_PLAY_NAME,
      hosts: "all",
      gather_facts: false,
      tasks: [
        {
          name: "boma-it: each host is reached as itself",
          "ansible.builtin.assert": {
            that: [`${TOPOLOGY_HOST_VAR} == inventory_hostname`],
            fail_msg: `boma-it: ${TOPOLOGY_HOST_VAR} of {{ inventory_hostname }} is {{ ${TOPOLOGY_HOST_VAR} }}: the repo sets a var of boma-it's (named __boma_it_*), which would send this host's tasks to another host's VM`,
            quiet: true,
          },
          tags: ["always"],
        },
        {
          name: "boma-it: the overlay vars of {{ inventory_hostname }}",
          "ansible.builtin.include_vars": { file: "{{ item }}" },
          loop: `{{ ${OVERLAY_FILES_VAR}[inventory_hostname] | default([]) }}`,
          no_log: true,
          tags: ["always"],
        },
      ],
    },
  ];
  await writeFile(file, `# Made by boma-it; never edit.\n${stringifyForPython(play)}`, { mode: 0o600 });
  return file;
}

/**
 * An inventory of the impersonated hosts alone (one, or a topology's), under their names and
 * groups, with the real inventory's inline group vars and host vars as Ansible read them
 * (vaulted and unsafe values kept as such), less the connection variables the confinement sets
 * anyway (so the file shows no real address); the real group_vars/host_vars linked in as they
 * are (read, never written). Several hosts: each also names itself in {@link TOPOLOGY_HOST_VAR}.
 */
async function writeHostInventory(
  profile: LoadedProfile,
  hosts: readonly string[],
  dir: string,
  title: string,
  forcedVars: ReadonlySet<string>,
): Promise<string> {
  const inventoryDir = join(dir, "inventory");
  await mkdir(inventoryDir, { recursive: true });

  const groupsOf = (host: string): string[] => {
    const entry = profile.inventory.hosts.get(host);
    if (!entry) throw new HarnessError(`${host} is not a host of ${profile.inventory.file}`);
    return entry.groups;
  };
  // In the order of each host's groups (`all` first), the first host's before the next's.
  const wanted = new Set(hosts.flatMap(groupsOf));
  const inlineOf = (host: string): Record<string, unknown> => ({
    ...Object.fromEntries(Object.entries(profile.inventory.hostVars.get(host) ?? {}).filter(([key]) => !forcedVars.has(key) && key !== "ansible_connection")),
    ...(hosts.length > 1 ? { [TOPOLOGY_HOST_VAR]: host } : {}),
  });
  // Each host's inline vars are written once, under the first of its groups that lists it.
  const listingOf = new Map(hosts.map((host) => [host, groupsOf(host).find((group) => profile.inventory.groups.get(group)?.hosts.has(host))]));
  const groupBody = (name: string): Record<string, unknown> => {
    const node = profile.inventory.groups.get(name);
    const body: Record<string, unknown> = {};
    if (node && Object.keys(node.vars).length > 0) body.vars = node.vars;
    const listed = hosts.filter((host) => node?.hosts.has(host));
    if (listed.length > 0) {
      body.hosts = Object.fromEntries(
        listed.map((host) => {
          const inline = inlineOf(host);
          return [host, name === listingOf.get(host) && Object.keys(inline).length > 0 ? inline : null];
        }),
      );
    }
    const children = [...(node?.children ?? [])].filter((child) => wanted.has(child) && child !== "all");
    if (children.length > 0) body.children = Object.fromEntries(children.map((child) => [child, {}]));
    return body;
  };
  const all = groupBody("all");
  // Every group of the hosts, each defined once under all (Ansible merges groups by name);
  // each keeps only those of its children that lead to one of the hosts.
  const children: Record<string, unknown> = {};
  for (const group of wanted) if (group !== "all") children[group] = groupBody(group);
  const inventory = { all: { ...all, children } };
  const inventoryFile = join(inventoryDir, "hosts.yml");
  // Read as Ansible reads it (YAML 1.1), written so that Ansible reads back the same values.
  await writeFile(inventoryFile, `# ${title} Made by boma-it; never edit.\n${stringifyForPython(inventory)}`, { mode: 0o600 });
  for (const folder of ["group_vars", "host_vars"]) {
    const real = join(profile.inventory.varsDir, folder);
    if (await isDirectory(real)) await symlink(real, join(inventoryDir, folder));
  }
  return inventoryFile;
}

/** The overlay's vars less the secret ones: those go to Ansible from a private temp file, never the run dir. */
function plainOverlayVars({ profile, secrets }: Pick<ApplyInput, "profile" | "secrets">): Record<string, unknown> {
  return overlayPlainVars(profile, secrets.secretVars);
}

async function writeExtraVars(dir: string, vars: Record<string, unknown>): Promise<string> {
  const extraVarsFile = join(dir, "extra-vars.json");
  await writeFile(extraVarsFile, `${JSON.stringify(vars, null, 2)}\n`, { mode: 0o600 });
  return extraVarsFile;
}

/**
 * Where the teller writes the secrets a jailed Ansible decrypts (a JSON list per line), in a
 * private folder of memory-backed storage (/dev/shm where there is one), never the run dir; and
 * `take`, which reads what was written since it last read and makes it the run's secrets (at
 * once, before the line that called it is redacted). A line that is not a list of strings is
 * left out; nothing of it can make the apply fail.
 */
async function learntSecrets(secrets: RunSecrets): Promise<{ file: string; take: () => void; cleanup: () => Promise<void> }> {
  const folder = await mkdtemp(join(await privateTempBase(), "boma-it-learnt-"));
  const file = join(folder, "secrets.jsonl");
  await writeFile(file, "", { mode: 0o600 });
  let offset = 0;
  let partial = "";
  const take = () => {
    let text: string;
    try {
      const size = statSync(file).size;
      if (size <= offset) return;
      const buffer = Buffer.alloc(size - offset);
      const fd = openSync(file, "r");
      try {
        readSync(fd, buffer, 0, buffer.length, offset);
      } finally {
        closeSync(fd);
      }
      offset = size;
      text = partial + buffer.toString("utf8");
    } catch {
      return;
    }
    const lines = text.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      try {
        const values = JSON.parse(line) as unknown;
        if (Array.isArray(values)) for (const value of values) if (typeof value === "string") secrets.add(value);
      } catch {
        // Not a list: a jail's writing, not the teller's; nothing is learnt from it.
      }
    }
  };
  return { file, take, cleanup: () => rm(folder, { recursive: true, force: true }) };
}

/**
 * `-e` arguments for the overlay vars that are no extra var of the apply's (one host: the secrets,
 * its vault file and the secret vars in a temp file; several hosts: the map of each host's
 * overlay files, its plain and secret vars in temp files and its vault, that boma-it's overlay
 * play includes), the paths a jail must read for them; `cleanup` removes the temp files.
 */
async function overlayVarArgs(
  input: Pick<ApplyInput, "profile" | "secrets" | "peers">,
): Promise<{ args: string[]; readable: string[]; cleanup: () => Promise<void> }> {
  const args: string[] = [];
  const readable: string[] = [];
  let folder: string | undefined;
  const tempFile = async (name: string, vars: Record<string, unknown>): Promise<string> => {
    folder ??= await mkdtemp(join(tmpdir(), "boma-it-secrets-"));
    const file = join(folder, name);
    await writeFile(file, JSON.stringify(vars), { mode: 0o600 });
    return file;
  };
  try {
    const { secrets } = input;
    if (!input.peers || input.peers.length === 0) {
      if (Object.keys(secrets.secretVars).length > 0) args.push("-e", `@${await tempFile("secret-vars.json", secrets.secretVars)}`);
      if (secrets.vaultFile) {
        args.push("-e", `@${secrets.vaultFile}`);
        readable.push(secrets.vaultFile);
      }
    } else {
      const hosts = [
        { host: input.profile.document.host, vars: plainOverlayVars(input), secretVars: secrets.secretVars, vaultFile: secrets.vaultFile },
        ...input.peers,
      ];
      // The other hosts' secrets are the run's too: redacted wherever they would appear.
      for (const peer of input.peers) for (const value of leaves(peer.secretVars)) secrets.add(value);
      const files: Record<string, string[]> = {};
      for (const [index, { host, vars, secretVars, vaultFile }] of hosts.entries()) {
        const own: string[] = [];
        if (Object.keys(vars).length > 0) own.push(await tempFile(`vars-${index}.json`, vars));
        if (Object.keys(secretVars).length > 0) own.push(await tempFile(`secret-vars-${index}.json`, secretVars));
        if (vaultFile) {
          own.push(vaultFile);
          readable.push(vaultFile);
        }
        files[host] = own;
      }
      args.push("-e", JSON.stringify({ [OVERLAY_FILES_VAR]: files }));
    }
    if (folder) readable.push(folder);
  } catch (error) {
    if (folder) await rm(folder, { recursive: true, force: true });
    throw error;
  }
  const made = folder;
  return { args, readable, cleanup: async () => (made ? rm(made, { recursive: true, force: true }) : undefined) };
}

/** What a jail needs beyond what every Ansible run of a profile reads. */
interface JailNeeds {
  readable?: readonly string[];
  /** The gate and the teller (see gate.ts). */
  sockets?: readonly string[];
  /** Settings over boma-it's own (see jailEnv). */
  settings?: Record<string, string>;
  /** The apply's confinement: its ssh first on PATH. */
  confinement?: Confinement;
  /** Folders it may write (where the callback records each task). */
  writable?: readonly string[];
}

/**
 * Which callbacks a jailed Ansible runs: boma-it's own, which does nothing, from a folder that
 * holds nothing else (callbacks/boma_it.py says why an empty list cannot be given). What the
 * repo's ansible.cfg or the user's environment enables (junit, log_plays, syslog_json, ARA) does
 * not load.
 */
function callbackSettings(): Record<string, string> {
  return { ANSIBLE_CALLBACK_PLUGINS: join(import.meta.dirname, "callbacks"), ANSIBLE_CALLBACKS_ENABLED: "boma_it" };
}

/** What of the user's HOME an Ansible reads by default: its roles, collections and plugins, its ansible.cfg (never ~/.ansible/cp, where masters to real hosts listen). */
function homeAnsible(home: string | undefined): string[] {
  return home ? ["collections", "roles", "plugins"].map((folder) => join(home, ".ansible", folder)).concat(join(home, ".ansible.cfg")) : [];
}

const configuredByRepo = new Map<string, Promise<string[]>>();

/**
 * The paths the repo's Ansible configuration names (roles_path, collections paths, plugin and
 * library paths, an inventory), as Ansible itself reads them (`ansible-config dump`, in the repo,
 * in a jail), that exist: a jail reads them (a roles_path outside the repo keeps working). A path
 * that would bring a home, a system or a masked folder into view as a whole is left out.
 */
async function configuredPaths(runner: Runner, repoDir: string): Promise<string[]> {
  let known = configuredByRepo.get(repoDir);
  if (!known) {
    known = (async () => {
      const home = runner.env.HOME;
      const dump = await runJailed(
        runner,
        "ansible-config",
        ["dump", "--only-changed", "--format", "json"],
        {
          cwd: repoDir,
          readable: [repoDir, ...homeAnsible(home), ...(await programFoldersOf(runner, "ansible-config"))],
          env: jailEnv(runner.env),
        },
        { check: false, timeoutMs: 60_000 },
      );
      let settings: { name: string; value: unknown }[] = [];
      try {
        settings = JSON.parse(dump.stdout) as typeof settings;
      } catch {
        return [];
      }
      const paths = settings
        .filter((setting) => /PATHS?$|^DEFAULT_HOST_LIST$/.test(setting.name) && !/LOG|TMP|TEMP|VAULT|KEY|CONTROL/.test(setting.name))
        .flatMap((setting) => (Array.isArray(setting.value) ? setting.value : [setting.value]))
        .filter((value): value is string => typeof value === "string" && value.startsWith("/"));
      const present: string[] = [];
      for (const path of new Set(paths)) if ((await stat(path).catch(() => undefined)) && readableAsWhole(path, home)) present.push(path);
      return present;
    })();
    configuredByRepo.set(repoDir, known);
  }
  return known;
}

/**
 * The jail of an Ansible run for a profile (see host/jail.ts): in the repo, reading the repo and
 * the folder it is in when that is not a home or a system folder (a secrets checkout beside it),
 * what the repo's configuration names (configuredPaths), the Ansible of the user's HOME, its
 * inventory's vars, the overlay, the harness's own helpers, the Ansible installation and whatever
 * `needs` adds; the vault passwords obtained once outside it (see vaultPasswords); boma-it's
 * settings, then the run's.
 */
async function jailFor(input: Pick<ApplyInput, "profile" | "runner">, tool: string, needs: JailNeeds = {}): Promise<JailSpec> {
  const { profile, runner } = input;
  const python = await ansiblePython(runner);
  const client = vaultClient((await vaultPasswords(runner, profile.vaultRepoDir ?? profile.repoDir)).passwords, python);
  const env = jailEnv(runner.env, { ...callbackSettings(), ...client.env, ...needs.settings });
  const parent = dirname(profile.repoDir);
  return {
    cwd: profile.repoDir,
    readable: [
      ...(readableAsWhole(parent, runner.env.HOME) ? [parent] : []),
      profile.repoDir,
      ...(await configuredPaths(runner, profile.repoDir)),
      ...homeAnsible(runner.env.HOME),
      profile.inventory.file,
      profile.inventory.varsDir,
      profile.playbookFile,
      ...(profile.overlay.file ? [profile.overlay.file] : []),
      import.meta.dirname,
      ...(await programFoldersOf(runner, tool)),
      ...(await programFolders(python)),
      ...(needs.confinement?.readable ?? []),
      ...(needs.readable ?? []),
    ],
    ...(needs.sockets ? { sockets: needs.sockets } : {}),
    ...(needs.writable ? { writable: needs.writable } : {}),
    ...(client.stdinFile ? { stdinFile: client.stdinFile } : {}),
    env: needs.confinement ? { ...env, ...needs.confinement.env(env.PATH!) } : env,
  };
}

/**
 * The last `-e` of every apply: later extra vars win, so a DNS token withheld for the internal
 * tier stays withheld even if the overlay's vault or the repo's vars define it, and the VM stays
 * the only destination whatever a user's `-e` says.
 */
function lastWordVars(certs: CertPlan, confinement: Confinement): string[] {
  const vars = { ...withheldVars(certs.tier, certs.dnsTokenVar), ...confinement.extraVars };
  return ["-e", JSON.stringify(vars)];
}

/**
 * Checks the transient inventory with Ansible before apply (safety invariant 1): it holds
 * exactly the impersonated host (or a topology's hosts), no other. (Where their connections go
 * is the confined ssh's to decide, on every connection.)
 */
export async function checkTransientInventory(input: ApplyInput, files: Pick<TransientInventory, "inventoryFile">): Promise<void> {
  const expected = appliedVms(input).map((vm) => vm.host);
  // --graph: the hosts and groups, never a value (a listing with vars holds the decrypted vault).
  const listing = await runJailed(
    input.runner,
    "ansible-inventory",
    ["-i", files.inventoryFile, "--graph"],
    await jailFor(input, "ansible-inventory", { readable: [dirname(files.inventoryFile)], settings: { ANSIBLE_INVENTORY_UNPARSED_FAILED: "True" } }),
    { check: false },
  );
  if (listing.failed) throw new HarnessError(`ansible-inventory cannot read the transient inventory ${files.inventoryFile}: ${listing.tail}`);
  const hosts = new Set(
    listing.stdout
      .split("\n")
      .map((line) => /^[\s|]*--([^@\s].*)$/.exec(line)?.[1]?.trim())
      .filter((name): name is string => name !== undefined),
  );
  if (hosts.size !== expected.length || !expected.every((host) => hosts.has(host))) {
    throw new RefusedError(
      `the transient inventory ${files.inventoryFile} holds ${[...hosts].join(", ") || "no host"}, not exactly ${expected.join(", ")}: refusing to apply`,
      "this is a bug of boma-it; nothing was applied",
    );
  }
}

/**
 * For the le tiers, before anything is created: the DNS token var must be defined for the host
 * (in the overlay's vault or the repo's), or the run is refused (exit 2) instead of failing after
 * minutes of boot. Ansible resolves it as it will for the apply (the host's inventory, the real
 * group_vars/host_vars, the overlay's vars and vault; `debug` runs on this host and reaches no
 * one). The value is learnt with the output kept out of every record and Ansible's log off, so
 * that it is redacted from then on wherever it came from. The folder is temporary.
 */
export async function learnDnsToken(input: Pick<ApplyInput, "profile" | "certs" | "secrets" | "runner" | "log">): Promise<void> {
  const tokenVar = input.certs.dnsTokenVar;
  if (!needsEgress(input.certs.tier) || !tokenVar) return;
  const host = input.profile.document.host;
  const dir = await mkdtemp(join(tmpdir(), "boma-it-token-"));
  const secret = await overlayVarArgs(input);
  try {
    // `debug` runs on this host: no connection is made, so nothing needs confining here.
    const inventoryFile = await writeHostInventory(input.profile, [host], dir, `Inventory of ${host} for the DNS token check before a run.`, new Set());
    const extraVarsFile = await writeExtraVars(dir, { ...plainOverlayVars(input), ...input.certs.vars });
    const result = await runJailed(
      input.runner,
      "ansible",
      ["-i", inventoryFile, host, "-e", `@${extraVarsFile}`, ...secret.args, "-m", "ansible.builtin.debug", "-a", `var=${tokenVar}`, "-o"],
      // Ansible's own log would hold the value: it is off (see jailEnv).
      await jailFor(input, "ansible", { readable: [dir, ...secret.readable] }),
      { check: false, secretOutput: true },
    );
    const match = new RegExp(`"${tokenVar}":\\s*"((?:[^"\\\\]|\\\\.)*)"`).exec(result.stdout);
    const value = match ? (JSON.parse(`"${match[1]}"`) as string) : undefined;
    if (result.failed || value === undefined || value === "" || value.startsWith("VARIABLE IS NOT DEFINED")) {
      throw new BadInputError({
        ...(input.profile.overlay.file ? { file: input.profile.overlay.file } : {}),
        path: "certs.dnsTokenVar",
        message: `--certs ${input.certs.tier} needs the DNS provider token in ${tokenVar}, and it is not defined for ${host} (expected it in the overlay's vault or the infrastructure repo's vault; found ${result.failed ? "an Ansible error" : "nothing"})`,
      });
    }
    input.secrets.add(value);
    input.log.info(`DNS token: ${tokenVar} is defined for ${host} (redacted from here on)`);
  } finally {
    await secret.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * What a run's apply would meet first, found before any boot (`validate`): the host's vars as
 * Ansible resolves them for the apply (the host's inventory, every group_vars/host_vars file it
 * reads, YAML and vaulted, the overlay's vars, the scenario's), then the syntax of the playbook
 * and of the verify playbook (`--syntax-check`). Both in the jail, reaching no one (`debug` runs on this host). A failure is
 * bad input naming the file and line Ansible names, with Ansible's own lines.
 */
export async function checkBeforeBoot(input: Pick<ApplyInput, "profile" | "secrets" | "runner" | "log"> & { vars: Record<string, unknown> }): Promise<void> {
  const host = input.profile.document.host;
  const dir = await mkdtemp(join(tmpdir(), "boma-it-validate-"));
  const secret = await overlayVarArgs(input);
  try {
    const inventoryFile = await writeHostInventory(input.profile, [host], dir, `Inventory of ${host} for validate: nothing connects.`, new Set());
    const extraVarsFile = await writeExtraVars(dir, { ...plainOverlayVars(input), ...input.vars });
    const common = ["-i", inventoryFile, "-e", `@${extraVarsFile}`, ...secret.args];
    const vars = await runJailed(
      input.runner,
      "ansible",
      [...common, host, "-m", "ansible.builtin.debug", "-a", "msg=vars-read", "-o"],
      await jailFor(input, "ansible", { readable: [dir, ...secret.readable] }),
      { check: false, secretOutput: true },
    );
    if (vars.failed) throw ansibleProblem(`Ansible cannot resolve the vars of ${host}`, `${vars.stdout}\n${vars.stderr}`);
    input.log.info(`vars: Ansible resolves every var of ${host} (its group_vars and host_vars, the overlay's)`);
    for (const [what, file] of [
      ["playbook", input.profile.playbookFile],
      ["verify playbook", input.profile.verifyFile],
    ] as const) {
      if (file === undefined) continue;
      const syntax = await runJailed(
        input.runner,
        "ansible-playbook",
        [...common, "--limit", host, "--syntax-check", file],
        await jailFor(input, "ansible-playbook", { readable: [dir, file, ...secret.readable] }),
        { check: false, secretOutput: true },
      );
      if (syntax.failed) throw ansibleProblem(`the ${what} ${file} does not pass \`ansible-playbook --syntax-check\``, `${syntax.stdout}\n${syntax.stderr}`);
      input.log.info(`${what}: ${file} passes ansible-playbook --syntax-check`);
    }
  } finally {
    await secret.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Ansible's complaint as bad input: the file, line and column it names (its "The error appears
 * to be in '…': line N, column M"), and its own lines, kept as lines.
 */
export function ansibleProblem(what: string, output: string): BadInputError {
  const lines = output
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line.trim() !== "");
  const start = lines.findIndex((line) => /^(ERROR!|\[ERROR\]|fatal:|FAILED!)/.test(line.trim()) || /ERROR!/.test(line));
  const told = (start >= 0 ? lines.slice(start) : lines.slice(-6)).slice(0, 12);
  const where = /The (?:error|offending line) appears to be in '([^']+)': line (\d+), column (\d+)/.exec(output);
  return new BadInputError({
    ...(where ? { file: where[1]!, line: Number(where[2]), column: Number(where[3]) } : {}),
    message: `${what}:\n    ${told.join("\n    ")}`,
  });
}

/** What an apply did. */
export interface ApplyResult {
  ok: boolean;
  seconds: number;
  logFile: string;
  /** The PLAY RECAP line of the host. */
  recap: string;
  /** Seconds per task, in order (Ansible's own time, for the benchmark's overhead figure). */
  tasks: { name: string; seconds: number }[];
  /** How each task ended, in order (what a second apply changed, what a verify playbook asserted). */
  outcomes: TaskOutcome[];
}

/** A playbook run to its end, not yet judged: Ansible's exit, and the last line it printed about a failure. */
export interface PlaybookRun extends ApplyResult {
  failed: boolean;
  /** The last `fatal:`/`failed:` line, or Ansible's last line. */
  why: string;
}

/**
 * Applies the profile's playbook to the VM with `--limit <host>`; fails as the system under test
 * (see {@link runPlaybook}).
 */
export async function applyPlaybook(input: ApplyInput, files: TransientInventory): Promise<ApplyResult> {
  const run = await runPlaybook(input, files, input.profile.playbookFile);
  if (input.signal.aborted) return { ...resultOf(run), ok: false };
  if (run.failed) {
    const host = input.profile.document.host;
    throw new SystemUnderTestError(
      `applying ${input.profile.playbookFile} to ${host} failed: ${run.why}${jailHint(run.why)}\n  recap: ${run.recap}\n  log: ${run.logFile}`,
    );
  }
  return resultOf(run);
}

function resultOf(run: PlaybookRun): ApplyResult {
  return { ok: !run.failed, seconds: run.seconds, logFile: run.logFile, recap: run.recap, tasks: run.tasks, outcomes: run.outcomes };
}

/**
 * Runs a playbook (the profile's, or its verify playbook) against the VM with `--limit <host>`,
 * through the apply's confinement, and says how it ended without judging it. The log
 * (ansible.log in the apply's folder) is what Ansible printed, redacted, line by line as it came.
 * A connection the confinement refused is the system under test's failure (exit 1) naming what
 * the repo asked for, even when a play ignored it; a VM Ansible could not reach is the harness's
 * (exit 4).
 */
export async function runPlaybook(input: ApplyInput, files: TransientInventory, playbookFile: string): Promise<PlaybookRun> {
  const vms = appliedVms(input);
  const logFile = join(input.dir, "ansible.log");
  const tasks: { name: string; seconds: number }[] = [];
  let current: { name: string; started: number } | undefined;
  let lastFatal = "";
  const finishTask = () => {
    if (current) tasks.push({ name: current.name, seconds: Math.round((performance.now() - current.started) / 100) / 10 });
    current = undefined;
  };
  const started = performance.now();
  const secret = await overlayVarArgs(input);
  const log = createWriteStream(logFile, { flags: "a", mode: 0o600 });
  // The jail's one way out: the run's master to each VM (kept up while the play runs: a role may
  // reboot the VM), through a gate that lets only commands on that VM pass; and the teller (the
  // first VM's gate's), where the jail tells what it decrypted (written down in memory-backed
  // storage, never the run dir). Each must answer before the play starts: a gate has no other way.
  // boma-it's overlay play runs whatever the tags: only skipping `always` would skip it.
  if (
    vms.length > 1 &&
    input.playbookArgs?.some(
      (arg, index, args) =>
        args[index - 1] === "--skip-tags" &&
        arg
          .split(",")
          .map((tag) => tag.trim())
          .includes("always"),
    )
  ) {
    throw new RefusedError(
      "--skip-tags always would skip the play that gives each host of a topology its own overlay vars",
      "skip other tags; the overlay play tags its tasks `always`",
    );
  }
  for (const vm of vms) await ensureMaster(input.runner, vm.target);
  const keeping = new AbortController();
  const kept = Promise.all(vms.map((vm) => keepMaster(input.runner, vm.target, keeping.signal)));
  const learnt = await learntSecrets(input.secrets);
  const records = await taskRecords(input.secrets);
  const gates: Gate[] = [];
  let result: CommandResult;
  let outcomes: TaskOutcome[] = [];
  try {
    for (const vm of vms) {
      const opening = openGate(input.runner, vm.target.controlPath!, { records: files.confinement.recordsFile, secrets: learnt.file });
      gates.push(
        vms.length === 1
          ? await opening
          : await opening.catch((error: unknown) => Promise.reject(new HarnessError(`${vm.host}: ${(error as Error).message}`, { cause: error }))),
      );
    }
    const teller = gates[0]!.tellSocket;
    const jail = await jailFor(input, "ansible-playbook", {
      readable: [
        input.dir,
        playbookFile,
        ...vms.flatMap((vm) => [dirname(vm.target.keyFile), dirname(vm.target.knownHostsFile)]),
        ...(files.overlayPlaybook ? [files.overlayPlaybook] : []),
        ...secret.readable,
      ],
      writable: [records.folder],
      sockets: [...gates.map((gate) => gate.socket), teller],
      confinement: files.confinement,
      // Vaulted content the play reads anywhere (outside the repo too) is told as it is decrypted.
      settings: { PYTHONPATH: join(import.meta.dirname, "learn"), BOMA_IT_TELL: teller, BOMA_IT_TASK_RECORDS: records.file },
    });
    result = await runJailed(
      input.runner,
      "ansible-playbook",
      [
        "-i",
        files.inventoryFile,
        "--limit",
        vms.map((vm) => vm.host).join(","),
        "-e",
        `@${files.extraVarsFile}`,
        ...secret.args,
        ...(input.playbookArgs ?? []),
        ...lastWordVars(input.certs, files.confinement),
        ...(files.overlayPlaybook ? [files.overlayPlaybook] : []),
        playbookFile,
      ],
      jail,
      {
        check: false,
        signal: input.signal,
        timeoutMs: 60 * 60_000,
        // What the jail told before this line was printed is a secret of the run from this line on.
        beforeLine: learnt.take,
        // Lines come redacted from the runner.
        onLine: (line) => {
          log.write(`${new Date().toISOString()} | ${line}\n`);
          // Handlers run at the end of a play: timed on their own, not added to the play's last task.
          const task = /^(TASK|RUNNING HANDLER) \[(.+)\] \*+$/.exec(line);
          if (task) {
            finishTask();
            const name = task[1] === "TASK" ? task[2]! : `handler ${task[2]!}`;
            current = { name, started: performance.now() };
            input.log.info(`${task[1] === "TASK" ? "task" : "running"} ${name}`);
          } else if (/^PLAY RECAP/.test(line)) finishTask();
          else if (/^(fatal|failed):/.test(line)) {
            lastFatal = line;
            input.log.warn(line.slice(0, 400));
          }
        },
      },
    );
  } finally {
    keeping.abort();
    await kept;
    // Each on its own: one that fails (the jail could make its folder unreadable) must not keep
    // the next, the secrets' file above all, on disk.
    const cleanups: [string, () => Promise<unknown>][] = [
      ["closing the gates", async () => Promise.all(gates.map((gate) => gate.close()))],
      ["taking what the jail told", async () => (learnt.take(), learnt.cleanup())],
      ["reading the task records", async () => (outcomes = await records.read())],
      ["removing the task records", () => records.cleanup()],
      ["removing the secret vars' file", () => secret.cleanup()],
      ["closing the log", () => new Promise<void>((resolve) => log.end(resolve))],
    ];
    for (const [what, cleanup] of cleanups) {
      await cleanup().catch((error: unknown) => input.log.warn(`after the play: ${what} failed: ${(error as Error).message}`));
    }
  }
  finishTask();
  // Each host's PLAY RECAP line (a topology's joined by "; "): the last, the repo's playbook's (a
  // topology's overlay play has a recap of its own before it).
  const recap = vms
    .map((vm) => [...result.stdout.matchAll(new RegExp(`^${escapeRegExp(vm.host)}\\s+:.*$`, "gm"))].at(-1)?.[0]?.replace(/\s+/g, " "))
    .filter((line): line is string => line !== undefined)
    .join("; ");
  const seconds = Math.round((performance.now() - started) / 100) / 10;
  for (const note of await files.confinement.notes()) input.log.warn(`the repo's ssh settings ask for ${note}`);
  const refused = await files.confinement.refusals();
  if (refused.length > 0) {
    const first = refused[0]!;
    throw new SystemUnderTestError(
      `the infrastructure repo's configuration sends Ansible elsewhere than the VM: the confinement refused ${first.what} (${first.detail})${refused.length > 1 ? `, and ${refused.length - 1} more connection(s)` : ""}; nothing reached any other host\n  log: ${logFile}`,
    );
  }
  if (result.failed && !input.signal.aborted && (/unreachable=[1-9]/.test(recap) || /UNREACHABLE!/.test(result.stdout))) {
    throw new HarnessError(`Ansible could not reach the VM: ${lastFatal || result.tail.split("\n").at(-1)}; log: ${logFile}`);
  }
  // Without a failed task, Ansible's own complaint (a syntax error, a missing role) says why.
  const complaint = /^(ERROR!|\[ERROR\]).*$/m.exec(`${result.stderr}\n${result.stdout}`)?.[0];
  const why = lastFatal || complaint || result.tail.split("\n").at(-1) || "";
  return { ok: !result.failed, failed: result.failed, why, seconds, logFile, recap, tasks, outcomes };
}

/**
 * What to say when a failure looks like the jail's doing: something on the control host (a
 * lookup, a local task, a plugin) wanted the network, or to write outside the run.
 */
export function jailHint(failure: string): string {
  const network = NEEDS_NETWORK.test(failure);
  const write = /Read-only file system|EROFS/.test(failure);
  if (!network && !write) return "";
  const what = network ? "the network" : "a write outside the run's folder";
  return ` (this looks like the jail: Ansible's controller side, lookups and local tasks included, runs without network and read-only but the run's folder, so what needs ${what} there fails; give the value it would get as a stub in the overlay's vars, which win over the repo's, or see the runbook's "Against a real repo")`;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** `text` matched literally in a regular expression (a host name's dots are dots). */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
