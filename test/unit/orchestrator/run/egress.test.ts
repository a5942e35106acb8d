/**
 * The VM's egress: which names a run allows (the cert tier's, the mirrors, the profile's,
 * `--egress`), `--egress open` and `--no-egress`, the refusal where the allowlist cannot be made,
 * and how refused attempts are read back from the filter's set and the DNS's query log.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { egressOptions } from "../../../../orchestrator/cli/options.ts";
import { BadInputError, RefusedError } from "../../../../orchestrator/errors.ts";
import { rootCommand } from "../../../../orchestrator/host/root.ts";
import { allowedNames, blockedConnections, describeBlocked, planEgress, readBlocked, refusedNames } from "../../../../orchestrator/run/egress.ts";
import { writeFake } from "../../../helpers/fakes.ts";
import { tempTree } from "../../../helpers/tmp.ts";

const PROFILE = {
  document: { egress: ["api.netbird.io"] },
  overlay: { document: { certs: { "le-staging": { vars: {}, egressCheck: ["api.gandi.net:443"] } } } },
} as never;

/** What `nft -j list set inet <run> blocked` printed for two refused attempts. */
const BLOCKED_SET = JSON.stringify({
  nftables: [
    { metainfo: { version: "1.0.6" } },
    {
      set: {
        family: "inet",
        name: "blocked",
        table: "boma-it-askari-20261203-010101",
        type: ["ipv4_addr", "inet_proto", "inet_service"],
        elem: [
          { elem: { val: { concat: ["198.51.100.1", "tcp", 443] }, expires: 86000, counter: { packets: 3, bytes: 180 } } },
          { elem: { val: { concat: ["203.0.113.9", "udp", 53] }, expires: 86000, counter: { packets: 1, bytes: 70 } } },
        ],
      },
    },
  ],
});

/** A dnsmasq query log (log-queries) as the network's DNS writes it. */
const QUERY_LOG = `Dec  3 01:09:12 dnsmasq[25449]: started, version 2.90 cachesize 150
Dec  3 01:09:12 dnsmasq[25449]: using nameserver 192.0.2.53#53 for domain deb.debian.org
Dec  3 01:09:19 dnsmasq[25449]: query[A] api.example.net from 10.234.7.10
Dec  3 01:09:19 dnsmasq[25449]: config error is REFUSED (EDE: not ready)
Dec  3 01:09:20 dnsmasq[25449]: query[AAAA] api.example.net from 10.234.7.10
Dec  3 01:09:20 dnsmasq[25449]: config error is REFUSED (EDE: not ready)
Dec  3 01:09:21 dnsmasq[25449]: query[A] deb.debian.org from 10.234.7.10
Dec  3 01:09:21 dnsmasq[25449]: forwarded deb.debian.org to 192.0.2.53
Dec  3 01:09:21 dnsmasq[25449]: query[PTR] 10.7.234.10.in-addr.arpa from 10.234.7.10
Dec  3 01:09:21 dnsmasq[25449]: config error is REFUSED
Dec  3 01:09:22 dnsmasq[25449]: query[A] askari from 10.234.7.10
Dec  3 01:09:22 dnsmasq[25449]: /var/lib/libvirt/dnsmasq/boma-it-askari-20261203-010101.addnhosts askari is 10.234.7.10
Dec  3 01:09:23 dnsmasq[25449]: query[A] Telemetry.Vendor.example. from 10.234.7.10
Dec  3 01:09:23 dnsmasq[25449]: config error is REFUSED
`;

describe("egress", () => {
  it("allows what the cert tier needs, the Debian mirrors, the profile's names and --egress's, once each", () => {
    assert.deepEqual(
      allowedNames(PROFILE, { tier: "internal" }, { egress: [] }),
      ["deb.debian.org", "security.debian.org", "api.netbird.io"],
      "internal needs nothing",
    );
    assert.deepEqual(allowedNames(PROFILE, { tier: "le-staging" }, { egress: ["Extra.example.org", "api.netbird.io"] }), [
      "acme-staging-v02.api.letsencrypt.org",
      "api.gandi.net",
      "deb.debian.org",
      "security.debian.org",
      "api.netbird.io",
      "extra.example.org",
    ]);
  });

  it("reads --egress: names, `open` alone, never with --no-egress", () => {
    assert.deepEqual(egressOptions({}), { egress: [], egressOpen: false });
    assert.deepEqual(egressOptions({ egress: ["api.example.org", "API.example.org"] }), { egress: ["api.example.org"], egressOpen: false });
    assert.deepEqual(egressOptions({ egress: ["open"] }), { egress: [], egressOpen: true });
    assert.throws(
      () => egressOptions({ egress: ["open", "api.example.org"] }),
      /--egress open lifts the allowlist: expected it alone, found it with api\.example\.org/,
    );
    assert.throws(
      () => egressOptions({ egress: ["x.example.org"], "no-egress": true }),
      (error: unknown) => error instanceof BadInputError && /--egress and --no-egress: expected one of them, found both/.test(error.message),
    );
    assert.throws(
      () => egressOptions({ egress: ["https://api.example.org/"] }),
      /--egress: expected a DNS name such as api\.example\.org .*found "https:\/\/api\.example\.org\/"/,
    );
    assert.throws(
      () => egressOptions({ egress: ["192.0.2.7"] }),
      /--egress: expected a DNS name, found an IP address: the allowlist holds names.*found "192\.0\.2\.7"/,
    );
    assert.throws(() => egressOptions({ egress: ["."] }), /--egress: expected a DNS name such as api\.example\.org/);
  });

  it("plans none, open (said as a warning) or the allowlist from this host's resolvers; refuses an allowlist it cannot make", async () => {
    const warned: string[] = [];
    const log = { info: () => undefined, warn: (line: string) => void warned.push(line) };
    const runner = new Runner();
    const inputs = { profile: PROFILE, certs: { tier: "internal" as const }, runner };
    assert.deepEqual((await planEgress({ ...inputs, options: { noEgress: true, egress: [], egressOpen: false } }, { env: {}, log })).spec, { mode: "none" });
    assert.deepEqual((await planEgress({ ...inputs, options: { noEgress: false, egress: [], egressOpen: true } }, { env: {}, log })).spec, { mode: "open" });
    assert.match(warned[0]!, /egress: open \(--egress open\): the VM reaches every public address through NAT/);
    if (process.getuid?.() === 0) {
      const plan = await planEgress(
        { ...inputs, options: { noEgress: false, egress: ["x.example.org"], egressOpen: false } },
        { env: { BOMA_IT_DNS_SERVERS: "192.0.2.53 192.0.2.54" }, log },
      );
      assert.deepEqual(plan.spec, {
        mode: "allowlist",
        names: ["deb.debian.org", "security.debian.org", "api.netbird.io", "x.example.org"],
        upstreams: ["192.0.2.53", "192.0.2.54"],
      });
      assert.deepEqual(plan.asRoot, [], "root runs nft as it is");
    }
    // Neither root nor sudo: refused, saying how to go on.
    await assert.rejects(
      planEgress({ ...inputs, options: { noEgress: false, egress: [], egressOpen: false } }, { env: {}, log, rootCommand: async () => undefined }),
      (error: unknown) => {
        assert.ok(error instanceof RefusedError);
        assert.match(error.message, /needs root .* and boma-it runs as neither root nor an account with password-less sudo/);
        assert.match(error.message, /--egress open .* or --no-egress/);
        return true;
      },
    );
    // Root commands: as they are for root; through `sudo -n` for an account that has it; none otherwise.
    const tree = await tempTree();
    try {
      const bin = join(tree.dir, "bin");
      const withSudo = new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "log"), FAKE_SUDO: "yes" } });
      await writeFake(bin, "sudo", '[ "$FAKE_SUDO" = yes ] || { echo "sudo: a password is required" >&2; exit 1; }');
      assert.deepEqual(await rootCommand(withSudo, 0), []);
      assert.deepEqual(await rootCommand(withSudo, 1000), ["sudo", "-n"]);
      assert.equal(await rootCommand(new Runner({ env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "log"), FAKE_SUDO: "no" } }), 1000), undefined);
      assert.equal(await rootCommand(new Runner({ env: { PATH: join(tree.dir, "none") } }), 1000), undefined, "no sudo at all");
    } finally {
      await tree.remove();
    }
  });

  it("reads refused connection attempts from the filter's set and refused names from the DNS's query log", async () => {
    assert.deepEqual(blockedConnections(BLOCKED_SET), [
      { address: "198.51.100.1", protocol: "tcp", port: 443, count: 3 },
      { address: "203.0.113.9", protocol: "udp", port: 53, count: 1 },
    ]);
    assert.deepEqual(blockedConnections("not json"), []);
    assert.deepEqual(
      refusedNames(QUERY_LOG),
      [
        { name: "api.example.net", count: 2 },
        { name: "telemetry.vendor.example", count: 1 },
      ],
      "allowed, local and reverse lookups are not refusals",
    );
    assert.equal(describeBlocked({ name: "api.example.net", count: 2 }), "the change tried to reach api.example.net: blocked (2 queries)");
    assert.equal(describeBlocked({ address: "198.51.100.1", protocol: "tcp", port: 443, count: 1 }), "the change tried to reach 198.51.100.1:443: blocked");

    // Through the commands a run uses (as root here: nft and cat as they are; fakes answer).
    const tree = await tempTree({ "queries.log": QUERY_LOG });
    try {
      await writeFake(join(tree.dir, "bin"), "nft", `printf '%s' '${BLOCKED_SET}'`);
      const runner = new Runner({ env: { PATH: `${join(tree.dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "log") } });
      const blocked = await readBlocked(runner, [], { table: "boma-it-askari-20261203-010101", queryLog: join(tree.dir, "queries.log") });
      assert.deepEqual(blocked.map(describeBlocked), [
        "the change tried to reach api.example.net: blocked (2 queries)",
        "the change tried to reach telemetry.vendor.example: blocked",
        "the change tried to reach 198.51.100.1:443: blocked (3 packets)",
        "the change tried to reach 203.0.113.9:53/udp: blocked",
      ]);
    } finally {
      await tree.remove();
    }
  });
});
