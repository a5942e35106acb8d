#!/bin/sh
# mmdebstrap customize hook for the debian-13-local golden image: runs on the host with the
# root file system at "$1". Makes it boot from a label, take its config from cloud-init NoCloud
# (netplan + systemd-networkd: with ifupdown cloud-init renders eni and DHCP never happens), and
# spend as little of a TCG boot as possible on things a throwaway VM does not need.
set -eu
root="$1"

echo localhost > "$root/etc/hostname"
printf 'LABEL=boma-root / ext4 defaults,errors=remount-ro 0 1\n' > "$root/etc/fstab"

mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat > "$root/etc/cloud/cloud.cfg.d/90-boma-it.cfg" <<'CFG'
# boma-it golden image: seeded by a NoCloud CD-ROM, nothing else to probe for.
datasource_list: [NoCloud, None]
CFG

# Host keys come from each run's seed (pinned by the harness); none are baked in.
rm -f "$root"/etc/ssh/ssh_host_*

chroot "$root" systemctl enable systemd-networkd systemd-resolved ssh
# Timers and jobs that only cost time in a VM that lives for minutes.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
  chroot "$root" systemctl disable "$unit" 2>/dev/null || true
done
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# Work systemd would do on the first boot of every VM (ConditionNeedsUpdate: ldconfig, the
# journal catalog, systemd-update-done), done once here instead.
chroot "$root" ldconfig
chroot "$root" journalctl --update-catalog
touch "$root/etc/.updated" "$root/var/.updated"

# Identify the image inside the guest.
printf 'boma-it golden image debian-13-local\n' > "$root/etc/boma-it-image"
