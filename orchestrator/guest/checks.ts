/**
 * The profile's checks, run before and after the reboot, each kind's one try in probes.ts: from
 * the control host through the test network (as a client on the LAN would) or inside the VM as
 * root, as the check's `from` says. All checks of a stage run side by side (the first tries of
 * those inside a guest as one command there), each through the Machine's `waitFor` (the one
 * retry primitive, on the machine's clock) until it passes or its `within` is up, so a slow
 * service gets its chance but a broken one fails for sure. A check fails on what it last saw; a
 * VM that went down or panicked meanwhile is not a failed check but the wait's own error, for the
 * caller.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { quoteArg } from "../../infra/runner.ts";
import { PROBE_TRY_MS, type Machine, type MachineResult } from "./machine.ts";
import { WaitError } from "../retry.ts";
import type { CertTier, Check, RebootKind } from "../profile/schema.ts";
import { stagingRoots } from "../host/staging-roots.ts";
import {
  dnsProbeFromController,
  insideProbe,
  readInside,
  runsFromController,
  tcpProbeFromController,
  tryInside,
  webProbeFromController,
  type InsideProbe,
  type ProbeOutcome,
  type Trust,
} from "./probes.ts";

/** Where Caddy (Debian's package, running as caddy with its home in /var/lib/caddy) keeps the root of its local CA: the internal tier's. */
export const CADDY_LOCAL_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt";

/** When a check ran. */
export type CheckStage = "pre-reboot" | "post-reboot";

/** The outcome of one check (contract: `checks[]` of report.json). */
export interface CheckResult {
  name: string;
  stage: CheckStage;
  ok: boolean;
  detail: string;
  /** How long until it passed, or until it was given up. */
  seconds: number;
  /** After which kind of reboot it ran (post-reboot, when the scenario's reboot is not one clean reboot). */
  reboot?: RebootKind;
  /** Several hosts rebooting in turns: the host(s) rebooting while it ran (it is judged by its name as after the reboot). */
  during?: string;
}

/** What some checks need beyond the machine: where `ca:` files and the cert tier's roots come from. */
export interface CheckContext {
  /** The infrastructure repo (`ca: <file>` is a file in it). */
  repoDir: string;
  /** The run's cert tier (`ca: tier` trusts its root). */
  tier: CertTier;
  /** Where the le-staging roots are kept once fetched. */
  certCacheDir: string;
}

/** What a check is in words, for the machine's progress lines. */
function describeCheck(check: Check, ip: string): string {
  const where = runsFromController(check) ? "" : " (on the host itself)";
  if (check.http || check.https) {
    const probe = (check.https ?? check.http)!;
    return `GET ${check.https ? "https" : "http"}://${probe.host ?? ip}:${probe.port}${probe.path} to answer ${probe.status}${where}`;
  }
  if (check.tcp) return `TCP ${ip}:${check.tcp.port} to accept${where}`;
  if (check.unit) return `unit ${check.unit} to be active`;
  if (check.listen) return `something to listen on TCP port ${check.listen.port}`;
  if (check.udp) return `something to listen on UDP port ${check.udp.port}`;
  if (check.dns) return `${check.dns.name} to resolve${runsFromController(check) ? ` through ${ip}'s resolver` : ""}`;
  if (check.command) return `\`${check.command.run}\` to exit ${check.command.exit}${check.command.stdout ? ` and print /${check.command.stdout}/` : ""}`;
  if (check.file) return `${check.file.path} to be as the check says`;
  if (check.sysctl) return `${check.sysctl.key} to be ${check.sysctl.value}`;
  if (check.nft) return `the ruleset to match /${check.nft.matches}/`;
  if (check.container) return `container ${check.container.name} to be ${check.container.state}`;
  return `\`${check.run}\` to succeed`;
}

/**
 * The trust of an https check: its `ca` resolved once per stage. `tier` is the run's tier's root:
 * Caddy's local CA read from the VM for `internal` (inside the VM its file is used as it is),
 * Let's Encrypt's staging roots for `le-staging`, the system's roots for `le-prod-wildcard`.
 */
async function trustOf(
  check: Check,
  machine: Machine,
  context: CheckContext | undefined,
  inside: boolean,
): Promise<{ trust?: Trust; caFileOnVm?: string; problem?: string }> {
  const ca = check.https?.ca;
  if (ca === undefined) return {};
  if (ca === "insecure") return { trust: { kind: "insecure" } };
  if (ca === "system") return { trust: { kind: "system" } };
  if (!context) return { problem: `ca: ${ca} needs the run's repo and cert tier` };
  if (ca !== "tier") {
    const file = join(context.repoDir, ca);
    const pem = await readFile(file, "utf8").catch(() => undefined);
    return pem === undefined ? { problem: `ca: ${ca}: no such file in the repo (${file})` } : { trust: { kind: "pem", pem, what: ca } };
  }
  if (context.tier === "le-prod-wildcard") return { trust: { kind: "system" } };
  if (context.tier === "le-staging") {
    const pem = await stagingRoots(context.certCacheDir).catch((error: unknown) => (error as Error).message);
    return pem.includes("BEGIN CERTIFICATE") ? { trust: { kind: "pem", pem, what: "Let's Encrypt's staging roots" } } : { problem: pem };
  }
  const root = await machine.execute(`cat -- ${quoteArg(CADDY_LOCAL_ROOT)}`, { timeoutMs: PROBE_TRY_MS });
  if (root.exitCode !== 0 || !root.stdout.includes("BEGIN CERTIFICATE")) {
    return { problem: `ca: tier (internal): Caddy's local CA is not on the VM yet (${CADDY_LOCAL_ROOT})` };
  }
  return { trust: { kind: "pem", pem: root.stdout, what: "the internal tier's CA (Caddy's local root)" }, ...(inside ? { caFileOnVm: CADDY_LOCAL_ROOT } : {}) };
}

/** A check failed for good (a unit that failed): no later try can pass. */
class FailedForGood extends Error {}

/** Whether a check's trust is read from the VM (the internal tier's root): then it is resolved at its own first try. */
function trustFromGuest(check: Check, context: CheckContext | undefined): boolean {
  return check.https?.ca === "tier" && context?.tier === "internal";
}

/** A probe's first try made ahead with the rest of its stage's (see {@link firstTries}). */
interface FirstTry {
  probe: InsideProbe;
  result: MachineResult;
}

/** Waits for one check through the machine; returns what it saw when it passed. */
async function waitForCheck(
  check: Check,
  machine: Machine,
  ip: string,
  withinMs: number,
  context: CheckContext | undefined,
  via: CheckVia | undefined,
  firstTry: Promise<FirstTry | undefined>,
): Promise<string> {
  const fromController = runsFromController(check) && via === undefined;
  let trusted: Awaited<ReturnType<typeof trustOf>> | undefined;
  let ahead: Promise<FirstTry | undefined> | undefined = firstTry;
  const attempt = async (): Promise<ProbeOutcome> => {
    const made = await ahead;
    ahead = undefined;
    if (made) return readInside(made.probe, made.result, PROBE_TRY_MS);
    // Asked again until found: the internal tier's CA appears once Caddy has started.
    // The trust is the host's the check is about; from another host, its CA goes as text.
    if (trusted === undefined || trusted.problem !== undefined) trusted = await trustOf(check, machine, context, !fromController && via === undefined);
    const { trust, caFileOnVm, problem } = trusted;
    if (problem) return { ok: false, detail: problem };
    if (via) return tryInside(via.machine, insideProbe(check, trust, undefined, { address: ip, from: via.host }), PROBE_TRY_MS);
    if (!fromController) return tryInside(machine, insideProbe(check, trust, caFileOnVm), PROBE_TRY_MS);
    if (check.http || check.https) return webProbeFromController(check, ip, trust);
    if (check.dns) return dnsProbeFromController(ip, check.dns.name, check.dns.address);
    return tcpProbeFromController(ip, check.tcp!.port);
  };
  return machine.waitFor(
    via ? `${describeCheck(check, ip).replace(" (on the host itself)", "")} (from ${via.host})` : describeCheck(check, ip),
    withinMs,
    async () => {
      const outcome = await attempt();
      if (outcome.final) throw new FailedForGood(outcome.detail);
      return outcome.ok ? { done: true, value: outcome.detail } : { done: false, seen: outcome.detail };
    },
    // A unit, a port or a command is one cheap command in the guest, watched closely (from 250 ms
    // up); the other probes open connections or start programs, paced from 1 s up to 3 s.
    check.unit || check.listen || check.run ? {} : { intervalMs: 1000, maxIntervalMs: 3000 },
  );
}

/**
 * The first try of every check of a stage that runs in a guest, made at once through one command
 * there ({@link Machine.executeEach}): under TCG each command costs the guest ~0.7 s before it
 * does anything, a stage's dozen checks one such cost this way. A check whose trust must be read
 * from the VM first makes its first try itself, as do the checks from the controller.
 */
function firstTries(
  checks: readonly Check[],
  machine: Machine,
  ip: string,
  context: CheckContext | undefined,
  via: CheckVia | undefined,
): Map<Check, Promise<FirstTry | undefined>> {
  const inGuest = checks.filter((check) => (via !== undefined || !runsFromController(check)) && !trustFromGuest(check, context));
  const probes = Promise.all(
    inGuest.map(async (check) => {
      const { trust, caFileOnVm, problem } = await trustOf(check, machine, context, via === undefined);
      if (problem !== undefined) return undefined;
      return via ? insideProbe(check, trust, undefined, { address: ip, from: via.host }) : insideProbe(check, trust, caFileOnVm);
    }),
  );
  const madeAhead = probes.then(async (list) => {
    const ready = list.flatMap((probe, index) => (probe ? [{ check: inGuest[index]!, probe }] : []));
    const results = await (via?.machine ?? machine).executeEach(
      ready.map((entry) => entry.probe),
      { timeoutMs: PROBE_TRY_MS },
    );
    return new Map(ready.map((entry, index) => [entry.check, { probe: entry.probe, result: results[index]! }]));
  });
  // Whatever went wrong ahead, each check then makes its first try itself (and meets it there).
  const made = madeAhead.catch(() => new Map<Check, FirstTry>());
  return new Map(inGuest.map((check) => [check, made.then((byCheck) => byCheck.get(check))]));
}

/** Another host of a topology that a check runs on, against the host the check is about (`from: <host>`). */
export interface CheckVia {
  host: string;
  machine: Machine;
}

/**
 * Runs every check of a stage side by side; each waits until it passes or its `within` is up.
 * `machine` and `ip` are the host's the checks are about; with `via`, they run on that other
 * host against `ip` (http, https, tcp: see FROM_PEER_KINDS).
 */
export async function runChecks(
  checks: readonly Check[],
  machine: Machine,
  ip: string,
  stage: CheckStage,
  options: { onResult?: (result: CheckResult) => void; context?: CheckContext; via?: CheckVia } = {},
): Promise<CheckResult[]> {
  const ahead = firstTries(checks, machine, ip, options.context, options.via);
  return Promise.all(
    checks.map(async (check) => {
      const started = machine.now();
      const finish = (ok: boolean, detail: string): CheckResult => {
        const result = { name: check.name, stage, ok, detail, seconds: Math.round((machine.now() - started) / 100) / 10 };
        options.onResult?.(result);
        return result;
      };
      try {
        const passed = await waitForCheck(
          check,
          machine,
          ip,
          check.within * 1000,
          options.context,
          options.via,
          ahead.get(check) ?? Promise.resolve(undefined),
        );
        return finish(true, passed);
      } catch (error) {
        // Given up on (what it last saw), or a unit that failed outright: the check failed.
        if (error instanceof WaitError && error.timedOut) return finish(false, error.lastSeen);
        if (error instanceof FailedForGood) return finish(false, error.message);
        throw error;
      }
    }),
  );
}
