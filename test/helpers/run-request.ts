/** A run request as the commands make one, for driver tests: open egress, internal certs, no secrets, this log and signal. */
import { join } from "node:path";
import { Runner } from "../../infra/runner.ts";
import { secretsOf } from "../../orchestrator/ansible/secrets.ts";
import type { Log } from "../../orchestrator/log.ts";
import type { LoadedProfile } from "../../orchestrator/profile/load.ts";
import type { RunRequest } from "../../orchestrator/run/driver.ts";
import { NO_ANSIBLE_ARGS, type KeepPolicy } from "../../orchestrator/run/options.ts";

export function testRunRequest(dir: string, profile: LoadedProfile, log: Log, signal: AbortSignal, keep: KeepPolicy = "on-failure"): RunRequest {
  return {
    purpose: "run",
    profile,
    options: {
      scenario: undefined,
      certs: undefined,
      keep,
      noEgress: false,
      egress: [],
      egressOpen: true,
      minFreeRamMiB: undefined,
      engine: "direct",
      accel: "tcg",
      ansible: NO_ANSIBLE_ARGS,
      imageFetch: true,
    },
    secrets: secretsOf([]),
    certs: { tier: "internal", reason: "", vars: {}, dnsTokenVar: undefined, wildcard: undefined },
    egress: { spec: { mode: "open" }, allowed: [], reason: "", asRoot: [] },
    runner: new Runner(),
    log,
    env: { BOMA_IT_RUN_LOCK: join(dir, "run.lock") },
    runsDir: join(dir, "runs"),
    imageDir: join(dir, "images"),
    signal,
  };
}
