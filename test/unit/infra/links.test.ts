/**
 * A topology's extra links (`links:`), as data: a network of its own per link, made by the first
 * VM's stack, with no address, forwarding, DHCP or DNS of the control host on it; each end a fixed
 * address on the link's subnet, a MAC of its own, an interface named after the link, and a filter
 * that lets IPv4 through to that subnet only; a VM at no link is planned as without links.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parse } from "yaml";
import { planStack } from "../../../infra/plan.ts";
import { seedFiles } from "../../../infra/seed.ts";
import { newRunIdentity, pickSubnet, runIdOfObject, stackSpec, topologyLinks, topologyMembers, type TopologyPlace } from "../../../infra/spec.ts";
import { linkFilterXml, linkNetworkXml, networkXml } from "../../../infra/xml.ts";
import { FIXED_KEYS, topologyVmInput } from "../../helpers/fixtures.ts";

const AT = new Date("2026-12-05T09:00:00Z");
const [askari, kazi, tatu] = ["askari", "kazi", "tatu"].map((host) => newRunIdentity(host, AT)) as [
  ReturnType<typeof newRunIdentity>,
  ReturnType<typeof newRunIdentity>,
  ReturnType<typeof newRunIdentity>,
];
const subnet = pickSubnet([], askari.runId);
const linkSubnet = pickSubnet([subnet.cidr], `${askari.runId}-link1`);
const members = topologyMembers(
  subnet,
  [askari, kazi, tatu].map((identity) => ({ host: identity.host, runId: identity.runId })),
);
const links = topologyLinks(askari.runId, members, [["kazi", "askari"]], [linkSubnet]);
const place: TopologyPlace = { network: askari.runId, members, links };
const input = (identity: typeof askari) => topologyVmInput(identity, subnet, place, "/runs/20261205-090000-mesh");
const prefixOf = (cidr: string) => cidr.split(".").slice(0, 3).join(".");

describe("a topology's extra links", () => {
  it("puts each link on a subnet of its own, each end at its VM's place in the topology, with a MAC of its own", () => {
    assert.notEqual(linkSubnet.cidr, subnet.cidr);
    const [link] = links;
    assert.equal(link!.network, `${askari.runId}-link1`);
    assert.equal(link!.interface, "link1");
    assert.match(link!.bridge, /^boma-it-[0-9a-f]{6}$/);
    assert.ok(link!.bridge.length <= 15);
    // The pair's order is the profile's; each address is the VM's place (kazi second: .11).
    assert.deepEqual(
      link!.ends.map((end) => [end.host, end.ip]),
      [
        ["kazi", `${prefixOf(linkSubnet.cidr)}.11`],
        ["askari", `${prefixOf(linkSubnet.cidr)}.10`],
      ],
    );
    for (const end of link!.ends) {
      assert.match(end.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
      assert.notEqual(end.mac, members.find((member) => member.host === end.host)!.mac, "not its MAC on the run's network");
    }
  });

  it("refuses a link to a host of no VM, a link of one host, more links than a topology has, or too few subnets", () => {
    assert.throws(() => topologyLinks(askari.runId, members, [["askari", "nyumba"]], [linkSubnet]), /link 1: nyumba is no VM of the topology/);
    assert.throws(() => topologyLinks(askari.runId, members, [["kazi", "kazi"]], [linkSubnet]), /a link joins two VMs, found kazi twice/);
    assert.throws(() => topologyLinks(askari.runId, members, [["kazi", "askari"]], []), /1 links need as many subnets, found 0/);
    const many = Array.from({ length: 9 }, () => ["askari", "kazi"] as const);
    assert.throws(() => topologyLinks(askari.runId, members, many, []), /9 links: a topology has at most 8/);
  });

  it("makes each link network in the first VM's stack only: a bridge with no address, no forwarding, no DHCP or DNS", () => {
    const first = planStack(stackSpec(input(askari)), FIXED_KEYS);
    const second = planStack(stackSpec(input(kazi)), FIXED_KEYS);
    const third = planStack(stackSpec(input(tatu)), FIXED_KEYS);
    assert.deepEqual(
      first.resources.map((resource) => resource.name),
      ["egress", "network", "link1", "link-isolation", "isolation", "pool", "overlay", "seed", "domain"],
    );
    assert.deepEqual(
      second.resources.map((resource) => resource.name),
      ["link-isolation", "isolation", "pool", "overlay", "seed", "domain"],
    );
    // tatu is at no link: planned as without links.
    assert.deepEqual(
      third.resources.map((resource) => resource.name),
      ["isolation", "pool", "overlay", "seed", "domain"],
    );
    assert.deepEqual(first.resources.find((resource) => resource.name === "domain")!.dependsOn, [
      "network",
      "link1",
      "isolation",
      "link-isolation",
      "overlay",
      "seed",
    ]);
    const network = first.resources.find((resource) => resource.name === "link1")!;
    assert.equal(network.kind, "network");
    assert.deepEqual(
      network.delete.map((command) => command.argv.slice(-2)),
      [["net-destroy", `${askari.runId}-link1`]],
    );
    const xml = linkNetworkXml(links[0]!);
    assert.equal(network.create[0]!.stdin, xml);
    assert.match(xml, new RegExp(`<name>${askari.runId}-link1</name>`));
    assert.match(xml, new RegExp(`<bridge name="${links[0]!.bridge}" stp="off" delay="0"/>`));
    for (const absent of ["<ip", "<forward", "<dhcp", "<dns"]) assert.ok(!xml.includes(absent), `${absent} in ${xml}`);
  });

  it("gives each VM at a link a second interface on it, behind a filter that lets out its ARP and its IPv4 to the other end only", () => {
    const spec = stackSpec(input(kazi));
    assert.equal(spec.linkFilter, `${kazi.runId}-links`);
    const plan = planStack(spec, FIXED_KEYS);
    const domain = plan.resources.find((resource) => resource.name === "domain")!.create[0]!.stdin!;
    const interfaces = [...domain.matchAll(/<interface type="network">([\s\S]*?)<\/interface>/g)].map((match) => match[1]!);
    assert.equal(interfaces.length, 2);
    assert.match(interfaces[0]!, new RegExp(`<source network="${askari.runId}"/>[\\s\\S]*<filterref filter="${kazi.runId}-isolation"/>`));
    assert.match(
      interfaces[1]!,
      new RegExp(`<source network="${askari.runId}-link1"/>\\s*<mac address="${links[0]!.ends[0].mac}"/>[\\s\\S]*<filterref filter="${kazi.runId}-links"/>`),
    );
    const filter = linkFilterXml(spec);
    assert.equal(plan.resources.find((resource) => resource.name === "link-isolation")!.create[0]!.stdin, filter);
    const rules = [...filter.matchAll(/<rule action="(\w+)" direction="(\w+)" priority="(\d+)">\s*<(\w+)([^>]*)\/>/g)].map((match) =>
      [match[1], match[2], match[3], match[4], match[5]!.trim()].join(" "),
    );
    const [own, peer] = links[0]!.ends;
    // Its ARP, and IPv4 from its own MAC and address to the other end's alone; nothing else leaves.
    assert.deepEqual(rules, [
      'drop inout 50 mac protocolid="ipv6"',
      `accept out 100 mac protocolid="arp" srcmacaddr="${own.mac}"`,
      `accept out 200 ip srcmacaddr="${own.mac}" dstmacaddr="${peer.mac}" srcipaddr="${own.ip}" dstipaddr="${peer.ip}"`,
      "drop out 900 mac ",
    ]);
    // The stack says where the link goes, for checks over it.
    assert.deepEqual(plan.outputs.links, [
      {
        network: `${askari.runId}-link1`,
        interface: "link1",
        peer: "askari",
        address: links[0]!.ends[0].ip,
        peerAddress: links[0]!.ends[1].ip,
      },
    ]);
    assert.equal(planStack(stackSpec(input(tatu)), FIXED_KEYS).outputs.links, undefined);
    assert.throws(() => linkFilterXml(stackSpec(input(tatu))), /is at no link: it has no link filter/);
  });

  it("configures each end's address in the guest by its MAC, on an interface named after the link, with no route beyond it", () => {
    const config = parse(seedFiles(stackSpec(input(askari)), FIXED_KEYS).networkConfig) as { ethernets: Record<string, unknown> };
    assert.deepEqual(config.ethernets["link1"], {
      match: { macaddress: links[0]!.ends[1].mac },
      "set-name": "link1",
      dhcp4: false,
      addresses: [`${links[0]!.ends[1].ip}/24`],
    });
    const alone = parse(seedFiles(stackSpec(input(tatu)), FIXED_KEYS).networkConfig) as { ethernets: Record<string, unknown> };
    assert.deepEqual(Object.keys(alone.ethernets), ["primary"]);
  });

  it("answers each end by host and link in the run's DNS (kazi-link1)", () => {
    const xml = networkXml(stackSpec(input(askari)));
    for (const end of links[0]!.ends)
      assert.match(xml, new RegExp(`<host ip="${end.ip.replace(/\./g, "\\.")}">\\s*<hostname>${end.host}-link1</hostname>\\s*</host>`));
  });

  it("lets the reaper know a link's network and filter as the run's, and nothing past the eighth link", () => {
    assert.equal(runIdOfObject(`${askari.runId}-link1`, "network"), askari.runId);
    assert.equal(runIdOfObject(`${askari.runId}-link8`, "network"), askari.runId);
    assert.equal(runIdOfObject(`${askari.runId}-link9`, "network"), undefined);
    assert.equal(runIdOfObject(`${kazi.runId}-links`, "nwfilter"), kazi.runId);
  });
});
