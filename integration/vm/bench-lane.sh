#!/usr/bin/env bash
# Pod start latency with the cgroupfs and the systemd cgroup drivers, measured side by
# side in one fresh guest of the VM lane (systemd as PID 1, cgroup v2): builds berthd,
# berth-shim and berth-bench (release), stages them and runs
# integration/vm/bench-guest.sh. Under emulation (TCG) the times are many times the
# host's: compare the two drivers with each other, not with figures taken elsewhere.
#
#   integration/vm/bench-lane.sh [RUNS] [-- LANE_ARGS...]
#
# Not part of the test suite. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-20}
bash deploy/build-deps.sh >&2
cargo build --release --locked -p berth-cri-server -p berth-runtime -p berth-integration \
  --bin berthd --bin berth-shim --bin berth-bench --bin berth-cri --bin berth-push-fixtures >&2
mkdir -p target/vm
run=target/vm/bench.$$
trap 'rm -rf "$run"' EXIT
mkdir -p "$run"
for b in berthd berth-shim berth-bench berth-cri berth-push-fixtures; do cp "target/release/$b" "$run/"; done
shift $(( $# > 0 ? 1 : 0 ))
[ "${1:-}" != -- ] || shift
integration/vm/lane.sh "$@" -- bash integration/vm/bench-guest.sh "$PWD/$run" "$runs"
