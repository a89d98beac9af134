#!/usr/bin/env bash
# Builds berthd and its per-pod shim (release) and runs berthd in the foreground on its
# embedded defaults (or /etc/berth/config.toml when present). Extra arguments go to berthd.
#
# What berthd needs at run time, installed here when missing: libseccomp2 (with the build
# dependency libseccomp-dev) and, on a host with AppArmor enabled, apparmor_parser (Debian's
# apparmor), which loads berth's default profile. It runs no other program in the default
# bridge mode (nftables is driven over netlink: no nft, iptables or ip); the kernel needs
# overlayfs, namespaces, bridge, veth and nf_tables.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "start.sh: berthd runs as root" >&2; exit 1; }
runtime=()
# berth's default AppArmor profile is loaded with apparmor_parser where AppArmor is on.
if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ]; then runtime+=(apparmor); fi
bash deploy/build-deps.sh "${runtime[@]}"
cargo build --release --locked -p berth-cri-server -p berth-runtime --bins
exec target/release/berthd "$@"
