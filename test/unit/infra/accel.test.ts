import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decideAccel, probeAccel } from "../../../infra/accel.ts";
import { tempTree } from "../../helpers/tmp.ts";

describe("accel", () => {
  it("uses KVM only with a usable /dev/kvm and a vmx/svm CPU", () => {
    assert.equal(decideAccel("auto", { kvmDeviceUsable: true, cpuHasVirtualisation: true }).accel, "kvm");
    const nested = decideAccel("auto", { kvmDeviceUsable: true, cpuHasVirtualisation: false });
    assert.equal(nested.accel, "tcg");
    assert.match(nested.reason, /no vmx\/svm/);
    const none = decideAccel("auto", { kvmDeviceUsable: false, cpuHasVirtualisation: true });
    assert.equal(none.accel, "tcg");
    assert.match(none.reason, /\/dev\/kvm is missing/);
  });

  it("honours an explicit choice", () => {
    assert.equal(decideAccel("tcg", { kvmDeviceUsable: true, cpuHasVirtualisation: true }).accel, "tcg");
    assert.equal(decideAccel("kvm", { kvmDeviceUsable: false, cpuHasVirtualisation: false }).accel, "kvm");
  });

  it("reads the cpu flags and the device", async () => {
    const tree = await tempTree({ "cpuinfo-vmx": "processor\t: 0\nflags\t\t: fpu vme vmx sse\n", "cpuinfo-none": "flags\t: fpu sse\n", kvm: "" });
    try {
      assert.deepEqual(await probeAccel(`${tree.dir}/kvm`, `${tree.dir}/cpuinfo-vmx`), { kvmDeviceUsable: true, cpuHasVirtualisation: true });
      assert.deepEqual(await probeAccel(`${tree.dir}/nokvm`, `${tree.dir}/cpuinfo-none`), { kvmDeviceUsable: false, cpuHasVirtualisation: false });
    } finally {
      await tree.remove();
    }
  });
});
