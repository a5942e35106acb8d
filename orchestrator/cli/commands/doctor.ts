/** `boma-it doctor`: every prerequisite, each with the fix. */
import type { CommandDefinition } from "../command.ts";
import { ACCELS, expectPositionals, oneOf } from "../options.ts";
import { ExitCode } from "../../errors.ts";
import { imageDir, stacksDir } from "../../host/paths.ts";
import { checkPrerequisites } from "../../host/prerequisites.ts";
import { libvirtUriOf } from "../../host/libvirt.ts";

export const doctorCommand: CommandDefinition = {
  name: "doctor",
  summary: "check prerequisites, each with the fix",
  usage: "doctor [--json]",
  details: `Checks the programs the harness runs and those libvirtd runs (dnsmasq, iptables,
ebtables, virtlogd), the OVMF UEFI firmware, that virtlogd and libvirtd answer, the libvirt
group (for a user other than root), disk space, the accel (--accel kvm: that KVM is usable) and
the golden images. Exit 0 when every required one is there, 3 otherwise; each missing one names
the Debian package or command that fixes it, and a program installed off PATH says so.`,
  options: {},
  async run({ args, runner, env, runsDir }) {
    expectPositionals("doctor", args.positionals, 0, 0, "no arguments");
    const checks = await checkPrerequisites(runner, env, {
      imageDir: imageDir(env),
      runsDir,
      libvirtUri: libvirtUriOf(env),
      stacksDir: stacksDir(env),
      accel: oneOf("accel", args.values.accel, ACCELS),
    });
    const missing = checks.filter((check) => check.required && !check.ok);
    const width = Math.max(...checks.map((check) => check.name.length));
    const text = [
      ...checks.map(
        (check) =>
          `${check.ok ? "ok  " : check.required ? "MISS" : "opt "} ${check.name.padEnd(width)}  ${check.detail}${check.fix ? `\n     ${" ".repeat(width)}  fix: ${check.fix}` : ""}`,
      ),
      missing.length === 0 ? "all required prerequisites are there" : `${missing.length} required prerequisite(s) missing`,
    ].join("\n");
    return { exitCode: missing.length === 0 ? ExitCode.pass : ExitCode.refused, json: { ok: missing.length === 0, checks }, text };
  },
};
