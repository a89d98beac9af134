#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages; run as root) and runs all of it:
# unit tests and the integration tests, which start real berthd processes, here and in
# the VM lane's guest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run-tests.sh: run as root (the tests start a real berthd)" >&2; exit 1; }
# docker-registry + busybox-static: the loopback registry and the images the tests build;
# nftables: the tests read berth's table with `nft` (berthd changes it over netlink and
# needs no nft); iptables: the CNI portmap tests; apache2-utils: htpasswd for registry auth tests;
# runc: the tests run every container lifecycle test again with the runc handler;
# containernetworking-plugins: the CNI mode tests run the reference plugins (/usr/lib/cni).
bash deploy/build-deps.sh docker-registry busybox-static iptables nftables apache2-utils runc \
  containernetworking-plugins
cargo build --workspace --all-targets --locked
log=$(mktemp)
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The VM lane (integration/vm): the tests that need a cgroup v2-only host with systemd as
# PID 1 run inside such a guest, then the power cuts, then the Debian package installed,
# used, removed and purged in a clean guest. BERTH_VM_LANE=0 skips it.
if [ "${BERTH_VM_LANE:-1}" != 0 ]; then
  set +e
  bash integration/vm/run-lane-tests.sh 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  bash integration/vm/powercut.sh 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  bash integration/vm/package-lane.sh 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  set -e
fi
# One closing line for the whole suite (cargo and the lane print one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
rm -f "$log"
exit "$status"
