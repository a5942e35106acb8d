/**
 * The profile's checks, run before and after the reboot: `http` and `tcp` from the harness host
 * through the test network (as a client on the LAN would), `unit`, `listen` and `run` inside the
 * VM. All checks of a stage run side by side, each retried until it passes or its `within` time
 * is up, so a slow service gets its chance but a broken one fails for sure.
 */
import { connect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { quoteArg } from "../../infra/runner.ts";
import type { Machine } from "./machine.ts";
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

/** Runs one probe once. */
export async function probeOnce(check: Check, machine: Machine, ip: string): Promise<ProbeOutcome> {
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
  if (check.tcp) return tcpProbe(ip, check.tcp.port);
  if (check.unit) {
    const result = await machine.execute(`systemctl is-active ${quoteArg(check.unit)}`, { timeoutMs: 30_000 });
    const state = result.stdout.trim() || result.stderr.trim();
    return { ok: state === "active", detail: `${check.unit} is ${state || `unknown (exit ${result.exitCode})`}` };
  }
  if (check.listen) {
    const result = await machine.execute(`ss -Htln 'sport = :${check.listen.port}'`, { timeoutMs: 30_000 });
    const listening = result.exitCode === 0 && result.stdout.trim() !== "";
    return { ok: listening, detail: listening ? `listening: ${result.stdout.trim().split("\n")[0]?.replace(/\s+/g, " ")}` : `nothing listens on TCP port ${check.listen.port}` };
  }
  const result = await machine.execute(check.run!, { timeoutMs: 60_000 });
  const output = (result.stdout + result.stderr).trim().split("\n").at(-1) ?? "";
  return { ok: result.exitCode === 0, detail: `exit ${result.exitCode}${output ? `: ${output.slice(0, 200)}` : ""}` };
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

/** Runs every check of a stage side by side; each retried until it passes or its `within` is up. */
export async function runChecks(
  checks: readonly Check[],
  machine: Machine,
  ip: string,
  stage: CheckStage,
  options: { signal?: AbortSignal; onResult?: (result: CheckResult) => void },
): Promise<CheckResult[]> {
  return Promise.all(
    checks.map(async (check) => {
      const started = performance.now();
      for (;;) {
        options.signal?.throwIfAborted();
        const outcome = await probeOnce(check, machine, ip);
        const elapsedMs = performance.now() - started;
        const leftMs = check.within * 1000 - elapsedMs;
        if (outcome.ok || leftMs <= 0) {
          const result = { name: check.name, stage, ok: outcome.ok, detail: outcome.detail, seconds: Math.round(elapsedMs / 100) / 10 };
          options.onResult?.(result);
          return result;
        }
        // The last try comes when `within` is up, not up to 3 s after it.
        await sleep(Math.min(3000, leftMs), undefined, options.signal ? { signal: options.signal } : undefined);
      }
    }),
  );
}
