/**
 * The ways out of an apply that a real infrastructure repo holds besides its ssh settings, each
 * through the real `ansible-playbook` in the real jail, to a fake VM behind a fake SSH master:
 * synchronize's rsync on the control host (with a user ssh config that sends the VM's subnet
 * through a bastion, an `rsync://` source, a pull), the repo's fact cache both ways, callbacks the
 * repo or the user enables, a YAML result format, vaulted files outside the repo, and a plugin and
 * lookups that try the network or a write on the control host. Listeners on the control host's
 * loopback stand for the bastion, the syslog server and the rest: none of them may hear anything,
 * and nothing may be written outside the run.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createSocket } from "node:dgram";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { applyPlaybook, writeTransientInventory } from "../../../../orchestrator/ansible/apply.ts";
import { REDACTED } from "../../../../orchestrator/ansible/secrets.ts";
import { applyFixture, type Fixture } from "../../../helpers/apply-fixture.ts";

const INVENTORY = `all:
  children:
    docker_hosts:
      hosts:
        askari: { ansible_host: 10.20.0.11 }
`;

/** A TCP listener on the control host's loopback that counts who connects. */
async function tcpListener(): Promise<{ port: number; heard: () => number; close: () => void }> {
  let heard = 0;
  const server = createServer((socket) => {
    heard += 1;
    socket.destroy();
  }).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return { port: (server.address() as { port: number }).port, heard: () => heard, close: () => server.close() };
}

/** A UDP listener on the control host's loopback (a syslog server) that counts datagrams. */
async function udpListener(): Promise<{ port: number; heard: () => number; close: () => void }> {
  let heard = 0;
  const socket = createSocket("udp4", () => (heard += 1));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { port: socket.address().port, heard: () => heard, close: () => socket.close() };
}

/** Every file under `dir` (links as links) with its content's hash: the tree byte for byte. */
async function treeHash(dir: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const walk = async (folder: string) => {
    for (const entry of (await readdir(folder, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(folder, entry.name);
      if (entry.isDirectory()) {
        found.set(`${path}/`, String((await lstat(path)).mode));
        await walk(path);
      } else if (entry.isSymbolicLink()) found.set(path, `-> ${await readlink(path)}`);
      else
        found.set(
          path,
          createHash("sha256")
            .update(await readFile(path))
            .digest("hex") + ` ${(await lstat(path)).mode}`,
        );
    }
  };
  await walk(dir);
  return found;
}

/** Runs the fixture's apply; returns its log and the apply's outcome (an error when it failed). */
async function apply(setup: Fixture): Promise<{ log: string; outcome: unknown }> {
  const outcome = await applyPlaybook(setup.input, await writeTransientInventory(setup.input)).catch((error: unknown) => error);
  return { log: await readFile(join(setup.input.dir, "ansible.log"), "utf8").catch(() => ""), outcome };
}

describe("a repo's other ways out, through the real ansible-playbook in the jail", { timeout: 10 * 60_000 }, () => {
  it("synchronize pushes over the confined ssh to the VM; the user's ssh config for the VM's subnet never applies; an rsync:// source and a pull reach and write nothing on the control host", async () => {
    const bastion = await tcpListener();
    const daemon = await tcpListener();
    const setup = await applyFixture(
      { "inventory/hosts.yml": INVENTORY, "files/site/index.html": "synced by rsync\n" },
      {
        playbook: `- hosts: all
  gather_facts: false
  tasks:
    - ansible.posix.synchronize: { src: "{{ playbook_dir }}/files/site/", dest: "{{ vm_root }}/synced/" }
    - ansible.posix.synchronize: { mode: pull, src: /etc/hostname, dest: "{{ playbook_dir }}/pulled-hostname" }
      ignore_errors: true
    - ansible.posix.synchronize: { mode: pull, src: "rsync://127.0.0.1:${daemon.port}/module/file", dest: "{{ playbook_dir }}/from-daemon" }
      ignore_errors: true
`,
        home: {
          ".ssh/config": `Host 10.*\n  ProxyJump bastion\n  IdentityFile ~/.ssh/deploy_key\nHost bastion\n  HostName 127.0.0.1\n  Port ${bastion.port}\n`,
          ".ssh/deploy_key": "the fleet's deploy key\n",
        },
      },
    );
    try {
      const before = await treeHash(join(setup.dir, "repo"));
      const { log, outcome } = await apply(setup);
      assert.ok(!(outcome instanceof Error), `${String(outcome)}\n${log.slice(-3000)}`);
      assert.equal(await readFile(join(setup.dir, "vm", "synced", "index.html"), "utf8"), "synced by rsync\n", "the push reached the VM");
      assert.ok(
        (await setup.vm.commands()).some((command) => command.includes("rsync --server")),
        "rsync ran on the VM's side through the run's connection",
      );
      assert.equal(bastion.heard(), 0, "the bastion of the user's ssh config heard nothing");
      assert.equal(daemon.heard(), 0, "the rsync daemon heard nothing");
      assert.deepEqual(await treeHash(join(setup.dir, "repo")), before, "the pulls wrote nothing into the repo");
      const connections = await setup.connections();
      assert.ok(
        connections.length > 0 && connections.every((argv) => argv[0] === "-F" && argv[1] === "/dev/null"),
        "every ssh rsync ran was the confined one, the user's config left out",
      );
    } finally {
      bastion.close();
      daemon.close();
      await setup.remove();
    }
  });

  it("the repo's fact cache is neither written with the VM's facts nor read for the real host's (jsonfile and redis alike)", async () => {
    const redis = await tcpListener();
    const realHostFacts = JSON.stringify({ ansible_default_ipv4: { address: "192.0.2.77", interface: "ens18" }, ansible_hostname: "askari-real" });
    for (const cache of ["jsonfile", "redis"] as const) {
      const cfg =
        cache === "jsonfile"
          ? "[defaults]\ngathering = smart\nfact_caching = jsonfile\nfact_caching_connection = ./facts\nfact_caching_timeout = 86400\n"
          : `[defaults]\ngathering = smart\nfact_caching = redis\nfact_caching_connection = 127.0.0.1:${redis.port}:0\n`;
      const setup = await applyFixture(
        { "inventory/hosts.yml": INVENTORY, "ansible.cfg": cfg, "facts/askari": realHostFacts },
        {
          playbook: `- hosts: all
  tasks:
    - debug: { msg: "address {{ ansible_default_ipv4.address | default('none') }} on {{ ansible_hostname | default('none') }}" }
`,
        },
      );
      try {
        const before = await treeHash(join(setup.dir, "repo"));
        const { log, outcome } = await apply(setup);
        assert.ok(!(outcome instanceof Error), `${cache}: ${String(outcome)}\n${log.slice(-3000)}`);
        assert.match(log, /"msg": "address /, `${cache}: the play ran`);
        assert.doesNotMatch(log, /192\.0\.2\.77|askari-real/, `${cache}: the real host's cached facts were not used`);
        assert.deepEqual(await treeHash(join(setup.dir, "repo")), before, `${cache}: the cache in the repo is untouched`);
      } finally {
        await setup.remove();
      }
    }
    assert.equal(redis.heard(), 0, "the redis server heard nothing");
    redis.close();
  });

  it("callbacks the repo or the user enables get nothing: no junit file in HOME or the repo, no log_plays folder, no syslog packet; a YAML result format does not fold a secret past redaction", async () => {
    const syslog = await udpListener();
    const secret = `a 'long' secret with "quotes" that a yaml dump would fold across lines ${"x".repeat(90)} and go on`;
    const setup = await applyFixture(
      {
        "inventory/hosts.yml": INVENTORY,
        "ansible.cfg":
          "[defaults]\ncallbacks_enabled = ansible.builtin.junit, community.general.log_plays, community.general.syslog_json\ncallback_result_format = yaml\nstdout_callback = community.general.yaml\n",
        "inventory/host_vars/askari.yml": `db_password: ${JSON.stringify(secret)}\n`,
      },
      {
        playbook: `- hosts: all
  gather_facts: false
  tasks:
    - debug: { var: db_password }
    - shell: "false {{ db_password | quote }}"
`,
        vault: ["repo/inventory/host_vars/askari.yml"],
        home: { ".keep": "" },
        env: { ANSIBLE_CALLBACKS_ENABLED: "ansible.builtin.junit,community.general.syslog_json", SYSLOG_SERVER: "127.0.0.1", SYSLOG_PORT: String(syslog.port) },
      },
    );
    try {
      const before = await treeHash(join(setup.dir, "repo"));
      const { log, outcome } = await apply(setup);
      assert.ok(outcome instanceof Error, "the last task fails");
      assert.ok(log.includes(REDACTED), "the secret was printed, redacted");
      for (const piece of [secret, secret.slice(0, 30), "x".repeat(60)])
        assert.ok(!log.includes(piece), `no piece of the secret in the apply's log: ${piece.slice(0, 20)}`);
      assert.ok(!String((outcome as Error).message).includes(secret.slice(0, 30)));
      assert.deepEqual(await readdir(join(setup.dir, "home")), [".keep"], "no ~/.ansible.log of the junit callback");
      assert.deepEqual(await treeHash(join(setup.dir, "repo")), before, "nothing written into the repo");
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(syslog.heard(), 0, "no syslog packet left the control host");
    } finally {
      syslog.close();
      await setup.remove();
    }
  });

  it("vaulted files the play reads outside the repo (a sibling checkout's vars_files, a role from a roles_path elsewhere) are secrets too", async () => {
    const sibling = "sibling-vault-sentinel-5a1f0c";
    const role = "outside-role-sentinel-9b2e77";
    const setup = await applyFixture(
      { "inventory/hosts.yml": INVENTORY, "ansible.cfg": "[defaults]\nroles_path = ../shared-roles\n" },
      {
        playbook: `- hosts: all
  gather_facts: false
  vars_files: [../secrets/vault.yml]
  roles: [vaulted]
  tasks:
    - debug: { msg: "sibling says {{ sibling_secret }}" }
`,
        outside: {
          "secrets/vault.yml": `sibling_secret: ${sibling}\n`,
          "shared-roles/vaulted/vars/main.yml": `role_secret: ${role}\n`,
          "shared-roles/vaulted/tasks/main.yml": `- debug: { msg: "role says {{ role_secret }}" }\n`,
        },
        vault: ["secrets/vault.yml", "shared-roles/vaulted/vars/main.yml"],
      },
    );
    try {
      const { log, outcome } = await apply(setup);
      assert.ok(!(outcome instanceof Error), `${String(outcome)}\n${log.slice(-3000)}`);
      assert.match(log, /"msg": "role says \[redacted\]"/);
      assert.match(log, /"msg": "sibling says \[redacted\]"/);
      assert.ok(!log.includes(sibling) && !log.includes(role), "neither value is in the apply's log");
      assert.ok(setup.input.secrets.values.includes(sibling) && setup.input.secrets.values.includes(role), "both are secrets of the run from then on");
    } finally {
      await setup.remove();
    }
  });

  it("what runs on the control host reaches nothing and writes nothing outside the run: a plugin of the repo and lookups, each trying a TCP connection to a listener on the loopback and a write", async () => {
    const listener = await tcpListener();
    const setup = await applyFixture(
      {
        "inventory/hosts.yml": INVENTORY,
        "probe.py": `import socket\nsocket.create_connection(("127.0.0.1", ${listener.port}), 3).close()\n`,
        "action_plugins/phone_home.py": `import socket
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        outcomes = {}
        try:
            socket.create_connection(("127.0.0.1", ${listener.port}), 3).close()
            outcomes["connect"] = "connected"
        except OSError as error:
            outcomes["connect"] = "blocked: %s" % error
        try:
            with open(self._task.args["outside"], "w") as handle:
                handle.write("escaped")
            outcomes["write"] = "written"
        except OSError as error:
            outcomes["write"] = "blocked: %s" % error
        result.update(outcomes)
        return result
`,
      },
      {
        playbook: `- hosts: all
  gather_facts: false
  tasks:
    - phone_home: { outside: "{{ playbook_dir }}/../escaped-by-plugin" }
      register: plugin
    - debug: { msg: "plugin {{ plugin.connect }} / {{ plugin.write }}" }
    - debug: { msg: "{{ lookup('url', 'http://127.0.0.1:${listener.port}/') }}" }
      ignore_errors: true
    - debug: { msg: "{{ lookup('pipe', 'python3 ' ~ playbook_dir ~ '/probe.py && echo connected || echo blocked') }}" }
    - debug: { msg: "{{ lookup('pipe', 'echo escaped > ' ~ playbook_dir ~ '/../escaped-by-lookup && echo written || echo blocked') }}" }
`,
      },
    );
    try {
      const { log, outcome } = await apply(setup);
      assert.ok(!(outcome instanceof Error), `${String(outcome)}\n${log.slice(-3000)}`);
      assert.match(log, /"msg": "plugin blocked: .* \/ blocked: .*Read-only file system/, "the plugin could neither connect nor write");
      assert.match(log, /lookup plugin 'url'[^]*(Network is unreachable|Connection refused)/, "the url lookup failed");
      assert.doesNotMatch(log, /"msg": "(connected|written)"/, "the pipe lookups could neither connect nor write");
      assert.equal(listener.heard(), 0, "the listener on the control host heard nothing");
      assert.deepEqual(
        (await readdir(setup.dir)).filter((name) => name.startsWith("escaped")),
        [],
        "nothing was written outside the run",
      );
    } finally {
      listener.close();
      await setup.remove();
    }
  });

  it("a lookup that needs the network fails the apply saying it is the jail's doing, and how to stub it", async () => {
    const setup = await applyFixture(
      { "inventory/hosts.yml": INVENTORY, "inventory/group_vars/all.yml": "dns_api_token: \"{{ lookup('url', 'http://127.0.0.1:9/token') }}\"\n" },
      { playbook: `- hosts: all\n  gather_facts: false\n  tasks:\n    - debug: { msg: "token {{ dns_api_token }}" }\n` },
    );
    try {
      const { outcome } = await apply(setup);
      assert.ok(outcome instanceof Error);
      assert.match(
        outcome.message,
        /lookup plugin 'url'.*\(this looks like the jail: Ansible's controller side, lookups and local tasks included, runs without network .* give the value it would get as a stub in the overlay's vars/s,
      );
    } finally {
      await setup.remove();
    }
  });
});
