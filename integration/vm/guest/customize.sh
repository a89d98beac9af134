#!/usr/bin/env bash
# Runs on the host at the end of mmdebstrap with the guest's root as $1: makes the guest
# boot unattended into the lane's runner.
set -euo pipefail
root=$1
echo berth-lane > "$root/etc/hostname"
# sudo warns on stderr when the host name does not resolve, which fails critest's
# `sudo apparmor_parser` profile loads.
printf '127.0.0.1\tlocalhost\n127.0.1.1\tberth-lane\n::1\tlocalhost\n' > "$root/etc/hosts"
printf 'LABEL=berth-lane / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
chmod 0755 "$root/usr/local/sbin/berth-lane"
chroot "$root" passwd -d root >/dev/null
chroot "$root" systemctl enable berth-lane.service systemd-networkd.service >/dev/null 2>&1
# Nothing the lane does not need runs at boot: no timers, no apt jobs, no getty on the
# console the runner writes to.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  fstrim.timer getty@tty1.service serial-getty@ttyS0.service docker-registry.service; do
  chroot "$root" systemctl mask "$unit" >/dev/null 2>&1 || true
done
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
