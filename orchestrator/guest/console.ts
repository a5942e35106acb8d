/**
 * Reading the serial console: its text as lines, as boots (every boot begins where the firmware
 * loads the boot loader, `BdsDxe: loading`, or, in a log without firmware lines, at the kernel's
 * first line), and what the kernel says there: its first line, how a shutdown ended, a panic.
 * The Machine (machine.ts) waits on these; nothing here touches the VM.
 */
import { open, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** The boots of a console log, oldest first, each as its lines (escapes dropped). */
export function consoleBoots(text: string): string[][] {
  const lines = consoleLines(text);
  const firmware = /BdsDxe: loading/;
  const kernel = /\bLinux version \d/;
  const marker = lines.some((line) => firmware.test(line)) ? firmware : kernel;
  const boots: string[][] = [];
  for (const line of lines) {
    if (marker.test(line) || boots.length === 0) boots.push([]);
    boots.at(-1)!.push(line);
  }
  return boots.map((boot) => {
    let end = boot.length;
    while (end > 0 && boot[end - 1]!.trim() === "") end -= 1;
    return boot.slice(0, end);
  });
}

/** The console's last lines as a message block (empty when there are none). */
export function consoleBlock(consoleLog: string, tail: readonly string[]): string {
  return tail.length > 0 ? `\nlast lines of the serial console (${consoleLog}):\n${tail.map((line) => `    ${line}`).join("\n")}` : "";
}

/** Serial console text as lines, without terminal escapes and trailing blanks. */
export function consoleLines(text: string): string[] {
  return (
    text
      // eslint-disable-next-line no-control-regex
      .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")
      .split(/\r?\n/)
      .map((line) => line.trimEnd())
  );
}

/** A guest kernel panic as the serial console shows it (timestamps and escapes dropped). */
export interface KernelPanic {
  /** "Kernel panic - not syncing: Fatal exception in interrupt" */
  panic: string;
  /** The first oops line before it, which says what went wrong ("Oops: int3: 0000 [#1] ..."). */
  oops: string | undefined;
  /**
   * Whether it came before the boot could write the disk: before the kernel ran init ("Run /init
   * as init process"), or while the root file system was still mounted read-only (the initramfs
   * mounts it `ro`; systemd remounts it read-write later, and the kernel says both). Booting
   * again is then the same boot, as far as the disk knows.
   */
  diskUntouched: boolean;
}

/**
 * A kernel line that says a file system became writable: ext4 mounted or remounted `r/w`, or a
 * file system whose mounts the kernel does not say read-only or not (taken as writable).
 */
const WRITABLE_MOUNT = /^EXT4-fs \([^)]+\): (re-)?mounted .*\br\/w\b|^(XFS|BTRFS|F2FS)\b.*\bmount/i;

/** The kernel panic in a stretch of serial console output, if there is one. */
export function findKernelPanic(consoleText: string): KernelPanic | undefined {
  const lines = consoleLines(consoleText).map((line) => line.replace(/^\[\s*\d+\.\d+\]\s*/, "").trim());
  const at = lines.findIndex((line) => line.startsWith("Kernel panic - not syncing"));
  if (at < 0) return undefined;
  return {
    panic: lines[at]!,
    oops: lines.find((line) => /^(Oops: |BUG: |kernel BUG at )/.test(line)),
    diskUntouched: !lines.slice(0, at).some((line) => /^Run \S+ as init process/.test(line)) || !lines.slice(0, at).some((line) => WRITABLE_MOUNT.test(line)),
  };
}

/** One line: the oops, then the panic. */
export function describePanic(panic: KernelPanic): string {
  return panic.oops ? `${panic.oops} → ${panic.panic}` : panic.panic;
}

/**
 * Whether a panic is QEMU TCG's text-patching race rather than anything the guest did: the kernel
 * patches code through int3 breakpoints (static keys, alternatives) and QEMU 7.2's multi-threaded
 * TCG now and then runs a stale translation that still holds the int3 after the patch is done; the
 * kernel, no longer expecting it, dies with "Oops: int3" in kernel code (seen at
 * `sched_clock_cpu`, 3 s into boot). Only meaningful under TCG.
 */
export function isTcgTextPatchRace(panic: KernelPanic): boolean {
  return panic.oops?.startsWith("Oops: int3") ?? false;
}

/** The kernel's first line of every boot, and the old system's last before a reboot. */
export const KERNEL_BANNER = /\bLinux version \d/;
export const MACHINE_RESTART = /reboot: (machine restart|Restarting system)/;

/** How the old system's shutdown ended, by the kernel's own last words on the console. */
export type ShutdownEnding = "restart" | "power-off" | "halt";

/** The kernel's last line on each way a shutdown ends (kernel/reboot.c, arch/x86/kernel/reboot.c). */
export const SHUTDOWN_ENDINGS: readonly (readonly [ShutdownEnding, RegExp])[] = [
  ["restart", /\breboot: (machine restart|Restarting system)/],
  ["power-off", /\breboot: Power down/],
  ["halt", /\breboot: System halted/],
];

/** Hands `onLines` what a console log gets from now on, every half second, until `signal` aborts. */
export async function followConsole(file: string, onLines: (lines: string[]) => void, signal: AbortSignal): Promise<void> {
  let offset = (await stat(file).catch(() => undefined))?.size ?? 0;
  while (!signal.aborted) {
    const size = (await stat(file).catch(() => undefined))?.size ?? 0;
    if (size > offset) {
      const handle = await open(file, "r");
      const buffer = Buffer.alloc(size - offset);
      try {
        await handle.read(buffer, 0, buffer.length, offset);
      } finally {
        await handle.close();
      }
      offset = size;
      onLines(consoleLines(buffer.toString("utf8")));
    }
    await sleep(500, undefined, { signal }).catch(() => undefined);
  }
}
