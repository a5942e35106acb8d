/**
 * Cert tiers (ADR-025 §5): which tier a run uses and why, what each tier needs before anything
 * starts (egress for the le tiers, the DNS provider token), the token kept from the VM for the
 * internal tier, and the wildcard certificate of `le-prod-wildcard`, issued once by a VM and then
 * cached on this host (a 0700 folder) and reused while it stays valid long enough.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { messageOf } from "../../infra/errors.ts";
import { quoteArg } from "../../infra/runner.ts";
import type { Machine } from "../guest/machine.ts";
import { BadInputError, RefusedError } from "../errors.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import type { CertTier, OverlayDocument } from "../profile/schema.ts";
import type { RunSecrets } from "./secrets.ts";

/** The le tiers need egress (ACME DNS-01 reaches Let's Encrypt and the DNS provider). */
export function needsEgress(tier: CertTier): boolean {
  return tier !== "internal";
}

/** What the VM gets instead of the DNS token when the tier does not need it. */
export const WITHHELD_TOKEN = "withheld-by-boma-it-for-certs-internal";

/** Where each le tier's ACME directory lives: what the egress preflight reaches by default. */
export const ACME_DIRECTORY_HOSTS: Record<Exclude<CertTier, "internal">, string> = {
  "le-staging": "acme-staging-v02.api.letsencrypt.org:443",
  "le-prod-wildcard": "acme-v02.api.letsencrypt.org:443",
};

/** The tier of a run and the one line that says why. */
export interface CertDecision {
  tier: CertTier;
  reason: string;
}

/** What the command line asks of the cert tier: a tier (`--certs`), and whether the VM may reach out at all (`--no-egress`). */
export interface CertRequest {
  certs: CertTier | undefined;
  noEgress: boolean;
}

/**
 * The tier of a run: the command line's, else the profile's. `--no-egress` forces `internal`
 * (ACME needs egress) and refuses an le tier asked for on the command line (exit 3) before
 * anything starts. (`le-prod-wildcard` never comes from a profile: its schema refuses it.)
 */
export function decideCertTier(options: CertRequest, profileTier: CertTier): CertDecision {
  if (!options.noEgress) {
    return options.certs !== undefined
      ? { tier: options.certs, reason: `certs: ${options.certs} (--certs)` }
      : { tier: profileTier, reason: `certs: ${profileTier} (the profile's default)` };
  }
  if (options.certs !== undefined && needsEgress(options.certs)) {
    throw new RefusedError(
      `--certs ${options.certs} needs egress (ACME DNS-01 reaches Let's Encrypt and the DNS provider), but --no-egress builds a network without any`,
      "drop --no-egress, or use --certs internal",
    );
  }
  return {
    tier: "internal",
    reason: `certs: internal (forced by --no-egress: ACME needs egress${profileTier === "internal" ? "" : `; the profile's default is ${profileTier}`})`,
  };
}

/** A run's cert tier with all it needs: decided, checked, egress proven (for the le tiers). */
export interface CertPlan {
  tier: CertTier;
  /** One line: the tier and why. */
  reason: string;
  /** The overlay's vars of the tier (extra vars of every scenario). */
  vars: Record<string, unknown>;
  /** The var holding the DNS provider token, if the overlay names one. */
  dnsTokenVar: string | undefined;
  /** For le-prod-wildcard: the certificate's settings and the host's cache. */
  wildcard: { settings: WildcardSettings; cache: WildcardCache } | undefined;
}

/**
 * Decides the tier (see {@link decideCertTier}), checks the overlay has what the tier needs
 * (exit 2 naming the field) and, for the le tiers, that this host reaches out (exit 3): all
 * before anything is created.
 */
export async function planCerts(profile: LoadedProfile, options: CertRequest, cacheDir: string, probe: typeof probeEgress = probeEgress): Promise<CertPlan> {
  const { tier, reason } = decideCertTier(options, profile.document.certs);
  const certs = profile.overlay.document.certs;
  const file = profile.overlay.file;
  const where = file ? { file } : {};
  if (needsEgress(tier) && !certs.dnsTokenVar) {
    throw new BadInputError({
      ...where,
      path: "certs.dnsTokenVar",
      message: `--certs ${tier} needs the name of the Ansible var holding the DNS provider's token; found none${file ? "" : " (the profile has no overlay)"}`,
    });
  }
  const settings = tier === "le-prod-wildcard" ? certs["le-prod-wildcard"]?.wildcard : undefined;
  if (tier === "le-prod-wildcard" && !settings) {
    throw new BadInputError({
      ...where,
      path: "certs.le-prod-wildcard.wildcard",
      message: "--certs le-prod-wildcard needs {domain, certPath, keyPath} of the wildcard certificate; found none",
    });
  }
  if (tier !== "internal") await requireEgress(tier, certs[tier]?.egressCheck ?? [ACME_DIRECTORY_HOSTS[tier]], probe);
  const wildcard = settings ? { settings, cache: new WildcardCache(cacheDir) } : undefined;
  // The cache must be usable (0700) before a VM issues a certificate it could not keep.
  if (wildcard) await wildcard.cache.ensureDir();
  return { tier, reason, vars: certs[tier]?.vars ?? {}, dnsTokenVar: certs.dnsTokenVar, wildcard };
}

/** The wildcard settings of an overlay (validated by its schema). */
export type WildcardSettings = NonNullable<NonNullable<OverlayDocument["certs"]["le-prod-wildcard"]>["wildcard"]>;

/**
 * The extra vars that must win over everything else for a tier: for `internal`, the DNS token
 * var is overridden with a placeholder, so the token never reaches the VM even when the repo's
 * own vault defines it for every host.
 */
export function withheldVars(tier: CertTier, dnsTokenVar: string | undefined): Record<string, string> {
  return !needsEgress(tier) && dnsTokenVar ? { [dnsTokenVar]: WITHHELD_TOKEN } : {};
}

/** Tries a TCP connection to each `host:port`; returns the ones that failed and why. */
export async function probeEgress(targets: readonly string[], timeoutMs = 5_000): Promise<{ target: string; problem: string }[]> {
  const results = await Promise.all(
    targets.map(
      (target) =>
        new Promise<{ target: string; problem: string } | undefined>((resolve) => {
          const separator = target.lastIndexOf(":");
          const socket = connect({ host: target.slice(0, separator), port: Number(target.slice(separator + 1)) });
          const done = (problem?: string) => {
            socket.destroy();
            resolve(problem === undefined ? undefined : { target, problem });
          };
          socket.setTimeout(timeoutMs, () => done(`no answer within ${timeoutMs / 1000} s`));
          socket.once("connect", () => done());
          socket.once("error", (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
        }),
    ),
  );
  return results.filter((result) => result !== undefined);
}

/** Refuses an le tier (exit 3) when this host cannot reach what it needs. */
export async function requireEgress(tier: CertTier, targets: readonly string[], probe = probeEgress): Promise<void> {
  const failed = await probe(targets);
  if (failed.length === 0) return;
  throw new RefusedError(
    `--certs ${tier} needs egress, and this host cannot reach ${failed.map(({ target, problem }) => `${target} (${problem})`).join(", ")}`,
    "run it on a host with internet access (the VM reaches out through this host's NAT), or use --certs internal",
  );
}

/** A certificate and key as they are checked for reuse. */
export interface CertificateFacts {
  notAfter: Date;
  daysLeft: number;
  subject: string;
}

/**
 * Checks a PEM certificate (leaf first) and its key: the key belongs to it, it covers `domain`,
 * and it is valid now. Throws with the reason; returns its expiry otherwise.
 */
export function inspectCertificate(certificatePem: string, keyPem: string, domain: string, now: Date): CertificateFacts {
  const certificate = new X509Certificate(certificatePem);
  if (!certificate.checkPrivateKey(createPrivateKey(keyPem))) throw new Error("the private key does not belong to the certificate");
  const names = (certificate.subjectAltName ?? "").split(/,\s*/).map((entry) => entry.replace(/^DNS:/, ""));
  if (!names.includes(domain)) throw new Error(`it does not cover ${domain} (it names ${names.join(", ") || "nothing"})`);
  const notBefore = new Date(certificate.validFrom);
  const notAfter = new Date(certificate.validTo);
  if (now < notBefore) throw new Error(`it is not valid before ${notBefore.toISOString()}`);
  const daysLeft = Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000);
  if (daysLeft < 0) throw new Error(`it expired on ${notAfter.toISOString()}`);
  return { notAfter, daysLeft, subject: certificate.subject.replaceAll("\n", ", ") };
}

/** What the cache holds for a domain. */
export type CacheLookup = { reusable: true; certificatePem: string; keyPem: string; facts: CertificateFacts } | { reusable: false; reason: string };

/**
 * The host's cache of issued wildcard certificates: one folder per domain with `cert.pem` and
 * `key.pem`, all inside a 0700 folder (a looser one is refused: it holds private keys).
 */
export class WildcardCache {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }

  /** The cached certificate of `domain` if it stays valid at least `minValidDays`; else why not. */
  async lookup(domain: string, minValidDays: number, now = new Date()): Promise<CacheLookup> {
    await this.ensureDir();
    const folder = this.#folder(domain);
    let certificatePem: string;
    let keyPem: string;
    try {
      [certificatePem, keyPem] = await Promise.all([readFile(join(folder, "cert.pem"), "utf8"), readFile(join(folder, "key.pem"), "utf8")]);
    } catch {
      return { reusable: false, reason: `none cached for ${domain} in ${this.dir}` };
    }
    let facts: CertificateFacts;
    try {
      facts = inspectCertificate(certificatePem, keyPem, domain, now);
    } catch (error) {
      return { reusable: false, reason: `the cached one is not usable: ${messageOf(error)}` };
    }
    if (facts.daysLeft < minValidDays) {
      return {
        reusable: false,
        reason: `the cached one expires in ${facts.daysLeft} days (${facts.notAfter.toISOString().slice(0, 10)}), under the ${minValidDays} wanted`,
      };
    }
    return { reusable: true, certificatePem, keyPem, facts };
  }

  /** Checks and stores a newly issued certificate (files 0600, replaced atomically). */
  async store(domain: string, certificatePem: string, keyPem: string, now = new Date()): Promise<CertificateFacts> {
    const facts = inspectCertificate(certificatePem, keyPem, domain, now);
    await this.ensureDir();
    const folder = this.#folder(domain);
    await mkdir(folder, { recursive: true, mode: 0o700 });
    for (const [name, content] of [
      ["key.pem", keyPem],
      ["cert.pem", certificatePem],
    ] as const) {
      const temporary = join(folder, `.${name}.${process.pid}`);
      await writeFile(temporary, content, { mode: 0o600 });
      await rename(temporary, join(folder, name));
    }
    return facts;
  }

  /** Forgets a domain's certificate. */
  async remove(domain: string): Promise<void> {
    await rm(this.#folder(domain), { recursive: true, force: true });
  }

  #folder(domain: string): string {
    return join(this.dir, domain.replace(/^\*\./, "wildcard."));
  }

  /** Makes the cache folder, or refuses (exit 3) one that others can read: it holds private keys. */
  async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const mode = (await stat(this.dir)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new RefusedError(
        `the certificate cache ${this.dir} is accessible to others (mode ${mode.toString(8)}), and it holds private keys`,
        `chmod 700 ${this.dir}`,
      );
    }
    // An owner-only folder without the owner's own write or search bit would fail later, less clearly.
    if (mode !== 0o700) await chmod(this.dir, 0o700);
  }
}

/** What happened to the wildcard certificate in one apply (report.json, per scenario). */
export interface CertificateOutcome {
  tier: CertTier;
  domain: string;
  /** `reused`: the cached one went onto the VM; `issued`: the VM got one and it was cached; `not cached`: none came back. */
  source: "reused" | "issued" | "not cached";
  notAfter: string | null;
  detail: string;
}

/** What the wildcard steps need around an apply. */
export interface WildcardContext {
  settings: WildcardSettings;
  cache: WildcardCache;
  /** The VM: certificate and key go on and come off through it. */
  machine: Pick<Machine, "succeed">;
  secrets: RunSecrets;
  log: Log;
}

/**
 * Before the apply: puts a cached certificate that is still good onto the VM (at the overlay's
 * paths, key 0600) and returns the extra var telling the playbook so (`boma_it_wildcard_reused`);
 * without one, says why this run issues a new one.
 */
export async function wildcardBeforeApply(context: WildcardContext): Promise<{ vars: Record<string, unknown>; reused: CertificateFacts | undefined }> {
  const { settings, cache, log } = context;
  const found = await cache.lookup(settings.domain, settings.minValidDays);
  if (!found.reusable) {
    log.info(`wildcard ${settings.domain}: ${found.reason}; this run issues one (Let's Encrypt production, DNS-01)`);
    return { vars: { boma_it_wildcard_reused: false }, reused: undefined };
  }
  hideKey(context.secrets, found.keyPem);
  await onVm(context, `install -D -m 0644 /dev/stdin ${quoteArg(settings.certPath)}`, found.certificatePem);
  await onVm(context, `install -D -m 0600 /dev/stdin ${quoteArg(settings.keyPath)}`, found.keyPem);
  log.info(
    `wildcard ${settings.domain}: reusing the cached certificate (valid until ${found.facts.notAfter.toISOString().slice(0, 10)}, ${found.facts.daysLeft} days left)`,
  );
  return { vars: { boma_it_wildcard_reused: true }, reused: found.facts };
}

/** After a successful apply that issued: fetches the certificate and key and caches them. */
export async function wildcardAfterApply(context: WildcardContext): Promise<CertificateOutcome> {
  const { settings, cache, log } = context;
  const outcome = (source: CertificateOutcome["source"], detail: string, notAfter: Date | null = null): CertificateOutcome => ({
    tier: "le-prod-wildcard",
    domain: settings.domain,
    source,
    notAfter: notAfter?.toISOString() ?? null,
    detail,
  });
  let certificatePem: string;
  let keyPem: string;
  try {
    certificatePem = await onVm(context, `cat ${quoteArg(settings.certPath)}`);
    keyPem = await onVm(context, `cat ${quoteArg(settings.keyPath)}`);
  } catch (error) {
    log.warn(
      `wildcard ${settings.domain}: the playbook left no certificate at ${settings.certPath} / ${settings.keyPath}; nothing cached (${messageOf(error).split("\n")[0]})`,
    );
    return outcome("not cached", `nothing at ${settings.certPath}`);
  }
  hideKey(context.secrets, keyPem);
  try {
    const facts = await cache.store(settings.domain, certificatePem, keyPem);
    log.info(
      `wildcard ${settings.domain}: issued by this run, valid until ${facts.notAfter.toISOString().slice(0, 10)}; cached in ${cache.dir} for later runs`,
    );
    return outcome("issued", `cached in ${cache.dir}`, facts.notAfter);
  } catch (error) {
    log.warn(`wildcard ${settings.domain}: what the VM holds cannot be cached: ${messageOf(error)}`);
    return outcome("not cached", messageOf(error));
  }
}

/** Runs a command on the VM (as root) whose input or output is secret (never in a record's tail). */
async function onVm(context: Pick<WildcardContext, "machine">, command: string, input?: string): Promise<string> {
  return context.machine.succeed(command, { ...(input === undefined ? {} : { input }), secretOutput: true, timeoutMs: 60_000 });
}

/** A private key is a secret of the run: the whole PEM and each of its lines are redacted. */
function hideKey(secrets: RunSecrets, keyPem: string): void {
  secrets.add(keyPem.trim());
  for (const line of keyPem.split("\n")) if (!line.startsWith("-----")) secrets.add(line.trim());
}
