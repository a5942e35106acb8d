import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, it } from "node:test";
import { join } from "node:path";
import { PROJECT_ROOT } from "../../../../orchestrator/host/paths.ts";
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
      assert.match(result.stdout, /opt {2}mmdebstrap .*\n\s+fix: apt-get install mmdebstrap/);
      assert.match(result.stdout, /required prerequisite\(s\) missing$/m);
    } finally {
      await tree.remove();
    }
  });
});

describe("doctor on an ordinary Debian user's PATH", () => {
  it(
    "says a program installed in /usr/sbin is there but off PATH, not that it is missing",
    { skip: !existsSync("/usr/sbin/mkfs.ext4") && "e2fsprogs is not installed here" },
    async () => {
      const tree = await tempTree();
      try {
        const result = await runCli(["doctor", "--json"], { PATH: "/usr/local/bin:/usr/bin:/bin", BOMA_IT_IMAGE_DIR: tree.dir });
        const report = JSON.parse(result.stdout) as { checks: { name: string; ok: boolean; fix?: string; detail: string }[] };
        const mkfs = report.checks.find((check) => check.name === "mkfs.ext4");
        assert.equal(mkfs?.ok, false);
        assert.equal(mkfs?.detail, "installed at /usr/sbin/mkfs.ext4 but /usr/sbin is not on PATH (needed for image build)");
        assert.match(mkfs?.fix ?? "", /^add it to PATH: export PATH="\$PATH:\/usr\/sbin"/);
        // What libvirtd runs is found wherever it is: libvirtd has its own PATH.
        const dnsmasq = report.checks.find((check) => check.name === "dnsmasq");
        assert.equal(dnsmasq?.ok, existsSync("/usr/sbin/dnsmasq"), dnsmasq?.detail);
      } finally {
        await tree.remove();
      }
    },
  );

  it("with --accel kvm, requires a usable KVM", async () => {
    const tree = await tempTree();
    try {
      const auto = JSON.parse((await runCli(["doctor", "--json"], { BOMA_IT_IMAGE_DIR: tree.dir })).stdout) as { checks: { name: string; detail: string }[] };
      const kvm = await runCli(["doctor", "--json", "--accel", "kvm"], { BOMA_IT_IMAGE_DIR: tree.dir });
      const accel = (JSON.parse(kvm.stdout) as { checks: { name: string; ok: boolean; required: boolean; detail: string }[] }).checks.find(
        (check) => check.name === "accel",
      );
      assert.equal(accel?.required, true);
      assert.match(accel?.detail ?? "", /^kvm: asked for with --accel kvm/);
      // Where auto picks TCG, KVM is not usable: asking for it is a missing prerequisite.
      const autoPicksTcg = auto.checks.find((check) => check.name === "accel")?.detail.startsWith("tcg") ?? false;
      assert.equal(accel?.ok, !autoPicksTcg);
      if (autoPicksTcg) assert.equal(kvm.code, 3);
    } finally {
      await tree.remove();
    }
  });

  it("prints one JSON document through `npm run boma-it -- doctor --json`, from a sub-directory", async () => {
    const { stdout } = await new Promise<{ stdout: string }>((resolve) => {
      execFile("npm", ["run", "boma-it", "--", "doctor", "--json"], { cwd: join(PROJECT_ROOT, "examples"), timeout: 120_000 }, (_error, out) =>
        resolve({ stdout: out }),
      );
    });
    const report = JSON.parse(stdout) as { ok: boolean; checks: unknown[] };
    assert.equal(typeof report.ok, "boolean");
    assert.ok(report.checks.length > 10);
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
      assert.match(
        result.stderr,
        /libvirt is unreachable at qemu:\/\/\/system: error: failed to connect to the hypervisor\n {2}fix: start it \(sudo systemctl start libvirtd, or libvirtd -d/,
      );
    } finally {
      await tree.remove();
    }
  });
});
