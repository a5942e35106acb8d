import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { RefusedError } from "../../../../orchestrator/errors.ts";
import { Libvirt } from "../../../../orchestrator/host/libvirt.ts";
import { guardResources, vcpusSideBySide, vmsTheCoresHold } from "../../../../orchestrator/host/prerequisites.ts";
import { writeFake } from "../../../helpers/fakes.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** libvirt with the given domains, each "name:state". */
async function fakeLibvirt(dir: string, domains: string[]): Promise<Libvirt> {
  const bin = join(dir, "bin");
  const listing = domains.map((domain) => domain.split(":")[0]).join("\\n");
  const states = domains.map((domain) => `${domain.split(":")[0]}) echo "${domain.split(":")[1]}" ;;`).join(" ");
  await writeFake(
    bin,
    "virsh",
    `
case " $* " in
  *" list "*) printf '${listing}\\n' ;;
  *" domstate "*) case "\${@: -1}" in ${states} *) exit 1 ;; esac ;;
esac`,
  );
  return new Libvirt(new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(dir, "log") } }), "qemu:///system");
}

describe("resource guard", () => {
  it("refuses while another test VM runs, naming it", async () => {
    const tree = await tempTree({ meminfo: "MemAvailable:   20000000 kB\n" });
    try {
      const libvirt = await fakeLibvirt(tree.dir, ["boma-it-askari-20261122-010101:running", "other-vm:running", "boma-it-old-1:shut off"]);
      await assert.rejects(guardResources(libvirt, { vmMemoryMiB: 3072, minFreeRamMiB: undefined, meminfo: join(tree.dir, "meminfo") }), (error: unknown) => {
        assert.ok(error instanceof RefusedError);
        assert.equal(error.exitCode, 3);
        assert.match(
          error.message,
          /^another test VM is running \(boma-it-askari-20261122-010101\): boma-it runs one at a time\n {2}fix: see `npm run boma-it -- status`/,
        );
        return true;
      });
    } finally {
      await tree.remove();
    }
  });

  it("refuses below the VM's memory plus a margin, or below --min-free-ram", async () => {
    const tree = await tempTree({ meminfo: "MemTotal: 1 kB\nMemAvailable:    3145728 kB\n" });
    try {
      const libvirt = await fakeLibvirt(tree.dir, []);
      const meminfo = join(tree.dir, "meminfo");
      await assert.rejects(
        guardResources(libvirt, { vmMemoryMiB: 3072, minFreeRamMiB: undefined, meminfo }),
        /only 3072 MiB of RAM is free; this run needs 4096 MiB \(the VM's 3072 MiB \+ 1024 MiB\)/,
      );
      await assert.rejects(guardResources(libvirt, { vmMemoryMiB: 512, minFreeRamMiB: 4000, meminfo }), /this run needs 4000 MiB \(--min-free-ram\)/);
      await guardResources(libvirt, { vmMemoryMiB: 1024, minFreeRamMiB: undefined, meminfo });
    } finally {
      await tree.remove();
    }
  });

  it("says how many VMs at once the free RAM holds: the first with its margin (or --min-free-ram), each further one its memory", async () => {
    const tree = await tempTree({ meminfo: "MemAvailable:    7864320 kB\n" });
    try {
      const libvirt = await fakeLibvirt(tree.dir, []);
      const meminfo = join(tree.dir, "meminfo");
      // 7680 MiB free: 3072 + 1024 for one, + 3072 + 512 for a second.
      assert.equal(await guardResources(libvirt, { vmMemoryMiB: 3072, minFreeRamMiB: undefined, vms: 2, meminfo, overlayDir: tree.dir }), 2);
      assert.equal(await guardResources(libvirt, { vmMemoryMiB: 3073, minFreeRamMiB: undefined, vms: 2, meminfo, overlayDir: tree.dir }), 1);
      assert.equal(await guardResources(libvirt, { vmMemoryMiB: 2048, minFreeRamMiB: 5121, vms: 2, meminfo, overlayDir: tree.dir }), 1);
      assert.equal(await guardResources(libvirt, { vmMemoryMiB: 2048, minFreeRamMiB: 5120, vms: 2, meminfo, overlayDir: tree.dir }), 2);
      assert.equal(await guardResources(libvirt, { vmMemoryMiB: 2048, minFreeRamMiB: 1024, vms: 3, meminfo, overlayDir: tree.dir }), 3);
      assert.equal(
        await guardResources(libvirt, { vmMemoryMiB: 1024, minFreeRamMiB: undefined, meminfo, overlayDir: tree.dir }),
        1,
        "one unless asked for more",
      );
    } finally {
      await tree.remove();
    }
  });

  it("under TCG lets as many VMs run at once as the cores hold their vCPUs; under KVM the cores are no limit", () => {
    assert.equal(vmsTheCoresHold("tcg", 2, 2, 2), 1, "two 2-vCPU guests on 2 cores: one at a time");
    assert.equal(vmsTheCoresHold("tcg", 4, 2, 2), 2);
    assert.equal(vmsTheCoresHold("tcg", 8, 2, 2), 2, "never more than wanted");
    assert.equal(vmsTheCoresHold("tcg", 1, 2, 2), 1, "at least one");
    assert.equal(vmsTheCoresHold("kvm", 2, 2, 2), 2);
  });

  it("under TCG gives VMs side by side fewer vCPUs where the cores hold them so, one core each at least", () => {
    assert.equal(vcpusSideBySide("tcg", 2, 2, 2), 1, "RED and GREEN of 2 vCPUs on 2 cores: 1 each, side by side");
    assert.equal(vcpusSideBySide("tcg", 6, 4, 2), 3);
    assert.equal(vcpusSideBySide("tcg", 4, 2, 2), undefined, "the profile's already fit");
    assert.equal(vcpusSideBySide("tcg", 1, 2, 2), undefined, "not even one core each: one at a time");
    assert.equal(vcpusSideBySide("tcg", 2, 2, 1), undefined, "one VM keeps its shape");
    assert.equal(vcpusSideBySide("kvm", 2, 2, 2), undefined, "under KVM the cores are no limit");
    assert.equal(vmsTheCoresHold("tcg", 2, vcpusSideBySide("tcg", 2, 2, 2)!, 2), 2);
  });
});
