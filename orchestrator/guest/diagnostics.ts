/**
 * Diagnostics on failure (ADR-025): the one module that knows what to collect. It collects what
 * it can, each item in its own try, writes an index of what it got and what it could not, and
 * never masks the failure that called it. When the VM does not answer, it still gets the serial
 * console and the journal read from the VM's disk.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { StackOutputs } from "../../infra/plan.ts";
import type { Runner } from "../../infra/runner.ts";
import type { Libvirt } from "../host/libvirt.ts";
import type { Machine } from "./machine.ts";

/** What the bundle holds from inside a reachable VM: file name → command (run as root). */
export const GUEST_DIAGNOSTICS: Readonly<Record<string, string>> = {
  "nft-ruleset.txt": "nft list ruleset",
  "docker-ps.txt": "docker ps -a",
  "ss-tlnp.txt": "ss -tlnp",
  "journal.txt": "journalctl -b --no-pager",
  "critical-chain.txt": "systemd-analyze critical-chain --no-pager",
  "failed-units.txt": "systemctl list-units --failed --no-pager",
  "cloud-init.log": "cat /var/log/cloud-init.log",
  "cloud-init-output.log": "cat /var/log/cloud-init-output.log",
  "ip-addr.txt": "ip addr; ip route",
};

/** One item of the bundle. */
export interface DiagnosticItem {
  file: string;
  ok: boolean;
  detail: string;
}

/** Everything the collector needs. */
export interface DiagnosticsInput {
  dir: string;
  machine: Machine;
  outputs: StackOutputs;
  runner: Runner;
  libvirt: Libvirt;
  /** Why we are collecting (first line of the index). */
  reason: string;
}

/** Collects the bundle into `dir`; returns what it got. Never throws. */
export async function collectDiagnostics(input: DiagnosticsInput): Promise<DiagnosticItem[]> {
  const items: DiagnosticItem[] = [];
  const attempt = async (file: string, body: () => Promise<string>) => {
    try {
      await writeFile(join(input.dir, file), await body());
      items.push({ file, ok: true, detail: "" });
    } catch (error) {
      items.push({ file, ok: false, detail: (error as Error).message.split("\n")[0] ?? "" });
    }
  };
  await mkdir(input.dir, { recursive: true });

  const probe = await input.machine.execute("true", { timeoutMs: 30_000 }).catch(() => undefined);
  const reachable = probe?.exitCode === 0;
  if (reachable) {
    for (const [file, command] of Object.entries(GUEST_DIAGNOSTICS)) {
      await attempt(file, async () => {
        const result = await input.machine.execute(command, { timeoutMs: 120_000 });
        if (result.exitCode !== 0 && result.stdout.trim() === "") throw new Error(`\`${command}\` exited with ${result.exitCode}: ${result.stderr.trim()}`);
        return result.stdout;
      });
    }
  } else {
    items.push({ file: "(guest commands)", ok: false, detail: "the VM does not answer over SSH; the journal below is read from its disk" });
    await attempt("journal-from-disk.txt", () => journalFromDisk(input));
  }
  await attempt("domain.xml", async () => (await input.runner.run("virsh", ["-q", "-c", input.libvirt.uri, "dumpxml", input.outputs.domain])).stdout);
  await attempt("console.log", () => readFile(input.outputs.consoleLog, "utf8"));

  const index = [
    `diagnostics of ${input.outputs.runId} (${input.outputs.host} at ${input.outputs.ip})`,
    `why: ${input.reason}`,
    "",
    ...items.map((item) => `${item.ok ? "ok    " : "MISSED"} ${item.file}${item.detail ? `: ${item.detail}` : ""}`),
  ].join("\n");
  await writeFile(join(input.dir, "INDEX.txt"), `${index}\n`);
  return items;
}

/**
 * Reads the guest's journal from its overlay disk without booting it and without loop devices:
 * the overlay (with its backing chain) is flattened to a sparse raw file, the root partition's
 * journal is copied out with debugfs, and journalctl reads that copy.
 */
async function journalFromDisk(input: DiagnosticsInput): Promise<string> {
  const { runner, libvirt, outputs } = input;
  const overlay = await libvirt.diskFile(outputs.domain);
  const work = await mkdtemp(join(input.dir, ".disk-"));
  try {
    const raw = join(work, "disk.raw");
    await runner.run("qemu-img", ["convert", "-U", "-O", "raw", overlay, raw], { timeoutMs: 15 * 60_000 });
    const table = JSON.parse((await runner.run("sfdisk", ["-J", raw])).stdout) as {
      partitiontable: { sectorsize?: number; partitions: { start: number; type: string }[] };
    };
    const sector = table.partitiontable.sectorsize ?? 512;
    const root = table.partitiontable.partitions.at(-1);
    if (!root) throw new Error("no partitions on the disk");
    const journal = join(work, "journal");
    await runner.run("debugfs", ["-R", `rdump /var/log/journal ${work}`, `${raw}?offset=${root.start * sector}`]);
    const text = await runner.run("journalctl", ["--directory", journal, "-b", "--no-pager"], { check: false, timeoutMs: 120_000 });
    if (text.stdout.trim() === "") throw new Error(`journalctl read nothing from the disk: ${text.stderr.trim()}`);
    return text.stdout;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
