import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { join } from "node:path";
import { domainXml, isolationFilterXml, networkXml, overlayVolumeXml } from "../../../infra/xml.ts";
import { fixedSpec } from "../../helpers/fixtures.ts";

const GOLDEN = join(import.meta.dirname, "golden");

/** Compares with a golden file; UPDATE_GOLDEN=1 rewrites it (review the diff before committing). */
async function assertGolden(name: string, actual: string): Promise<void> {
  const file = join(GOLDEN, name);
  if (process.env.UPDATE_GOLDEN === "1") await writeFile(file, actual);
  assert.equal(actual, await readFile(file, "utf8"), `${name} differs from its golden file (UPDATE_GOLDEN=1 to accept)`);
}

describe("libvirt XML", () => {
  it("renders the NAT network with the VM's reserved address", async () => {
    await assertGolden("network-nat.xml", networkXml(fixedSpec()));
  });

  it("renders a network without any forwarding for --no-egress", async () => {
    const xml = networkXml(fixedSpec({ egress: false }));
    assert.doesNotMatch(xml, /<forward/);
    await assertGolden("network-no-egress.xml", xml);
  });

  it("renders the isolation filter: own subnet allowed, private, CGNAT and link-local ranges dropped", async () => {
    await assertGolden("isolation-filter.xml", isolationFilterXml(fixedSpec()));
  });

  it("renders the overlay volume backed by the golden image", async () => {
    await assertGolden("overlay-volume.xml", overlayVolumeXml(fixedSpec()));
  });

  it("renders a UEFI q35 TCG domain with console log, seed and metadata", async () => {
    await assertGolden("domain-tcg.xml", domainXml(fixedSpec()));
  });

  it("renders a KVM domain with the host CPU passed through", () => {
    const xml = domainXml(fixedSpec({ accel: "kvm" }));
    assert.match(xml, /<domain type="kvm">/);
    assert.match(xml, /<cpu mode="host-passthrough" check="none"\/>/);
  });

  it("escapes what it puts in attributes and text", () => {
    const xml = domainXml(fixedSpec({ runDir: "/tmp/a&b<c" }));
    assert.match(xml, /runDir="\/tmp\/a&amp;b&lt;c"/);
    assert.match(xml, /file="\/tmp\/a&amp;b&lt;c\/console.log"/);
  });
});
