#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages; run as root) and runs all of it:
# unit tests and the integration tests, which start real berthd processes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run-tests.sh: run as root (the tests start a real berthd)" >&2; exit 1; }
# docker-registry + busybox-static: the loopback registry and the images the tests build;
# iptables/nftables: pod networking; apache2-utils: htpasswd for registry auth tests.
bash deploy/build-deps.sh docker-registry busybox-static iptables nftables apache2-utils
cargo build --workspace --all-targets --locked
cargo test --workspace --locked "$@"
