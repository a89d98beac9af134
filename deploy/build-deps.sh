#!/usr/bin/env bash
# Installs what building berth needs on a fresh Debian machine: libseccomp-dev, which
# berth-shim links for container seccomp filters; busybox-static, from which the runtime's
# root tests build a rootfs. (No protoc: berth-proto parses the CRI proto with protox.)
# Extra package names may be passed as arguments.
set -euo pipefail
packages=(libseccomp-dev busybox-static "$@")
missing() {
  local p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
# Twice: installing one package can remove another that was asked for (a machine with
# backports' qemu-utils loses it to Debian's qemu-system-x86); the second round puts it
# back in the version that fits.
for round in 1 2; do
  mapfile -t need < <(missing)
  [ "${#need[@]}" -gt 0 ] || exit 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
  [ "$round" = 1 ] && apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
done
mapfile -t need < <(missing)
if [ "${#need[@]}" -gt 0 ]; then
  echo "build-deps.sh: still missing after installing: ${need[*]}" >&2
  exit 1
fi
