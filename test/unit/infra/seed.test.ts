/**
 * The NoCloud seed as cloud-init reads it: with PyYAML (YAML 1.1), the parser cloud-init uses,
 * not with the `yaml` package that wrote it.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seedFiles } from "../../../infra/seed.ts";
import { FIXED_KEYS, fixedSpec } from "../../helpers/fixtures.ts";
import { pyyamlLoad } from "../../helpers/pyyaml.ts";

/** A parsed YAML document, read by the assertions as they walk it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a test walks parsed YAML freely; the assertions check its shape
type YamlTree = Record<string, any>;

describe("cloud-init seed", () => {
  it("a MAC of digits only stays a string (YAML 1.1 read it as a base-60 number and the VM never got DHCP)", () => {
    // 52:54:00:24:49:56 came out of a real run id: PyYAML made it 41135129396, cloud-init failed
    // "Not all expected physical devices present" and the run timed out waiting for a lease.
    const spec = fixedSpec();
    const files = seedFiles({ ...spec, network: { ...spec.network, mac: "52:54:00:24:49:56" } }, FIXED_KEYS);
    assert.deepEqual(pyyamlLoad(files.networkConfig), {
      version: 2,
      ethernets: { primary: { match: { macaddress: "52:54:00:24:49:56" }, "set-name": "eth0", dhcp4: true } },
    });
  });

  it("meta-data and user-data read back as written: hostname, the harness key, the pinned host keys", () => {
    const spec = fixedSpec();
    const files = seedFiles(spec, FIXED_KEYS);
    assert.deepEqual(pyyamlLoad(files.metaData), { "instance-id": spec.identity.runId, "local-hostname": "askari" });
    assert.match(files.userData, /^#cloud-config\n/);
    const user = pyyamlLoad(files.userData) as YamlTree;
    assert.equal(user.hostname, "askari");
    assert.deepEqual(user.users[0].ssh_authorized_keys, [FIXED_KEYS.clientPublicKey.trim()]);
    for (const key of FIXED_KEYS.hostKeys) {
      assert.equal(user.ssh_keys[`${key.type}_private`], key.privateKey);
      assert.equal(user.ssh_keys[`${key.type}_public`], key.publicKey.trim());
    }
    assert.equal(user.disable_root, true);
    // The harness's account lingers: its user manager starts with each boot, not at the first login.
    assert.deepEqual(
      user.write_files.find((file: { path: string }) => file.path === `/var/lib/systemd/linger/${spec.guestUser}`),
      { path: "/var/lib/systemd/linger/boma", owner: "root:root", permissions: "0644", content: "" },
    );
  });

  it("gives the VM the host key types a Debian host has, all from the harness, so none is generated unpinned", () => {
    const user = pyyamlLoad(seedFiles(fixedSpec(), FIXED_KEYS).userData) as YamlTree;
    assert.deepEqual(Object.keys(user.ssh_keys).sort(), ["ecdsa_private", "ecdsa_public", "ed25519_private", "ed25519_public", "rsa_private", "rsa_public"]);
    // cloud-init generates only the listed types that have no key yet: with all three given, none.
    assert.deepEqual(user.ssh_genkeytypes, ["rsa", "ecdsa", "ed25519"]);
    assert.equal(user.ssh_deletekeys, true, "the image's own keys are never used");
  });
});
