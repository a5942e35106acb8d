/**
 * Questions the orchestrator asks libvirt at run time (the plan's commands live in infra/):
 * is it reachable, what state is a domain in, which lease does a MAC hold, which subnets are
 * taken. All through the one runner.
 */
import { XMLParser } from "fast-xml-parser";
import type { Runner } from "../../infra/runner.ts";
import { METADATA_NAMESPACE } from "../../infra/xml.ts";
import { HarnessError, RefusedError } from "../errors.ts";
import { DEFAULT_LIBVIRT_URI } from "../../infra/plan.ts";

/** A libvirt connection through virsh. */
/** The libvirt URI boma-it works on: `LIBVIRT_DEFAULT_URI`, as virsh reads it, else the system's. */
export function libvirtUriOf(env: NodeJS.ProcessEnv): string {
  return env.LIBVIRT_DEFAULT_URI ?? DEFAULT_LIBVIRT_URI;
}

/** The one way a command gets its libvirt client: on {@link libvirtUriOf} the environment's URI. */
export function libvirtFor(runner: Runner, env: NodeJS.ProcessEnv): Libvirt {
  return new Libvirt(runner, libvirtUriOf(env));
}

export class Libvirt {
  readonly uri: string;
  readonly #runner: Runner;

  constructor(runner: Runner, uri: string) {
    this.#runner = runner;
    this.uri = uri;
  }

  #virsh(args: string[], options: { check?: boolean; timeoutMs?: number } = {}) {
    return this.#runner.run("virsh", ["-q", "-c", this.uri, ...args], { timeoutMs: 60_000, ...options });
  }

  /** Whether libvirt answers (for what only matters when it runs). */
  async reachable(): Promise<boolean> {
    return !(await this.#virsh(["version"], { check: false, timeoutMs: 20_000 })).failed;
  }

  /** Refuses (exit 3) unless libvirt answers, saying how to start it. */
  async ensureReachable(): Promise<void> {
    const result = await this.#virsh(["version"], { check: false, timeoutMs: 20_000 });
    if (!result.failed) return;
    if (result.exitCode === undefined && !result.timedOut) {
      throw new RefusedError("virsh is not installed", "apt-get install libvirt-clients libvirt-daemon-system");
    }
    throw new RefusedError(
      `libvirt is unreachable at ${this.uri}: ${result.tail.split("\n").at(-1) ?? "no answer"}`,
      "start it (sudo systemctl start libvirtd, or libvirtd -d where systemd does not run) and make sure your user is in the libvirt group (sudo adduser $USER libvirt, then log in again)",
    );
  }

  /**
   * The domain's state with libvirt's reason ("running (booted)", "shut off (destroyed)": the host
   * destroyed it, "shut off (shutdown)": the guest powered off, "shut off (crashed)"), or "gone"
   * when it does not exist.
   */
  async domainState(name: string): Promise<string> {
    const result = await this.#virsh(["domstate", "--reason", name], { check: false, timeoutMs: 20_000 });
    if (result.failed) return /not found|failed to get domain/i.test(result.stderr) ? "gone" : "";
    return result.stdout.trim();
  }

  /**
   * What the running domain does when its guest resets: `destroy` powers it off instead of
   * restarting it in place. Live only: the domain's definition keeps `restart`, so the next start
   * (and a reboot nobody told the harness of) behaves as defined. Needs QEMU's `set-action`
   * (QEMU 6.0 and later).
   */
  async setRebootAction(name: string, action: "destroy" | "restart"): Promise<void> {
    const result = await this.#virsh(["set-lifecycle-action", name, "reboot", action, "--live"], { check: false, timeoutMs: 30_000 });
    if (result.failed) {
      throw new HarnessError(
        `libvirt cannot set what ${name} does on a reset (virsh set-lifecycle-action ... reboot ${action} --live): ${result.tail.split("\n").at(-1) ?? "no answer"}; boma-it needs QEMU 6.0 or later for its reboots`,
      );
    }
  }

  /** Starts a defined domain that is off (a fresh QEMU process: a cold boot). */
  async startDomain(name: string): Promise<void> {
    await this.#virsh(["start", name], { timeoutMs: 60_000 });
  }

  /** Off at once, as pulling the plug (no shutdown), then on again: a cold boot. */
  async powerCycle(name: string): Promise<void> {
    const destroyed = await this.#virsh(["destroy", name], { check: false, timeoutMs: 60_000 });
    // Already off is as good as off.
    if (destroyed.failed && !/not running/i.test(destroyed.stderr))
      throw new HarnessError(`libvirt could not power off ${name}: ${destroyed.tail.split("\n").at(-1) ?? "no answer"}`);
    await this.startDomain(name);
  }

  /** The IPv4 address a MAC holds in a network's DHCP leases, if any. */
  async leaseOf(network: string, mac: string): Promise<string | undefined> {
    const result = await this.#virsh(["net-dhcp-leases", network, "--mac", mac], { check: false, timeoutMs: 20_000 });
    const match = /\b(\d+\.\d+\.\d+\.\d+)\/\d+/.exec(result.stdout);
    return match?.[1];
  }

  /** Names of libvirt objects of a kind. */
  async names(kind: "domain" | "network" | "pool" | "nwfilter"): Promise<string[]> {
    const command = {
      domain: ["list", "--all", "--name"],
      network: ["net-list", "--all", "--name"],
      pool: ["pool-list", "--all", "--name"],
      // nwfilter-list has no --name: its lines are "<uuid> <name>".
      nwfilter: ["nwfilter-list"],
    }[kind];
    const result = await this.#virsh(command, { check: false });
    return result.stdout
      .split("\n")
      .map((line) => (kind === "nwfilter" ? (line.trim().split(/\s+/)[1] ?? "") : line.trim()))
      .filter((line) => line !== "");
  }

  /** Volume names in a pool. */
  async volumes(pool: string): Promise<string[]> {
    const result = await this.#virsh(["vol-list", pool], { check: false });
    if (result.failed) {
      // An inactive pool lists nothing; that is fine for the sweep.
      return [];
    }
    return result.stdout
      .split("\n")
      .map((line) => line.trim().split(/\s+/)[0] ?? "")
      .filter((name) => name !== "");
  }

  /** The owner boma-it wrote into a domain's metadata (pid, and its start when recorded), if any. */
  async domainOwner(name: string): Promise<{ pid: number; start?: string } | undefined> {
    const result = await this.#virsh(["metadata", name, METADATA_NAMESPACE], { check: false });
    const pid = /\bpid="(\d+)"/.exec(result.stdout)?.[1];
    const start = /\bpidStart="([^"]+)"/.exec(result.stdout)?.[1];
    return pid === undefined ? undefined : { pid: Number(pid), ...(start !== undefined ? { start } : {}) };
  }

  /** The run dir boma-it wrote into a domain's metadata, if any. */
  async domainRunDir(name: string): Promise<string | undefined> {
    const result = await this.#virsh(["metadata", name, METADATA_NAMESPACE], { check: false });
    const runDir = /\brunDir="([^"]+)"/.exec(result.stdout)?.[1];
    return runDir === undefined ? undefined : runDir.replaceAll("&quot;", '"').replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");
  }

  /**
   * The file of a domain's one disk (not its seed's cdrom): a pool volume's path as libvirt
   * resolves it, or a file disk's. A domain with none or several is a harness fault.
   */
  async diskFile(domain: string): Promise<string> {
    const xml = await this.#virsh(["dumpxml", domain]);
    const disk = diskOfDomainXml(xml.stdout, domain);
    if ("file" in disk) return disk.file;
    return (await this.#virsh(["vol-path", disk.volume, "--pool", disk.pool])).stdout.trim();
  }

  /** Subnets (CIDR) that libvirt networks and this namespace's interfaces and routes already use. */
  /** Whether a domain of that name or UUID is defined (running or not). */
  async hasDomain(nameOrUuid: string): Promise<boolean> {
    const result = await this.#virsh(["domstate", nameOrUuid], { check: false });
    return result.exitCode === 0;
  }

  async usedSubnets(): Promise<string[]> {
    const used: string[] = [];
    const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "@" });
    for (const network of await this.names("network")) {
      const xml = await this.#virsh(["net-dumpxml", network], { check: false });
      if (xml.failed) continue;
      const parsed = parser.parse(xml.stdout) as { network?: { ip?: unknown } };
      const ips = [parsed.network?.ip].flat().filter(Boolean) as { "@address"?: string; "@netmask"?: string; "@prefix"?: string }[];
      for (const ip of ips) {
        if (!ip["@address"] || ip["@address"].includes(":")) continue;
        const prefix = ip["@prefix"] ?? (ip["@netmask"] ? String(netmaskBits(ip["@netmask"])) : "24");
        used.push(`${ip["@address"]}/${prefix}`);
      }
    }
    for (const info of await this.#interfaceAddresses()) used.push(`${info.local}/${info.prefixlen}`);
    const routes = await this.#runner.run("ip", ["-j", "-4", "route"], { check: false });
    if (!routes.failed) {
      for (const route of JSON.parse(routes.stdout || "[]") as { dst?: string }[]) {
        if (route.dst && route.dst !== "default") used.push(route.dst.includes("/") ? route.dst : `${route.dst}/32`);
      }
    }
    return used;
  }

  /** The IPv4 addresses of this host (where libvirtd runs): a test VM must reach none of them. */
  async hostAddresses(): Promise<string[]> {
    return [...new Set((await this.#interfaceAddresses()).map((info) => info.local))];
  }

  async #interfaceAddresses(): Promise<{ local: string; prefixlen: number }[]> {
    const addresses = await this.#runner.run("ip", ["-j", "-4", "addr"], { check: false });
    if (addresses.failed) return [];
    return (JSON.parse(addresses.stdout || "[]") as { addr_info?: { local: string; prefixlen: number }[] }[]).flatMap((link) => link.addr_info ?? []);
  }
}

function netmaskBits(netmask: string): number {
  return netmask
    .split(".")
    .map((part) => Number(part).toString(2).split("1").length - 1)
    .reduce((sum, bits) => sum + bits, 0);
}

/** A domain's one disk (device "disk") from its XML: a pool volume or a file. */
export function diskOfDomainXml(xml: string, domain: string): { pool: string; volume: string } | { file: string } {
  const parsed = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "@" }).parse(xml) as {
    domain?: { devices?: { disk?: unknown } };
  };
  type Disk = { "@type"?: string; "@device"?: string; source?: { "@pool"?: string; "@volume"?: string; "@file"?: string } };
  const disks = ([parsed.domain?.devices?.disk].flat().filter(Boolean) as Disk[]).filter((disk) => (disk["@device"] ?? "disk") === "disk");
  const source = disks.length === 1 ? disks[0]!.source : undefined;
  if (source?.["@pool"] && source["@volume"]) return { pool: source["@pool"], volume: source["@volume"] };
  if (source?.["@file"]) return { file: source["@file"] };
  throw new HarnessError(
    `${domain}: expected one disk (a pool volume or a file), found ${disks.length === 1 ? "one without a source" : disks.length} in its definition`,
  );
}

/**
 * A virsh command on `libvirt`'s connection through `runner`, for the saved states (reset and
 * rewind points): its stdout; `mayFail` takes a failure as it comes (no throw).
 */
export async function virshOutput(runner: Runner, libvirt: Pick<Libvirt, "uri">, args: string[], timeoutMs = 60_000, mayFail = false): Promise<string> {
  const result = await runner.run("virsh", ["-q", "-c", libvirt.uri, ...args], { timeoutMs, check: !mayFail });
  return result.stdout;
}
