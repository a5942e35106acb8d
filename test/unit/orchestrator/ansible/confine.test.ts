/**
 * Confinement, through the real `ansible-playbook`: whatever an infrastructure repo holds
 * (connection variables in every form and source, its ansible.cfg, ANSIBLE_SSH_ARGS, the user's
 * ssh config and agent), every connection Ansible makes is to the VM, on port 22, as the harness
 * user, with the run's key alone and the host key pinned. A recording fake `ssh` plays the VM;
 * each recorded argv is read back with the real `ssh -G`. Where configuration gets past the
 * extra vars, the confined ssh refuses before anything connects, and the apply says so (exit 1).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { applyPlaybook, checkTransientInventory, writeTransientInventory } from "../../../../orchestrator/ansible/apply.ts";
import { SystemUnderTestError } from "../../../../orchestrator/errors.ts";
import type { SshTarget } from "../../../../orchestrator/host/ssh.ts";
import { applyFixture, RUN_ID, VM_IP } from "../../../helpers/apply-fixture.ts";
import { effectiveSsh } from "../../../helpers/fake-vm.ts";

/** Every variable a repo may use to send Ansible's ssh elsewhere, pointing at a "real host". */
const HOSTILE_VARS = `ansible_host: 127.0.0.88
ansible_ssh_host: 127.0.0.88
ansible_port: 2222
ansible_ssh_port: 2222
ansible_user: realadmin
ansible_ssh_user: realadmin
ansible_connection: local
ansible_ssh_executable: /usr/bin/ssh
ansible_ssh_common_args: "-o ProxyJump=bastion.example -o StrictHostKeyChecking=no"
ansible_ssh_extra_args: "-o ProxyCommand='nc 127.0.0.88 22' -o UserKnownHostsFile=/dev/null"
ansible_ssh_args: "-o ControlPath=/tmp/real-master -o ForwardAgent=yes"
ansible_scp_extra_args: "-o ProxyJump=bastion.example"
ansible_sftp_extra_args: "-o ProxyJump=bastion.example"
ansible_private_key_file: /home/op/.ssh/deploy_key
ansible_ssh_private_key_file: /home/op/.ssh/deploy_key
ansible_password: real-host-password
ansible_ssh_pass: real-host-password
ansible_ssh_transfer_method: sftp
ansible_host_key_checking: false
`;

/** One task that must run on the VM (each source of connection variables gets it). */
const SHORT_PLAYBOOK = `- hosts: all
  gather_facts: false
  tasks:
    - { shell: 'echo "vm=$BOMA_FAKE_VM"', register: plain }
    - debug: { msg: "ran {{ plain.stdout }}" }
`;

/** Tasks that must all run on the VM: plain, delegated, local, a file copy, and an added host. */
const PLAYBOOK = `- hosts: all
  gather_facts: false
  tasks:
    - { shell: 'echo "vm=$BOMA_FAKE_VM"', register: plain }
    - { shell: 'echo "vm=$BOMA_FAKE_VM"', delegate_to: localhost, register: delegated }
    - { local_action: 'shell echo "vm=$BOMA_FAKE_VM"', register: local }
    - { shell: 'echo "vm=$BOMA_FAKE_VM"', delegate_to: 10.20.0.2, register: by_address }
    - { copy: { content: "copied\\n", dest: "{{ vm_root }}/copied.txt" } }
    - add_host: { name: realhost, ansible_host: 10.20.0.99, ansible_connection: local }
    - debug: { msg: "ran {{ [plain, delegated, local, by_address] | map(attribute='stdout') | join(' ') }}" }
- hosts: all
  gather_facts: false
  connection: local
  tasks:
    - { shell: 'echo "vm=$BOMA_FAKE_VM"', register: keyword_local }
    - debug: { msg: "keyword {{ keyword_local.stdout }}" }
- hosts: realhost
  gather_facts: false
  tasks:
    - shell: 'echo "vm=$BOMA_FAKE_VM" > /dev/null'
`;

const ANSIBLE_CFG = `[defaults]
remote_user = realadmin
private_key_file = /home/op/.ssh/deploy_key
host_key_checking = False
transport = paramiko
[ssh_connection]
ssh_args = -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ProxyJump=bastion.example -o User=realadmin -o Port=2222
ssh_executable = /usr/bin/ssh
`;

const USER_SSH_CONFIG = `Host *
  ProxyJump bastion.example
  User realadmin
  IdentityFile ~/.ssh/deploy_key
  ControlMaster auto
  ControlPath ~/.ssh/cm-%r@%h:%p
`;

const INVENTORY = (inline: string) => `all:
  children:
    docker_hosts:
      hosts:
        askari:
${inline
  .split("\n")
  .filter(Boolean)
  .map((line) => `          ${line}`)
  .join("\n")}
`;

/** Where each source puts the hostile vars (files relative to the repo). */
const SOURCES: Record<string, (vars: string) => Record<string, string>> = {
  "inline inventory host vars": (vars) => ({ "inventory/hosts.yml": INVENTORY(vars) }),
  "a group_vars file": (vars) => ({ "inventory/hosts.yml": INVENTORY(""), "inventory/group_vars/docker_hosts.yml": vars }),
  "a group_vars folder": (vars) => ({ "inventory/hosts.yml": INVENTORY(""), "inventory/group_vars/all/connection.yml": vars }),
  "a host_vars file": (vars) => ({ "inventory/hosts.yml": INVENTORY(""), "inventory/host_vars/askari.yml": vars }),
  "a host_vars folder": (vars) => ({ "inventory/hosts.yml": INVENTORY(""), "inventory/host_vars/askari/connection.yml": vars }),
  "group_vars next to the playbook": (vars) => ({ "inventory/hosts.yml": INVENTORY(""), "group_vars/all.yml": vars }),
  "a vaulted host_vars file": (vars) => ({
    "inventory/hosts.yml": INVENTORY(""),
    "inventory/host_vars/askari.yml": vars,
    ".vault-this": "inventory/host_vars/askari.yml",
  }),
};

/**
 * Asserts that every connection went to the VM as the harness, pinned, with the run's key alone,
 * as a passenger of the run's connection through the jail's gate.
 */
function assertOnlyTheVm(connections: readonly string[][], target: SshTarget, where: string): void {
  assert.ok(connections.length > 0, `${where}: Ansible connected (through the confined ssh)`);
  for (const call of connections) {
    const config = effectiveSsh(call);
    const one = (key: string) => config.get(key)?.[0];
    const context = `${where}: ${call.join(" ").slice(0, 300)}`;
    assert.equal(one("controlmaster"), "false", context);
    assert.equal(one("controlpath"), `${target.controlPath}.gate`, context);
    assert.equal(one("hostname"), VM_IP, context);
    assert.equal(one("port"), "22", context);
    assert.equal(one("user"), "boma", context);
    assert.equal(one("stricthostkeychecking"), "true", context);
    assert.equal(one("userknownhostsfile"), target.knownHostsFile, context);
    assert.equal(one("hostkeyalias"), RUN_ID, context);
    assert.deepEqual(config.get("identityfile"), [target.keyFile], context);
    assert.equal(one("identitiesonly"), "yes", context);
    assert.equal(one("identityagent"), "none", context);
    assert.equal(config.get("proxyjump"), undefined, context);
    assert.notEqual(one("proxycommand") ?? "none", "nc 127.0.0.88 22", context);
    assert.equal(one("forwardagent"), "no", context);
  }
}

describe("confinement: Ansible reaches only the VM", { timeout: 10 * 60_000 }, () => {
  for (const [source, files] of Object.entries(SOURCES)) {
    it(`connection variables in ${source}`, async () => {
      const setup = await applyFixture(files(HOSTILE_VARS), { playbook: SHORT_PLAYBOOK });
      try {
        const applied = await applyPlaybook(setup.input, await writeTransientInventory(setup.input));
        assert.equal(applied.ok, true);
        assert.match(await readFile(applied.logFile, "utf8"), /"msg": "ran vm=1"/, "the task ran on the VM");
        assertOnlyTheVm(await setup.connections(), setup.target, source);
      } finally {
        await setup.remove();
      }
    });
  }

  it("delegate_to, local_action, a play's `connection: local`, add_host and file copies stay confined", async () => {
    const setup = await applyFixture(SOURCES["a host_vars file"]!(HOSTILE_VARS), { playbook: PLAYBOOK });
    try {
      const applied = await applyPlaybook(setup.input, await writeTransientInventory(setup.input));
      assert.equal(applied.ok, true);
      const log = await readFile(applied.logFile, "utf8");
      assert.match(log, /"msg": "ran vm=1 vm=1 vm=1 vm=1"/, "plain, delegated, local and by-address tasks all ran on the VM");
      assert.match(log, /"msg": "keyword vm=1"/, "a play's `connection: local` ran on the VM too");
      assert.match(log, /PLAY \[realhost\][^]*skipping: no hosts matched/, "the added host is outside the run");
      assert.equal(await readFile(join(setup.dir, "vm", "copied.txt"), "utf8"), "copied\n", "files travel over the confined ssh");
      assertOnlyTheVm(await setup.connections(), setup.target, "delegation");
    } finally {
      await setup.remove();
    }
  });

  it("the repo's ansible.cfg, ANSIBLE_SSH_ARGS, the user's ssh config and agent", async () => {
    const setup = await applyFixture(
      { "inventory/hosts.yml": INVENTORY(""), "ansible.cfg": ANSIBLE_CFG },
      {
        playbook: SHORT_PLAYBOOK,
        env: { ANSIBLE_SSH_ARGS: "-o ProxyJump=bastion.example -o StrictHostKeyChecking=no", ANSIBLE_REMOTE_USER: "realadmin", ANSIBLE_REMOTE_PORT: "2222" },
        home: { ".ssh/config": USER_SSH_CONFIG, ".ssh/deploy_key": "x\n" },
      },
    );
    try {
      const applied = await applyPlaybook(setup.input, await writeTransientInventory(setup.input));
      assert.equal(applied.ok, true);
      assertOnlyTheVm(await setup.connections(), setup.target, "ansible.cfg and environment");
      for (const call of await setup.connections()) assert.equal(call[0], "-F", "the user's ssh config is never read");
    } finally {
      await setup.remove();
    }
  });

  it("the transient inventory holds only the VM and shows no real address", async () => {
    const setup = await applyFixture(SOURCES["inline inventory host vars"]!(HOSTILE_VARS), { playbook: PLAYBOOK });
    try {
      const files = await writeTransientInventory(setup.input);
      await checkTransientInventory(setup.input, files);
      assert.doesNotMatch(await readFile(files.inventoryFile, "utf8"), /127\.0\.0\.88|realadmin|2222/);
    } finally {
      await setup.remove();
    }
  });

  it("a connection setting the extra vars miss is refused before anything connects: the apply fails (exit 1) naming it", async () => {
    const setup = await applyFixture(
      { "inventory/hosts.yml": INVENTORY(""), "inventory/host_vars/askari.yml": "ansible_ssh_port: 2222\n" },
      { playbook: PLAYBOOK },
    );
    try {
      const files = await writeTransientInventory(setup.input);
      // As if an Ansible version read the port from a name the harness does not know of.
      delete files.confinement.extraVars.ansible_ssh_port;
      const extra = JSON.parse(await readFile(files.extraVarsFile, "utf8")) as Record<string, unknown>;
      delete extra.ansible_ssh_port;
      await writeFile(files.extraVarsFile, JSON.stringify(extra));
      await assert.rejects(applyPlaybook(setup.input, files), (error: unknown) => {
        assert.ok(error instanceof SystemUnderTestError, String(error));
        assert.match(
          error.message,
          /sends Ansible elsewhere than the VM: the confinement refused ssh to 10\.234\.7\.10:2222 as boma \(port 2222; set by -o Port=2222/,
        );
        return true;
      });
      assert.deepEqual(await setup.connections(), [], "nothing connected");
      assert.deepEqual(await setup.vm.commands(), [], "nothing ran on the VM");
    } finally {
      await setup.remove();
    }
  });

  it("the confined ssh refuses other destinations, users, config files, sockets, forwards and identities outright", async () => {
    const setup = await applyFixture({ "inventory/hosts.yml": INVENTORY("") }, { playbook: PLAYBOOK });
    try {
      const files = await writeTransientInventory(setup.input);
      const cases: [string[], RegExp][] = [
        [["127.0.0.88", "true"], /refused ssh to 127\.0\.0\.88:22 as root/],
        [["-l", "realadmin", VM_IP, "true"], /refused ssh to 10\.234\.7\.10:22 as realadmin: .*set by -l realadmin/],
        [["-o", "User=boma", "-o", "HostName=10.20.0.11", VM_IP, "true"], /refused ssh to 10\.20\.0\.11:22 as boma: .*set by -o HostName=10\.20\.0\.11/],
        [["-o", "User=boma", "-F", "/etc/ssh/ssh_config", VM_IP, "true"], /a config file of its own \(-F\)/],
        [["-o", "User=boma", "-S", "/tmp/real-master", VM_IP, "true"], /a control socket of its own \(-S\)/],
        [["-o", "User=boma", "-W", "10.20.0.11:22", VM_IP], /a stdio forward \(-W\)/],
        [["-o", "User=boma", "-o", `IdentityFile=${join(setup.dir, "home-key")}`, VM_IP, "true"], /ssh with the identity .*home-key/],
        // `--` ends the options: what follows is the destination, whatever the words after it.
        [["-o", "User=boma", "--", "127.0.0.88", "-tt", VM_IP, "true"], /refused ssh to 127\.0\.0\.88:22 as boma/],
        [["-o", "User=boma", "-tt", "--", "127.0.0.88", VM_IP], /refused ssh to 127\.0\.0\.88:22 as boma/],
        // -E makes its file as ssh reads its options (`ssh -G` too): refused before anything runs.
        [["-o", "User=boma", "-E", join(setup.dir, "made-by-E.log"), VM_IP, "true"], /a log file of its own \(-E\)/],
        [["-o", "User=boma", `-qE${join(setup.dir, "made-by-qE.log")}`, VM_IP, "true"], /a log file of its own \(-E\)/],
        [["-o", "User=boma", "-M", VM_IP, "true"], /becoming a master connection \(-M\)/],
        [["-o", "User=boma", "-O", "forward", "-R", "9000:169.254.169.254:80", VM_IP], /the control command -O forward/],
      ];
      await writeFile(join(setup.dir, "home-key"), "x\n");
      for (const [args, message] of cases) {
        const result = spawnSync(files.confinement.sshProgram, args, {
          encoding: "utf8",
          env: { ...process.env, ...setup.input.runner.env } as NodeJS.ProcessEnv,
        });
        assert.equal(result.status, 255, args.join(" "));
        assert.match(result.stderr, message, args.join(" "));
      }
      assert.deepEqual(await setup.connections(), [], "none of them connected");
      assert.equal((await files.confinement.refusals()).length, cases.length, "each is recorded for the apply's verdict");
      for (const made of ["made-by-E.log", "made-by-qE.log"]) await assert.rejects(readFile(join(setup.dir, made)), `-E made no ${made}`);
      // What a play may send to the connection (`meta: reset_connection` sends -O stop) is
      // answered without touching the run's master.
      for (const command of ["check", "stop", "exit"]) {
        const result = spawnSync(files.confinement.sshProgram, ["-O", command, VM_IP], {
          encoding: "utf8",
          env: { ...process.env, ...setup.input.runner.env } as NodeJS.ProcessEnv,
        });
        assert.equal(result.status, 0, `-O ${command}: ${result.stderr}`);
      }
      assert.deepEqual(await setup.vm.refused(), [], "the master never saw a control request");
      // sftp and scp would bypass it: refused too.
      const transfer = spawnSync(files.confinement.transferProgram, ["-b", "-", VM_IP], { encoding: "utf8" });
      assert.equal(transfer.status, 255);
    } finally {
      await setup.remove();
    }
  });
});
