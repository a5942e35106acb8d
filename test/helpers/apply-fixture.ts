/**
 * An apply of a small infrastructure repo through the real `ansible-playbook`, in the real jail,
 * to a fake VM behind a fake SSH master (fake_master.py): what runs "on the VM" runs here, outside
 * the jail, with BOMA_FAKE_VM=1. For the confinement and escape tests.
 */
import { execFileSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import { Runner } from "../../infra/runner.ts";
import type { ApplyInput, ApplyPeer } from "../../orchestrator/ansible/apply.ts";
import type { SshTarget } from "../../orchestrator/host/ssh.ts";
import { loadProfile } from "../../orchestrator/profile/load.ts";
import { planCerts } from "../../orchestrator/ansible/certs.ts";
import { loadSecrets, Redactor } from "../../orchestrator/ansible/secrets.ts";
import { startFakeVm, type FakeVm } from "./fake-vm.ts";
import { silentLog } from "./fixtures.ts";
import { tempTree } from "./tmp.ts";

export const RUN_ID = "boma-it-askari-20261201-101010";
export const VM_IP = "10.234.7.10";

/** Options of an {@link applyFixture}. */
export interface FixtureOptions {
  /** The repo's playbook (site.yml). */
  playbook: string;
  env?: Record<string, string>;
  /** Files of a home folder made for the test (HOME points there). */
  home?: Record<string, string>;
  /** Files beside the repo (relative to the tree: `secrets/vault.yml` is a sibling checkout). */
  outside?: Record<string, string>;
  /** Files (tree paths) to vault-encrypt with the fixture's password before the run. */
  vault?: string[];
  /** The scenario's vars (vm_root, the fake VM's folder, is always there). */
  vars?: Record<string, unknown>;
  /**
   * Other hosts of a topology, each on a fake VM of its own (BOMA_FAKE_VM is the host's name
   * there, and askari's VM's is "askari" then too), with its overlay's vars.
   */
  peers?: { host: string; ip: string; vars?: Record<string, unknown>; secretVars?: Record<string, unknown> }[];
}

export interface Fixture {
  dir: string;
  input: ApplyInput;
  target: SshTarget;
  /** The peers' targets, by host. */
  peerTargets: Map<string, SshTarget>;
  /** The ssh argv (program left out) of every connection the confined ssh let through. */
  connections: () => Promise<string[][]>;
  /** What ran on the (fake) VM. */
  vm: FakeVm;
  remove: () => Promise<void>;
}

/** A repo with `files`, a fake VM behind its master, and an apply input for it. */
export async function applyFixture(files: Record<string, string>, options: FixtureOptions): Promise<Fixture> {
  const { ".vault-this": vaultThis, ...repoFiles } = files;
  const tree = await tempTree({
    ...Object.fromEntries(Object.entries(repoFiles).map(([path, text]) => [`repo/${path}`, text])),
    ...(options.outside ?? {}),
    "repo/site.yml": options.playbook,
    "p.yml": "host: askari\nrepo: repo\ninventory: inventory/hosts.yml\nplaybook: site.yml\nchecks: [{ name: x, unit: y }]\n",
    pw: "vault-password\n",
    "run/keys/id_ed25519": "not a real key\n",
    "run/keys/known_hosts": `${RUN_ID} ssh-ed25519 AAAA\n`,
    "vm/.keep": "",
    ...Object.fromEntries(Object.entries(options.home ?? {}).map(([path, text]) => [`home/${path}`, text])),
  });
  const vaultEnv = { ANSIBLE_VAULT_PASSWORD_FILE: join(tree.dir, "pw") };
  for (const file of [...(vaultThis ? [`repo/${vaultThis}`] : []), ...(options.vault ?? [])])
    execFileSync("ansible-vault", ["encrypt", join(tree.dir, file)], { env: { ...process.env, ...vaultEnv }, stdio: "ignore" });
  const topology = (options.peers ?? []).length > 0;
  const vm = await startFakeVm(tree.dir, RUN_ID, topology ? "askari" : "1");
  const peerVms: FakeVm[] = [];
  const peers: ApplyPeer[] = [];
  const peerTargets = new Map<string, SshTarget>();
  for (const peer of options.peers ?? []) {
    const runId = RUN_ID.replace("askari", peer.host);
    const keys = join(tree.dir, `run-${peer.host}`, "keys");
    await mkdir(keys, { recursive: true });
    await writeFile(join(keys, "id_ed25519"), "not a real key either\n");
    await writeFile(join(keys, "known_hosts"), `${runId} ssh-ed25519 AAAB\n`);
    const peerVm = await startFakeVm(tree.dir, runId, peer.host);
    peerVms.push(peerVm);
    const target: SshTarget = {
      ip: peer.ip,
      user: "boma",
      keyFile: join(keys, "id_ed25519"),
      knownHostsFile: join(keys, "known_hosts"),
      alias: runId,
      controlPath: peerVm.controlPath,
    };
    peerTargets.set(peer.host, target);
    peers.push({
      host: peer.host,
      outputs: {
        ...outputsOf(tree.dir, RUN_ID),
        runId,
        host: peer.host,
        ip: peer.ip,
        domain: runId,
        keyFile: target.keyFile,
        knownHostsFile: target.knownHostsFile,
      },
      target,
      vars: peer.vars ?? {},
      secretVars: peer.secretVars ?? {},
    });
  }
  const redactor = new Redactor();
  const runner = new Runner({
    env: {
      ...process.env,
      ...vaultEnv,
      ...(options.home ? { HOME: join(tree.dir, "home"), SSH_AUTH_SOCK: join(tree.dir, "home", "agent.sock") } : {}),
      ...options.env,
    },
    redact: redactor.redact,
  });
  const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, runner);
  const outputs = outputsOf(tree.dir, RUN_ID);
  const target: SshTarget = {
    ip: VM_IP,
    user: "boma",
    keyFile: outputs.keyFile,
    knownHostsFile: outputs.knownHostsFile,
    alias: RUN_ID,
    controlPath: vm.controlPath,
  };
  const dir = join(tree.dir, "run", "green", "ansible");
  await mkdir(dir, { recursive: true });
  const input: ApplyInput = {
    profile,
    outputs,
    target,
    scenario: { name: "green", vars: { ...options.vars, vm_root: join(tree.dir, "vm") } },
    certs: await planCerts(profile, { certs: undefined, noEgress: false }, join(tree.dir, "cert-cache")),
    secrets: await loadSecrets(profile, runner, redactor),
    dir,
    runner,
    log: silentLog(),
    signal: new AbortController().signal,
    ...(topology ? { peers } : {}),
  };
  const connections = async () =>
    (await readFile(join(dir, "confine", "records.jsonl"), "utf8").catch(() => ""))
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { kind: string; argv: string[] })
      .filter((entry) => entry.kind === "connection")
      .map((entry) => entry.argv);
  return {
    dir: tree.dir,
    input,
    target,
    connections,
    vm,
    peerTargets,
    remove: async () => {
      await vm.stop();
      for (const peerVm of peerVms) await peerVm.stop();
      await tree.remove();
    },
  };
}

/** The stack outputs of the fixture's askari VM. */
function outputsOf(dir: string, runId: string): StackOutputs {
  return {
    runId,
    host: "askari",
    ip: VM_IP,
    user: "boma",
    ssh: "",
    runDir: join(dir, "run"),
    consoleLog: join(dir, "run", "console.log"),
    keyFile: join(dir, "run", "keys", "id_ed25519"),
    knownHostsFile: join(dir, "run", "keys", "known_hosts"),
    network: "n",
    mac: "52:54:00:00:00:01",
    subnet: "10.234.7.0/24",
    domain: runId,
    accel: "tcg",
    createdAt: "2026-12-01T10:10:10Z",
    ownerPid: process.pid,
  };
}
