/**
 * Applying the impersonated host's configuration to the test VM (ADR-025 §7): a transient
 * inventory that holds only the VM, under the host's name and groups, with the real inventory's
 * group_vars/host_vars in effect; stubs from the overlay, the cert tier's vars and the
 * scenario's vars as extra vars; connection details forced to the VM. It is checked with
 * Ansible itself before anything is applied. The real inventory is never written.
 */
import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import { stringifyForPython } from "../../infra/pyyaml.ts";
import type { Runner } from "../../infra/runner.ts";
import { BadInputError, HarnessError, RefusedError, SystemUnderTestError } from "../errors.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { needsEgress, withheldVars, type CertPlan } from "../run/certs.ts";
import type { RunSecrets } from "../run/secrets.ts";
import { pinnedHostKeyOptions, sshTargetOf } from "../host/ssh.ts";

/** Inline host vars that say how to reach the real host: never carried into the test. */
const CONNECTION_VAR = /^ansible_(host|port|user|connection|ssh_.*|password|private_key_file|become_pass(word)?|sudo_pass(word)?)$/;

/** What one apply needs. */
export interface ApplyInput {
  profile: LoadedProfile;
  outputs: StackOutputs;
  scenario: { name: string; vars: Record<string, unknown> };
  certs: CertPlan;
  /** The run's secrets: passed to Ansible, never written into the run dir. */
  secrets: RunSecrets;
  /** Folder for this apply's inventory, extra vars and log. */
  dir: string;
  runner: Runner;
  log: Log;
  signal: AbortSignal;
}

/** Files of a transient inventory. */
export interface TransientInventory {
  inventoryFile: string;
  extraVarsFile: string;
}

/** Writes the transient inventory and the extra vars of one scenario. */
export async function writeTransientInventory(input: ApplyInput): Promise<TransientInventory> {
  const { profile, outputs } = input;
  const inventoryFile = await writeHostInventory(profile, input.dir, `Transient inventory of ${outputs.runId}: only the test VM, as ${profile.document.host}.`);
  const target = sshTargetOf(outputs);
  // Extra vars have the highest precedence: nothing in the real vars can point Ansible elsewhere.
  const connection = {
    ansible_host: outputs.ip,
    ansible_port: 22,
    ansible_user: outputs.user,
    ansible_connection: "ssh",
    ansible_ssh_private_key_file: outputs.keyFile,
    ansible_ssh_common_args: pinnedHostKeyOptions(target).join(" "),
    ansible_python_interpreter: "/usr/bin/python3",
  };
  const extraVarsFile = await writeExtraVars(input.dir, { ...plainOverlayVars(input), ...input.certs.vars, ...input.scenario.vars, ...connection });
  return { inventoryFile, extraVarsFile };
}

/**
 * An inventory of the impersonated host alone, under its name and groups, with the real
 * inventory's group vars and its inline host vars less those that say how to reach the real
 * host; the real group_vars/host_vars linked in as they are (read through links, never written).
 */
async function writeHostInventory(profile: LoadedProfile, dir: string, title: string): Promise<string> {
  const host = profile.document.host;
  const inventoryDir = join(dir, "inventory");
  await mkdir(inventoryDir, { recursive: true });

  const wanted = new Set(profile.inventoryHost.groups);
  const groupBody = (name: string): Record<string, unknown> => {
    const node = profile.inventory.groups.get(name);
    const body: Record<string, unknown> = {};
    if (node && Object.keys(node.vars).length > 0) body.vars = node.vars;
    if (node?.hosts.has(host)) {
      const inline = Object.fromEntries(Object.entries(node.hostVars.get(host) ?? {}).filter(([key]) => !CONNECTION_VAR.test(key)));
      body.hosts = { [host]: Object.keys(inline).length > 0 ? inline : null };
    }
    const children = [...(node?.children ?? [])].filter((child) => wanted.has(child) && child !== "all");
    if (children.length > 0) body.children = Object.fromEntries(children.map((child) => [child, {}]));
    return body;
  };
  const all = groupBody("all");
  // Every group of the host, each defined once under all (Ansible merges groups by name);
  // each keeps only those of its children that lead to the host.
  const children: Record<string, unknown> = {};
  for (const group of profile.inventoryHost.groups) if (group !== "all") children[group] = groupBody(group);
  const inventory = { all: { ...all, children } };
  const inventoryFile = join(inventoryDir, "hosts.yml");
  // Read as Ansible reads it (YAML 1.1), written so that Ansible reads back the same values.
  await writeFile(inventoryFile, `# ${title} Made by boma-it; never edit.\n${stringifyForPython(inventory)}`);
  const realDir = dirname(profile.inventoryFile);
  for (const folder of ["group_vars", "host_vars"]) {
    const real = join(realDir, folder);
    if (await isDirectory(real)) await symlink(real, join(inventoryDir, folder));
  }
  return inventoryFile;
}

/** The overlay's vars less the secret ones: those go to Ansible from a private temp file, never the run dir. */
function plainOverlayVars({ profile, secrets }: Pick<ApplyInput, "profile" | "secrets">): Record<string, unknown> {
  return Object.fromEntries(Object.entries(profile.overlay.document.vars).filter(([name]) => !(name in secrets.secretVars)));
}

async function writeExtraVars(dir: string, vars: Record<string, unknown>): Promise<string> {
  const extraVarsFile = join(dir, "extra-vars.json");
  await writeFile(extraVarsFile, `${JSON.stringify(vars, null, 2)}\n`, { mode: 0o600 });
  return extraVarsFile;
}

/** `-e` arguments for the secrets (vault file, secret vars in a temp file); `cleanup` removes the file. */
async function secretExtraVars(secrets: RunSecrets): Promise<{ args: string[]; cleanup: () => Promise<void> }> {
  const args: string[] = [];
  let folder: string | undefined;
  if (Object.keys(secrets.secretVars).length > 0) {
    folder = await mkdtemp(join(tmpdir(), "boma-it-secrets-"));
    const file = join(folder, "secret-vars.json");
    await writeFile(file, JSON.stringify(secrets.secretVars), { mode: 0o600 });
    args.push("-e", `@${file}`);
  }
  if (secrets.vaultFile) args.push("-e", `@${secrets.vaultFile}`);
  return { args, cleanup: async () => (folder ? rm(folder, { recursive: true, force: true }) : undefined) };
}

/**
 * The last `-e` of every Ansible call: later extra vars win, so a DNS token withheld for the
 * internal tier stays withheld even if the overlay's vault or the repo's vars define it.
 */
function lastWordVars(certs: CertPlan): string[] {
  const vars = withheldVars(certs.tier, certs.dnsTokenVar);
  return Object.keys(vars).length > 0 ? ["-e", JSON.stringify(vars)] : [];
}

/** Ansible's environment for a run: pipelining on, host keys checked, logs in the run dir. */
function ansibleEnv(dir: string): Record<string, string> {
  return {
    ANSIBLE_PIPELINING: "True",
    ANSIBLE_HOST_KEY_CHECKING: "True",
    ANSIBLE_RETRY_FILES_ENABLED: "False",
    ANSIBLE_NOCOLOR: "True",
    ANSIBLE_FORCE_COLOR: "False",
    ANSIBLE_LOG_PATH: join(dir, "ansible.log"),
    ANSIBLE_LOCAL_TEMP: join(dir, ".ansible-tmp"),
    ANSIBLE_INVENTORY_UNPARSED_FAILED: "True",
    ANSIBLE_DEPRECATION_WARNINGS: "False",
  };
}

/**
 * Checks the transient inventory with Ansible before apply (safety invariant 1): exactly one
 * host, the impersonated one, and the address Ansible will connect to is inside the test subnet.
 */
export async function checkTransientInventory(input: ApplyInput, files: TransientInventory): Promise<void> {
  const host = input.profile.document.host;
  const listing = await input.runner.run("ansible-inventory", ["-i", files.inventoryFile, "--list"], {
    env: ansibleEnv(input.dir),
    cwd: input.profile.repoDir,
    check: false,
  });
  if (listing.failed) throw new HarnessError(`ansible-inventory cannot read the transient inventory ${files.inventoryFile}: ${listing.tail}`);
  const parsed = JSON.parse(listing.stdout) as Record<string, { hosts?: string[] }>;
  const hosts = new Set<string>();
  for (const [group, body] of Object.entries(parsed)) if (group !== "_meta") for (const name of body.hosts ?? []) hosts.add(name);
  if (hosts.size !== 1 || !hosts.has(host)) {
    throw new RefusedError(
      `the transient inventory ${files.inventoryFile} holds ${[...hosts].join(", ") || "no host"}, not exactly ${host}: refusing to apply`,
      "this is a bug of boma-it; nothing was applied",
    );
  }
  const address = await input.runner.run(
    "ansible",
    ["-i", files.inventoryFile, host, "-e", `@${files.extraVarsFile}`, "-m", "ansible.builtin.debug", "-a", "var=ansible_host", "-o"],
    { env: ansibleEnv(input.dir), cwd: input.profile.repoDir, check: false },
  );
  const effective = /"ansible_host":\s*"([^"]+)"/.exec(address.stdout)?.[1];
  if (!effective || !inSubnet(effective, input.outputs.subnet)) {
    throw new RefusedError(
      `Ansible would connect ${host} to ${effective ?? "an unknown address"}, outside the test subnet ${input.outputs.subnet}: refusing to apply`,
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
  const secret = await secretExtraVars(input.secrets);
  try {
    const inventoryFile = await writeHostInventory(input.profile, dir, `Inventory of ${host} for the DNS token check before a run.`);
    const extraVarsFile = await writeExtraVars(dir, { ...plainOverlayVars(input), ...input.certs.vars });
    const result = await input.runner.run(
      "ansible",
      ["-i", inventoryFile, host, "-e", `@${extraVarsFile}`, ...secret.args, "-m", "ansible.builtin.debug", "-a", `var=${tokenVar}`, "-o"],
      // Ansible's own log would hold the value: it goes nowhere.
      { env: { ...ansibleEnv(dir), ANSIBLE_LOG_PATH: "/dev/null" }, cwd: input.profile.repoDir, check: false, secretOutput: true },
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

/** What an apply did. */
export interface ApplyResult {
  ok: boolean;
  seconds: number;
  logFile: string;
  /** The PLAY RECAP line of the host. */
  recap: string;
  /** Seconds per task, in order (Ansible's own time, for the benchmark's overhead figure). */
  tasks: { name: string; seconds: number }[];
}

/** Runs the playbook against the VM with `--limit <host>`; fails as the system under test. */
export async function applyPlaybook(input: ApplyInput, files: TransientInventory): Promise<ApplyResult> {
  const host = input.profile.document.host;
  const logFile = join(input.dir, "ansible.log");
  const tasks: { name: string; seconds: number }[] = [];
  let current: { name: string; started: number } | undefined;
  let lastFatal = "";
  const finishTask = () => {
    if (current) tasks.push({ name: current.name, seconds: Math.round((performance.now() - current.started) / 100) / 10 });
    current = undefined;
  };
  const started = performance.now();
  const secret = await secretExtraVars(input.secrets);
  const result = await input.runner.run(
    "ansible-playbook",
    ["-i", files.inventoryFile, "--limit", host, "-e", `@${files.extraVarsFile}`, ...secret.args, ...lastWordVars(input.certs), input.profile.playbookFile],
    {
      env: ansibleEnv(input.dir),
      cwd: input.profile.repoDir,
      check: false,
      signal: input.signal,
      timeoutMs: 60 * 60_000,
      onLine: (line) => {
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
  ).finally(secret.cleanup);
  finishTask();
  const recap = new RegExp(`^${host}\\s+:.*$`, "m").exec(result.stdout)?.[0]?.replace(/\s+/g, " ") ?? "";
  const seconds = Math.round((performance.now() - started) / 100) / 10;
  if (input.signal.aborted) return { ok: false, seconds, logFile, recap, tasks };
  if (result.failed) {
    if (/unreachable=[1-9]/.test(recap) || /UNREACHABLE!/.test(result.stdout)) {
      throw new HarnessError(`Ansible could not reach the VM: ${lastFatal || result.tail.split("\n").at(-1)}; log: ${logFile}`);
    }
    throw new SystemUnderTestError(`applying ${input.profile.playbookFile} to ${host} failed: ${lastFatal || result.tail.split("\n").at(-1)}\n  recap: ${recap}\n  log: ${logFile}`);
  }
  return { ok: true, seconds, logFile, recap, tasks };
}

/** Whether an IPv4 address is inside a CIDR. */
export function inSubnet(ip: string, cidr: string): boolean {
  const [base, bits] = cidr.split("/");
  const toNumber = (address: string) => address.split(".").reduce((sum, part) => sum * 256 + Number(part), 0);
  if (!base || !bits || !/^\d+\.\d+\.\d+\.\d+$/.test(ip)) return false;
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toNumber(ip) / size) === Math.floor(toNumber(base) / size);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
