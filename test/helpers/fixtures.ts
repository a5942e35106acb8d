/** Fixtures of unit tests: a fixed stack spec and keys, and a silent log. */
import { Writable } from "node:stream";
import type { SeedKeys } from "../../infra/seed.ts";
import { Log } from "../../orchestrator/log.ts";
import {
  newRunIdentity,
  pickSubnet,
  stackSpec,
  type EgressSpec,
  type RunIdentity,
  type StackSpec,
  type StackSpecInput,
  type Subnet,
  type TopologyPlace,
  type WarmStartSpec,
} from "../../infra/spec.ts";

export const FIXED_IDENTITY = newRunIdentity("askari", new Date("2026-11-22T03:40:00Z"));

/** The allowlist a fixed spec has unless told otherwise: a mirror, from two upstream resolvers. */
export const FIXED_ALLOWLIST: EgressSpec = { mode: "allowlist", names: ["deb.debian.org", "security.debian.org"], upstreams: ["192.0.2.53", "192.0.2.54"] };

export function fixedSpec(
  overrides: { egress?: EgressSpec; accel?: "kvm" | "tcg"; runDir?: string; dnsmasqDir?: string; warmStart?: WarmStartSpec } = {},
): StackSpec {
  return stackSpec({
    identity: FIXED_IDENTITY,
    accel: overrides.accel ?? "tcg",
    vm: { vcpus: 2, memoryMiB: 3072, diskGiB: 20 },
    subnet: pickSubnet([], FIXED_IDENTITY.runId),
    egress: overrides.egress ?? FIXED_ALLOWLIST,
    hostAddresses: ["127.0.0.1", "192.168.1.20", "203.0.113.5"],
    goldenImage: "/var/cache/boma-it/images/debian-13-local.qcow2",
    runDir: overrides.runDir ?? "/home/op/integration-runs/20261122-034000-askari",
    ...(overrides.dnsmasqDir ? { libvirtDnsmasqDir: overrides.dnsmasqDir } : {}),
    ownerPid: 4242,
    ownerStart: "4c1f7d2e-0b6a-4f3e-9d8c-2a5b6e7f8091/123456",
    ...(overrides.warmStart ? { warmStart: overrides.warmStart } : {}),
  });
}

export const FIXED_KEYS: SeedKeys = {
  clientPublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClient boma-it harness\n",
  hostKeys: [
    {
      type: "rsa",
      privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET-RSA-HOST-KEY\n-----END OPENSSH PRIVATE KEY-----\n",
      publicKey: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABHost boma-it host\n",
    },
    {
      type: "ecdsa",
      privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET-ECDSA-HOST-KEY\n-----END OPENSSH PRIVATE KEY-----\n",
      publicKey: "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYHost boma-it host\n",
    },
    {
      type: "ed25519",
      privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET-HOST-KEY\n-----END OPENSSH PRIVATE KEY-----\n",
      publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost boma-it host\n",
    },
  ],
};

/** A Log that prints nothing (for code under test that logs progress). */
export function silentLog(): Log {
  return new Log({ stream: new Writable({ write: (_chunk, _encoding, done) => done() }), enabled: false });
}

/** The stack inputs of one 1-vCPU VM of a topology on `place` (its files under `runsDir/<host>`). */
export function topologyVmInput(identity: RunIdentity, subnet: Subnet, place: TopologyPlace, runsDir: string): StackSpecInput {
  return {
    identity,
    accel: "tcg",
    vm: { vcpus: 1, memoryMiB: 2048, diskGiB: 20 },
    subnet,
    egress: { mode: "allowlist", names: ["deb.debian.org"], upstreams: ["192.0.2.53"] },
    goldenImage: "/var/cache/boma-it/images/debian-13-local.qcow2",
    runDir: `${runsDir}/${identity.host}`,
    ownerPid: 4242,
    topology: place,
  };
}
