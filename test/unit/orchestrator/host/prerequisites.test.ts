import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { join } from "node:path";
import { writeFake } from "../../../helpers/fakes.ts";
import { runCli } from "../../../helpers/cli.ts";
import { tempTree } from "../../../helpers/tmp.ts";

describe("doctor", () => {
  it("names the package that brings missing OVMF firmware, and exits 3", async () => {
    const tree = await tempTree();
    try {
      const result = await runCli(["doctor", "--json"], { BOMA_IT_OVMF_FILES: join(tree.dir, "OVMF_CODE_4M.fd"), BOMA_IT_IMAGE_DIR: tree.dir });
      assert.equal(result.code, 3, result.stderr);
      const report = JSON.parse(result.stdout) as { ok: boolean; checks: { name: string; ok: boolean; fix?: string; detail: string }[] };
      const ovmf = report.checks.find((check) => check.name === "OVMF UEFI firmware");
      assert.equal(ovmf?.ok, false);
      assert.equal(ovmf?.fix, "apt-get install ovmf");
      assert.match(ovmf?.detail ?? "", /OVMF_CODE_4M\.fd/);
    } finally {
      await tree.remove();
    }
  });

  it("names the package of each missing program", async () => {
    const tree = await tempTree();
    try {
      // Only node itself on PATH: every tool is missing.
      const result = await runCli(["doctor"], { PATH: join(tree.dir, "empty"), BOMA_IT_IMAGE_DIR: tree.dir });
      assert.equal(result.code, 3);
      assert.match(result.stdout, /MISS virsh\s+not found on PATH \(needed for libvirt\)\n\s+fix: apt-get install libvirt-clients/);
      assert.match(result.stdout, /MISS genisoimage .*\n\s+fix: apt-get install genisoimage/);
      assert.match(result.stdout, /MISS ansible-playbook .*\n\s+fix: apt-get install ansible-core/);
      assert.match(result.stdout, /opt  mmdebstrap .*\n\s+fix: apt-get install mmdebstrap/);
      assert.match(result.stdout, /required prerequisite\(s\) missing$/m);
    } finally {
      await tree.remove();
    }
  });
});

describe("libvirt unreachable", () => {
  it("refuses `up` with exit 3 and says how to start libvirt", async () => {
    const tree = await tempTree();
    try {
      const bin = join(tree.dir, "bin");
      await writeFake(bin, "virsh", 'echo "error: failed to connect to the hypervisor" >&2; exit 1');
      const result = await runCli(["up", "askari"], { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "log"), BOMA_IT_RUNS_DIR: tree.dir });
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stderr, /libvirt is unreachable at qemu:\/\/\/system: error: failed to connect to the hypervisor\n  fix: start it \(sudo systemctl start libvirtd, or libvirtd -d/);
    } finally {
      await tree.remove();
    }
  });
});
