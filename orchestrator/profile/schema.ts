/**
 * The zod schemas of the profile and overlay contracts (the runbook's "Be another inventory host"). This is the only
 * place that knows their shape; everything inward uses the inferred types. Unknown keys are
 * errors everywhere, so a typo is caught instead of silently ignored.
 */
import { isIP } from "node:net";
import { z } from "zod";
import { linkHostName, linkName, MAX_TOPOLOGY_LINKS } from "../../infra/spec.ts";

/** The cert tiers of ADR-025 §5. */
export const CERT_TIERS = ["internal", "le-staging", "le-prod-wildcard"] as const;
export type CertTier = (typeof CERT_TIERS)[number];

/** Golden images a profile can name without a path. */
export const NAMED_IMAGES = ["debian-13-genericcloud", "debian-13-local"] as const;

const port = z.number().int().min(1).max(65535);
const vars = z.record(z.string(), z.unknown());

/** A regular expression as a profile writes it (checked here, so a bad one is named at the edge). */
const pattern = z
  .string()
  .min(1)
  .refine(
    (source) => {
      try {
        new RegExp(source);
        return true;
      } catch {
        return false;
      }
    },
    { error: "expected a regular expression (JavaScript syntax)" },
  );
/** A duration: a whole number and s, m, h or d (`30m`, `12h`, `2d`). */
export const durationSchema = z.string().regex(/^\d+[smhd]$/, { error: "expected a duration such as 90s, 30m, 12h or 2d" });
/** An IPv4 or IPv6 address. */
const address = z.string().refine((text) => isIP(text) !== 0, { error: "expected an IP address such as 10.234.0.10" });
/** A DNS name (a virtual host, a name to resolve). */
const dnsName = z.string().regex(/^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$/, {
  error: "expected a DNS name such as app.test.example",
});

const httpProbe = z.strictObject({
  port,
  path: z.string().startsWith("/").default("/"),
  status: z.number().int().min(100).max(599).default(200),
  /** The Host header (and, over TLS, the SNI name); default: the VM's address. */
  host: dnsName.optional(),
  /** The body must match this. */
  body: pattern.optional(),
});
/** Where an https check takes its trust from: the run's cert tier, the system's roots, none, or a PEM file in the repo. */
export const CA_SOURCES = ["tier", "system", "insecure"] as const;
const httpsProbe = httpProbe.extend({
  port: port.default(443),
  ca: z
    .union([z.enum(CA_SOURCES), z.string().regex(/^[^/].*\.(pem|crt)$/, { error: "expected tier, system, insecure or a .pem/.crt file in the repo" })])
    .default("tier"),
  /** The leaf certificate's issuer (its distinguished name as text) must match this. */
  issuer: pattern.optional(),
  /** The leaf certificate must stay valid at least this long from now. */
  validFor: durationSchema.optional(),
});
const tcpProbe = z.strictObject({ port });
const listenProbe = z.strictObject({ port });
const udpProbe = z.strictObject({ port, address: address.optional() });
const dnsProbe = z.strictObject({ name: dnsName, address: address.optional() });
const commandProbe = z.strictObject({ run: z.string().min(1), exit: z.number().int().min(0).max(255).default(0), stdout: pattern.optional() });
const fileProbe = z.strictObject({
  path: z.string().regex(/^\/[^\0]*$/, { error: "expected an absolute path" }),
  mode: z
    .string()
    .regex(/^0?[0-7]{3}$/, { error: 'expected an octal mode such as "0644"' })
    .optional(),
  content: pattern.optional(),
});
const sysctlProbe = z.strictObject({
  key: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_./-]*$/, { error: "expected a sysctl key such as net.ipv4.ip_forward" }),
  value: z.string(),
});
const nftProbe = z
  .strictObject({
    table: z
      .string()
      .regex(/^(ip|ip6|inet|arp|bridge|netdev) [A-Za-z0-9_-]+$/, { error: 'expected "<family> <name>", such as "inet filter"' })
      .optional(),
    chain: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, { error: "expected a chain name" })
      .optional(),
    matches: pattern,
  })
  .refine((probe) => probe.chain === undefined || probe.table !== undefined, { error: "a chain needs its table", path: ["chain"] });
const containerProbe = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, { error: "expected a container name" }),
  state: z.enum(["running", "healthy"]).default("running"),
});

/** Each probe kind a check may carry (exactly one per check), and its fields. */
export const PROBE_SCHEMAS = {
  http: httpProbe,
  https: httpsProbe,
  tcp: tcpProbe,
  unit: z.string().min(1),
  listen: listenProbe,
  run: z.string().min(1),
  udp: udpProbe,
  dns: dnsProbe,
  command: commandProbe,
  file: fileProbe,
  sysctl: sysctlProbe,
  nft: nftProbe,
  container: containerProbe,
} as const;
export type ProbeKind = keyof typeof PROBE_SCHEMAS;
/** The probe kinds, in the order the docs list them. */
export const PROBE_KINDS = Object.keys(PROBE_SCHEMAS) as ProbeKind[];

/** Kinds that may run from the control host (the rest run inside the VM only). */
export const FROM_CONTROLLER_KINDS: readonly ProbeKind[] = ["http", "https", "tcp", "dns"];
/** Kinds that run from the control host unless the check says `from: <host>`. */
export const CONTROLLER_BY_DEFAULT: readonly ProbeKind[] = ["http", "https", "tcp"];

/** What a check from one host to another goes over: the run's network (the default) or the link between them. */
export const CHECK_PATHS = ["network", "link"] as const;

/** How long a check may take to pass in a stage when the profile does not say (seconds). */
export const DEFAULT_CHECK_WITHIN_SECONDS = 60;

const checkSchema = z
  .strictObject({
    name: z.string().min(1),
    http: PROBE_SCHEMAS.http.optional(),
    https: PROBE_SCHEMAS.https.optional(),
    tcp: PROBE_SCHEMAS.tcp.optional(),
    unit: PROBE_SCHEMAS.unit.optional(),
    listen: PROBE_SCHEMAS.listen.optional(),
    run: PROBE_SCHEMAS.run.optional(),
    udp: PROBE_SCHEMAS.udp.optional(),
    dns: PROBE_SCHEMAS.dns.optional(),
    command: PROBE_SCHEMAS.command.optional(),
    file: PROBE_SCHEMAS.file.optional(),
    sysctl: PROBE_SCHEMAS.sysctl.optional(),
    nft: PROBE_SCHEMAS.nft.optional(),
    container: PROBE_SCHEMAS.container.optional(),
    /**
     * Where the probe runs: `controller` (the control host, as a client on the LAN would) or the
     * impersonated host itself (inside the VM). Default: controller for http, https and tcp,
     * inside for the rest.
     */
    from: z.string().min(1).optional(),
    /** Several hosts (`hosts:`): the host the check is about (default: the first). */
    on: z.string().min(1).optional(),
    /** Several hosts: `link` sends a check from one host to another over the link between them (`links:`) instead of the run's network. */
    over: z.enum(CHECK_PATHS).optional(),
    // Seconds the check is retried before it counts as failed. A failing check always waits this
    // long, so it is the price of every finding: long for slow services, short where the subject
    // is ready once systemd says the system is running.
    within: z.number().int().min(1).max(3600).default(DEFAULT_CHECK_WITHIN_SECONDS),
  })
  .superRefine((check, ctx) => {
    const present = PROBE_KINDS.filter((kind) => check[kind] !== undefined);
    if (present.length !== 1) {
      ctx.addIssue({
        code: "custom",
        message: `expected exactly one probe (one of ${PROBE_KINDS.join(", ")}), found ${present.length === 0 ? "none" : present.join(" and ")}`,
      });
      return;
    }
    const kind = present[0]!;
    if (check.from === "controller" && !FROM_CONTROLLER_KINDS.includes(kind)) {
      ctx.addIssue({ code: "custom", path: ["from"], message: `expected the host's own name: a ${kind} check runs inside the VM, found "controller"` });
    }
    if (
      kind === "https" &&
      check.from !== undefined &&
      check.from !== "controller" &&
      (check.https?.issuer !== undefined || check.https?.validFor !== undefined)
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["https"],
        message: "expected issuer and validFor only from the controller (the certificate is read there), found them with from: the host",
      });
    }
  });

/** A git revision of the infrastructure repo (a branch, a tag, a sha, `HEAD~2`). */
const gitRevision = z
  .string()
  .min(1)
  .regex(/^[^\s]+$/, { error: "expected a git revision (no spaces)" });
/** A second apply right after the first: `true` lists what it changed, `strict` fails the scenario on any change. */
export const idempotenceSchema = z.union([z.boolean(), z.literal("strict")]);
/** The name a verify playbook's task takes as a check (report, junit, `expectFailing`). */
export const VERIFY_CHECK_PREFIX = "verify: ";

/**
 * How the VM is rebooted: `clean` (the guest's own `systemctl reboot`), `power-loss` (the domain
 * off without a shutdown, then on: nothing flushed but what the guest had written to its disk) or
 * `soft` (`systemctl soft-reboot`: userspace only, the same kernel and boot id).
 */
export const REBOOT_KINDS = ["clean", "power-loss", "soft"] as const;
/** One way of rebooting (see {@link REBOOT_KINDS}). */
export type RebootKind = (typeof REBOOT_KINDS)[number];
/**
 * `reboot:`: one kind, or a list of kinds, each run from the same applied state; read as a list
 * (one kind is a list of one), so that a wrong kind is named with its place in the list.
 */
export const rebootSchema = z.preprocess(
  (value) => (typeof value === "string" ? [value] : value),
  z
    .array(z.enum(REBOOT_KINDS))
    .min(1, { error: "expected at least one kind" })
    .refine((kinds) => new Set(kinds).size === kinds.length, { error: "expected each kind at most once" }),
);

/** The kinds a `reboot:` value names, in order (none written: a clean reboot). */
export function rebootKinds(value: RebootKind | readonly RebootKind[] | undefined): RebootKind[] {
  if (value === undefined) return ["clean"];
  return typeof value === "string" ? [value] : [...value];
}

/** What an inventory hostname a profile names may be made of (it names VMs and folders too). */
export const HOST_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** An inventory hostname as a profile names it. */
const hostName = z.string().regex(HOST_NAME, {
  error: "expected an inventory hostname (letters, digits, '.', '_', '-')",
});

/** How many hosts a topology may have: the VMs one network of a run holds (the RAM guard decides how many this machine runs). */
export const MAX_TOPOLOGY_HOSTS = 16;

/** The orders a topology's VMs may reboot in besides a list of hosts (see {@link RebootOrder}). */
export const REBOOT_ORDERS = ["all", "rolling"] as const;
/**
 * In which order a topology's VMs reboot: `all` at the same time, `rolling` one after another in
 * the topology's order (the others' checks run while each is down and after it is back), or a
 * list: those hosts one after another in that order, the hosts not named staying up.
 */
export const rebootOrderSchema = z.union([z.enum(REBOOT_ORDERS), z.array(hostName).min(1, { error: "expected at least one host" })]);
/** A `rebootOrder:` as validated. */
export type RebootOrder = z.infer<typeof rebootOrderSchema>;

const scenarioSchema = z.strictObject({
  vars: vars.default({}),
  /** Overrides the profile's `idempotence` for this scenario. */
  idempotence: idempotenceSchema.optional(),
  /** Overrides the profile's `reboot` for this scenario. */
  reboot: rebootSchema.optional(),
  /** Overrides the profile's `rebootOrder` for this scenario (several hosts). */
  rebootOrder: rebootOrderSchema.optional(),
  /** The repo at this revision (checked out read-only into the run dir) instead of as it is on disk. */
  ref: gitRevision.optional(),
  /** The upgrade path: this revision is applied first (what the live host runs), then the scenario's. */
  baseline: gitRevision.optional(),
});
/**
 * RED may name the failure the incident looks like: then it is faithful only when exactly these
 * checks fail after the reboot and every other passes.
 */
const checkNames = z.array(z.string().min(1));
/**
 * RED's expectation per kind of reboot: the checks that must fail after it (exactly those), or
 * none (`[]`): RED must survive that kind (a change that survives a clean reboot but not a power
 * loss). A kind not named must break RED as usual.
 */
const expectFailingByKind = z.strictObject({ clean: checkNames.optional(), "power-loss": checkNames.optional(), soft: checkNames.optional() });
/** RED's `expectFailing`: the checks that must fail after every kind of reboot, or per kind. */
export type ExpectFailing = string[] | z.infer<typeof expectFailingByKind>;
const redScenarioSchema = scenarioSchema.extend({ expectFailing: z.union([checkNames.min(1), expectFailingByKind]).optional() });

/**
 * What RED expects after one kind of reboot: `break` (with `exactly` the checks that must fail,
 * when named) or `survive`.
 */
export function redExpectationAfter(kind: RebootKind, expectFailing: ExpectFailing | undefined): { after: "break"; exactly?: string[] } | { after: "survive" } {
  if (expectFailing === undefined) return { after: "break" };
  const named = Array.isArray(expectFailing) ? expectFailing : expectFailing[kind];
  if (named === undefined) return { after: "break" };
  return named.length === 0 ? { after: "survive" } : { after: "break", exactly: named };
}

const vmFieldsSchema = z.strictObject({
  vcpus: z.number().int().min(1).max(64),
  memoryMiB: z.number().int().min(512).max(262144),
  diskGiB: z.number().int().min(4).max(2048),
});
/** A VM's size when the profile does not say. */
export const DEFAULT_VM = { vcpus: 2, memoryMiB: 3072, diskGiB: 20 };
const vmSchema = z.strictObject({
  vcpus: vmFieldsSchema.shape.vcpus.default(DEFAULT_VM.vcpus),
  memoryMiB: vmFieldsSchema.shape.memoryMiB.default(DEFAULT_VM.memoryMiB),
  diskGiB: vmFieldsSchema.shape.diskGiB.default(DEFAULT_VM.diskGiB),
});

/**
 * `hosts:`: the inventory hosts of a topology, named (`[askari, kazi]`), or every host of an
 * inventory group at once (`{ group: mesh }`, resolved when the inventory is read).
 */
export const topologyHostsSchema = z.union([
  z
    .array(hostName)
    .min(2, { error: "expected at least two hosts (one host: host:)" })
    .max(MAX_TOPOLOGY_HOSTS, { error: `expected at most ${MAX_TOPOLOGY_HOSTS} hosts` })
    .refine((hosts) => new Set(hosts).size === hosts.length, { error: "expected each host at most once" }),
  z.strictObject({ group: z.string().regex(/^[A-Za-z_][A-Za-z0-9_-]*$/, { error: "expected an inventory group name" }) }),
]);

/** Image name: a named golden image or `file:/absolute/path.qcow2`. */
const imageSchema = z.string().refine((image) => (NAMED_IMAGES as readonly string[]).includes(image) || /^file:\/.+/.test(image), {
  error: `expected one of ${NAMED_IMAGES.join(", ")} or file:/absolute/path.qcow2`,
});

/** A DNS name the VM may reach (and its subdomains): letters, digits and hyphens in dot-separated labels. */
export const egressName = z
  .string()
  .max(253)
  .regex(/^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/, {
    error: "expected a DNS name such as api.example.org (its subdomains are allowed with it)",
  })
  // No top-level domain is all digits: such a "name" is an address, which the allowlist never holds
  // (it lets through the addresses its DNS answers for allowed names).
  .refine((name) => !/\.\d+$/.test(name), {
    error: "expected a DNS name, found an IP address: the allowlist holds names, and lets through the addresses its DNS answers for them",
  });

/** The profile as written in YAML (before paths are resolved). */
export const profileSchema = z
  .strictObject({
    /** The inventory host the VM impersonates (or `hosts:` for several). */
    host: hostName.optional(),
    repo: z.string().min(1),
    inventory: z.string().min(1),
    playbook: z.string().min(1),
    overrides: z.string().min(1).optional(),
    vm: vmSchema.default(DEFAULT_VM),
    /** Several hosts: one VM each, on one network of the run, applied in one run of Ansible (see {@link topologyHostsSchema}). */
    hosts: topologyHostsSchema.optional(),
    /** Several hosts: a host's VM shape over `vm:`. */
    vmFor: z.record(hostName, vmFieldsSchema.partial()).optional(),
    /**
     * Several hosts: extra links, each between two of them (`[[askari, kazi]]`): a network of its
     * own with an address of its own for each, and nothing else on it.
     */
    links: z
      .array(z.tuple([hostName, hostName]))
      .max(MAX_TOPOLOGY_LINKS, { error: `expected at most ${MAX_TOPOLOGY_LINKS} links` })
      .optional(),
    /** Several hosts: in which order their VMs reboot (a scenario may override it; default all). */
    rebootOrder: rebootOrderSchema.optional(),
    image: imageSchema.default("debian-13-genericcloud"),
    certs: z
      .enum(CERT_TIERS)
      .refine((tier) => tier !== "le-prod-wildcard", {
        error:
          "le-prod-wildcard is refused as a profile default: it is only used when asked for on the command line (--certs le-prod-wildcard), see ADR-025 §5",
      })
      .default("internal"),
    checks: z.array(checkSchema).default([]),
    /**
     * Checks derived from the state right before the reboot (listeners, active units, failed units,
     * published ports; the nftables ruleset reported, failing only with "strict"): GREEN only.
     */
    survival: z.union([z.boolean(), z.literal("strict")]).default(false),
    /**
     * The repo's own verify playbook (Molecule's habit), inside the repo: applied before and after
     * the reboot through the apply's confinement; each assert and each failed task is a check.
     */
    verify: z
      .string()
      .regex(/^[^/].*\.ya?ml$/, { error: "expected a playbook in the repo (a relative .yml or .yaml path), such as molecule/default/verify.yml" })
      .optional(),
    /** A second apply right after the first: `true` lists the tasks it changed, `strict` fails on any change. */
    idempotence: idempotenceSchema.default(false),
    /**
     * Names the VM may reach besides what the cert tier needs and the Debian mirrors (their
     * subdomains included); everything else is refused and reported. `--egress` adds names,
     * `--egress open` lifts the allowlist for one run.
     */
    egress: z.array(egressName).max(64).default([]),
    /** How the VM is rebooted: one kind, or several, each from the same applied state (a scenario may override it). */
    reboot: rebootSchema.default(["clean"]),
    scenarios: z
      .strictObject({
        red: redScenarioSchema.optional(),
        green: scenarioSchema.optional(),
      })
      .optional(),
  })
  .superRefine((profile, ctx) => {
    if (profile.checks.length === 0 && profile.survival === false) {
      ctx.addIssue({ code: "custom", path: ["checks"], message: "expected at least one check (or survival: true), found none" });
    }
    if ((profile.host === undefined) === (profile.hosts === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: [profile.host === undefined ? "host" : "hosts"],
        message: `expected host (the inventory host the VM impersonates) or hosts (several, each on a VM of its own), found ${profile.host === undefined ? "neither" : "both"}`,
      });
    }
    if (profile.hosts !== undefined && profile.overrides !== undefined) {
      ctx.addIssue({ code: "custom", path: ["overrides"], message: "expected no overrides with hosts: each host's overlay is overrides/<host>.yml" });
    }
    // A group's hosts are known once the inventory is read (load.ts asks again then).
    const hosts = profile.host !== undefined ? [profile.host] : Array.isArray(profile.hosts) ? profile.hosts : undefined;
    if (hosts) for (const problem of topologyProblems(profile, hosts)) ctx.addIssue({ code: "custom", ...problem });
    const names = profile.checks.map((check) => check.name);
    const red = profile.scenarios?.red;
    const expectFailing = red?.expectFailing;
    const lists: { path: (string | number)[]; names: string[] }[] = Array.isArray(expectFailing)
      ? [{ path: ["scenarios", "red", "expectFailing"], names: expectFailing }]
      : Object.entries(expectFailing ?? {}).map(([kind, listed]) => ({ path: ["scenarios", "red", "expectFailing", kind], names: listed ?? [] }));
    for (const list of lists) {
      list.names.forEach((name, index) => {
        // A verify playbook's checks are named after its tasks, known once it runs.
        const fromVerify = profile.verify !== undefined && name.startsWith(VERIFY_CHECK_PREFIX) && name.length > VERIFY_CHECK_PREFIX.length;
        if (!names.includes(name) && !fromVerify) {
          ctx.addIssue({
            code: "custom",
            path: [...list.path, index],
            message: `expected the name of one of the checks (${names.join(", ")})${profile.verify ? ` or "${VERIFY_CHECK_PREFIX}<a task of the verify playbook>"` : ""}, found ${JSON.stringify(name)}`,
          });
        }
      });
    }
    // Per kind: only the kinds RED reboots by.
    if (expectFailing !== undefined && !Array.isArray(expectFailing)) {
      const kinds = rebootKinds(red?.reboot ?? profile.reboot);
      for (const kind of Object.keys(expectFailing) as RebootKind[]) {
        if (!kinds.includes(kind)) {
          ctx.addIssue({
            code: "custom",
            path: ["scenarios", "red", "expectFailing", kind],
            message: `expected one of the kinds RED reboots by (${kinds.join(", ")}), found ${JSON.stringify(kind)}`,
          });
        }
      }
    }
  });

/** Kinds a check may run on one host of a topology against another (`from: kazi`, `on: askari`): those that go to an address. */
export const FROM_PEER_KINDS: readonly ProbeKind[] = ["http", "https", "tcp"];

/**
 * What a profile's host-naming fields say wrong, given its hosts (one, or a topology's, in
 * order): checks `on:` and `from:` name them; `vmFor:` and `rebootOrder:` exist for several and
 * name them only. Each problem with its path.
 */
export function topologyProblems(profile: ProfileInput, hosts: readonly string[]): { path: (string | number)[]; message: string }[] {
  const problems: { path: (string | number)[]; message: string }[] = [];
  const several = hosts.length > 1;
  const named = several ? `one of the hosts (${hosts.join(", ")})` : `the host's name (${hosts[0]})`;
  profile.checks.forEach((check, index) => {
    if (check.over === "link" && (check.from === undefined || check.from === "controller" || check.from === (check.on ?? hosts[0]))) {
      const on = check.on === undefined ? `on: ${hosts[0]} (the first host, as on: is not set)` : `on: ${check.on}`;
      problems.push({
        path: ["checks", index, "over"],
        message: `expected over: link only from one host to another (from: <host>, on: <another>), found from: ${check.from ?? "(not set)"} and ${on}`,
      });
    }
    if (check.on !== undefined && !hosts.includes(check.on)) {
      problems.push({ path: ["checks", index, "on"], message: `expected ${named}, found ${JSON.stringify(check.on)}` });
    }
    if (check.from === undefined || check.from === "controller") return;
    if (!hosts.includes(check.from)) {
      problems.push({ path: ["checks", index, "from"], message: `expected "controller" or ${named}, found ${JSON.stringify(check.from)}` });
      return;
    }
    const kind = PROBE_KINDS.find((probe) => check[probe] !== undefined);
    const on = check.on ?? hosts[0];
    // A link is looked for between two hosts of the profile only (an unknown on: is said above).
    if (check.over === "link" && check.from !== on && hosts.includes(on!) && !linked(profile.links, check.from, on!)) {
      problems.push({
        path: ["checks", index, "over"],
        message: `expected a link between ${check.from} and ${on} in links: (${(profile.links ?? []).map((pair) => pair.join("-")).join(", ") || "none"}), found none`,
      });
    }
    if (kind !== undefined && check.from !== on && !FROM_PEER_KINDS.includes(kind)) {
      problems.push({
        path: ["checks", index, "from"],
        message: `expected ${on} (a ${kind} check runs on the host it is about; from another host only ${FROM_PEER_KINDS.join(", ")}), found ${JSON.stringify(check.from)}`,
      });
    }
  });
  const onlySeveral = (path: (string | number)[], what: string) =>
    problems.push({ path, message: `expected no ${what} with one host (it is for the VMs of hosts:), found one` });
  const orders: { path: (string | number)[]; order: RebootOrder | undefined }[] = [
    { path: ["rebootOrder"], order: profile.rebootOrder },
    { path: ["scenarios", "red", "rebootOrder"], order: profile.scenarios?.red?.rebootOrder },
    { path: ["scenarios", "green", "rebootOrder"], order: profile.scenarios?.green?.rebootOrder },
  ];
  for (const { path, order } of orders) {
    if (order === undefined) continue;
    if (!several) {
      onlySeveral(path, "rebootOrder");
      continue;
    }
    if (!Array.isArray(order)) continue;
    order.forEach((host, index) => {
      if (!hosts.includes(host)) problems.push({ path: [...path, index], message: `expected ${named}, found ${JSON.stringify(host)}` });
      else if (order.indexOf(host) !== index) problems.push({ path: [...path, index], message: `expected each host at most once, found ${host} again` });
    });
  }
  const kindLists: { path: (string | number)[]; kinds: readonly RebootKind[] | undefined }[] = [
    { path: ["reboot"], kinds: profile.reboot },
    { path: ["scenarios", "red", "reboot"], kinds: profile.scenarios?.red?.reboot },
    { path: ["scenarios", "green", "reboot"], kinds: profile.scenarios?.green?.reboot },
  ];
  for (const { path, kinds } of kindLists) {
    // Each kind from one applied state would be one rewind point per VM, restored together.
    if (several && kinds !== undefined && kinds.length > 1)
      problems.push({
        path,
        message: `expected one kind with several hosts (each kind from one applied state is built for one VM), found ${kinds.join(", ")}`,
      });
  }
  if (!several && profile.links !== undefined) onlySeveral(["links"], "links");
  (several ? (profile.links ?? []) : []).forEach((pair, index) => {
    pair.forEach((host, end) => {
      if (!hosts.includes(host)) problems.push({ path: ["links", index, end], message: `expected ${named}, found ${JSON.stringify(host)}` });
      // The run's DNS answers each end by host and link: a host of that name would be shadowed.
      const endName = linkHostName(host, { interface: linkName(index) });
      if (hosts.includes(endName))
        problems.push({ path: ["links", index, end], message: `expected no host named ${endName} beside a link: the run's DNS names ${host}'s end of it so` });
    });
    if (pair[0] === pair[1]) problems.push({ path: ["links", index], message: `expected two hosts, found ${pair[0]} at both ends` });
    else if (profile.links!.slice(0, index).some((earlier) => linked([earlier], pair[0], pair[1])))
      problems.push({ path: ["links", index], message: `expected each pair of hosts at most once, found ${pair[0]} and ${pair[1]} again` });
  });
  for (const host of Object.keys(profile.vmFor ?? {})) {
    if (!several) onlySeveral(["vmFor"], "vmFor");
    else if (!hosts.includes(host)) problems.push({ path: ["vmFor", host], message: `expected ${named}, found ${JSON.stringify(host)}` });
    if (!several) break;
  }
  return problems;
}

/** Whether `links` has one between `one` and `other` (either way round). */
function linked(links: readonly (readonly [string, string])[] | undefined, one: string, other: string): boolean {
  return (links ?? []).some(([left, right]) => (left === one && right === other) || (left === other && right === one));
}

/** A profile as written and validated (defaults applied, paths still as written; `host` absent where it names `hosts:`). */
export type ProfileInput = z.infer<typeof profileSchema>;
/** A profile as loaded: `host` is the host the run is named after, the first of a topology's (see load.ts). */
export type ProfileDocument = ProfileInput & { host: string };
/** One check of a profile. */
export type Check = z.infer<typeof checkSchema>;

const ansibleVarName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: "expected an Ansible variable name" });
const absolutePath = z.string().regex(/^\/[^\0]*[^/]$/, { error: "expected an absolute file path" });
/** host:port the harness must reach before an le tier may start (its egress preflight). */
const hostPort = z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, { error: "expected host:port" });
const leTierSchema = z.strictObject({
  vars: vars.default({}),
  /** What must be reachable from here (default: the tier's Let's Encrypt directory host on 443). */
  egressCheck: z.array(hostPort).min(1).optional(),
});

/** The per-host overlay of stubs (`overrides/<host>.yml`). */
export const overlaySchema = z
  .strictObject({
    vars: vars.default({}),
    /** Names of `vars` whose values are secret: kept out of the run dir and redacted everywhere. */
    secretVars: z.array(z.string().min(1)).default([]),
    /** An Ansible-vault-encrypted vars file (relative to the overlay); every value in it is secret. */
    vault: z.string().min(1).optional(),
    certs: z
      .strictObject({
        /**
         * The Ansible var holding the DNS provider's token (in this overlay's vault or the
         * infrastructure repo's). Given to the VM only for the le tiers; withheld otherwise.
         */
        dnsTokenVar: ansibleVarName.optional(),
        internal: z.strictObject({ vars: vars.default({}) }).optional(),
        "le-staging": leTierSchema.optional(),
        "le-prod-wildcard": leTierSchema
          .extend({
            /** The wildcard certificate the VM issues, cached on this host and reused while valid. */
            wildcard: z.strictObject({
              domain: z.string().regex(/^\*\.[a-z0-9-]+(\.[a-z0-9-]+)+$/, { error: "expected a wildcard domain such as *.test.example.org" }),
              /** Where the playbook leaves the issued certificate (PEM, with chain) on the VM, and where a reused one goes. */
              certPath: absolutePath,
              /** Where the playbook leaves its private key on the VM. */
              keyPath: absolutePath,
              /** Reuse a cached certificate only while it stays valid this many days or more. */
              minValidDays: z.number().int().min(1).max(365).default(30),
            }),
          })
          .optional(),
      })
      .default({}),
  })
  .superRefine((overlay, ctx) => {
    overlay.secretVars.forEach((name, index) => {
      if (!(name in overlay.vars)) {
        ctx.addIssue({
          code: "custom",
          path: ["secretVars", index],
          message: `expected the name of one of vars (${Object.keys(overlay.vars).join(", ") || "none"}), found ${JSON.stringify(name)}`,
        });
      }
    });
  });

/** A VM's size, as a profile's `vm:` gives it. */
export type VmShape = z.infer<typeof vmSchema>;

/** An overlay as validated. */
export type OverlayDocument = z.infer<typeof overlaySchema>;
