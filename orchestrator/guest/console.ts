/**
 * The serial console log of a run, read as boots: every boot begins where the firmware loads the
 * boot loader (`BdsDxe: loading`), or, in a log without firmware lines, at the kernel's first line.
 */
import { consoleLines } from "./machine.ts";

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
