#!/usr/bin/env bash
# Builds berthd (release) and runs it in the foreground on its embedded defaults
# (or /etc/berth/config.toml when present). Extra arguments go to berthd.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "start.sh: berthd runs as root" >&2; exit 1; }
bash deploy/build-deps.sh
cargo build --release --locked -p berth-cri-server
exec target/release/berthd "$@"
