/**
 * An apply of several hosts at once (a topology), through the real `ansible-playbook` in the
 * real jail: one run of Ansible over askari and kazi, each on a fake VM of its own (BOMA_FAKE_VM
 * says which). Each host's tasks run on its VM, `delegate_to: kazi` on kazi's, a task delegated
 * to a host that is no VM on the VM of the host it runs for; `hostvars` of the other host show
 * its VM's address; every connection goes to one of the two VMs with that VM's own key, pin and
 * gate, whatever the repo's connection vars say; each host gets its own overlay's vars and no
 * other host's; the transient inventory holds the two hosts and no third.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { applyPlaybook, checkTransientInventory, OVERLAY_PLAY_NAME, writeTransientInventory } from "../../../../orchestrator/ansible/apply.ts";
import type { SshTarget } from "../../../../orchestrator/host/ssh.ts";
import { applyFixture, RUN_ID, VM_IP } from "../../../helpers/apply-fixture.ts";
import { effectiveSsh } from "../../../helpers/fake-vm.ts";

const KAZI_IP = "10.234.7.11";

const INVENTORY = `all:
  children:
    docker_hosts:
      hosts:
        askari: { ansible_host: 192.0.2.1, ansible_user: realadmin }
    web_hosts:
      hosts:
        kazi: { ansible_host: 192.0.2.2 }
        pwani: { ansible_host: 192.0.2.3 }
`;

const PLAYBOOK = `- hosts: all
  gather_facts: false
  tasks:
    - { shell: 'echo "on=$BOMA_FAKE_VM"', register: own }
    - { shell: 'echo "on=$BOMA_FAKE_VM"', register: to_kazi, delegate_to: kazi, when: inventory_hostname == 'askari' }
    - { shell: 'echo "on=$BOMA_FAKE_VM"', register: to_localhost, delegate_to: localhost }
    - { shell: 'echo "on=$BOMA_FAKE_VM"', register: to_pwani, delegate_to: pwani, when: inventory_hostname == 'kazi' }
    - { shell: 'echo "on=$BOMA_FAKE_VM"', register: looped, delegate_to: "{{ item }}", loop: [askari, kazi], when: inventory_hostname == 'kazi' }
    - debug:
        msg: >-
          {{ inventory_hostname }}: own {{ own.stdout }} localhost {{ to_localhost.stdout }}
          kazi {{ to_kazi.stdout | default('-') }} pwani {{ to_pwani.stdout | default('-') }}
          looped {{ looped.results | map(attribute='stdout', default='-') | join(',') }}
          stub {{ stub }} only {{ only_kazi | default('-') }} secret {{ secret_of_host | default('none') }}
          kazi at {{ hostvars['kazi'].ansible_host }}
    - { debug: { msg: "once on {{ inventory_hostname }}" }, run_once: true }
`;

/** Every connection went to one of the VMs, as the harness, pinned to that VM with its own key, through its gate. */
function assertOnlyTheVms(connections: readonly string[][], targets: readonly SshTarget[]): void {
  assert.ok(connections.length > 0, "Ansible connected (through the confined ssh)");
  const reached = new Set<string>();
  for (const call of connections) {
    const config = effectiveSsh(call);
    const one = (key: string) => config.get(key)?.[0];
    const context = call.join(" ").slice(0, 300);
    const target = targets.find((candidate) => candidate.ip === one("hostname"));
    assert.ok(target, `a VM's address: ${context}`);
    reached.add(target.ip);
    assert.equal(one("controlpath"), `${target.controlPath}.gate`, context);
    assert.equal(one("controlmaster"), "false", context);
    assert.equal(one("port"), "22", context);
    assert.equal(one("user"), "boma", context);
    assert.equal(one("hostkeyalias"), target.alias, context);
    assert.equal(one("userknownhostsfile"), target.knownHostsFile, context);
    assert.deepEqual(config.get("identityfile"), [target.keyFile], context);
    assert.equal(one("identitiesonly"), "yes", context);
  }
  assert.deepEqual([...reached].sort(), targets.map((target) => target.ip).sort(), "each VM asked for was reached");
}

describe("an apply of several hosts at once", { timeout: 10 * 60_000 }, () => {
  it("reaches each host on its own VM, delegation included, with each VM's own key, pin and gate; nothing else", async () => {
    const setup = await applyFixture(
      {
        "inventory/hosts.yml": INVENTORY,
        "inventory/group_vars/all.yml": "stub: real\nansible_ssh_common_args: -o ProxyJump=bastion.example\n",
        "inventory/host_vars/kazi.yml": "ansible_host: 127.0.0.88\nansible_port: 2222\n",
      },
      {
        playbook: PLAYBOOK,
        peers: [{ host: "kazi", ip: KAZI_IP, vars: { stub: "kazi's", only_kazi: "yes" }, secretVars: { secret_of_host: "kazi-secret-value" } }],
        vars: {},
      },
    );
    try {
      const files = await writeTransientInventory(setup.input);
      await checkTransientInventory(setup.input, files);
      const inventory = await readFile(files.inventoryFile, "utf8");
      assert.match(inventory, /only the test VMs, as askari, kazi/);
      assert.doesNotMatch(inventory, /pwani|192\.0\.2\./, "no third host, no real address");
      const extraVars = await readFile(files.extraVarsFile, "utf8");
      assert.doesNotMatch(extraVars, /kazi's|kazi-secret-value/, "a host's overlay is no extra var: it would be every host's");

      const applied = await applyPlaybook(setup.input, files);
      assert.equal(applied.ok, true);
      // The recap of the repo's playbook, not of boma-it's overlay play before it (which changes nothing).
      assert.match(applied.recap, /^askari : ok=\d+ changed=[1-9]\d* .*; kazi : ok=\d+ changed=[1-9]\d* /);
      const log = await readFile(applied.logFile, "utf8");
      assert.match(log, new RegExp(`PLAY \\[${OVERLAY_PLAY_NAME}\\]`));
      assert.doesNotMatch(log, /kazi-secret-value/, "another host's secret is the run's too: redacted where a task prints it");
      assert.match(
        log,
        /"msg": "askari: own on=askari localhost on=askari kazi on=kazi pwani - looped -,- stub real only - secret none kazi at 10\.234\.7\.11"/,
      );
      // pwani is a host of the real inventory but no VM: what is delegated to it runs on kazi's VM.
      assert.match(
        log,
        /"msg": "kazi: own on=kazi localhost on=kazi kazi - pwani on=kazi looped on=askari,on=kazi stub kazi's only yes secret \[redacted\] kazi at 10\.234\.7\.11"/,
      );
      assert.equal((log.match(/"msg": "once on /g) ?? []).length, 1, "run_once ran once");
      assertOnlyTheVms(await setup.connections(), [setup.target, setup.peerTargets.get("kazi")!]);
    } finally {
      await setup.remove();
    }
  });

  it("gives each host its overlay whatever --tags say, refuses --skip-tags always, and a repo that renames a host for its connections", async () => {
    const peers = [{ host: "kazi", ip: KAZI_IP, vars: { stub: "kazi's" } }];
    const tagged = "- hosts: all\n  gather_facts: false\n  tasks:\n    - { debug: { msg: 'tagged {{ inventory_hostname }} stub {{ stub }}' }, tags: [t] }\n";
    const files = { "inventory/hosts.yml": INVENTORY, "inventory/group_vars/all.yml": "stub: real\n" };
    const setup = await applyFixture(files, { playbook: tagged, peers });
    try {
      const applied = await applyPlaybook({ ...setup.input, playbookArgs: ["--tags", "t"] }, await writeTransientInventory(setup.input));
      assert.match(await readFile(applied.logFile, "utf8"), /"msg": "tagged kazi stub kazi's"/);
      await assert.rejects(
        applyPlaybook(
          { ...setup.input, playbookArgs: ["--skip-tags", "x,always"] },
          await writeTransientInventory({ ...setup.input, dir: join(setup.dir, "again") }),
        ),
        /--skip-tags always would skip the play that gives each host of a topology its own overlay vars/,
      );
    } finally {
      await setup.remove();
    }
    const renamed = await applyFixture({ ...files, "inventory/host_vars/askari.yml": "__boma_it_host: kazi\n" }, { playbook: tagged, peers });
    try {
      await assert.rejects(
        applyPlaybook(renamed.input, await writeTransientInventory(renamed.input)),
        /__boma_it_host of askari is kazi: the repo sets a var of boma-it's/,
      );
      assert.deepEqual(await renamed.connections(), [], "nothing was applied");
    } finally {
      await renamed.remove();
    }
  });

  it("the confined ssh of a topology refuses any address but its VMs', and another VM's key", async () => {
    const setup = await applyFixture({ "inventory/hosts.yml": INVENTORY }, { playbook: PLAYBOOK, peers: [{ host: "kazi", ip: KAZI_IP }] });
    try {
      const files = await writeTransientInventory(setup.input);
      const env = { ...process.env, ...setup.input.runner.env } as NodeJS.ProcessEnv;
      const refused = spawnSync(files.confinement.sshProgram, ["-o", "User=boma", "192.0.2.3", "true"], { encoding: "utf8", env });
      assert.equal(refused.status, 255);
      assert.match(
        refused.stderr,
        /refused ssh to 192\.0\.2\.3:22 as boma: .*only the test VMs \(10\.234\.7\.10:22, 10\.234\.7\.11:22 as boma\) are reachable/,
      );
      // Asked for kazi's address with askari's key: the forced options come first, but an identity of another VM's is refused.
      const otherKey = spawnSync(files.confinement.sshProgram, ["-o", "User=boma", "-i", setup.target.keyFile, KAZI_IP, "true"], { encoding: "utf8", env });
      assert.equal(otherKey.status, 255);
      assert.match(otherKey.stderr, /ssh with the identity .*run\/keys\/id_ed25519/);
      assert.deepEqual(await setup.connections(), [], "neither connected");
      assert.equal((await files.confinement.refusals()).length, 2, "each is recorded for the apply's verdict");
    } finally {
      await setup.remove();
    }
  });

  it("one host's apply is unchanged: no map of VMs, no overlay play, the overlay as extra vars", async () => {
    const setup = await applyFixture(
      { "inventory/hosts.yml": INVENTORY },
      { playbook: "- hosts: all\n  gather_facts: false\n  tasks: [{ debug: { msg: hi } }]\n", vars: { stub: "x" } },
    );
    try {
      const files = await writeTransientInventory(setup.input);
      assert.equal(files.overlayPlaybook, undefined);
      const extraVars = JSON.parse(await readFile(files.extraVarsFile, "utf8")) as Record<string, unknown>;
      assert.equal(extraVars.ansible_host, VM_IP);
      assert.equal(extraVars.__boma_it_vms, undefined);
      assert.doesNotMatch(await readFile(files.inventoryFile, "utf8"), /__boma_it_host|kazi/);
      assert.equal(setup.target.alias, RUN_ID);
    } finally {
      await setup.remove();
    }
  });
});
