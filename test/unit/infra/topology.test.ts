/**
 * Several VMs on one network (a topology), as data: fixed addresses from .10 in the topology's
 * order, a MAC per VM's run id, the network made by the first VM's stack alone (with the
 * allowlist's table) and joined by the others', a DHCP host entry for each VM and a DNS name for
 * each inventory host; one VM alone is planned exactly as before.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { planStack } from "../../../infra/plan.ts";
import { seedFiles } from "../../../infra/seed.ts";
import { addressInSubnet, macFor, newRunIdentity, pickSubnet, stackSpec, TOPOLOGY_DOMAIN, topologyMembers } from "../../../infra/spec.ts";
import { egressTableNft, networkXml } from "../../../infra/xml.ts";
import { FIXED_KEYS, fixedSpec, topologyVmInput } from "../../helpers/fixtures.ts";

const AT = new Date("2026-12-05T02:00:00Z");
const askari = newRunIdentity("askari", AT);
const kazi = newRunIdentity("kazi", AT);
const subnet = pickSubnet([], askari.runId);
const members = topologyMembers(subnet, [
  { host: "askari", runId: askari.runId },
  { host: "kazi", runId: kazi.runId },
]);
const base = (identity: typeof askari) => topologyVmInput(identity, subnet, { network: askari.runId, members }, "/runs/20261205-020000-mesh");

describe("a topology of VMs on one network", () => {
  it("gives each VM a fixed address from .10 in order, and a MAC of its own run id", () => {
    const prefix = subnet.cidr.slice(0, -5);
    assert.deepEqual(members, [
      { host: "askari", mac: macFor(askari.runId), ip: `${prefix}.10` },
      { host: "kazi", mac: macFor(kazi.runId), ip: `${prefix}.11` },
    ]);
    assert.equal(addressInSubnet(subnet, 0), subnet.guestIp);
    assert.throws(() => addressInSubnet(subnet, 64), /no fixed address for VM 64/);
  });

  it("makes the network (and the allowlist's table) in the first VM's stack only; the others join it by its name", () => {
    const first = planStack(stackSpec(base(askari)), FIXED_KEYS);
    const second = planStack(stackSpec(base(kazi)), FIXED_KEYS);
    assert.deepEqual(
      first.resources.map((resource) => resource.name),
      ["egress", "network", "isolation", "pool", "overlay", "seed", "domain"],
    );
    assert.deepEqual(
      second.resources.map((resource) => resource.name),
      ["isolation", "pool", "overlay", "seed", "domain"],
    );
    assert.deepEqual(second.resources.find((resource) => resource.name === "domain")!.dependsOn, ["isolation", "overlay", "seed"]);
    // kazi's own objects are kazi's; its network and its address are the topology's.
    assert.equal(second.outputs.domain, kazi.runId);
    assert.equal(second.outputs.network, askari.runId);
    assert.equal(second.outputs.ip, members[1]!.ip);
    const domain = second.resources.find((resource) => resource.name === "domain")!.create[0]!.stdin!;
    assert.match(domain, new RegExp(`<source network="${askari.runId}"/>`));
    assert.match(domain, new RegExp(`<mac address="${members[1]!.mac}"/>`));
    assert.match(domain, new RegExp(`<filterref filter="${kazi.runId}-isolation"/>`));
  });

  it("gives every VM its DHCP host entry and every host its name in the network's DNS, under a domain each VM searches", () => {
    const xml = networkXml(stackSpec(base(askari)));
    assert.match(xml, new RegExp(`<domain name="${TOPOLOGY_DOMAIN}" localOnly="yes"/>`));
    for (const identity of [askari, kazi]) {
      assert.match(
        seedFiles(stackSpec(base(identity)), FIXED_KEYS).networkConfig,
        new RegExp(`nameservers:\\s+search:\\s+- ${TOPOLOGY_DOMAIN.replace(".", "\\.")}`),
      );
    }
    for (const member of members) {
      assert.match(xml, new RegExp(`<host mac="${member.mac}" name="${member.host}" ip="${member.ip.replace(/\./g, "\\.")}"/>`));
      assert.match(xml, new RegExp(`<host ip="${member.ip.replace(/\./g, "\\.")}">\\s*<hostname>${member.host}</hostname>\\s*</host>`));
    }
  });

  it("lets the VMs reach each other through the allowlist's filter (bridged traffic is forwarded too); one VM's filter is as before", () => {
    const nft = egressTableNft(stackSpec(base(askari)));
    const bridge = stackSpec(base(askari)).network.bridge;
    assert.ok(
      nft.indexOf(`iifname "${bridge}" ip daddr ${subnet.cidr} accept`) > 0 &&
        nft.indexOf(`iifname "${bridge}" ip daddr ${subnet.cidr} accept`) < nft.indexOf("update @blocked"),
      nft,
    );
    assert.doesNotMatch(egressTableNft(fixedSpec()), /ip daddr \d/);
  });

  it("refuses a VM that is not among the topology's members", () => {
    assert.throws(() => stackSpec(base(newRunIdentity("pwani", AT))), /boma-it-pwani-20261205-020000 \(pwani, MAC [0-9a-f:]+\) is no member of the topology/);
  });

  it("plans one VM alone as before: its own network, its own address, no DNS names", () => {
    const alone = fixedSpec();
    assert.equal(alone.network.owned, true);
    assert.equal(alone.network.name, alone.identity.runId);
    assert.equal(alone.address, alone.network.subnet.guestIp);
    assert.doesNotMatch(networkXml(alone), /<hostname>|<domain/);
    assert.doesNotMatch(seedFiles(alone, FIXED_KEYS).networkConfig, /nameservers/);
  });
});
