import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { bridgeFor, macFor, newRunIdentity, overlapsAny, pickSubnet, runDirName } from "../../../infra/spec.ts";

describe("run identity and names", () => {
  it("names the stack boma-it-<host>-<yyyymmdd-hhmmss> and the run dir <stamp>-<host>", () => {
    const identity = newRunIdentity("askari", new Date("2026-11-22T03:04:05Z"));
    assert.equal(identity.runId, "boma-it-askari-20261122-030405");
    assert.equal(runDirName(identity), "20261122-030405-askari");
  });

  it("makes bridge names that fit the kernel's 15 characters and keep the prefix", () => {
    const bridge = bridgeFor("boma-it-a-very-long-host-name-20261122-030405");
    assert.ok(bridge.length <= 15, bridge);
    assert.ok(bridge.startsWith("boma-it-"));
  });

  it("makes a stable locally administered MAC", () => {
    assert.equal(macFor("x"), macFor("x"));
    assert.match(macFor("x"), /^52:54:00(:[0-9a-f]{2}){3}$/);
  });
});

describe("overlapsAny", () => {
  it("sees a subnet taken by a network given as its gateway, a wider route or the same /24, and free beside them", () => {
    assert.equal(overlapsAny("10.234.7.0/24", ["10.234.7.1/24"]), true, "a libvirt network as usedSubnets lists it");
    assert.equal(overlapsAny("10.234.7.0/24", ["10.0.0.0/8"]), true, "a wider route");
    assert.equal(overlapsAny("10.234.7.0/24", ["10.234.7.128/25"]), true, "a narrower one inside it");
    assert.equal(overlapsAny("10.234.7.0/24", ["10.234.8.1/24", "192.168.1.20/24"]), false);
  });
});

describe("pickSubnet", () => {
  it("gives gateway .1, the VM .10 and a DHCP range", () => {
    const subnet = pickSubnet([], "seed");
    const prefix = subnet.cidr.replace(/\.0\/24$/, "");
    assert.equal(subnet.gateway, `${prefix}.1`);
    assert.equal(subnet.guestIp, `${prefix}.10`);
    assert.equal(subnet.dhcpStart, `${prefix}.100`);
  });

  it("skips subnets in use, including ones inside a wider route", () => {
    const first = pickSubnet([], "seed");
    const second = pickSubnet([first.cidr], "seed");
    assert.notEqual(second.cidr, first.cidr);
    const third = pickSubnet([`${first.gateway.replace(/\.1$/, ".77")}/32`], "seed");
    assert.notEqual(third.cidr, first.cidr);
  });

  it("fails when the whole range is taken", () => {
    assert.throws(() => pickSubnet(["10.234.0.0/16"], "seed"), /no free \/24/);
  });
});
