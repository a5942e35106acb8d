import assert from "node:assert/strict";
import { lstat, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parse } from "yaml";
import type { StackOutputs } from "../../../../infra/plan.ts";
import { planCerts, WITHHELD_TOKEN } from "../../../../orchestrator/ansible/certs.ts";
import { Runner } from "../../../../infra/runner.ts";
import { applyPlaybook, writeTransientInventory } from "../../../../orchestrator/ansible/apply.ts";
import { sshTargetOf } from "../../../../orchestrator/host/ssh.ts";
import { loadProfile } from "../../../../orchestrator/profile/load.ts";
import { secretsOf } from "../../../../orchestrator/ansible/secrets.ts";
import { writeFake } from "../../../helpers/fakes.ts";
import { startFakeVm } from "../../../helpers/fake-vm.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { pyyamlLoad } from "../../../helpers/pyyaml.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** A parsed YAML document, read by the assertions as they walk it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a test walks parsed YAML freely; the assertions check its shape
type YamlTree = Record<string, any>;

const INVENTORY = `all:
  vars: { fleet: boma }
  children:
    europe:
      vars: { region: eu }
      children:
        docker_hosts:
          hosts:
            askari: { ansible_host: 10.20.0.11, ansible_user: admin, ansible_ssh_private_key_file: /home/op/.ssh/real, role_flavour: big }
            simba: { ansible_host: 10.20.0.12 }
    mesh:
      hosts:
        askari:
        simba:
    control:
      hosts:
        ubongo: { ansible_host: 10.20.0.2 }
`;

const OUTPUTS: StackOutputs = {
  runId: "boma-it-askari-20261122-034000",
  host: "askari",
  ip: "10.234.7.10",
  user: "boma",
  ssh: "npm run boma-it -- ssh boma-it-askari-20261122-034000",
  runDir: "/r",
  consoleLog: "/r/console.log",
  keyFile: "/r/keys/id_ed25519",
  knownHostsFile: "/r/keys/known_hosts",
  network: "n",
  mac: "52:54:00:00:00:01",
  subnet: "10.234.7.0/24",
  domain: "d",
  accel: "tcg",
  createdAt: "2026-11-22T03:40:00Z",
  ownerPid: 1,
};

/** The VM's target; its master socket is never reached here (nothing is applied). */
const TARGET = { ...sshTargetOf(OUTPUTS), controlPath: `/nonexistent/${OUTPUTS.runId}` };

describe("transient inventory", () => {
  it("holds only the VM, under the host's name and groups, with the real vars and forced connection", async () => {
    const tree = await tempTree({
      "repo/inventory/hosts.yml": INVENTORY,
      "repo/inventory/group_vars/all.yml": "ansible_user: admin\n",
      "repo/site.yml": "- hosts: all\n",
      "p.yml":
        "host: askari\nrepo: repo\ninventory: inventory/hosts.yml\nplaybook: site.yml\nchecks: [{ name: x, unit: y }]\nscenarios: { red: { vars: { fix: false } } }\n",
      "overrides/askari.yml": "vars: { stub: 1, fix: stubbed }\ncerts: { internal: { vars: { tls: internal } } }\n",
    });
    try {
      const runner = new Runner();
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, runner);
      const dir = join(tree.dir, "run", "ansible");
      const files = await writeTransientInventory({
        profile,
        outputs: OUTPUTS,
        target: TARGET,
        scenario: { name: "red", vars: { fix: false } },
        certs: await planCerts(profile, { certs: undefined, noEgress: false }, join(tree.dir, "cert-cache")),
        dir,
        runner,
        secrets: secretsOf([]),
        log: silentLog(),
        signal: new AbortController().signal,
      });
      const inventory = parse((await readFile(files.inventoryFile, "utf8")).split("\n").slice(1).join("\n")) as YamlTree;
      const text = JSON.stringify(inventory);
      assert.doesNotMatch(text, /simba|ubongo|10\.20\./, "no other host and no real address");
      assert.deepEqual(Object.keys(inventory.all.children).sort(), ["docker_hosts", "europe", "mesh"]);
      assert.deepEqual(inventory.all.vars, { fleet: "boma" });
      assert.deepEqual(inventory.all.children.europe, { vars: { region: "eu" }, children: { docker_hosts: {} } });
      assert.deepEqual(inventory.all.children.docker_hosts.hosts, { askari: { role_flavour: "big" } }, "connection vars stripped, others kept");
      assert.deepEqual(inventory.all.children.mesh.hosts, { askari: null });
      assert.equal(await readlink(join(dir, "inventory", "group_vars")), join(tree.dir, "repo", "inventory", "group_vars"));
      await assert.rejects(lstat(join(dir, "inventory", "host_vars")), "no host_vars link when the repo has none");

      const extra = JSON.parse(await readFile(files.extraVarsFile, "utf8")) as Record<string, unknown>;
      assert.equal(extra.stub, 1, "overlay stubs");
      assert.equal(extra.tls, "internal", "cert tier vars");
      assert.equal(extra.fix, false, "scenario vars win over the overlay");
      // Every name Ansible reads a connection setting from points at the VM, ansible_ssh_host too.
      for (const name of ["ansible_host", "ansible_ssh_host"]) assert.equal(extra[name], "10.234.7.10", name);
      for (const name of ["ansible_user", "ansible_ssh_user"]) assert.equal(extra[name], "boma", name);
      assert.equal(extra.ansible_ssh_port, 22);
      assert.equal(extra.ansible_ssh_common_args, "", "the repo's ssh arguments give way to the confined ssh's");
      assert.equal(extra.ansible_ssh_executable, join(dir, "confine", "bin", "ssh"));
      assert.equal((await lstat(files.extraVarsFile)).mode & 0o777, 0o600);
    } finally {
      await tree.remove();
    }
  });

  it("Ansible reads the same values from it as from the real inventory, YAML 1.1 quirks included", async () => {
    const real = `all:
  vars: { flag: yes, span: 1:20, mac: "52:54:00:24:49:56", mode: 010, word: "yes", day: 2026-01-01, none: ~ }
  children:
    docker_hosts:
      hosts:
        askari: { ansible_host: 10.20.0.11, on_call: on, version: "1.10", digits_mac: "52:54:00:12:34:56" }
`;
    const tree = await tempTree({
      "repo/inventory/hosts.yml": real,
      "repo/site.yml": "- hosts: all\n",
      "p.yml": "host: askari\nrepo: repo\ninventory: inventory/hosts.yml\nplaybook: site.yml\nchecks: [{ name: x, unit: y }]\n",
    });
    try {
      const runner = new Runner();
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, runner);
      const files = await writeTransientInventory({
        profile,
        outputs: OUTPUTS,
        target: TARGET,
        scenario: { name: "green", vars: {} },
        certs: await planCerts(profile, { certs: undefined, noEgress: false }, join(tree.dir, "cert-cache")),
        dir: join(tree.dir, "run", "ansible"),
        runner,
        secrets: secretsOf([]),
        log: silentLog(),
        signal: new AbortController().signal,
      });
      const asAnsible = pyyamlLoad(real) as YamlTree;
      const transient = pyyamlLoad(await readFile(files.inventoryFile, "utf8")) as YamlTree;
      assert.deepEqual(transient.all.vars, asAnsible.all.vars);
      assert.deepEqual(transient.all.vars.mac, "52:54:00:24:49:56", "a MAC of digits stays a string");
      assert.equal(transient.all.vars.flag, true, "yes is a boolean to Ansible, in both");
      const { ansible_host: _address, ...hostVars } = asAnsible.all.children.docker_hosts.hosts.askari;
      assert.deepEqual(transient.all.children.docker_hosts.hosts.askari, hostVars);
    } finally {
      await tree.remove();
    }
  });
});

describe("apply with a DNS token in the vault", () => {
  it("--certs internal: the token var is overridden last, after the vault, so the VM never gets it", async (t) => {
    const tree = await tempTree({
      "repo/inventory/hosts.yml": INVENTORY,
      "repo/site.yml": "- hosts: all\n",
      "overrides/askari.yml": "certs:\n  dnsTokenVar: dns_provider_token\n",
      "p.yml":
        "host: askari\nrepo: repo\ninventory: inventory/hosts.yml\nplaybook: site.yml\noverrides: overrides/askari.yml\nchecks: [{ name: x, unit: y }]\n",
    });
    try {
      const bin = join(tree.dir, "bin");
      await writeFake(
        bin,
        "ansible-playbook",
        'printf "TASK [base : Harden sshd] ***\\nRUNNING HANDLER [base : restart ssh] ***\\nTASK [Gathering Facts] ***\\nPLAY RECAP ***\\naskari : ok=3 changed=1 unreachable=0 failed=0\\n"',
      );
      const vm = await startFakeVm(tree.dir, OUTPUTS.runId);
      t.after(() => vm.stop());
      const runner = new Runner({ env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
      const profile = await loadProfile(join(tree.dir, "p.yml"), { profilesDir: tree.dir, overridesDir: join(tree.dir, "overrides") }, runner);
      const certs = await planCerts(profile, { certs: undefined, noEgress: false }, join(tree.dir, "cert-cache"));
      const input = {
        profile,
        outputs: OUTPUTS,
        target: { ...sshTargetOf(OUTPUTS), controlPath: vm.controlPath },
        scenario: { name: "green", vars: {} },
        certs,
        dir: join(tree.dir, "run", "ansible"),
        runner,
        secrets: secretsOf(["vault-token-value"], join(tree.dir, "vault.yml")),
        log: silentLog(),
        signal: new AbortController().signal,
      };
      const files = await writeTransientInventory(input);
      const applied = await applyPlaybook(input, files);
      // A handler is timed on its own, not added to the task before it.
      assert.deepEqual(
        applied.tasks.map((task) => task.name),
        ["base : Harden sshd", "handler base : restart ssh", "Gathering Facts"],
      );
      // The jail's command: what follows bubblewrap's `--` is ansible-playbook's argv.
      const jailed = runner.history.find((record) => record.argv[0] === "bwrap" && record.argv.includes("ansible-playbook"))!.argv;
      const argv = jailed.slice(jailed.indexOf("--") + 1);
      assert.equal(argv[0], "ansible-playbook");
      const extra = argv!.flatMap((arg, index) => (argv![index - 1] === "-e" ? [arg] : []));
      assert.equal(extra.at(-2), `@${join(tree.dir, "vault.yml")}`);
      const last = JSON.parse(extra.at(-1)!) as Record<string, unknown>;
      assert.equal(last.dns_provider_token, WITHHELD_TOKEN, "the placeholder comes after the vault");
      assert.equal(last.ansible_ssh_host, "10.234.7.10", "and the confinement's vars, after anything a user adds");
    } finally {
      await tree.remove();
    }
  });
});
