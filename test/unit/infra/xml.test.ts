import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { join } from "node:path";
import { domainXml, egressTableNft, isolationFilterXml, networkXml, overlayVolumeXml } from "../../../infra/xml.ts";
import { planStack } from "../../../infra/plan.ts";
import { FIXED_KEYS, fixedSpec } from "../../helpers/fixtures.ts";
import { gatewayMacFor } from "../../../infra/spec.ts";

const GOLDEN = join(import.meta.dirname, "golden");

/** Compares with a golden file; UPDATE_GOLDEN=1 rewrites it (review the diff before committing). */
async function assertGolden(name: string, actual: string): Promise<void> {
  const file = join(GOLDEN, name);
  if (process.env.UPDATE_GOLDEN === "1") await writeFile(file, actual);
  assert.equal(actual, await readFile(file, "utf8"), `${name} differs from its golden file (UPDATE_GOLDEN=1 to accept)`);
}

describe("libvirt XML", () => {
  it("gives a network's bridge the gateway MAC of its subnet: a VM restored onto a new network of the saved subnet finds its gateway where it left it", () => {
    const spec = fixedSpec();
    // A later run restored from this one's first boot: its own names, the saved subnet.
    const later = { ...spec.network.subnet };
    assert.equal(gatewayMacFor(later), spec.network.gatewayMac, "the same subnet, the same gateway MAC");
    assert.match(spec.network.gatewayMac, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.notEqual(gatewayMacFor({ ...spec.network.subnet, cidr: "10.234.77.0/24" }), spec.network.gatewayMac);
    assert.match(networkXml(spec), new RegExp(`<mac address="${spec.network.gatewayMac}"/>`));
  });

  it("renders the NAT network for --egress open, with the VM's reserved address", async () => {
    const xml = networkXml(fixedSpec({ egress: { mode: "open" } }));
    assert.doesNotMatch(xml, /dnsmasq:options/, "the DNS forwards what it is asked, as libvirt's does");
    await assertGolden("network-nat.xml", xml);
  });

  it("renders the allowlist network: NAT, a DNS that answers only the allowed names from the upstreams, fills the filter's set and logs every query", async () => {
    const xml = networkXml(fixedSpec());
    assert.match(xml, /<forward mode="nat"\/>/);
    for (const option of [
      "no-resolv",
      "no-hosts",
      "server=/deb.debian.org/192.0.2.53",
      "server=/security.debian.org/192.0.2.54",
      "nftset=/deb.debian.org/security.debian.org/4#inet#boma-it-askari-20261122-034000#allowed",
      "log-queries",
      "log-facility=/var/lib/libvirt/dnsmasq/boma-it-askari-20261122-034000.queries.log",
    ]) {
      assert.ok(xml.includes(`<dnsmasq:option value="${option}"/>`), option);
    }
    await assertGolden("network-allowlist.xml", xml);
  });

  it("renders the allowlist's filter: allowed addresses pass, any other attempt from the run's bridge is recorded and dropped", async () => {
    const nft = egressTableNft(fixedSpec());
    assert.match(nft, /^table inet boma-it-askari-20261122-034000 \{/);
    await assertGolden("egress-table.nft", nft);
  });

  it("renders a network without any forwarding for --no-egress", async () => {
    const xml = networkXml(fixedSpec({ egress: { mode: "none" } }));
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

describe("the plan's egress", () => {
  it("makes the allowlist's table before the network (through sudo -n when not root) and removes it with the DNS query log; open and none have no table", () => {
    const plan = planStack(fixedSpec(), FIXED_KEYS, "qemu:///system", { asRoot: ["sudo", "-n"] });
    const egress = plan.resources.find((resource) => resource.name === "egress")!;
    assert.deepEqual(
      egress.create.map((command) => command.argv),
      [["sudo", "-n", "nft", "-f", "-"]],
    );
    assert.equal(egress.create[0]!.stdin, egressTableNft(fixedSpec()));
    assert.deepEqual(
      egress.delete.map((command) => command.argv),
      [
        ["sudo", "-n", "nft", "delete", "table", "inet", "boma-it-askari-20261122-034000"],
        ["sudo", "-n", "rm", "-f", "/var/lib/libvirt/dnsmasq/boma-it-askari-20261122-034000.queries.log"],
      ],
    );
    assert.deepEqual(plan.resources.find((resource) => resource.name === "network")!.dependsOn, ["egress"]);
    for (const mode of ["open", "none"] as const) {
      const other = planStack(fixedSpec({ egress: { mode } }), FIXED_KEYS);
      assert.equal(
        other.resources.some((resource) => resource.name === "egress"),
        false,
        mode,
      );
    }
  });
});

describe("the plan of a warm start", () => {
  const warmStart = {
    uuid: "6f1c2b7a-3d4e-4f50-8a9b-0c1d2e3f4a5b",
    mac: "52:54:00:aa:bb:cc",
    saveImage: "/home/op/integration-runs/20261122-034000-askari/.warm-start.save",
    disk: "/home/op/.cache/boma-it/states/askari-0123/disk.qcow2",
    seed: "/home/op/.cache/boma-it/states/askari-0123/seed.iso",
    nvram: "/home/op/.cache/boma-it/states/askari-0123/VARS.fd",
  };
  const spec = fixedSpec({ warmStart });
  const plan = planStack(spec, FIXED_KEYS, "qemu:///system", { asRoot: ["sudo", "-n"] });
  const argvOf = (name: string, phase: "create" | "delete") =>
    plan.resources.find((resource) => resource.name === name)![phase].map((command) => command.argv.join(" "));

  it("defines the domain with the saved UUID and MAC and restores it instead of starting it, its copy of the state deleted after", () => {
    assert.match(domainXml(spec), /<uuid>6f1c2b7a-3d4e-4f50-8a9b-0c1d2e3f4a5b<\/uuid>/);
    assert.match(domainXml(spec), /<mac address="52:54:00:aa:bb:cc"\/>/);
    assert.doesNotMatch(domainXml(fixedSpec()), /<uuid>/, "a cold VM gets libvirt's own UUID");
    const create = argvOf("domain", "create");
    assert.equal(create.length, 4);
    assert.match(create[0]!, /virsh -q -c qemu:\/\/\/system define \/dev\/stdin$/);
    assert.deepEqual(create.slice(1), [
      `sudo -n install -m 0600 ${warmStart.nvram} ${spec.nvram}`,
      `virsh -q -c qemu:///system restore ${warmStart.saveImage} --running`,
      `rm -f ${warmStart.saveImage}`,
    ]);
    assert.ok(!create.some((argv) => / start /.test(argv)), "never booted");
    const teardown = argvOf("domain", "delete");
    assert.ok(teardown.includes(`rm -f ${warmStart.saveImage}`), "a copy left by a failed restore goes too");
    assert.ok(teardown.includes(`sudo -n rm -f ${spec.nvram}`), "UEFI variables copied for a domain never defined go too");
  });

  it("uploads the saved disk and seed: no seed of its own is made, so no host key travels on stdin", () => {
    assert.deepEqual(argvOf("overlay", "create").slice(1), [
      `virsh -q -c qemu:///system vol-upload ${spec.volumes.overlay} ${warmStart.disk} --pool ${spec.pool.name}`,
    ]);
    const seed = plan.resources.find((resource) => resource.name === "seed")!;
    assert.deepEqual(
      seed.create.map((command) => command.argv.join(" ")),
      [
        `virsh -q -c qemu:///system vol-create-as ${spec.pool.name} ${spec.volumes.seed} ${spec.seedCapacityBytes} --format raw`,
        `virsh -q -c qemu:///system vol-upload ${spec.volumes.seed} ${warmStart.seed} --pool ${spec.pool.name}`,
      ],
    );
    assert.ok(seed.create.every((command) => command.stdin === undefined));
  });
});
