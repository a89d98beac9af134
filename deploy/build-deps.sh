#!/usr/bin/env bash
# Installs what building berth needs on a fresh Debian machine: libseccomp-dev, which
# berth-shim links for container seccomp filters; busybox-static, from which the runtime's
# root tests build a rootfs. (No protoc: berth-proto parses the CRI proto with protox.)
# Extra package names may be passed as arguments.
set -euo pipefail
packages=(libseccomp-dev busybox-static "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
