/**
 * Following the VM's host keys after a role changed them: removed keys are dropped from the pin,
 * rotated ones re-pinned through a connection a pinned key authenticated, and a VM no pinned key
 * authenticates any more is refused, never trusted. The fake ssh verifies host keys the way
 * OpenSSH does: it prefers a key type it has pinned, and a master connection needs no new check.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { compareHostKeys, followHostKeys, parseHostPublicKeys, pinSeedHostKeys, SERVED_HOST_KEYS } from "../../../../orchestrator/guest/host-keys.ts";
import { HarnessError } from "../../../../orchestrator/errors.ts";
import { HostKeyRejectedError, Machine } from "../../../../orchestrator/guest/machine.ts";
import { knownHostsLines } from "../../../../orchestrator/host/ssh.ts";
import { writeFake } from "../../../helpers/fakes.ts";
import { silentLog } from "../../../helpers/fixtures.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABRSA1";
const ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhECDSA1";
const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5ED1";
const ED25519_NEW = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5ED2";
const ALIAS = "boma-it-askari-20261201-120000";

/** A VM with `vmKeys` in /etc/ssh, reached by a fake ssh that checks them against the pinned known_hosts (or through a master). */
async function vm(dir: string, vmKeys: string[], pinned: string[], master: boolean, controlPath?: string) {
  await writeFile(join(dir, "vm-keys"), vmKeys.map((key) => `${key} root@askari`).join("\n") + "\n");
  await writeFile(join(dir, "known_hosts"), knownHostsLines(ALIAS, pinned));
  await writeFake(
    join(dir, "bin"),
    "ssh",
    `exec python3 - "$@" <<'PY'
import sys
args = sys.argv[1:]
opts = dict(a.split("=", 1) for i, a in enumerate(args) if i > 0 and args[i - 1] == "-o" and "=" in a)
vm = [l.split()[0] + " " + l.split()[1] for l in open("${join(dir, "vm-keys")}") if l.strip()]
if "${master ? "yes" : ""}" == "":
    pinned = [l.split()[1] + " " + l.split()[2] for l in open(opts["UserKnownHostsFile"]) if l.strip()]
    pinned_types = [k.split()[0] for k in pinned]
    # OpenSSH asks first for the algorithms it has a known key of; the server picks one it has.
    offered = next((k for t in pinned_types for k in vm if k.split()[0] == t), vm[0])
    if offered not in pinned:
        print("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @", file=sys.stderr)
        print("Host key verification failed.", file=sys.stderr)
        sys.exit(255)
print("\\n".join(l.rstrip() for l in open("${join(dir, "vm-keys")}")))
PY`,
  );
  const runner = new Runner({ env: { PATH: `${join(dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: join(dir, "log") } });
  return new Machine({
    name: "askari",
    target: { ip: "10.234.7.10", user: "boma", keyFile: "/k", knownHostsFile: join(dir, "known_hosts"), alias: ALIAS, ...(controlPath ? { controlPath } : {}) },
    runner,
    log: silentLog(),
    consoleLog: join(dir, "console.log"),
    domainState: async () => "running (booted)",
  });
}

describe("the VM's host keys after an apply", () => {
  it("compares by key, naming rotated, new and removed types", () => {
    assert.equal(compareHostKeys([RSA, ECDSA, ED25519], [ED25519, RSA, ECDSA]), undefined);
    assert.deepEqual(compareHostKeys([RSA, ECDSA, ED25519], [RSA, ED25519]), {
      added: [],
      removed: ["ecdsa-sha2-nistp256"],
      detail: "removed: ecdsa-sha2-nistp256",
    });
    assert.equal(compareHostKeys([RSA, ECDSA, ED25519], [RSA, ECDSA, ED25519_NEW])?.detail, "rotated: ssh-ed25519");
    assert.deepEqual(parseHostPublicKeys(`${RSA} root@a\n\ncat: x: No such file\n${ED25519}\n`), [RSA, ED25519]);
  });

  it("reads the keys sshd serves one per line, though cloud-init's .pub files end without a newline", async () => {
    const tree = await tempTree();
    try {
      const bin = join(tree.dir, "bin");
      // sshd -T names its host key files; ssh-keygen cannot read them here, so their .pub files count.
      await writeFake(bin, "sshd", `printf 'port 22\\nhostkey ${tree.dir}/ssh_host_ecdsa_key\\nhostkey ${tree.dir}/ssh_host_rsa_key\\n'`);
      await writeFake(bin, "ssh-keygen", "exit 1");
      await writeFile(join(tree.dir, "ssh_host_ecdsa_key.pub"), `${ECDSA} root@askari`);
      await writeFile(join(tree.dir, "ssh_host_rsa_key.pub"), `${RSA} root@askari`);
      const runner = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "log") } });
      const result = await runner.run("sh", ["-c", SERVED_HOST_KEYS]);
      assert.deepEqual(parseHostPublicKeys(result.stdout), [ECDSA, RSA]);
    } finally {
      await tree.remove();
    }
  });

  it("drops a removed key from the pin, and the VM is still reached with the others", async () => {
    const tree = await tempTree();
    try {
      const machine = await vm(tree.dir, [RSA, ED25519], [RSA, ECDSA, ED25519], false);
      const change = await followHostKeys(machine, silentLog());
      assert.equal(change?.detail, "removed: ecdsa-sha2-nistp256");
      assert.equal(await readFile(join(tree.dir, "known_hosts"), "utf8"), knownHostsLines(ALIAS, [RSA, ED25519]));
      assert.match(await machine.succeed("true"), /ssh-rsa/);
    } finally {
      await tree.remove();
    }
  });

  it("re-pins a rotated key learnt through the master connection a pinned key authenticated", async () => {
    const tree = await tempTree();
    try {
      const machine = await vm(tree.dir, [RSA, ECDSA, ED25519_NEW], [RSA, ECDSA, ED25519], true);
      const change = await followHostKeys(machine, silentLog());
      assert.equal(change?.detail, "rotated: ssh-ed25519");
      assert.equal(await readFile(join(tree.dir, "known_hosts"), "utf8"), knownHostsLines(ALIAS, [RSA, ECDSA, ED25519_NEW]));
    } finally {
      await tree.remove();
    }
  });

  it("refuses a VM that no pinned key authenticates any more, and pins nothing new", async () => {
    const tree = await tempTree();
    try {
      const machine = await vm(tree.dir, [ED25519_NEW], [RSA, ECDSA, ED25519], false);
      await assert.rejects(followHostKeys(machine, silentLog()), (error: unknown) => {
        assert.ok(error instanceof HostKeyRejectedError);
        assert.equal(error.exitCode, 1, "the role's doing: a finding");
        assert.match(error.message, /not pinned.*refusing to trust it/);
        return true;
      });
      assert.equal(await readFile(join(tree.dir, "known_hosts"), "utf8"), knownHostsLines(ALIAS, [RSA, ECDSA, ED25519]));
      await assert.rejects(machine.succeed("true"), HostKeyRejectedError);
    } finally {
      await tree.remove();
    }
  });

  it("does not judge the role when the run's own master connection had gone before the keys could be read", async () => {
    const tree = await tempTree();
    try {
      const machine = await vm(tree.dir, [ED25519_NEW], [RSA, ECDSA, ED25519], false, join(tree.dir, "no-master-here"));
      await assert.rejects(followHostKeys(machine, silentLog()), (error: unknown) => {
        assert.ok(error instanceof HarnessError && !(error instanceof HostKeyRejectedError));
        assert.equal(error.exitCode, 4);
        assert.match(error.message, /master connection had ended before the keys could be read: the change cannot be judged/);
        return true;
      });
    } finally {
      await tree.remove();
    }
  });

  it("after a reset, pins the seed's keys again, whatever an apply re-pinned since", async () => {
    const tree = await tempTree();
    try {
      const knownHostsFile = join(tree.dir, "known_hosts");
      await writeFile(knownHostsFile, knownHostsLines(ALIAS, [RSA, ED25519_NEW]));
      await writeFile(join(tree.dir, "ssh_host_rsa_key.pub"), `${RSA} boma-it host\n`);
      await writeFile(join(tree.dir, "ssh_host_ecdsa_key.pub"), `${ECDSA} boma-it host\n`);
      await writeFile(join(tree.dir, "ssh_host_ed25519_key.pub"), `${ED25519} boma-it host\n`);
      await pinSeedHostKeys({ knownHostsFile, alias: ALIAS });
      assert.equal(await readFile(knownHostsFile, "utf8"), knownHostsLines(ALIAS, [RSA, ECDSA, ED25519]));
    } finally {
      await tree.remove();
    }
  });
});
