/**
 * The zod schemas of the profile and overlay contracts (the runbook's "Be another inventory host"). This is the only
 * place that knows their shape; everything inward uses the inferred types. Unknown keys are
 * errors everywhere, so a typo is caught instead of silently ignored.
 */
import { z } from "zod";

/** The cert tiers of ADR-025 §5. */
export const CERT_TIERS = ["internal", "le-staging", "le-prod-wildcard"] as const;
export type CertTier = (typeof CERT_TIERS)[number];

/** Golden images a profile can name without a path. */
export const NAMED_IMAGES = ["debian-13-genericcloud", "debian-13-local"] as const;

const port = z.number().int().min(1).max(65535);
const vars = z.record(z.string(), z.unknown());

const httpProbe = z.strictObject({
  port,
  path: z.string().startsWith("/").default("/"),
  status: z.number().int().min(100).max(599).default(200),
});
const tcpProbe = z.strictObject({ port });
const listenProbe = z.strictObject({ port });

/** The probe kinds a check may carry; exactly one per check. */
export const PROBE_KINDS = ["http", "tcp", "unit", "listen", "run"] as const;
export type ProbeKind = (typeof PROBE_KINDS)[number];

/** How long a check may take to pass in a stage when the profile does not say (seconds). */
export const DEFAULT_CHECK_WITHIN_SECONDS = 60;

const checkSchema = z
  .strictObject({
    name: z.string().min(1),
    http: httpProbe.optional(),
    tcp: tcpProbe.optional(),
    unit: z.string().min(1).optional(),
    listen: listenProbe.optional(),
    run: z.string().min(1).optional(),
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
    }
  });

/** A git revision of the infrastructure repo (a branch, a tag, a sha, `HEAD~2`). */
const gitRevision = z
  .string()
  .min(1)
  .regex(/^[^\s]+$/, { error: "expected a git revision (no spaces)" });
const scenarioSchema = z.strictObject({
  vars: vars.default({}),
  /** The repo at this revision (checked out read-only into the run dir) instead of as it is on disk. */
  ref: gitRevision.optional(),
  /** The upgrade path: this revision is applied first (what the live host runs), then the scenario's. */
  baseline: gitRevision.optional(),
});
/**
 * RED may name the failure the incident looks like: then it is faithful only when exactly these
 * checks fail after the reboot and every other passes.
 */
const redScenarioSchema = scenarioSchema.extend({ expectFailing: z.array(z.string().min(1)).min(1).optional() });

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
    host: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, {
      error: "expected an inventory hostname (letters, digits, '.', '_', '-')",
    }),
    repo: z.string().min(1),
    inventory: z.string().min(1),
    playbook: z.string().min(1),
    overrides: z.string().min(1).optional(),
    vm: z
      .strictObject({
        vcpus: z.number().int().min(1).max(64).default(2),
        memoryMiB: z.number().int().min(512).max(262144).default(3072),
        diskGiB: z.number().int().min(4).max(2048).default(20),
      })
      .default({ vcpus: 2, memoryMiB: 3072, diskGiB: 20 }),
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
     * Names the VM may reach besides what the cert tier needs and the Debian mirrors (their
     * subdomains included); everything else is refused and reported. `--egress` adds names,
     * `--egress open` lifts the allowlist for one run.
     */
    egress: z.array(egressName).max(64).default([]),
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
    const names = profile.checks.map((check) => check.name);
    profile.scenarios?.red?.expectFailing?.forEach((name, index) => {
      if (!names.includes(name)) {
        ctx.addIssue({
          code: "custom",
          path: ["scenarios", "red", "expectFailing", index],
          message: `expected the name of one of the checks (${names.join(", ")}), found ${JSON.stringify(name)}`,
        });
      }
    });
  });

/** A profile as validated (defaults applied, paths still as written). */
export type ProfileDocument = z.infer<typeof profileSchema>;
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

/** An overlay as validated. */
export type OverlayDocument = z.infer<typeof overlaySchema>;
