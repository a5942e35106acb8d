/**
 * What a test VM may reach beyond its network (ADR-025: "outbound NAT for ACME/image pulls only"):
 * by default an allowlist of names (what the cert tier needs, the Debian mirrors, the profile's
 * `egress:` and `--egress NAME`), `--egress open` to lift it for a run, `--no-egress` for no
 * forwarding at all. The network's DNS answers allowed names only and fills the filter's set
 * with the addresses it answered (infra/xml.ts); every refused name and connection attempt is
 * read back after the scenario and reported ("the change tried to reach api.example.net:443:
 * blocked"). A blocked attempt changes no verdict by itself: it shows a delegated API call
 * instead of letting it happen.
 */
import { readFile } from "node:fs/promises";
import type { Runner } from "../../infra/runner.ts";
import type { EgressSpec } from "../../infra/spec.ts";
import { EGRESS_BLOCKED_SET } from "../../infra/xml.ts";
import { RefusedError } from "../errors.ts";
import { rootCommand, runAsRoot } from "../host/root.ts";
import type { Log } from "../log.ts";
import type { LoadedProfile } from "../profile/load.ts";
import { ACME_DIRECTORY_HOSTS, needsEgress, type CertPlan } from "../ansible/certs.ts";
import type { RunOptions } from "./options.ts";

/** Debian's mirrors: `apt` in the VM works with the allowlist (offline images need them only for a role that installs). */
export const DEBIAN_MIRRORS = ["deb.debian.org", "security.debian.org"] as const;

/** What a run's VM may reach, decided before anything is created. */
export interface EgressPlan {
  spec: EgressSpec;
  /** The allowed names (empty unless an allowlist). */
  allowed: string[];
  /** One line that says what and why (printed, and in the report). */
  reason: string;
  /** How root-only commands of the allowlist run: `[]` as root, `["sudo", "-n"]` otherwise. */
  asRoot: string[];
}

/** What the VM tried to reach and was refused. */
export interface BlockedAttempt {
  /** A refused name (its DNS query), or an address it connected to without one. */
  name?: string;
  address?: string;
  /** For an address: the port and protocol. */
  port?: number;
  protocol?: "tcp" | "udp";
  /** Queries (a name) or packets (an address) seen. */
  count: number;
  /** The scenario whose VM tried it. */
  scenario?: string;
}

/** What report.json says of egress. */
export interface EgressReport {
  mode: EgressSpec["mode"];
  allowed: string[];
  blocked: BlockedAttempt[];
}

/** The names a run allows: the cert tier's (its ACME directory and egress checks), the mirrors, the profile's and the command line's. */
export function allowedNames(
  profile: Pick<LoadedProfile, "document" | "overlay">,
  certs: Pick<CertPlan, "tier">,
  options: Pick<RunOptions, "egress">,
): string[] {
  const tier = certs.tier;
  const tierNames = needsEgress(tier)
    ? [
        ACME_DIRECTORY_HOSTS[tier as Exclude<typeof tier, "internal">],
        ...(profile.overlay.document.certs?.[tier as Exclude<typeof tier, "internal">]?.egressCheck ?? []),
      ].map((target) => target.replace(/:\d+$/, ""))
    : [];
  return [...new Set([...tierNames, ...DEBIAN_MIRRORS, ...profile.document.egress, ...options.egress].map((name) => name.toLowerCase()))];
}

/** The resolvers of this host, where the network's DNS forwards allowed names (`BOMA_IT_DNS_SERVERS`, else /etc/resolv.conf). */
export async function upstreamResolvers(env: NodeJS.ProcessEnv): Promise<string[]> {
  const given = env.BOMA_IT_DNS_SERVERS?.split(/[\s,]+/).filter(Boolean);
  if (given && given.length > 0) return given;
  const text = await readFile("/etc/resolv.conf", "utf8").catch(() => "");
  return [...text.matchAll(/^\s*nameserver\s+([0-9.]+)\s*$/gm)].map((match) => match[1]!);
}

/**
 * A run's egress, refused early (exit 3) when the allowlist cannot be made here (not root, no
 * password-less sudo for nft): the run does not quietly go without it.
 */
export async function planEgress(
  inputs: {
    profile: Pick<LoadedProfile, "document" | "overlay">;
    certs: Pick<CertPlan, "tier">;
    options: Pick<RunOptions, "noEgress" | "egress" | "egressOpen">;
    runner: Runner;
  },
  context: { env: NodeJS.ProcessEnv; log: Pick<Log, "info" | "warn">; rootCommand?: typeof rootCommand },
): Promise<EgressPlan> {
  const { options } = inputs;
  if (options.noEgress)
    return say(context.log, { spec: { mode: "none" }, allowed: [], asRoot: [], reason: "egress: none (--no-egress: the network forwards nothing)" });
  if (options.egressOpen) {
    context.log.warn("egress: open (--egress open): the VM reaches every public address through NAT, nothing is refused or reported");
    return { spec: { mode: "open" }, allowed: [], asRoot: [], reason: "egress: open (--egress open)" };
  }
  const asRoot = await (context.rootCommand ?? rootCommand)(inputs.runner);
  if (asRoot === undefined) {
    throw new RefusedError(
      "the VM's egress allowlist needs root for its filter (an nftables table) and its DNS log, and boma-it runs as neither root nor an account with password-less sudo",
      "run it as root (sudo npm run ...) or from an account with password-less sudo (ADR-025's automation account has it), or pass --egress open (no allowlist) or --no-egress (no egress at all)",
    );
  }
  const allowed = allowedNames(inputs.profile, inputs.certs, options);
  const upstreams = await upstreamResolvers(context.env);
  if (upstreams.length === 0)
    context.log.warn("egress: no resolver found in /etc/resolv.conf (or BOMA_IT_DNS_SERVERS): the VM's DNS will answer no allowed name either");
  return say(context.log, {
    spec: { mode: "allowlist", names: allowed, upstreams },
    allowed,
    asRoot,
    reason: `egress: allowlist ${allowed.join(", ")} (every other name and address is refused and reported)`,
  });
}

function say(log: Pick<Log, "info">, plan: EgressPlan): EgressPlan {
  log.info(plan.reason);
  return plan;
}

/**
 * What the allowlist refused a VM: connection attempts from the filter's set (`nft -j list set`:
 * address, protocol, port, packets) and refused names from the network's DNS query log (each
 * query for a name the DNS answered with REFUSED). Read before the stack goes.
 */
export async function readBlocked(runner: Runner, asRoot: readonly string[], where: { table: string; queryLog: string }): Promise<BlockedAttempt[]> {
  const set = await runAsRoot(runner, asRoot, "nft", ["-j", "list", "set", "inet", where.table, EGRESS_BLOCKED_SET], { check: false, timeoutMs: 20_000 });
  const log = await runAsRoot(runner, asRoot, "cat", [where.queryLog], { check: false, timeoutMs: 20_000 });
  return [...refusedNames(log.failed ? "" : log.stdout), ...blockedConnections(set.failed ? "" : set.stdout)];
}

/** Refused connection attempts from `nft -j list set` of the blocked set, busiest first. */
export function blockedConnections(json: string): BlockedAttempt[] {
  let parsed: { nftables?: { set?: { elem?: { elem?: { val?: { concat?: [string, string, number] }; counter?: { packets?: number } } }[] } }[] };
  try {
    parsed = JSON.parse(json) as typeof parsed;
  } catch {
    return [];
  }
  const attempts: BlockedAttempt[] = [];
  for (const entry of parsed.nftables ?? []) {
    for (const element of entry.set?.elem ?? []) {
      const [address, protocol, port] = element.elem?.val?.concat ?? [];
      if (address === undefined || (protocol !== "tcp" && protocol !== "udp") || typeof port !== "number") continue;
      attempts.push({ address, protocol, port, count: Math.max(1, element.elem?.counter?.packets ?? 1) });
    }
  }
  return attempts.sort((a, b) => b.count - a.count || a.address!.localeCompare(b.address!));
}

/**
 * Names the network's DNS refused, from its query log (dnsmasq `log-queries`): a query line and,
 * next from the same process, `config ... is REFUSED`. Reverse lookups are left out.
 */
export function refusedNames(log: string): BlockedAttempt[] {
  const counts = new Map<string, number>();
  const pending = new Map<string, string>();
  for (const line of log.split("\n")) {
    const match = /dnsmasq\[(\d+)\]: (.*)$/.exec(line);
    if (!match) continue;
    const [, pid, text] = match as unknown as [string, string, string];
    const query = /^query\[[A-Z0-9]+\] (\S+) from /.exec(text);
    if (query) {
      pending.set(pid, query[1]!.toLowerCase().replace(/\.$/, ""));
      continue;
    }
    const asked = pending.get(pid);
    pending.delete(pid);
    if (asked && / is REFUSED/.test(text) && !asked.endsWith(".arpa")) counts.set(asked, (counts.get(asked) ?? 0) + 1);
  }
  return [...counts].map(([name, count]) => ({ name, count })).sort((a, b) => b.count - a.count || a.name!.localeCompare(b.name!));
}

/** One line per blocked attempt, as the summary and the log say it. */
export function describeBlocked(attempt: BlockedAttempt): string {
  const what = attempt.name ?? `${attempt.address}:${attempt.port}${attempt.protocol === "udp" ? "/udp" : ""}`;
  const times = attempt.count > 1 ? ` (${attempt.count} ${attempt.name ? "queries" : "packets"})` : "";
  return `the change tried to reach ${what}: blocked${times}`;
}
