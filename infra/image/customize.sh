#!/bin/sh
# mmdebstrap customize hook for the debian-13-local golden image: runs on the host with the
# root file system at "$1". Makes it boot from a label, take its config from cloud-init NoCloud
# (netplan + systemd-networkd: with ifupdown cloud-init renders eni and DHCP never happens), and
# otherwise look to a role like Debian's genericcloud image (docs/genericcloud.md).
set -eu
root="$1"

echo localhost > "$root/etc/hostname"
# As on genericcloud: the root file system, and the EFI system partition at /boot/efi.
printf 'LABEL=boma-root / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1\nLABEL=BOMA-ESP /boot/efi vfat defaults 0 0\n' > "$root/etc/fstab"
mkdir -p "$root/boot/efi"

mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat > "$root/etc/cloud/cloud.cfg.d/90-boma-it.cfg" <<'CFG'
# boma-it golden image: seeded by a NoCloud CD-ROM, nothing else to probe for.
datasource_list: [NoCloud, None]
# genericcloud's packages bring ifupdown (ifenslave, vlan): cloud-init would pick it, write
# /etc/network/interfaces and leave systemd-networkd nothing to manage, so
# systemd-networkd-wait-online sat out its 120 s on every boot. netplan with networkd, as
# genericcloud renders it.
system_info:
  network:
    renderers: [netplan, networkd]
    activators: [netplan, networkd]
CFG

# Host keys come from each run's seed (pinned by the harness); none are baked in.
rm -f "$root"/etc/ssh/ssh_host_*

# genericcloud's units: the network, resolved, sshd, timesyncd; the apt and maintenance timers
# stay enabled as their packages leave them (a role that disables them must find them).
chroot "$root" systemctl enable systemd-networkd systemd-resolved ssh systemd-timesyncd
# Caddy is there for a role to configure and enable (the example's edge site), as a host that
# installs it meets it; it does not serve Debian's placeholder page on every VM's port 80.
chroot "$root" systemctl disable caddy.service
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# Work systemd would do on the first boot of every VM (ConditionNeedsUpdate: ldconfig, the
# journal catalog, systemd-update-done), done once here instead.
chroot "$root" ldconfig
chroot "$root" journalctl --update-catalog
touch "$root/etc/.updated" "$root/var/.updated"

# Identify the image inside the guest.
printf 'boma-it golden image debian-13-local\n' > "$root/etc/boma-it-image"
