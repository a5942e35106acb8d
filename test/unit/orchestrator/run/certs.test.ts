/**
 * Cert tiers: selection and its one-line reason, the refusals (no egress, missing overlay
 * fields), the egress probe, the wildcard cache (persistence, expiry, key and domain checks, its
 * 0700 folder) with certificates made here by openssl, and keeping the DNS token secret.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { decideCertTier, planCerts, probeEgress, WildcardCache, WITHHELD_TOKEN, withheldVars } from "../../../../orchestrator/ansible/certs.ts";
import { BadInputError, RefusedError } from "../../../../orchestrator/errors.ts";
import type { LoadedProfile } from "../../../../orchestrator/profile/load.ts";
import { overlaySchema } from "../../../../orchestrator/profile/schema.ts";
import { REDACTED, secretsOf } from "../../../../orchestrator/ansible/secrets.ts";
import { runCli } from "../../../helpers/cli.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const DOMAIN = "*.test.example.org";
const DAY = 86_400_000;

/** A self-signed certificate and key made by openssl, valid from now for `days`. */
function makeCertificate(dir: string, name: string, options: { days: number; domain?: string }): { cert: string; key: string } {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const domain = options.domain ?? DOMAIN;
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      String(options.days),
      "-subj",
      `/CN=${domain}`,
      "-addext",
      `subjectAltName=DNS:${domain}`,
    ],
    { stdio: "ignore" },
  );
  return { cert: execFileSync("cat", [certFile], { encoding: "utf8" }), key: execFileSync("cat", [keyFile], { encoding: "utf8" }) };
}

/** A loaded profile with this overlay (only what the cert plan reads). */
function profileWith(overlay: unknown, profileTier: "internal" | "le-staging" = "internal"): LoadedProfile {
  return {
    document: { certs: profileTier },
    overlay: { file: "/repo/overrides/askari.yml", document: overlaySchema.parse(overlay) },
  } as unknown as LoadedProfile;
}

const LE_OVERLAY = {
  certs: {
    dnsTokenVar: "dns_provider_token",
    "le-staging": { vars: { caddy_tls_mode: "acme" } },
    "le-prod-wildcard": {
      vars: { caddy_tls_mode: "wildcard" },
      wildcard: { domain: DOMAIN, certPath: "/etc/tls/wildcard.crt", keyPath: "/etc/tls/wildcard.key" },
    },
  },
};
const reachable = async () => [];

describe("cert tier selection", () => {
  it("is the command line's, else the profile's, and says which and why", () => {
    assert.deepEqual(decideCertTier({ certs: "le-staging", noEgress: false }, "internal"), { tier: "le-staging", reason: "certs: le-staging (--certs)" });
    assert.deepEqual(decideCertTier({ certs: undefined, noEgress: false }, "le-staging"), {
      tier: "le-staging",
      reason: "certs: le-staging (the profile's default)",
    });
  });

  it("--no-egress forces internal and says so, also when the profile's tier is already internal", () => {
    assert.deepEqual(decideCertTier({ certs: undefined, noEgress: true }, "internal"), {
      tier: "internal",
      reason: "certs: internal (forced by --no-egress: ACME needs egress)",
    });
    assert.deepEqual(decideCertTier({ certs: undefined, noEgress: true }, "le-staging"), {
      tier: "internal",
      reason: "certs: internal (forced by --no-egress: ACME needs egress; the profile's default is le-staging)",
    });
  });

  it("refuses an le tier with --no-egress (exit 3) before anything starts", async () => {
    assert.throws(
      () => decideCertTier({ certs: "le-prod-wildcard", noEgress: true }, "internal"),
      (error: unknown) => error instanceof RefusedError && error.exitCode === 3,
    );
    const result = await runCli(["run", "askari", "--no-egress", "--certs", "le-staging"]);
    assert.equal(result.code, 3, result.stderr);
    assert.match(
      result.stderr,
      /--certs le-staging needs egress .* but --no-egress builds a network without any\n {2}fix: drop --no-egress, or use --certs internal/,
    );
  });

  it("an le tier needs the DNS token var and, for the wildcard, its settings (exit 2 naming the field)", async () => {
    await assert.rejects(planCerts(profileWith({}), { certs: "le-staging", noEgress: false }, "/unused", reachable), (error: unknown) => {
      assert.ok(error instanceof BadInputError);
      assert.match(
        error.message,
        /^\/repo\/overrides\/askari\.yml: certs\.dnsTokenVar: --certs le-staging needs the name of the Ansible var holding the DNS provider's token; found none/,
      );
      return true;
    });
    await assert.rejects(
      planCerts(profileWith({ certs: { dnsTokenVar: "t" } }), { certs: "le-prod-wildcard", noEgress: false }, "/unused", reachable),
      /certs\.le-prod-wildcard\.wildcard: --certs le-prod-wildcard needs \{domain, certPath, keyPath\}/,
    );
  });

  it("an le tier whose egress targets this host cannot reach is refused (exit 3) with the reason", async () => {
    const overlay = { certs: { dnsTokenVar: "t", "le-staging": { egressCheck: ["127.0.0.1:1"] } } };
    await assert.rejects(planCerts(profileWith(overlay), { certs: "le-staging", noEgress: false }, "/unused"), (error: unknown) => {
      assert.ok(error instanceof RefusedError && error.exitCode === 3);
      assert.match(error.message, /--certs le-staging needs egress, and this host cannot reach 127\.0\.0\.1:1 \(ECONNREFUSED\)/);
      return true;
    });
    // The default target of each le tier is its Let's Encrypt directory.
    const asked: string[][] = [];
    await planCerts(profileWith(LE_OVERLAY), { certs: "le-staging", noEgress: false }, "/unused", async (targets) => (asked.push([...targets]), []));
    assert.deepEqual(asked, [["acme-staging-v02.api.letsencrypt.org:443"]]);
  });

  it("internal needs nothing outside: no probe, and the DNS token is withheld from the VM", async () => {
    let probed = false;
    const plan = await planCerts(profileWith(LE_OVERLAY), { certs: undefined, noEgress: false }, "/unused", async () => ((probed = true), []));
    assert.equal(probed, false);
    assert.equal(plan.tier, "internal");
    assert.deepEqual(withheldVars(plan.tier, plan.dnsTokenVar), { dns_provider_token: WITHHELD_TOKEN });
    assert.deepEqual(withheldVars("le-staging", "dns_provider_token"), {}, "the le tiers get the real token");
  });

  it("the CLI refuses an le tier on a host without egress (exit 3) before libvirt is touched", async () => {
    const tree = await tempTree();
    try {
      const overlay = join(tree.dir, "askari-overlay.yml");
      await writeFile(overlay, `certs:\n  dnsTokenVar: dns_provider_token\n  le-staging: { egressCheck: ["127.0.0.1:1"] }\n`);
      const profile = (await readFile(new URL("../../../../profiles/askari.yml", import.meta.url), "utf8"))
        .replace(/^repo: .*$/m, `repo: ${new URL("../../../../examples/boma-lab", import.meta.url).pathname}`)
        .replace(/^overrides: .*$/m, `overrides: ${overlay}`);
      await writeFile(join(tree.dir, "askari.yml"), profile);
      const result = await runCli(["run", join(tree.dir, "askari.yml"), "--certs", "le-staging"], { LIBVIRT_DEFAULT_URI: "test:///nonexistent" });
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stderr, /this host cannot reach 127\.0\.0\.1:1/);
      assert.doesNotMatch(result.stderr, /libvirt/i);
    } finally {
      await tree.remove();
    }
  });
});

describe("the DNS token of the le tiers, before anything is created", () => {
  /** `run askari --certs le-staging` with this overlay, egress to a port here that listens, and no libvirt. */
  async function runLeStaging(overlayBody: (egress: string) => string) {
    const server = createServer((socket) => socket.end()).listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    const egress = `127.0.0.1:${(server.address() as { port: number }).port}`;
    const tree = await tempTree();
    try {
      const overlay = join(tree.dir, "askari-overlay.yml");
      await writeFile(overlay, overlayBody(egress));
      const profile = (await readFile(new URL("../../../../profiles/askari.yml", import.meta.url), "utf8"))
        .replace(/^repo: .*$/m, `repo: ${new URL("../../../../examples/boma-lab", import.meta.url).pathname}`)
        .replace(/^overrides: .*$/m, `overrides: ${overlay}`);
      await writeFile(join(tree.dir, "askari.yml"), profile);
      const result = await runCli(["run", join(tree.dir, "askari.yml"), "--certs", "le-staging"], {
        LIBVIRT_DEFAULT_URI: "test:///nonexistent",
        TMPDIR: tree.dir,
      });
      return { ...result, overlay, leftInTmp: execFileSync("find", [tree.dir, "-mindepth", "1", "-name", "boma-it-*"], { encoding: "utf8" }).trim() };
    } finally {
      server.close();
      await tree.remove();
    }
  }

  it("a token the host's vars do not define is refused (exit 2, naming the overlay's field) before libvirt is touched", async () => {
    const result = await runLeStaging((egress) => `certs:\n  dnsTokenVar: dns_provider_token\n  le-staging: { egressCheck: ["${egress}"] }\n`);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, new RegExp(`${result.overlay.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: certs\\.dnsTokenVar`));
    assert.match(result.stderr, /--certs le-staging needs the DNS provider token in dns_provider_token, and it is not defined for askari/);
    assert.doesNotMatch(result.stderr, /libvirt/i, "refused before libvirt");
    assert.equal(result.leftInTmp, "", "the check's temp folders are gone");
  });

  it("a defined token is learnt and redacted from then on; Ansible gets it from a private file that is gone after", async () => {
    const token = "tok-dns-0123456789abcdef";
    const result = await runLeStaging(
      (egress) =>
        `vars: { dns_provider_token: "${token}" }\nsecretVars: [dns_provider_token]\ncerts:\n  dnsTokenVar: dns_provider_token\n  le-staging: { egressCheck: ["${egress}"] }\n`,
    );
    // Past the token, the run goes on to libvirt, which is not there.
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /DNS token: dns_provider_token is defined for askari \(redacted from here on\)/);
    assert.match(result.stderr, /libvirt/i);
    assert.doesNotMatch(result.stdout + result.stderr, new RegExp(token));
    assert.equal(result.leftInTmp, "", "the check's temp folders and the secret vars file are gone");
  });
});

describe("egress probe", () => {
  it("reaches a listening port and reports one that refuses", async () => {
    const server = createServer((socket) => socket.end()).listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    const port = (server.address() as { port: number }).port;
    try {
      assert.deepEqual(await probeEgress([`127.0.0.1:${port}`]), []);
      assert.deepEqual(await probeEgress([`127.0.0.1:${port}`, "127.0.0.1:1"]), [{ target: "127.0.0.1:1", problem: "ECONNREFUSED" }]);
    } finally {
      server.close();
    }
  });
});

describe("wildcard certificate cache", () => {
  it("stores an issued certificate (0600 in a 0700 folder) and reuses it while valid long enough", async () => {
    const tree = await tempTree();
    try {
      const { cert, key } = makeCertificate(tree.dir, "good", { days: 90 });
      const cache = new WildcardCache(join(tree.dir, "cache"));
      const stored = await cache.store(DOMAIN, cert, key);
      assert.ok(stored.daysLeft >= 89 && stored.daysLeft <= 90, `${stored.daysLeft} days left`);
      assert.equal((await stat(cache.dir)).mode & 0o777, 0o700);
      for (const file of ["cert.pem", "key.pem"]) assert.equal((await stat(join(cache.dir, "wildcard.test.example.org", file))).mode & 0o777, 0o600, file);

      const now = new Date();
      const found = await cache.lookup(DOMAIN, 30, now);
      assert.equal(found.reusable, true);
      assert.equal(found.reusable && found.keyPem, key);
      // 70 days on it has 19-20 left: under the 30 wanted, so the next run issues a new one.
      const later = await cache.lookup(DOMAIN, 30, new Date(now.getTime() + 70 * DAY));
      assert.equal(later.reusable, false);
      assert.match(!later.reusable ? later.reason : "", /the cached one expires in (19|20) days \(\d{4}-\d{2}-\d{2}\), under the 30 wanted/);
      const expired = await cache.lookup(DOMAIN, 1, new Date(now.getTime() + 100 * DAY));
      assert.match(!expired.reusable ? expired.reason : "", /the cached one is not usable: it expired on /);
      assert.match(!(await cache.lookup("*.other.example.org", 1)).reusable ? "none" : "", /none/);
    } finally {
      await tree.remove();
    }
  });

  it("refuses to cache a certificate whose key is not its own, or that does not cover the domain", async () => {
    const tree = await tempTree();
    try {
      const first = makeCertificate(tree.dir, "a", { days: 90 });
      const second = makeCertificate(tree.dir, "b", { days: 90 });
      const elsewhere = makeCertificate(tree.dir, "c", { days: 90, domain: "*.elsewhere.example.org" });
      const cache = new WildcardCache(join(tree.dir, "cache"));
      await assert.rejects(cache.store(DOMAIN, first.cert, second.key), /the private key does not belong to the certificate/);
      await assert.rejects(
        cache.store(DOMAIN, elsewhere.cert, elsewhere.key),
        /it does not cover \*\.test\.example\.org \(it names \*\.elsewhere\.example\.org\)/,
      );
      assert.equal((await cache.lookup(DOMAIN, 1)).reusable, false, "nothing was stored");
    } finally {
      await tree.remove();
    }
  });

  it("refuses a cache folder others can read (it holds private keys)", async () => {
    const tree = await tempTree();
    try {
      const dir = join(tree.dir, "loose");
      await mkdir(dir);
      await chmod(dir, 0o755);
      await assert.rejects(
        new WildcardCache(dir).lookup(DOMAIN, 30),
        (error: unknown) => error instanceof RefusedError && /mode 755.*private keys[\s\S]*chmod 700/.test(error.message),
      );
    } finally {
      await tree.remove();
    }
  });
});

describe("secrets learnt during a run", () => {
  it("a token learnt later is redacted by runners and logs built before; secret output never reaches a record", async () => {
    const secrets = secretsOf([]);
    const records: string[] = [];
    const runner = new Runner({ onRecord: (record) => records.push(`${record.argv.join(" ")} | ${record.tail}`) }).withRedaction(secrets.redact);
    secrets.add("tok-0123456789");
    await runner.run("echo", ["tok-0123456789"]);
    const hidden = await runner.run("echo", ["-----BEGIN PRIVATE KEY-----"], { secretOutput: true });
    assert.equal(hidden.stdout, "-----BEGIN PRIVATE KEY-----\n", "the caller still gets the output");
    assert.deepEqual(records, [
      `echo ${REDACTED} | ${REDACTED}`,
      "echo -----BEGIN PRIVATE KEY----- | (output withheld: it holds a secret; 28 bytes on stdout, 0 on stderr)",
    ]);
  });
});
