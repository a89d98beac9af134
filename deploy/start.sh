#!/usr/bin/env bash
# Builds berthd and its per-pod shim (release) and runs berthd in the foreground on its
# embedded defaults (or /etc/berth/config.toml when present). Extra arguments go to berthd.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "start.sh: berthd runs as root" >&2; exit 1; }
bash deploy/build-deps.sh
cargo build --release --locked -p berth-cri-server -p berth-runtime --bins
exec target/release/berthd "$@"
