import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { effectiveCertTier } from "../../../orchestrator/cli/options.ts";
import { RefusedError } from "../../../orchestrator/errors.ts";
import { runCli } from "../../helpers/cli.ts";

describe("cert tier", () => {
  it("is the command line's, else the profile's", () => {
    assert.deepEqual(effectiveCertTier({ certs: "le-staging", noEgress: false }, "internal"), { tier: "le-staging" });
    assert.deepEqual(effectiveCertTier({ certs: undefined, noEgress: false }, "le-staging"), { tier: "le-staging" });
  });

  it("is forced to internal by --no-egress, and says so when that changes it", () => {
    assert.deepEqual(effectiveCertTier({ certs: undefined, noEgress: true }, "internal"), { tier: "internal" });
    assert.deepEqual(effectiveCertTier({ certs: undefined, noEgress: true }, "le-staging"), {
      tier: "internal",
      note: "--no-egress forces --certs internal (the profile's default is le-staging)",
    });
  });

  it("refuses an le tier with --no-egress (exit 3) before anything starts", async () => {
    assert.throws(() => effectiveCertTier({ certs: "le-prod-wildcard", noEgress: true }, "internal"), (error: unknown) => error instanceof RefusedError && error.exitCode === 3);
    const result = await runCli(["run", "askari", "--no-egress", "--certs", "le-staging"]);
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /--certs le-staging needs egress .* but --no-egress builds a network without any\n  fix: drop --no-egress, or use --certs internal/);
  });
});
