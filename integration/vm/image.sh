#!/usr/bin/env bash
# Builds the VM lane's guest image from Debian's packages: a Debian 12 (bookworm) minbase
# system with systemd as PID 1, cgroup v2 and AppArmor, the packages in packages.txt and
# the lane's runner (guest/). Prints the directory holding disk.img, vmlinuz and
# initrd.img. The image is cached under $BERTH_VM_CACHE (default target/vm) keyed by the
# package list and the guest files, so a second run reuses it. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$(realpath -m "${BERTH_VM_CACHE:-$here/../../target/vm}")
key=$(cat "$here/packages.txt" "$here/image.sh" "$here"/guest/* | sha256sum | cut -c1-16)
out="$cache/image-$key"
if [ -f "$out/disk.img" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
  echo "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "image.sh: run as root (mmdebstrap, mkfs)" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "image.sh: $tool missing (apt-get install mmdebstrap e2fsprogs)" >&2; exit 1; }
done
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
packages=$(grep -v '^\s*#' "$here/packages.txt" | grep -v '^\s*$' | paste -sd, -)
echo "image.sh: building the guest image ($packages)" >&2
start=$(date +%s)
mmdebstrap --variant=minbase --include="$packages" \
  --customize-hook="cp '$here/guest/berth-lane' \"\$1/usr/local/sbin/berth-lane\"" \
  --customize-hook="cp '$here/guest/berth-lane.service' \"\$1/etc/systemd/system/\"" \
  --customize-hook="cp '$here/guest/lane.network' \"\$1/etc/systemd/network/\"" \
  --customize-hook="$here/guest/customize.sh \"\$1\"" \
  bookworm "$work/rootfs" >&2
cp "$work"/rootfs/boot/vmlinuz-* "$work/vmlinuz"
cp "$work"/rootfs/boot/initrd.img-* "$work/initrd.img"
# Room for images, layers and containers the tests make; the disk is sparse.
mkfs.ext4 -q -F -L berth-lane -d "$work/rootfs" "$work/disk.img" 6G
rm -rf "$work/rootfs"
mkdir -p "$out"
mv "$work/disk.img" "$work/vmlinuz" "$work/initrd.img" "$out/"
echo "image.sh: built $out in $(( $(date +%s) - start )) s" >&2
echo "$out"
