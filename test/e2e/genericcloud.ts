/**
 * What a role sees on Debian's genericcloud image that the test VM must show too (see
 * docs/genericcloud.md): each fact a shell probe run as root inside a real VM, exit 0 when it holds.
 */

import assert from "node:assert/strict";
import { cli } from "./helpers.ts";

/** One fact of genericcloud and the probe that shows it. */
export interface GuestFact {
  name: string;
  probe: string;
}

const ENABLED_UNITS = [
  "ssh.service",
  "systemd-networkd.service",
  "systemd-resolved.service",
  "systemd-timesyncd.service",
  "unattended-upgrades.service",
  "apt-daily.timer",
  "apt-daily-upgrade.timer",
  "fstrim.timer",
  "e2scrub_all.timer",
];

const PACKAGES = [
  "openssh-server",
  "cloud-init",
  "cloud-guest-utils",
  "sudo",
  "unattended-upgrades",
  "apparmor",
  "systemd-timesyncd",
  "python3-apt",
  "iptables",
  "less",
  "vim-tiny",
  "netplan.io",
  "linux-image-cloud-amd64",
];

export const GENERICCLOUD_FACTS: readonly GuestFact[] = [
  {
    name: "host keys rsa, ecdsa, ed25519",
    probe: "for t in rsa ecdsa ed25519; do test -s /etc/ssh/ssh_host_${t}_key && test -s /etc/ssh/ssh_host_${t}_key.pub || exit 1; done",
  },
  { name: "root is ext4", probe: 'test "$(findmnt -n -o FSTYPE /)" = ext4' },
  {
    name: "the ESP is mounted at /boot/efi (vfat), from /etc/fstab",
    probe: "test \"$(findmnt -n -o FSTYPE /boot/efi)\" = vfat && grep -Eq '^[^#]+[[:space:]]/boot/efi[[:space:]]+vfat' /etc/fstab",
  },
  { name: "the cloud kernel flavour", probe: "uname -r | grep -q -- '-cloud-amd64$'" },
  { name: "Debian 13 in /etc/os-release", probe: '. /etc/os-release && test "$ID" = debian && test "$VERSION_ID" = 13' },
  {
    name: `enabled: ${ENABLED_UNITS.join(", ")}`,
    probe: `for u in ${ENABLED_UNITS.join(" ")}; do systemctl is-enabled -q "$u" || { echo "$u is $(systemctl is-enabled "$u")"; exit 1; }; done`,
  },
  { name: "active: ssh, systemd-timesyncd", probe: "systemctl is-active -q ssh.service && systemctl is-active -q systemd-timesyncd.service" },
  { name: "AppArmor is enabled", probe: 'test "$(cat /sys/module/apparmor/parameters/enabled)" = Y' },
  {
    name: `packages: ${PACKAGES.join(", ")}`,
    probe: `for p in ${PACKAGES.join(" ")}; do dpkg-query -W -f='\${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || { echo "$p is missing"; exit 1; }; done`,
  },
  { name: "python3 modules Ansible's modules use: apt, apt_pkg, yaml, json", probe: "python3 -c 'import apt, apt_pkg, yaml, json'" },
  {
    name: "locale C.UTF-8 and time zone UTC, as cloud-init leaves them",
    probe: "grep -qx 'LANG=C.UTF-8' /etc/default/locale && test \"$(readlink /etc/localtime)\" = /usr/share/zoneinfo/Etc/UTC",
  },
  { name: "passwordless sudo for the login account", probe: 'sudo -n -u "$SUDO_USER" sudo -n true' },
];

/** A script that runs every probe and prints one line per fact: `ok<TAB>name` or `FAIL<TAB>name<TAB>output`. */
export function factsScript(facts: readonly GuestFact[] = GENERICCLOUD_FACTS): string {
  return facts
    .map(
      (fact) =>
        `out=$( (${fact.probe}) 2>&1 ) && printf 'ok\\t%s\\n' ${JSON.stringify(fact.name)} || printf 'FAIL\\t%s\\t%s\\n' ${JSON.stringify(fact.name)} "$(printf %s "$out" | tr '\\n' ' ')"`,
    )
    .join("\n");
}

/** Runs every fact's probe on the live run `runId` (through `boma-it ssh`) and asserts that each holds. */
export async function assertGenericcloudFacts(runId: string, env: Record<string, string>): Promise<void> {
  // The script goes as base64: `boma-it ssh` passes its words to the remote shell as ssh does.
  const facts = await cli(["ssh", runId, "--", `echo ${Buffer.from(factsScript()).toString("base64")} | base64 -d | sudo sh`], env);
  assert.equal(facts.code, 0, facts.stderr);
  const failing = facts.stdout.split("\n").filter((line) => line.startsWith("FAIL"));
  assert.deepEqual(failing, [], "what a role sees on genericcloud holds on the VM");
  assert.ok(facts.stdout.split("\n").filter((line) => line.startsWith("ok\t")).length >= 10, facts.stdout);
}
