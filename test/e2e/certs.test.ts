/**
 * The le tiers for real: a real DNS-01 issuance against Let's Encrypt. They need what this
 * project's CI machine does not have, so here they are skipped and say why; never faked.
 * On a host with internet and an infrastructure repo whose playbook runs an ACME client:
 *   BOMA_IT_E2E_LE_PROFILE=<profile> ANSIBLE_VAULT_PASSWORD_FILE=<file> sudo -E npm run test:e2e
 * (the overlay names certs.dnsTokenVar and, for le-prod-wildcard, certs.le-prod-wildcard.wildcard).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { probeEgress } from "../../orchestrator/ansible/certs.ts";
import type { RunReport } from "../../orchestrator/run/report.ts";
import { cli, leftovers, suiteDirs } from "./helpers.ts";

const profile = process.env.BOMA_IT_E2E_LE_PROFILE;
const unreachable = await probeEgress(["acme-staging-v02.api.letsencrypt.org:443"], 3_000);
const SKIP =
  unreachable.length > 0
    ? `no egress to Let's Encrypt from here (${unreachable.map(({ target, problem }) => `${target}: ${problem}`).join(", ")}); the le tiers' logic is unit-tested (test/unit/orchestrator/run/certs.test.ts)`
    : !profile
      ? "set BOMA_IT_E2E_LE_PROFILE to a profile whose playbook runs an ACME client (examples/boma-lab has none)"
      : false;

describe("the le cert tiers, for real", { timeout: 60 * 60_000, skip: SKIP }, () => {
  const dirs = suiteDirs();

  it("le-staging: a GREEN run issues a staging certificate through DNS-01 and passes", async () => {
    const result = await cli(["run", profile!, "--scenario", "green", "--certs", "le-staging", "--json"], dirs.env);
    assert.equal(result.code, 0, result.stderr.slice(-4000));
    assert.equal((JSON.parse(result.stdout) as RunReport).certs, "le-staging");
    assert.deepEqual(await leftovers(dirs.stacksDir), []);
  });

  it("le-prod-wildcard: the first run issues and caches, the next one reuses", async () => {
    const env = { ...dirs.env, BOMA_IT_CERT_CACHE: `${dirs.stacksDir}/cert-cache` };
    const first = await cli(["run", profile!, "--scenario", "green", "--certs", "le-prod-wildcard", "--json"], env);
    assert.equal(first.code, 0, first.stderr.slice(-4000));
    assert.equal((JSON.parse(first.stdout) as RunReport).scenarios[0]!.certificate?.source, "issued");
    const second = await cli(["run", profile!, "--scenario", "green", "--certs", "le-prod-wildcard", "--json"], env);
    assert.equal(second.code, 0, second.stderr.slice(-4000));
    assert.equal((JSON.parse(second.stdout) as RunReport).scenarios[0]!.certificate?.source, "reused");
    assert.match(second.stderr, /reusing the cached certificate/);
  });
});
