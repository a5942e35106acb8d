/**
 * Hardware virtualisation or software emulation. KVM only where /dev/kvm can be opened for
 * reading and writing and the CPU shows vmx or svm; on a paravirtualised nested /dev/kvm (this
 * project's CI machine) an ordinary guest kernel hangs at "Booting from ROM", so TCG it is.
 */
import { constants } from "node:fs";
import { access, readFile } from "node:fs/promises";
import type { Accel } from "./spec.ts";

/** What accel detection looked at. */
export interface AccelProbe {
  /** /dev/kvm exists and this process may open it read-write. */
  kvmDeviceUsable: boolean;
  /** /proc/cpuinfo has a vmx (Intel) or svm (AMD) flag. */
  cpuHasVirtualisation: boolean;
}

/** The chosen accel and, in one line, why. */
export interface AccelDecision {
  accel: Accel;
  reason: string;
}

/** Reads the machine. */
export async function probeAccel(kvmDevice = "/dev/kvm", cpuinfo = "/proc/cpuinfo"): Promise<AccelProbe> {
  let kvmDeviceUsable: boolean;
  try {
    await access(kvmDevice, constants.R_OK | constants.W_OK);
    kvmDeviceUsable = true;
  } catch {
    kvmDeviceUsable = false;
  }
  let cpuHasVirtualisation: boolean;
  try {
    cpuHasVirtualisation = /^flags\s*:.*\b(vmx|svm)\b/m.test(await readFile(cpuinfo, "utf8"));
  } catch {
    cpuHasVirtualisation = false;
  }
  return { kvmDeviceUsable, cpuHasVirtualisation };
}

/** Decides the accel for `--accel auto|kvm|tcg`; an explicit choice is honoured as asked. */
export function decideAccel(choice: "auto" | Accel, probe: AccelProbe): AccelDecision {
  if (choice === "tcg") return { accel: "tcg", reason: "asked for with --accel tcg (software emulation, slow)" };
  if (choice === "kvm") {
    const caveat = probe.kvmDeviceUsable && probe.cpuHasVirtualisation ? "" : " although detection does not find it usable";
    return { accel: "kvm", reason: `asked for with --accel kvm${caveat}` };
  }
  if (probe.kvmDeviceUsable && probe.cpuHasVirtualisation) {
    return { accel: "kvm", reason: "/dev/kvm is usable and the CPU has vmx/svm" };
  }
  const why = !probe.kvmDeviceUsable ? "/dev/kvm is missing or not accessible" : "the CPU shows no vmx/svm flag (nested or paravirtualised /dev/kvm)";
  return { accel: "tcg", reason: `${why}: using TCG software emulation (boots take minutes)` };
}
