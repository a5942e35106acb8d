/**
 * The profile's checks, run before and after the reboot: `http` and `tcp` from the harness host
 * through the test network (as a client on the LAN would), `unit`, `listen` and `run` inside the
 * VM. All checks of a stage run side by side, each through the Machine's waits (the one retry
 * primitive, on the machine's clock) until it passes or its `within` is up, so a slow service gets
 * its chance but a broken one fails for sure. A check fails on what it last saw; a VM that went
 * down or panicked meanwhile is not a failed check but the wait's own error, for the caller.
 */
import { connect } from "node:net";
import { SystemUnderTestError } from "../errors.ts";
import type { Machine } from "./machine.ts";
import { WaitError } from "../retry.ts";
import type { Check } from "../profile/schema.ts";

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
}

/** One probe's verdict. */
interface ProbeOutcome {
  ok: boolean;
  detail: string;
}

/** What a check is in words, for the machine's progress lines. */
function describeCheck(check: Check, ip: string): string {
  if (check.http) return `GET http://${ip}:${check.http.port}${check.http.path} to answer ${check.http.status}`;
  if (check.tcp) return `TCP ${ip}:${check.tcp.port} to accept`;
  if (check.unit) return `unit ${check.unit} to be active`;
  if (check.listen) return `something to listen on TCP port ${check.listen.port}`;
  return `\`${check.run}\` to succeed`;
}

/** One try of a probe from the harness host (http, tcp). */
async function hostProbe(check: Check, ip: string): Promise<ProbeOutcome> {
  if (check.http) {
    const url = `http://${ip}:${check.http.port}${check.http.path}`;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5000), redirect: "manual" });
      await response.arrayBuffer();
      return { ok: response.status === check.http.status, detail: `GET ${url}: HTTP ${response.status} (want ${check.http.status})` };
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).name;
      return { ok: false, detail: `GET ${url}: ${cause === "TimeoutError" ? "no answer within 5 s" : cause}` };
    }
  }
  return tcpProbe(ip, check.tcp!.port);
}

function tcpProbe(ip: string, port: number): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host: ip, port, timeout: 5000 });
    const done = (outcome: ProbeOutcome) => {
      socket.destroy();
      resolve(outcome);
    };
    socket.once("connect", () => done({ ok: true, detail: `TCP ${ip}:${port} accepts connections` }));
    socket.once("timeout", () => done({ ok: false, detail: `TCP ${ip}:${port}: no answer within 5 s` }));
    socket.once("error", (error: NodeJS.ErrnoException) => done({ ok: false, detail: `TCP ${ip}:${port}: ${error.code ?? error.message}` }));
  });
}

/** Waits for one check through the machine; returns what it saw when it passed. */
async function waitForCheck(check: Check, machine: Machine, ip: string, withinMs: number): Promise<string> {
  if (check.unit) {
    await machine.waitForUnit(check.unit, withinMs);
    return `${check.unit} is active`;
  }
  if (check.listen) return `listening: ${(await machine.waitForOpenPort(check.listen.port, withinMs)).replace(/\s+/g, " ")}`;
  if (check.run) {
    const output = (await machine.waitUntilSucceeds(check.run, withinMs)).trim().split("\n").at(-1) ?? "";
    return `exit 0${output ? `: ${output.slice(0, 200)}` : ""}`;
  }
  return machine.waitFor(
    describeCheck(check, ip),
    withinMs,
    async () => {
      const outcome = await hostProbe(check, ip);
      return outcome.ok ? { done: true, value: outcome.detail } : { done: false, seen: outcome.detail };
    },
    { intervalMs: 1000, maxIntervalMs: 3000 },
  );
}

/** Runs every check of a stage side by side; each waits until it passes or its `within` is up. */
export async function runChecks(
  checks: readonly Check[],
  machine: Machine,
  ip: string,
  stage: CheckStage,
  options: { onResult?: (result: CheckResult) => void } = {},
): Promise<CheckResult[]> {
  return Promise.all(
    checks.map(async (check) => {
      const started = machine.now();
      const finish = (ok: boolean, detail: string): CheckResult => {
        const result = { name: check.name, stage, ok, detail, seconds: Math.round((machine.now() - started) / 100) / 10 };
        options.onResult?.(result);
        return result;
      };
      try {
        return finish(true, await waitForCheck(check, machine, ip, check.within * 1000));
      } catch (error) {
        // Given up on (what it last saw), or a unit that failed outright: the check failed.
        if (error instanceof WaitError && error.timedOut) return finish(false, error.lastSeen);
        if (error instanceof SystemUnderTestError) return finish(false, error.message.replace(/^[^:]+: /, ""));
        throw error;
      }
    }),
  );
}
