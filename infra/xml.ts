/**
 * libvirt XML for one run: the isolated NAT network, the overlay volume and the UEFI domain.
 * Pure functions of a {@link StackSpec}; golden-file tested.
 */
import { XMLBuilder } from "fast-xml-parser";
import { linkHostName, linksOf, TOPOLOGY_DOMAIN, type StackSpec, type TopologyLink } from "./spec.ts";

/** XML namespace of the metadata boma-it puts on its domains. */
export const METADATA_NAMESPACE = "https://boma-it.invalid/run/1";

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: "@",
  format: true,
  indentBy: "  ",
  suppressEmptyNode: true,
});

function render(document: Record<string, unknown>): string {
  return builder.build(document) as string;
}

/** XML namespace of libvirt's dnsmasq options. */
const DNSMASQ_NAMESPACE = "http://libvirt.org/schemas/network/dnsmasq/1.0";

/**
 * The run's network. With an allowlist (the default): NAT, and a DNS that answers only the
 * allowed names (and their subdomains), from the upstream resolvers given, puts every address it
 * answers into the allowlist's set of the run's filter (dnsmasq's `nftset`: the filter lets
 * through nothing else), reads no hosts file of the control host and writes every query to the
 * run's query log (refused names are read from there). `open`: NAT as it is. `none`: isolated,
 * with no forwarding at all and a DNS that answers only its own names (no upstream servers). The
 * VM's MAC gets a fixed address so the harness knows where to look before the lease; a
 * topology's VMs each get theirs, and the network's DNS answers each by its inventory host's
 * name (a hosts file of the VM's own would be rewritten by cloud-init at each boot).
 */
export function networkXml(spec: StackSpec): string {
  const { network } = spec;
  const { egress } = network;
  const netmask = "255.255.255.0";
  const options =
    egress.mode === "none"
      ? ["no-resolv"]
      : egress.mode === "open"
        ? []
        : [
            "no-resolv",
            "no-hosts",
            ...egress.names.flatMap((name) => egress.upstreams.map((upstream) => `server=/${name}/${upstream}`)),
            ...(egress.names.length > 0 ? [`nftset=/${egress.names.join("/")}/4#inet#${network.egressTable}#${EGRESS_ALLOWED_SET}`] : []),
            "log-queries",
            `log-facility=${network.dnsQueryLog}`,
          ];
  return render({
    network: {
      ...(options.length > 0 ? { "@xmlns:dnsmasq": DNSMASQ_NAMESPACE } : {}),
      name: network.name,
      ...(egress.mode === "none" ? {} : { forward: { "@mode": "nat" } }),
      bridge: bridgeWithoutSpanningTree(network.bridge),
      mac: { "@address": network.gatewayMac },
      // Several VMs: their names under a domain only this network's DNS answers.
      ...(network.members.length > 1 ? { domain: { "@name": TOPOLOGY_DOMAIN, "@localOnly": "yes" } } : {}),
      dns: {
        "@enable": "yes",
        ...(network.members.length > 1
          ? {
              host: [
                ...network.members.map((member) => ({ "@ip": member.ip, hostname: member.host })),
                // Each end of a link by its host's name and the link's (`kazi-link1`).
                ...network.links.flatMap((link) => link.ends.map((end) => ({ "@ip": end.ip, hostname: linkHostName(end.host, link) }))),
              ],
            }
          : {}),
      },
      ip: {
        "@address": network.subnet.gateway,
        "@netmask": netmask,
        dhcp: {
          range: { "@start": network.subnet.dhcpStart, "@end": network.subnet.dhcpEnd },
          host:
            network.members.length === 1
              ? { "@mac": network.mac, "@name": spec.identity.host, "@ip": network.subnet.guestIp }
              : network.members.map((member) => ({ "@mac": member.mac, "@name": member.host, "@ip": member.ip })),
        },
      },
      ...(options.length > 0 ? { "dnsmasq:options": { "dnsmasq:option": options.map((value) => ({ "@value": value })) } } : {}),
    },
  });
}

/**
 * A run's bridge, without the spanning tree: with it on, Linux holds every new port (a VM
 * started, restored or started again after a reboot) in listening and learning for twice its
 * minimum forward delay of 2 s before anything passes, which a warm start waits out in full. Its
 * bridges have no uplink and each VM's port lets out only its own frames (the filters), so there
 * is no loop for it to break.
 */
function bridgeWithoutSpanningTree(bridge: string): Record<string, string> {
  return { "@name": bridge, "@stp": "off", "@delay": "0" };
}

/**
 * A topology's extra link (see {@link TopologyLink}): a bridge and nothing else. No `<ip>`, so
 * the control host has no address on it and libvirt runs no DHCP or DNS there; no `<forward>`,
 * so nothing leaves it; libvirt turns IPv6 off on a bridge without an IPv6 address.
 */
export function linkNetworkXml(link: TopologyLink): string {
  return render({
    network: {
      name: link.network,
      bridge: bridgeWithoutSpanningTree(link.bridge),
    },
  });
}

/** The allowlist filter's set of addresses the network's DNS answered for allowed names. */
export const EGRESS_ALLOWED_SET = "allowed";

/** The allowlist filter's set of refused attempts: address, protocol and port, each with a packet counter. */
export const EGRESS_BLOCKED_SET = "blocked";

/**
 * The allowlist's filter, an nftables table of its own (its name is the run id): on the forward
 * hook, from the run's bridge, an address the network's DNS answered for an allowed name passes;
 * any other TCP or UDP attempt is recorded (address, protocol, port, a packet counter: kernel
 * packet logging is off in a network namespace) and dropped; anything else is dropped. A drop in
 * any table on the hook is final, so libvirt's own NAT rules let nothing else through. (Private
 * ranges, the control host and IPv6 are the isolation filter's: it drops them first.)
 */
export function egressTableNft(spec: StackSpec): string {
  const { network } = spec;
  const bridge = JSON.stringify(network.bridge);
  // Several VMs: what one sends another on the bridge is forwarded too (bridge netfilter), and
  // is the topology's own traffic, never egress.
  const peers = network.members.length > 1 ? `    iifname ${bridge} ip daddr ${network.subnet.cidr} accept\n` : "";
  return `table inet ${network.egressTable} {
  set ${EGRESS_ALLOWED_SET} { type ipv4_addr; flags timeout; timeout 1d; }
  set ${EGRESS_BLOCKED_SET} { type ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; timeout 7d; counter; }
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
${peers}    iifname ${bridge} ip daddr @${EGRESS_ALLOWED_SET} accept
    iifname ${bridge} meta l4proto { tcp, udp } update @${EGRESS_BLOCKED_SET} { ip daddr . meta l4proto . th dport } drop
    iifname ${bridge} drop
  }
}
`;
}

/** The ethertypes of VLAN-tagged frames: 802.1Q and 802.1ad (QinQ). */
const VLAN_ETHERTYPES = ["0x8100", "0x88a8"] as const;

/** Address ranges a test VM must never reach outside its own subnet: RFC 1918, CGNAT (the mesh), link-local. */
export const FORBIDDEN_RANGES: readonly (readonly [string, string])[] = [
  ["10.0.0.0", "255.0.0.0"],
  ["172.16.0.0", "255.240.0.0"],
  ["192.168.0.0", "255.255.0.0"],
  ["100.64.0.0", "255.192.0.0"],
  ["169.254.0.0", "255.255.0.0"],
];

/**
 * The run's network filter (ADR-025 invariants 3 and 7), on the VM's port of the bridge (it lives
 * and dies with the run): no IPv6 at all, either way; to its gateway (the control host) only DHCP,
 * DNS and the replies to what the control host opened (the harness's SSH and checks: libvirt
 * tracks the connections); to every other address of the control host nothing; its own subnet
 * otherwise; every private, CGNAT and link-local range beyond it dropped; the rest (the internet,
 * through NAT) passes. Rules on `mac` and `ip` are matched on the bridge (ebtables), those on
 * `all`, `tcp` and `udp` by the connection tracker (iptables), each in priority order. No
 * VLAN-tagged frame leaves the VM: no rule of an inner protocol matches one (ebtables sees the
 * tag's type, and the connection tracker does not see such frames at all), and Linux takes a
 * frame tagged with VLAN 0 that reaches the control host as an untagged one.
 */
export function isolationFilterXml(spec: StackSpec): string {
  const own = spec.network.subnet.cidr.split("/")[0]!;
  const gateway = spec.network.subnet.gateway;
  return render({
    filter: {
      "@name": spec.isolationFilter,
      "@chain": "root",
      "@priority": "-700",
      rule: [
        filterRule(50, "drop", "inout", { mac: { "@protocolid": "ipv6" } }),
        ...VLAN_ETHERTYPES.map((type) => filterRule(60, "drop", "out", { mac: { "@protocolid": type } })),
        filterRule(90, "accept", "inout", { all: { "@state": "ESTABLISHED,RELATED" } }),
        filterRule(100, "accept", "out", { udp: { "@dstipaddr": gateway, "@dstportstart": "67" } }),
        filterRule(101, "accept", "out", { udp: { "@dstipaddr": gateway, "@dstportstart": "53" } }),
        filterRule(102, "accept", "out", { tcp: { "@dstipaddr": gateway, "@dstportstart": "53" } }),
        filterRule(110, "drop", "out", { all: { "@dstipaddr": gateway } }),
        ...spec.network.hostAddresses
          .filter((address) => address !== gateway)
          .map((address) => filterRule(120, "drop", "out", { ip: { "@dstipaddr": address } })),
        filterRule(200, "accept", "out", { ip: { "@dstipaddr": own, "@dstipmask": "255.255.255.0" } }),
        ...FORBIDDEN_RANGES.map(([address, mask]) => filterRule(300, "drop", "out", { ip: { "@dstipaddr": address, "@dstipmask": mask } })),
      ],
    },
  });
}

/**
 * The filter on a VM's ends of its links: the only frames that leave the VM there are its ARP
 * and its IPv4 to the other end, from its own MAC and address to the other end's; everything
 * else is dropped (IPv6, broadcasts, VLAN-tagged frames, any other ethertype). A link's bridge
 * has no address of the control host, but Linux answers ARP on any interface for any of its
 * addresses and takes IPv4 sent to them there (the weak host model), and a VLAN-tagged frame
 * passes any rule of its inner protocol: only a filter on what goes to the other end's MAC keeps
 * a VM from reaching the control host, the LAN or another run over a link, whatever subnet the
 * link has.
 */
export function linkFilterXml(spec: StackSpec): string {
  if (spec.linkFilter === undefined) throw new Error(`${spec.identity.runId} is at no link: it has no link filter`);
  const ends = linksOf(spec);
  return render({
    filter: {
      "@name": spec.linkFilter,
      "@chain": "root",
      "@priority": "-700",
      rule: [
        filterRule(50, "drop", "inout", { mac: { "@protocolid": "ipv6" } }),
        ...ends.map(({ own }) => filterRule(100, "accept", "out", { mac: { "@protocolid": "arp", "@srcmacaddr": own.mac } })),
        ...ends.map(({ own, peer }) =>
          filterRule(200, "accept", "out", {
            ip: { "@srcmacaddr": own.mac, "@dstmacaddr": peer.mac, "@srcipaddr": own.ip, "@dstipaddr": peer.ip },
          }),
        ),
        filterRule(900, "drop", "out", { mac: {} }),
      ],
    },
  });
}

/** One rule of a libvirt network filter: its action, direction, priority (lower first) and what it matches. */
function filterRule(priority: number, action: "accept" | "drop", direction: "out" | "inout", match: Record<string, unknown>) {
  return { "@action": action, "@direction": direction, "@priority": String(priority), ...match };
}

/** The qcow2 overlay backed by the golden image: every write of the run lands here. */
export function overlayVolumeXml(spec: StackSpec): string {
  return render({
    volume: {
      name: spec.volumes.overlay,
      capacity: { "@unit": "GiB", "#text": String(spec.vm.diskGiB) },
      target: { format: { "@type": "qcow2" } },
      backingStore: { path: spec.goldenImage, format: { "@type": "qcow2" } },
    },
  });
}

/** The UEFI q35 domain: virtio disk and NIC, NoCloud seed as CD-ROM, serial console to a file. */
export function domainXml(spec: StackSpec): string {
  const kvm = spec.accel === "kvm";
  return render({
    domain: {
      "@type": kvm ? "kvm" : "qemu",
      name: spec.identity.runId,
      // A warm start restores a state saved under this UUID: libvirt restores into no other.
      ...(spec.warmStart ? { uuid: spec.warmStart.uuid } : {}),
      // A VM generation ID: libvirt gives a restored domain a new one, and the guest kernel then
      // reseeds its random number generator, so VMs started from one saved state (RED and GREEN)
      // never draw the same random numbers. A start (the reboot's) keeps it.
      genid: "",
      metadata: {
        "boma:run": {
          "@xmlns:boma": METADATA_NAMESPACE,
          "@host": spec.identity.host,
          "@created": spec.identity.createdAt.toISOString(),
          "@pid": String(spec.ownerPid),
          ...(spec.ownerStart !== undefined ? { "@pidStart": spec.ownerStart } : {}),
          "@runDir": spec.runDir,
        },
      },
      memory: { "@unit": "MiB", "#text": String(spec.vm.memoryMiB) },
      vcpu: String(spec.vm.vcpus),
      os: {
        "@firmware": "efi",
        type: { "@arch": "x86_64", "@machine": "q35", "#text": "hvm" },
        firmware: {
          feature: [
            { "@enabled": "no", "@name": "secure-boot" },
            { "@enabled": "no", "@name": "enrolled-keys" },
          ],
        },
        nvram: spec.nvram,
        boot: { "@dev": "hd" },
      },
      features: { acpi: "", apic: "" },
      // KVM passes the host's CPU through. Under TCG a conservative x86-64-v2 model: with
      // "maximum" (every feature TCG can emulate) guest processes crashed now and then in
      // vector code on QEMU 7.2, taking the guest kernel down with them.
      cpu: kvm
        ? { "@mode": "host-passthrough", "@check": "none" }
        : { "@mode": "custom", "@match": "exact", "@check": "none", model: { "@fallback": "forbid", "#text": "Nehalem" } },
      clock: { "@offset": "utc" },
      on_poweroff: "destroy",
      on_reboot: "restart",
      on_crash: "destroy",
      devices: {
        disk: [
          {
            "@type": "volume",
            "@device": "disk",
            driver: { "@name": "qemu", "@type": "qcow2", "@discard": "unmap" },
            source: { "@pool": spec.pool.name, "@volume": spec.volumes.overlay },
            target: { "@dev": "vda", "@bus": "virtio" },
          },
          {
            "@type": "volume",
            "@device": "cdrom",
            driver: { "@name": "qemu", "@type": "raw" },
            source: { "@pool": spec.pool.name, "@volume": spec.volumes.seed },
            target: { "@dev": "sda", "@bus": "sata" },
            readonly: "",
          },
        ],
        interface: [
          {
            "@type": "network",
            source: { "@network": spec.network.name },
            mac: { "@address": spec.network.mac },
            model: { "@type": "virtio" },
            filterref: { "@filter": spec.isolationFilter },
          },
          // A topology's extra links this VM is at, each on its own network.
          ...linksOf(spec).map(({ link, own }) => ({
            "@type": "network",
            source: { "@network": link.network },
            mac: { "@address": own.mac },
            model: { "@type": "virtio" },
            filterref: { "@filter": spec.linkFilter },
          })),
        ],
        // virtlogd writes the console to the run dir, across reboots (append).
        serial: {
          "@type": "pty",
          log: { "@file": spec.consoleLog, "@append": "on" },
          target: { "@port": "0" },
        },
        console: { "@type": "pty", target: { "@type": "serial", "@port": "0" } },
        rng: { "@model": "virtio", backend: { "@model": "random", "#text": "/dev/urandom" } },
        memballoon: { "@model": "none" },
      },
    },
  });
}
