/**
 * The plan: a run's stack as data. An ordered list of resources, each with the commands that
 * create it, the commands that delete it (run in reverse on teardown) and its dependencies.
 * Both engines carry out the same plan: the direct engine in order with a ledger, the pulumi
 * engine as `@pulumi/command` resources. Declarative: no waiting, no SSH here.
 */
import { join } from "node:path";
import { seedFiles, type HostKeyType, type SeedKeys } from "./seed.ts";
import { linksOf, type StackSpec } from "./spec.ts";
import { domainXml, egressTableNft, isolationFilterXml, linkFilterXml, linkNetworkXml, networkXml, overlayVolumeXml } from "./xml.ts";

/** One command of a resource. */
export interface PlanCommand {
  argv: string[];
  /** Text fed on stdin (XML, seed data). */
  stdin?: string;
  /** The stdin holds a secret: never recorded in a ledger, log or state unencrypted. */
  secretStdin?: boolean;
  /** A delete that may fail without harm (e.g. `virsh destroy` of a domain that is off). */
  mayFail?: boolean;
  /** A delete whose "not found" failure means the object is already gone. */
  ignoreAbsent?: boolean;
}

/** The kinds of object a plan creates. */
export type ResourceKind = "egress" | "network" | "nwfilter" | "pool" | "volume" | "seed" | "domain";

/** One resource: what it is, how to create and delete it, what it needs first. */
export interface PlanResource {
  /** Logical name, unique in the plan (`network`, `pool`, ...). */
  name: string;
  kind: ResourceKind;
  /** The libvirt name or path of the object. */
  id: string;
  create: PlanCommand[];
  delete: PlanCommand[];
  dependsOn: string[];
}

/** What a person (and `status`, `ssh`) needs to reach a live run. */
export interface StackOutputs {
  runId: string;
  host: string;
  ip: string;
  user: string;
  /** The command that opens a shell in the VM. */
  ssh: string;
  runDir: string;
  consoleLog: string;
  keyFile: string;
  knownHostsFile: string;
  network: string;
  /** The VM's MAC on that network. */
  mac: string;
  /** The network's subnet (CIDR): the only addresses a run's inventory may point at. */
  subnet: string;
  /** A topology's extra links this VM is at (absent when none): each its network, the guest's interface, the host at its other end and both ends' addresses. */
  links?: LinkOutput[];
  domain: string;
  accel: string;
  createdAt: string;
  ownerPid: number;
  /** When the owner started (see `processStart`); absent in stacks made before it was recorded. */
  ownerStart?: string;
}

/** One extra link of a topology as a VM at it sees it (see {@link StackOutputs.links}). */
export interface LinkOutput {
  network: string;
  /** The link's interface in the guest (`link1`). */
  interface: string;
  /** The inventory host at the link's other end. */
  peer: string;
  /** This VM's address on the link. */
  address: string;
  /** The other end's. */
  peerAddress: string;
}

/** A whole stack. */
export interface Plan {
  stack: string;
  resources: PlanResource[];
  outputs: StackOutputs;
}

/** Files of a run that the plan reads or writes, inside the run dir. */
export function runFiles(runDir: string) {
  return {
    keyFile: join(runDir, "keys", "id_ed25519"),
    /** The VM's host key of one type (the private key; its public line next to it, `.pub`). */
    hostKeyFile: (type: HostKeyType) => join(runDir, "keys", `ssh_host_${type}_key`),
    knownHostsFile: join(runDir, "keys", "known_hosts"),
    seedDir: join(runDir, ".seed"),
    seedIso: join(runDir, ".seed.iso"),
  };
}

/** Libvirt URI the plan's virsh commands use. */
export const DEFAULT_LIBVIRT_URI = "qemu:///system";

/**
 * argv that gives `argv` a real pipe as stdin. virsh reads XML from `/dev/stdin` by opening it,
 * and Node (libuv) hands children a socket, which cannot be opened ("No such device or
 * address"); a shell pipeline makes a real pipe.
 */
export function withPipedStdin(argv: readonly string[]): string[] {
  return ["sh", "-c", 'cat | "$@"', "piped-stdin", ...argv];
}

/** How a plan runs what only root may (the allowlist's nftables table): as is when root, else through `sudo -n`. */
export interface PlanPrivileges {
  /** The words before such a command (`[]` as root, `["sudo", "-n"]` otherwise). */
  asRoot: string[];
}

/** Builds the plan of a stack. */
export function planStack(spec: StackSpec, keys: SeedKeys, uri = DEFAULT_LIBVIRT_URI, privileges: PlanPrivileges = { asRoot: [] }): Plan {
  const virsh = (...args: string[]) => ["virsh", "-q", "-c", uri, ...args];
  const files = runFiles(spec.runDir);
  const seed = seedFiles(spec, keys);
  const name = spec.identity.runId;
  // The allowlist's table and the network are the stack's that owns the network (one VM, or a topology's first).
  const owned = spec.network.owned;
  const allowlist = owned && spec.network.egress.mode === "allowlist";
  const warm = spec.warmStart;

  const resources: PlanResource[] = [
    // Before the network: its DNS fills the table's set from its first answer on.
    ...(allowlist
      ? [
          {
            name: "egress",
            kind: "egress" as const,
            id: `inet ${spec.network.egressTable}`,
            create: [{ argv: [...privileges.asRoot, "nft", "-f", "-"], stdin: egressTableNft(spec) }],
            delete: [
              { argv: [...privileges.asRoot, "nft", "delete", "table", "inet", spec.network.egressTable], ignoreAbsent: true },
              { argv: [...privileges.asRoot, "rm", "-f", spec.network.dnsQueryLog], mayFail: true },
            ],
            dependsOn: [],
          },
        ]
      : []),
    ...(owned
      ? [
          {
            name: "network",
            kind: "network" as const,
            id: spec.network.name,
            // A transient network: it exists while started and disappears when destroyed.
            create: [{ argv: withPipedStdin(virsh("net-create", "/dev/stdin")), stdin: networkXml(spec) }],
            delete: [{ argv: virsh("net-destroy", spec.network.name), ignoreAbsent: true }],
            dependsOn: allowlist ? ["egress"] : [],
          },
        ]
      : []),
    // A topology's extra links are the network owner's too.
    ...(owned
      ? spec.network.links.map((link) => ({
          name: link.interface,
          kind: "network" as const,
          id: link.network,
          create: [{ argv: withPipedStdin(virsh("net-create", "/dev/stdin")), stdin: linkNetworkXml(link) }],
          delete: [{ argv: virsh("net-destroy", link.network), ignoreAbsent: true }],
          dependsOn: [],
        }))
      : []),
    ...(spec.linkFilter !== undefined
      ? [
          {
            name: "link-isolation",
            kind: "nwfilter" as const,
            id: spec.linkFilter,
            create: [{ argv: withPipedStdin(virsh("nwfilter-define", "/dev/stdin")), stdin: linkFilterXml(spec) }],
            delete: [{ argv: virsh("nwfilter-undefine", spec.linkFilter), ignoreAbsent: true }],
            dependsOn: [],
          },
        ]
      : []),
    {
      name: "isolation",
      kind: "nwfilter",
      id: spec.isolationFilter,
      create: [{ argv: withPipedStdin(virsh("nwfilter-define", "/dev/stdin")), stdin: isolationFilterXml(spec) }],
      delete: [{ argv: virsh("nwfilter-undefine", spec.isolationFilter), ignoreAbsent: true }],
      dependsOn: [],
    },
    {
      name: "pool",
      kind: "pool",
      id: spec.pool.name,
      create: [
        { argv: virsh("pool-define-as", spec.pool.name, "dir", "--target", spec.pool.dir) },
        { argv: virsh("pool-build", spec.pool.name) },
        { argv: virsh("pool-start", spec.pool.name) },
      ],
      delete: [
        // Whatever else the run put in its pool (a reset point's saved state and top volume) goes with it.
        { argv: virsh("pool-refresh", spec.pool.name), mayFail: true },
        {
          argv: [
            "sh",
            "-c",
            'for volume in $(virsh -q -c "$1" vol-list "$2" | awk \'{print $1}\'); do virsh -q -c "$1" vol-delete "$volume" --pool "$2"; done',
            "delete-volumes",
            uri,
            spec.pool.name,
          ],
          mayFail: true,
        },
        { argv: virsh("pool-destroy", spec.pool.name), mayFail: true },
        { argv: virsh("pool-delete", spec.pool.name), mayFail: true },
        { argv: virsh("pool-undefine", spec.pool.name), ignoreAbsent: true },
      ],
      dependsOn: [],
    },
    {
      name: "overlay",
      kind: "volume",
      id: spec.volumes.overlay,
      create: [
        { argv: withPipedStdin(virsh("vol-create", spec.pool.name, "/dev/stdin")), stdin: overlayVolumeXml(spec) },
        // A warm start's disk is the saved first boot's: a qcow2 overlay on the same golden image.
        ...(warm ? [{ argv: virsh("vol-upload", spec.volumes.overlay, warm.disk, "--pool", spec.pool.name) }] : []),
      ],
      delete: [{ argv: virsh("vol-delete", spec.volumes.overlay, "--pool", spec.pool.name), ignoreAbsent: true }],
      dependsOn: ["pool"],
    },
    {
      name: "seed",
      kind: "seed",
      id: spec.volumes.seed,
      create: warm
        ? [
            // The saved guest's own seed: a different one would be a new instance to cloud-init at the next boot.
            { argv: virsh("vol-create-as", spec.pool.name, spec.volumes.seed, String(spec.seedCapacityBytes), "--format", "raw") },
            { argv: virsh("vol-upload", spec.volumes.seed, warm.seed, "--pool", spec.pool.name) },
          ]
        : [
            {
              // user-data carries the VM's private host key: it comes on stdin and lives on disk
              // only until it is packed and uploaded.
              argv: [
                "sh",
                "-c",
                'umask 077 && mkdir -p "$1" && printf %s "$2" > "$1/meta-data" && printf %s "$3" > "$1/network-config" && cat > "$1/user-data"',
                "write-seed",
                files.seedDir,
                seed.metaData,
                seed.networkConfig,
              ],
              stdin: seed.userData,
              secretStdin: true,
            },
            {
              argv: [
                "genisoimage",
                "-quiet",
                "-output",
                files.seedIso,
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                join(files.seedDir, "user-data"),
                join(files.seedDir, "meta-data"),
                join(files.seedDir, "network-config"),
              ],
            },
            { argv: virsh("vol-create-as", spec.pool.name, spec.volumes.seed, String(spec.seedCapacityBytes), "--format", "raw") },
            { argv: virsh("vol-upload", spec.volumes.seed, files.seedIso, "--pool", spec.pool.name) },
            { argv: ["rm", "-rf", files.seedDir, files.seedIso] },
          ],
      delete: [
        { argv: virsh("vol-delete", spec.volumes.seed, "--pool", spec.pool.name), ignoreAbsent: true },
        { argv: ["rm", "-rf", files.seedDir, files.seedIso] },
      ],
      dependsOn: ["pool"],
    },
    {
      name: "domain",
      kind: "domain",
      id: name,
      create: [
        { argv: withPipedStdin(virsh("define", "/dev/stdin")), stdin: domainXml(spec) },
        ...(warm
          ? [
              // The saved firmware's variables (libvirt's NVRAM folder is root's), then the saved
              // state itself; this run's copy of it is not needed once restored.
              { argv: [...privileges.asRoot, "install", "-m", "0600", warm.nvram, spec.nvram] },
              { argv: virsh("restore", warm.saveImage, "--running") },
              { argv: ["rm", "-f", warm.saveImage] },
            ]
          : [{ argv: virsh("start", name) }]),
      ],
      delete: [
        { argv: virsh("destroy", name), mayFail: true },
        { argv: virsh("undefine", name, "--nvram"), ignoreAbsent: true },
        ...(warm
          ? [
              { argv: ["rm", "-f", warm.saveImage], mayFail: true },
              { argv: [...privileges.asRoot, "rm", "-f", spec.nvram], mayFail: true },
            ]
          : []),
      ],
      // A topology's other VMs join a network their stack does not make: the first VM's stack is made first.
      dependsOn: [
        ...(owned ? ["network", ...spec.network.links.map((link) => link.interface)] : []),
        "isolation",
        ...(spec.linkFilter !== undefined ? ["link-isolation"] : []),
        "overlay",
        "seed",
      ],
    },
  ];

  return {
    stack: name,
    resources,
    outputs: {
      runId: name,
      host: spec.identity.host,
      ip: spec.address,
      user: spec.guestUser,
      ssh: `npm run boma-it -- ssh ${name}`,
      runDir: spec.runDir,
      consoleLog: spec.consoleLog,
      keyFile: files.keyFile,
      knownHostsFile: files.knownHostsFile,
      network: spec.network.name,
      mac: spec.network.mac,
      subnet: spec.network.subnet.cidr,
      ...(spec.linkFilter !== undefined
        ? {
            links: linksOf(spec).map(({ link, own, peer }) => ({
              network: link.network,
              interface: link.interface,
              peer: peer.host,
              address: own.ip,
              peerAddress: peer.ip,
            })),
          }
        : {}),
      domain: name,
      accel: spec.accel,
      createdAt: spec.identity.createdAt.toISOString(),
      ownerPid: spec.ownerPid,
      ...(spec.ownerStart !== undefined ? { ownerStart: spec.ownerStart } : {}),
    },
  };
}
