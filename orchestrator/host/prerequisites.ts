/**
 * Prerequisites of the harness, each with the fix: the tools it runs, the UEFI firmware,
 * libvirt, disk space, the pulumi engine, the accel and the golden images. `doctor` shows them all.
 */
import { access, constants, readFile, statfs } from "node:fs/promises";
import { join } from "node:path";
import { decideAccel, probeAccel } from "../../infra/accel.ts";
import type { Accel } from "../../infra/spec.ts";
import { listImages } from "../../infra/image/images.ts";
import { messageOf } from "../../infra/errors.ts";
import type { Runner } from "../../infra/runner.ts";
import { pulumiEngine } from "./engine-choice.ts";
import { RefusedError } from "../errors.ts";
import { Libvirt } from "./libvirt.ts";

/** One prerequisite and what to do about it. */
export interface PrerequisiteCheck {
  name: string;
  ok: boolean;
  /** A missing required prerequisite stops runs; an optional one only some commands. */
  required: boolean;
  detail: string;
  /** The Debian package or command that fixes it. */
  fix?: string;
}

/** Programs the harness runs, the Debian package that brings each, and whether every run needs it. */
export const TOOLS: readonly { program: string; pkg: string; required: boolean; for: string }[] = [
  { program: "virsh", pkg: "libvirt-clients", required: true, for: "libvirt" },
  { program: "qemu-system-x86_64", pkg: "qemu-system-x86", required: true, for: "running VMs" },
  { program: "qemu-img", pkg: "qemu-utils", required: true, for: "disk images" },
  { program: "genisoimage", pkg: "genisoimage", required: true, for: "the cloud-init seed ISO" },
  { program: "ssh", pkg: "openssh-client", required: true, for: "reaching the VM" },
  { program: "ssh-keygen", pkg: "openssh-client", required: true, for: "per-run keys" },
  { program: "ip", pkg: "iproute2", required: true, for: "picking a free subnet" },
  { program: "ansible-playbook", pkg: "ansible-core", required: true, for: "applying the profile" },
  { program: "bwrap", pkg: "bubblewrap", required: true, for: "the jail Ansible's controller side runs in" },
  { program: "nft", pkg: "nftables", required: true, for: "the VM's egress allowlist (its filter)" },
  { program: "rsync", pkg: "rsync", required: false, for: "a repo's synchronize tasks (rsync runs on both ends)" },
  { program: "mmdebstrap", pkg: "mmdebstrap", required: false, for: "image build" },
  { program: "mkfs.ext4", pkg: "e2fsprogs", required: false, for: "image build" },
  { program: "grub-mkstandalone", pkg: "grub-efi-amd64-bin", required: false, for: "image build" },
  { program: "mkfs.vfat", pkg: "dosfstools", required: false, for: "image build" },
  { program: "mcopy", pkg: "mtools", required: false, for: "image build" },
  { program: "sfdisk", pkg: "fdisk", required: false, for: "image build" },
];

/**
 * Programs libvirtd itself runs (as root, with its own PATH): they must be installed, wherever
 * the user's PATH points. The NAT network needs dnsmasq; the isolation filter iptables/ebtables;
 * every domain's log virtlogd.
 */
export const DAEMON_TOOLS: readonly { program: string; pkg: string; for: string }[] = [
  { program: "libvirtd", pkg: "libvirt-daemon-system", for: "libvirt itself" },
  { program: "virtlogd", pkg: "libvirt-daemon-system", for: "each VM's log" },
  { program: "dnsmasq", pkg: "dnsmasq-base", for: "DHCP and DNS on the test network" },
  { program: "iptables", pkg: "iptables", for: "the test network's NAT and isolation filter" },
  { program: "ebtables", pkg: "iptables", for: "the per-run isolation filter" },
];

/** Where Debian installs administrator programs, off a non-root user's default PATH. */
export const SYSTEM_PROGRAM_DIRS: readonly string[] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/** Where virtlogd listens when it runs (systemd's socket, or `virtlogd -d`). */
const VIRTLOGD_SOCKET = "/run/libvirt/virtlogd-sock";

/** UEFI firmware files libvirt can use (Debian's ovmf package). `$BOMA_IT_OVMF_FILES` overrides. */
export function ovmfCandidates(env: NodeJS.ProcessEnv): string[] {
  return (env.BOMA_IT_OVMF_FILES ?? "/usr/share/OVMF/OVMF_CODE_4M.fd:/usr/share/OVMF/OVMF_CODE.fd").split(":").filter(Boolean);
}

/** Checks every prerequisite. */
export async function checkPrerequisites(
  runner: Runner,
  env: NodeJS.ProcessEnv,
  places: { imageDir: string; runsDir: string; libvirtUri: string; stacksDir: string; accel?: "auto" | Accel },
): Promise<PrerequisiteCheck[]> {
  const checks: PrerequisiteCheck[] = [];
  for (const tool of TOOLS) {
    const path = await runner.which(tool.program);
    if (path) {
      checks.push({ name: tool.program, ok: true, required: tool.required, detail: path });
      continue;
    }
    const installed = await systemProgram(tool.program);
    checks.push({
      name: tool.program,
      ok: false,
      required: tool.required,
      detail: installed
        ? `installed at ${installed} but ${installed.replace(/\/[^/]+$/, "")} is not on PATH (needed for ${tool.for})`
        : `not found on PATH (needed for ${tool.for})`,
      fix: installed
        ? `add it to PATH: export PATH="$PATH:${installed.replace(/\/[^/]+$/, "")}"${tool.for === "image build" ? " (or run image build with sudo, whose PATH has it)" : ""}`
        : `apt-get install ${tool.pkg}`,
    });
  }
  for (const tool of DAEMON_TOOLS) {
    const installed = (await runner.which(tool.program)) ?? (await systemProgram(tool.program));
    checks.push({
      name: tool.program,
      ok: installed !== undefined,
      required: true,
      detail: installed ?? `not installed (libvirtd runs it for ${tool.for})`,
      ...(installed ? {} : { fix: `apt-get install ${tool.pkg}` }),
    });
  }
  const virtlogdRuns = await exists(VIRTLOGD_SOCKET);
  checks.push({
    name: "virtlogd running",
    ok: virtlogdRuns,
    required: true,
    detail: virtlogdRuns ? `listens at ${VIRTLOGD_SOCKET}` : `nothing listens at ${VIRTLOGD_SOCKET}: libvirt cannot start a VM without it`,
    ...(virtlogdRuns ? {} : { fix: "sudo systemctl enable --now virtlogd.socket (without systemd: sudo virtlogd -d)" }),
  });
  const membership = await libvirtGroupCheck(places.libvirtUri);
  if (membership) checks.push(membership);

  let firmware: string | undefined;
  for (const candidate of ovmfCandidates(env)) {
    if (await exists(candidate)) {
      firmware = candidate;
      break;
    }
  }
  checks.push({
    name: "OVMF UEFI firmware",
    ok: firmware !== undefined,
    required: true,
    detail: firmware ?? `none of ${ovmfCandidates(env).join(", ")} exists (Debian 13 cloud images do not boot with BIOS)`,
    ...(firmware ? {} : { fix: "apt-get install ovmf" }),
  });

  if (await runner.which("virsh")) {
    const libvirt = new Libvirt(runner, places.libvirtUri);
    try {
      await libvirt.ensureReachable();
      checks.push({ name: "libvirtd answers", ok: true, required: true, detail: `answers at ${places.libvirtUri}` });
    } catch (error) {
      const [message, fix] = (error as Error).message.split("\n  fix: ");
      checks.push({ name: "libvirtd answers", ok: false, required: true, detail: message ?? "", ...(fix ? { fix } : {}) });
    }
  }

  for (const [name, path, needGiB] of [
    ["disk space for golden images", places.imageDir, 5],
    ["disk space for runs", places.runsDir, 1],
    ["disk space for VM overlays", "/var/lib/libvirt/images", 5],
  ] as const) {
    const free = await freeGiB(path);
    checks.push({
      name,
      ok: free === undefined || free >= needGiB,
      required: true,
      detail: free === undefined ? `${path} does not exist yet` : `${free.toFixed(1)} GiB free at ${path} (want ${needGiB})`,
      ...(free !== undefined && free < needGiB ? { fix: `free space on the file system of ${path}` } : {}),
    });
  }

  checks.push(await pulumiEngineCheck(runner, places.stacksDir));

  const probe = await probeAccel();
  const accel = decideAccel(places.accel ?? "auto", probe);
  const kvmUnusable = accel.accel === "kvm" && !(probe.kvmDeviceUsable && probe.cpuHasVirtualisation);
  checks.push({
    name: "accel",
    ok: !kvmUnusable,
    required: places.accel === "kvm",
    detail: `${accel.accel}: ${accel.reason}`,
    ...(kvmUnusable ? { fix: "use --accel auto or tcg here, or enable virtualisation (VT-x/AMD-V) for this machine" } : {}),
  });

  for (const image of await listImages(places.imageDir)) {
    checks.push({
      name: `golden image ${image.name}`,
      ok: image.present,
      required: false,
      detail: image.present ? image.path : "not built or pulled yet (made on first use of `image build`/`image pull`)",
      ...(image.present ? {} : { fix: image.name === "debian-13-local" ? "sudo npm run boma-it -- image build" : "npm run boma-it -- image pull" }),
    });
  }
  return checks;
}

/** The pulumi engine is optional: without it runs use the direct engine. */
async function pulumiEngineCheck(runner: Runner, stacksDir: string): Promise<PrerequisiteCheck> {
  const cli = await runner.which("pulumi");
  const name = "pulumi engine";
  const fix = 'install the CLI and its command plugin: README, "The pulumi engine"';
  if (!cli) return { name, ok: false, required: false, detail: "no pulumi CLI on PATH: runs use the direct engine", fix };
  try {
    return { name, ok: true, required: false, detail: await (await pulumiEngine(runner, stacksDir, cli)).ensureUsable() };
  } catch (error) {
    return { name, ok: false, required: false, detail: `${messageOf(error).split("\n")[0]} (--engine auto would fail: use --engine direct)`, fix };
  }
}

/** An administrator program installed off PATH (a Debian user's PATH has no sbin). */
async function systemProgram(program: string): Promise<string | undefined> {
  for (const dir of SYSTEM_PROGRAM_DIRS) {
    const candidate = join(dir, program);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/**
 * A user other than root reaches `qemu:///system` through the libvirt group; a user added to it
 * has it only from the next login on. Root, and other URIs, need nothing.
 */
async function libvirtGroupCheck(libvirtUri: string, groupFile = "/etc/group"): Promise<PrerequisiteCheck | undefined> {
  if (process.getuid?.() === 0 || libvirtUri !== "qemu:///system") return undefined;
  const name = "libvirt group";
  const user = process.env.USER ?? process.env.LOGNAME ?? "";
  let entry: string[] | undefined;
  try {
    entry = (await readFile(groupFile, "utf8"))
      .split("\n")
      .map((line) => line.split(":"))
      .find((fields) => fields[0] === "libvirt");
  } catch {
    entry = undefined;
  }
  if (!entry) {
    return {
      name,
      ok: false,
      required: true,
      detail: "there is no libvirt group (is libvirt-daemon-system installed?)",
      fix: "apt-get install libvirt-daemon-system",
    };
  }
  const gid = Number(entry[2]);
  if (process.getgroups?.().includes(gid)) return { name, ok: true, required: true, detail: `this login is in group libvirt (${gid})` };
  const listed = (entry[3] ?? "").split(",").includes(user);
  return {
    name,
    ok: false,
    required: true,
    detail: listed
      ? `${user} is in group libvirt, but this login started before that: libvirt refuses it until the next login`
      : `${user || "this user"} is not in group libvirt, so qemu:///system refuses it`,
    fix: listed ? "log in again (or start a shell with `newgrp libvirt`)" : `sudo adduser ${user || "$USER"} libvirt, then log in again`,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Where libvirt keeps the VMs' overlays (a run's pool is a folder of it). */
export const OVERLAY_DIR = "/var/lib/libvirt/images";

/** Free GiB of the file system a path lives (or will live) on; undefined when it cannot be told. */
export async function freeGiB(path: string): Promise<number | undefined> {
  let current = path;
  // The nearest existing ancestor tells which file system the path will live on.
  for (;;) {
    try {
      const stats = await statfs(current);
      return (stats.bavail * stats.bsize) / 1024 ** 3;
    } catch {
      const parent = current.replace(/\/[^/]*$/, "") || "/";
      if (parent === current) return undefined;
      current = parent;
    }
  }
}

/** Free RAM in MiB as the kernel estimates it for new work (MemAvailable). */
export async function availableRamMiB(meminfo = "/proc/meminfo"): Promise<number> {
  const match = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile(meminfo, "utf8"));
  if (!match) throw new Error(`${meminfo} has no MemAvailable line`);
  return Math.floor(Number(match[1]) / 1024);
}

/** Headroom above the VM's own memory that the host keeps (QEMU overhead, page cache). */
export const RAM_MARGIN_MIB = 1024;

/**
 * The resource guard before provisioning (ADR-025): one test VM at a time (a run's own VMs
 * aside), and enough free RAM: the VM's memory plus a margin, or `--min-free-ram`, and the memory
 * of each further VM the run would like to run at the same time. Each refusal says what is in
 * the way. Returns how many of the `vms` wanted at once the RAM holds (at least one).
 */
export async function guardResources(
  libvirt: Libvirt,
  options: { vmMemoryMiB: number; minFreeRamMiB: number | undefined; vms?: number; meminfo?: string; overlayDir?: string },
): Promise<number> {
  const running = [];
  for (const name of await libvirt.names("domain")) {
    if (name.startsWith("boma-it-") && (await libvirt.domainState(name)).startsWith("running")) running.push(name);
  }
  if (running.length > 0) {
    throw new RefusedError(
      `another test VM is running (${running.join(", ")}): boma-it runs one at a time`,
      "see `npm run boma-it -- status`; remove it with `npm run boma-it -- down <run>`",
    );
  }
  const needed = ramNeededMiB(options, 1);
  const available = await availableRamMiB(options.meminfo);
  if (available < needed) {
    throw new RefusedError(
      `only ${available} MiB of RAM is free; this run needs ${needed} MiB (${options.minFreeRamMiB ? "--min-free-ram" : `the VM's ${options.vmMemoryMiB} MiB + ${RAM_MARGIN_MIB} MiB`})`,
      "stop other VMs or heavy jobs (see `npm run boma-it -- status`), or lower vm.memoryMiB in the profile",
    );
  }
  const overlayDir = options.overlayDir ?? OVERLAY_DIR;
  const freeDisk = await freeGiB(overlayDir);
  if (freeDisk !== undefined && freeDisk < MIN_FREE_DISK_GIB) {
    throw new RefusedError(
      `only ${freeDisk.toFixed(1)} GiB of disk is free at ${overlayDir}; a run needs ${MIN_FREE_DISK_GIB} GiB for its overlay`,
      "free space there, or remove leftovers with `npm run reap`",
    );
  }
  let atOnce = 1;
  const fits = (vms: number) => available >= ramNeededMiB(options, vms) && (freeDisk === undefined || freeDisk >= vms * MIN_FREE_DISK_GIB);
  while (atOnce < (options.vms ?? 1) && fits(atOnce + 1)) atOnce += 1;
  return atOnce;
}

/**
 * How many VMs at once the host's cores hold: under software emulation (TCG) each VM's vCPUs
 * need cores of their own, or every guest slows down as a whole. Measured on 2 cores
 * (2026-12-03): two 2-vCPU guests side by side each took twice as long to their DHCP lease, and
 * both then stalled in their boot with the host idle. Under KVM the cores are not the limit.
 */
export function vmsTheCoresHold(accel: "kvm" | "tcg", cores: number, vcpusPerVm: number, wanted: number): number {
  if (accel === "kvm") return wanted;
  return Math.max(1, Math.min(wanted, Math.floor(cores / Math.max(1, vcpusPerVm))));
}

/**
 * Under software emulation, the vCPUs each of `wanted` VMs gets so that they all run side by side
 * on `cores`: fewer than the profile's `vcpusPerVm`, one core each at least; undefined when the
 * profile's already fit (or under KVM, where the cores are not the limit) and when even one
 * each does not (one at a time then). Measured on 2 cores (2026-12-05, machine D, askari
 * RED→GREEN, every VM booted): two 1-vCPU guests side by side took 822 s, where one 2-vCPU guest
 * after the other took ~1350 s (2026-12-04): a second vCPU speeds a guest's boot, hardly its
 * apply (one Python process at a time), and two guests overlap all of their work.
 */
export function vcpusSideBySide(accel: "kvm" | "tcg", cores: number, vcpusPerVm: number, wanted: number): number | undefined {
  if (accel === "kvm" || wanted < 2) return undefined;
  const each = Math.floor(cores / wanted);
  return each >= 1 && each < vcpusPerVm ? each : undefined;
}

/** What each further VM at once needs beyond its memory: its QEMU (TCG's code buffer included) and its apply's processes. */
export const RAM_PER_EXTRA_VM_MIB = 512;

/**
 * Free RAM that `vms` VMs at once need: the first's memory and the margin (or `--min-free-ram`),
 * then each further one's memory and {@link RAM_PER_EXTRA_VM_MIB}.
 */
export function ramNeededMiB(options: { vmMemoryMiB: number; minFreeRamMiB: number | undefined }, vms: number): number {
  return topologyRamNeededMiB(
    Array.from({ length: vms }, () => options.vmMemoryMiB),
    options.minFreeRamMiB,
  );
}

/**
 * Free RAM a topology's VMs at once need, given each VM's memory in order: the first's and the
 * margin (or `--min-free-ram`), then each further one's and {@link RAM_PER_EXTRA_VM_MIB}; the
 * VMs of one size need what {@link ramNeededMiB} says.
 */
export function topologyRamNeededMiB(memories: readonly number[], minFreeRamMiB: number | undefined): number {
  const [first = 0, ...others] = memories;
  return (minFreeRamMiB ?? first + RAM_MARGIN_MIB) + others.reduce((sum, memory) => sum + memory + RAM_PER_EXTRA_VM_MIB, 0);
}

/** Disk a run's overlay may grow into (an apply with Docker images writes a few GiB). */
export const MIN_FREE_DISK_GIB = 5;
