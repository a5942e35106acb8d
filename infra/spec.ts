/**
 * The typed description of one throwaway stack: names, network, disk, seed and domain. Built
 * from a run's identity and its profile's VM settings; rendered to libvirt XML and to a plan.
 * Everything named here starts with the `boma-it-` prefix so the reaper can find it.
 */
import { createHash } from "node:crypto";

/** How many extra links (`links:`) one topology may have. */
export const MAX_TOPOLOGY_LINKS = 8;

/** The name of a topology's link at `index` (`link1` for the first): its interface in the guests, and its network's name's end. */
export function linkName(index: number): string {
  return `link${index + 1}`;
}

/** What a topology's link network's name adds to its network's: `-link1` for the first. */
function linkSuffix(index: number): string {
  return `-${linkName(index)}`;
}

/** The prefix of every libvirt object and file of a run (ADR-025 invariant 4). */
export const PREFIX = "boma-it-";

/** A run id: the prefix, an inventory hostname, the UTC stamp (see {@link newRunIdentity}). */
const RUN_ID_SHAPE = String.raw`boma-it-[A-Za-z0-9][A-Za-z0-9._-]*-\d{8}-\d{6}`;

/**
 * What boma-it names after a run id, by kind of object: the only names the reaper may take for a
 * run's (a name with the prefix but any other shape is someone else's).
 */
export const RUN_OBJECT_SUFFIXES = {
  domain: [""],
  /** The run's network, and a topology's extra links (see {@link TopologyLink}). */
  network: ["", ...Array.from({ length: MAX_TOPOLOGY_LINKS }, (_unused, index) => linkSuffix(index))],
  /** The VM's isolation filter, and its links' (see {@link linkFilterXml}). */
  nwfilter: ["-isolation", "-links"],
  pool: [""],
  /**
   * The overlay and the seed (the stack's), the reset point's top volume and saved memory, and
   * the rewind point's disk and memory (the applied state each reboot kind starts from).
   */
  volume: ["-overlay.qcow2", "-seed.iso", "-top.qcow2", "-reset.mem", "-applied.qcow2", "-applied.mem"],
  /** The domain's UEFI variables, in libvirt's NVRAM folder. */
  nvram: ["_VARS.fd"],
  /** The run's SSH master socket, the jail's gate to it and the jail's teller. */
  ssh: ["", ".gate", ".tell"],
  /** The allowlist's nftables table (`inet <run id>`). */
  nftTable: [""],
  /** Where the network's DNS writes its queries, in libvirt's dnsmasq folder. */
  dnsQueryLog: [".queries.log"],
} as const;

/** The run a libvirt object or file belongs to by its exact name shape, or undefined when boma-it never names a `kind` so. */
export function runIdOfObject(name: string, kind: keyof typeof RUN_OBJECT_SUFFIXES): string | undefined {
  for (const suffix of RUN_OBJECT_SUFFIXES[kind]) {
    const match = new RegExp(`^(${RUN_ID_SHAPE})${suffix.replace(/[.]/g, "\\.")}$`).exec(name);
    if (match) return match[1];
  }
  return undefined;
}

/** The shapes boma-it gives the folders of a runs dir: a run dir (`<stamp>-<host>`) or a fleet dir (`<stamp>-fleet-<name>`), whose runs are folders of the first shape inside it. */
export function runsDirFolderShape(name: string): "run" | "fleet" | undefined {
  if (/^\d{8}-\d{6}-fleet-[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) return "fleet";
  return /^\d{8}-\d{6}-[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) ? "run" : undefined;
}

/** Where libvirt keeps its networks' DNS files: a run's query log goes there. */
export const LIBVIRT_DNSMASQ_DIR = "/var/lib/libvirt/dnsmasq";

/** Where a run's network DNS writes the queries it got. */
export function dnsQueryLogOf(runId: string, dnsmasqDir: string = LIBVIRT_DNSMASQ_DIR): string {
  return `${dnsmasqDir}/${runId}${RUN_OBJECT_SUFFIXES.dnsQueryLog[0]}`;
}

/** Hardware virtualisation (KVM) or software emulation (TCG). */
export type Accel = "kvm" | "tcg";

/** Who a run is: its stack name, host and time stamp. */
export interface RunIdentity {
  /** Stack and libvirt name: `boma-it-<host>-<yyyymmdd-hhmmss>`. */
  runId: string;
  host: string;
  /** `yyyymmdd-hhmmss` in UTC. */
  stamp: string;
  createdAt: Date;
}

/** Makes the identity of a new run of `host` at `now`. */
export function newRunIdentity(host: string, now: Date = new Date()): RunIdentity {
  const iso = now.toISOString();
  const stamp = `${iso.slice(0, 10).replaceAll("-", "")}-${iso.slice(11, 19).replaceAll(":", "")}`;
  return { runId: `${PREFIX}${host}-${stamp}`, host, stamp, createdAt: now };
}

/** The run dir name of the contract: `<yyyymmdd-hhmmss>-<host>`. */
export function runDirName(identity: RunIdentity): string {
  return `${identity.stamp}-${identity.host}`;
}

/** An IPv4 /24 for one run's network. */
export interface Subnet {
  /** e.g. `10.234.7.0/24` */
  cidr: string;
  gateway: string;
  /** The address the run's (first) VM always gets (a DHCP host entry for its MAC); a topology's others follow it (see {@link addressInSubnet}). */
  guestIp: string;
  dhcpStart: string;
  dhcpEnd: string;
}

/** Range the harness picks run subnets from (10.234.0.0/16): away from common LAN ranges. */
const SUBNET_BASE = [10, 234] as const;

/**
 * Picks a free /24 in 10.234.0.0/16: the first not overlapping any `used` CIDR, starting at a
 * place derived from `seed` so concurrent machines rarely collide.
 */
export function pickSubnet(used: readonly string[], seed: string): Subnet {
  const start = hashBytes(seed)[0]! % 254;
  for (let offset = 0; offset < 254; offset += 1) {
    const third = ((start + offset) % 254) + 1;
    if (overlapsAny(`${SUBNET_BASE[0]}.${SUBNET_BASE[1]}.${third}.0/24`, used)) continue;
    const prefix = `${SUBNET_BASE[0]}.${SUBNET_BASE[1]}.${third}`;
    return {
      cidr: `${prefix}.0/24`,
      gateway: `${prefix}.1`,
      guestIp: `${prefix}.10`,
      dhcpStart: `${prefix}.100`,
      dhcpEnd: `${prefix}.199`,
    };
  }
  throw new Error(`no free /24 left in ${SUBNET_BASE.join(".")}.0.0/16`);
}

/** How many VMs one run's network holds at most (their fixed addresses are .10 to .(10 + this - 1), below the DHCP range). */
export const MAX_VMS_PER_NETWORK = 64;

/** The fixed address of the VM at `index` of a topology on `subnet` (0: the subnet's guest address, .10; then .11, ...). */
export function addressInSubnet(subnet: Subnet, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_VMS_PER_NETWORK)
    throw new Error(`no fixed address for VM ${index} of a topology (0 to ${MAX_VMS_PER_NETWORK - 1})`);
  const parts = subnet.guestIp.split(".").map(Number);
  return [...parts.slice(0, 3), parts[3]! + index].join(".");
}

/** Whether `cidr` shares an address with any of `used` (networks and routes, any prefix; an address's own network counts). */
export function overlapsAny(cidr: string, used: readonly string[]): boolean {
  const range = parseCidr(cidr);
  if (!range) return false;
  const [low, high] = range;
  return used.map(parseCidr).some((taken) => taken !== undefined && taken[0] <= high && low <= taken[1]);
}

function parseCidr(cidr: string): [number, number] | undefined {
  const match = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr.trim());
  if (!match) return undefined;
  const bits = Number(match[2]);
  const size = 2 ** (32 - bits);
  const base = Math.floor(ipToNumber(match[1]!) / size) * size;
  return [base, base + size - 1];
}

function ipToNumber(ip: string): number {
  return ip.split(".").reduce((sum, part) => sum * 256 + Number(part), 0);
}

function hashBytes(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** A locally administered MAC in QEMU's 52:54:00 range, stable for a run id. */
export function macFor(runId: string): string {
  return qemuMacOf(`mac:${runId}`);
}

/** A MAC in QEMU's 52:54:00 range, from a hash of `text`. */
function qemuMacOf(text: string): string {
  const bytes = hashBytes(text);
  return ["52", "54", "00", ...[0, 1, 2].map((index) => bytes[index]!.toString(16).padStart(2, "0"))].join(":");
}

/**
 * The MAC of a network's bridge, the guest's gateway, stable for its subnet. A VM started from a
 * saved first boot comes back on a new network of the saved subnet with the gateway's MAC still
 * in its neighbour table: were the bridge's MAC another (libvirt picks one at random), its
 * packets to the gateway would go to an address nobody has until the host happened to ask for
 * its address again (5-6 s under TCG).
 */
export function gatewayMacFor(subnet: Subnet): string {
  return qemuMacOf(`gateway-mac:${subnet.cidr}`);
}

/** A bridge name (at most 15 characters) with the prefix, stable for a run id. */
export function bridgeFor(runId: string): string {
  return `${PREFIX}${hashBytes(`bridge:${runId}`).toString("hex").slice(0, 6)}`;
}

/**
 * What the VM may reach beyond its own network: nothing (`--no-egress`: no forwarding at all),
 * the names of an allowlist (the default: the network's DNS answers those names alone, from the
 * given upstream resolvers, and the filter lets through only the addresses it answered), or
 * everything public (`--egress open`: NAT, as before the allowlist).
 */
export type EgressSpec = { mode: "none" } | { mode: "open" } | { mode: "allowlist"; names: string[]; upstreams: string[] };

/** A VM on a run's network: the inventory host it impersonates, its MAC and its fixed address. */
export interface NetworkMember {
  host: string;
  mac: string;
  ip: string;
}

/**
 * Several VMs on one network (a topology): every VM's stack names the same network, made by the
 * first VM's stack (its run id names it, its filter and DNS log) and joined by the others'.
 */
export interface TopologyPlace {
  /** The network's name: the first VM's run id. */
  network: string;
  /** Every VM on it, in the topology's order, this one included. */
  members: NetworkMember[];
  /** The topology's extra links between two of its VMs each (see {@link TopologyLink}); none when absent. */
  links?: TopologyLink[];
}

/**
 * An extra link of a topology (`links:`), as the NixOS test driver's vlans: a network of its own
 * between two of its VMs, with no address of the control host on it, no forwarding, no DHCP and no
 * DNS. Each end has a fixed address on the link's own subnet (its VM's place in the topology, as
 * on the run's network), a MAC of its own and, in the guest, an interface named after the link.
 * The first VM's stack makes it, as it makes the network.
 */
export interface TopologyLink {
  /** `<network>-link<n>`: the topology's network's name and the link's number. */
  network: string;
  /** `link<n>`: the interface's name in each guest at the link. */
  interface: string;
  bridge: string;
  /** The link's own /24, apart from the run's network's. */
  cidr: string;
  /** The two VMs at the link, in the topology's order. */
  ends: [NetworkMember, NetworkMember];
}

/**
 * The links of a topology whose network is `network` and whose VMs are `members`: one per pair of
 * hosts, in order, each on its own subnet of `subnets` (as many as pairs).
 */
export function topologyLinks(
  network: string,
  members: readonly NetworkMember[],
  pairs: readonly (readonly [string, string])[],
  subnets: readonly Subnet[],
): TopologyLink[] {
  if (pairs.length > MAX_TOPOLOGY_LINKS) throw new Error(`${pairs.length} links: a topology has at most ${MAX_TOPOLOGY_LINKS}`);
  if (subnets.length !== pairs.length) throw new Error(`${pairs.length} links need as many subnets, found ${subnets.length}`);
  return pairs.map((pair, index) => {
    const name = `${network}${linkSuffix(index)}`;
    const ends = pair.map((host) => {
      const at = members.findIndex((member) => member.host === host);
      if (at < 0) throw new Error(`link ${index + 1}: ${host} is no VM of the topology on ${network}`);
      return { host, mac: qemuMacOf(`link-mac:${name}:${host}`), ip: addressInSubnet(subnets[index]!, at) };
    }) as [NetworkMember, NetworkMember];
    if (ends[0].host === ends[1].host) throw new Error(`link ${index + 1}: a link joins two VMs, found ${ends[0].host} twice`);
    return { network: name, interface: linkName(index), bridge: bridgeFor(name), cidr: subnets[index]!.cidr, ends };
  });
}

/** The name the topology's DNS answers with `host`'s address on `link` (`kazi-link1`). */
export function linkHostName(host: string, link: Pick<TopologyLink, "interface">): string {
  return `${host}-${link.interface}`;
}

/** The links a VM is at, each with its own end and the other's. */
export function linksOf(spec: Pick<StackSpec, "identity" | "network">): { link: TopologyLink; own: NetworkMember; peer: NetworkMember }[] {
  return spec.network.links.flatMap((link) => {
    const at = link.ends.findIndex((end) => end.host === spec.identity.host);
    return at < 0 ? [] : [{ link, own: link.ends[at]!, peer: link.ends[1 - at]! }];
  });
}

/** Everything needed to declare one run's libvirt objects. */
export interface StackSpec {
  identity: RunIdentity;
  accel: Accel;
  vm: { vcpus: number; memoryMiB: number; diskGiB: number };
  /** This VM's fixed address on its network. */
  address: string;
  network: {
    /** Whether this stack makes the network (one VM, or a topology's first) or joins one another stack made. */
    owned: boolean;
    /** Every VM on the network, each with a DHCP host entry (and, for several, a DNS name: its inventory host's). */
    members: NetworkMember[];
    /** A topology's extra links, all of them (the network's owner makes them; a VM joins those it is at). */
    links: TopologyLink[];
    name: string;
    bridge: string;
    subnet: Subnet;
    mac: string;
    /** The bridge's own MAC: the gateway's, as the guest's neighbour table has it (see {@link gatewayMacFor}). */
    gatewayMac: string;
    /** What the VM may reach beyond its network (see {@link EgressSpec}). */
    egress: EgressSpec;
    /**
     * The allowlist's filter, an nftables table of the run (`inet <run id>`), and where the
     * network's DNS writes the queries it got (refused names are read from there).
     */
    egressTable: string;
    dnsQueryLog: string;
    /** The control host's own IPv4 addresses: the VM may reach none of them (its gateway only for DHCP and DNS). */
    hostAddresses: string[];
  };
  /** The libvirt network filter that keeps the VM off the LAN and the mesh. */
  isolationFilter: string;
  /** The filter on the VM's ends of its links (see {@link TopologyLink}): only when it is at one. */
  linkFilter?: string;
  /** A libvirt dir pool that holds the run's overlay and seed volumes. */
  pool: { name: string; dir: string };
  /** The golden image the overlay is backed by (never written). */
  goldenImage: string;
  /** Volume names inside the pool. */
  volumes: { overlay: string; seed: string };
  /** Capacity of the seed volume in bytes (the ISO is a few hundred KiB). */
  seedCapacityBytes: number;
  /** The run dir (console log, seed ISO, keys). */
  runDir: string;
  /** Serial console log, written by virtlogd. */
  consoleLog: string;
  /** Where libvirt keeps the per-run UEFI variables. */
  nvram: string;
  /** The guest account the harness logs in as. */
  guestUser: string;
  /** Pid of the harness process that owns the run (recorded so the reaper can tell it died). */
  ownerPid: number;
  /** When that process started (`processStart`), so a later process with the same pid is not taken for it. */
  ownerStart?: string;
  /** Set when the VM starts from a saved first boot instead of booting (see {@link WarmStartSpec}). */
  warmStart?: WarmStartSpec;
}

/**
 * A warm start: the domain takes the identity of the saved first boot (its UUID and MAC; the
 * subnet is given as usual) and is restored from the state rather than started. The disk, the
 * seed and the UEFI variables are the state's own, copied in; the save image is this run's copy,
 * its XML already renamed to this run's domain.
 */
export interface WarmStartSpec {
  uuid: string;
  mac: string;
  /** This run's copy of the saved memory and device state (deleted once restored). */
  saveImage: string;
  /** The state's disk: a qcow2 overlay on the same golden image. */
  disk: string;
  /** The state's NoCloud seed (the same instance id, keys and host name as the saved guest). */
  seed: string;
  /** The state's UEFI variables. */
  nvram: string;
}

/** Inputs of {@link stackSpec} that are not derived from the identity. */
export interface StackSpecInput {
  identity: RunIdentity;
  accel: Accel;
  vm: StackSpec["vm"];
  subnet: Subnet;
  egress: EgressSpec;
  /** The control host's IPv4 addresses (see {@link StackSpec}); none when not given. */
  hostAddresses?: string[];
  goldenImage: string;
  runDir: string;
  ownerPid: number;
  ownerStart?: string;
  /** Root of libvirt's image dirs (default /var/lib/libvirt/images). */
  libvirtImagesDir?: string;
  /** Where libvirt keeps NVRAM files (default /var/lib/libvirt/qemu/nvram). */
  libvirtNvramDir?: string;
  /** Where libvirt keeps its networks' DNS files (default /var/lib/libvirt/dnsmasq). */
  libvirtDnsmasqDir?: string;
  /** Start from a saved first boot (its MAC replaces the run's own). */
  warmStart?: WarmStartSpec;
  /** One VM of several on one network (see {@link TopologyPlace}); absent: the VM is alone on a network of its own. */
  topology?: TopologyPlace;
}

/**
 * The DNS domain of a topology's network: each VM's inventory name under it is answered by the
 * network's DNS, and it is each VM's search domain, so a host resolves the others by their
 * inventory names (`kazi` → `kazi.boma-it.test`). `.test` is reserved: never a real name.
 */
export const TOPOLOGY_DOMAIN = "boma-it.test";

/** The members of a topology of `hosts` (in order, the first's run id naming the network) whose VMs have these run ids. */
export function topologyMembers(subnet: Subnet, vms: readonly { host: string; runId: string }[]): NetworkMember[] {
  if (vms.length > MAX_VMS_PER_NETWORK) throw new Error(`a topology of ${vms.length} VMs: one network holds at most ${MAX_VMS_PER_NETWORK}`);
  return vms.map((vm, index) => ({ host: vm.host, mac: macFor(vm.runId), ip: addressInSubnet(subnet, index) }));
}

/** Derives the whole stack spec of a run. */
export function stackSpec(input: StackSpecInput): StackSpec {
  const name = input.identity.runId;
  const imagesDir = input.libvirtImagesDir ?? "/var/lib/libvirt/images";
  const nvramDir = input.libvirtNvramDir ?? "/var/lib/libvirt/qemu/nvram";
  const mac = input.warmStart?.mac ?? macFor(name);
  const { topology } = input;
  const self = topology?.members.find((member) => member.mac === mac);
  if (topology && (!self || self.host !== input.identity.host))
    throw new Error(`${name} (${input.identity.host}, MAC ${mac}) is no member of the topology on ${topology.network}`);
  // The network's own names: this VM's alone, or the topology's first VM's.
  const network = topology?.network ?? name;
  return {
    identity: input.identity,
    accel: input.accel,
    vm: input.vm,
    address: self?.ip ?? input.subnet.guestIp,
    network: {
      owned: network === name,
      members: topology?.members ?? [{ host: input.identity.host, mac, ip: input.subnet.guestIp }],
      links: topology?.links ?? [],
      name: network,
      bridge: bridgeFor(network),
      subnet: input.subnet,
      mac,
      gatewayMac: gatewayMacFor(input.subnet),
      egress: input.egress,
      egressTable: network,
      dnsQueryLog: dnsQueryLogOf(network, input.libvirtDnsmasqDir),
      hostAddresses: [...(input.hostAddresses ?? [])].sort(),
    },
    isolationFilter: `${name}${RUN_OBJECT_SUFFIXES.nwfilter[0]}`,
    ...((topology?.links ?? []).some((link) => link.ends.some((end) => end.host === input.identity.host))
      ? { linkFilter: `${name}${RUN_OBJECT_SUFFIXES.nwfilter[1]}` }
      : {}),
    pool: { name, dir: `${imagesDir}/${name}` },
    goldenImage: input.goldenImage,
    volumes: { overlay: `${name}${RUN_OBJECT_SUFFIXES.volume[0]}`, seed: `${name}${RUN_OBJECT_SUFFIXES.volume[1]}` },
    seedCapacityBytes: 4 * 1024 * 1024,
    runDir: input.runDir,
    consoleLog: `${input.runDir}/console.log`,
    nvram: `${nvramDir}/${name}${RUN_OBJECT_SUFFIXES.nvram[0]}`,
    guestUser: "boma",
    ownerPid: input.ownerPid,
    ...(input.ownerStart !== undefined ? { ownerStart: input.ownerStart } : {}),
    ...(input.warmStart ? { warmStart: input.warmStart } : {}),
  };
}
