#!/usr/bin/env bash
# critest in the VM lane: runs cri-tools' conformance suite against berthd inside the
# lane's guest (Debian 12, systemd as PID 1, cgroup v2 only, AppArmor on). Not run in
# CI: nothing of cri-tools is in this repository, bring your own critest binaries.
#
#   integration/vm/critest-lane.sh [--timeout SECS] [--cgroup-driver D] [CRITEST...] [-- CRITEST_ARGS...]
#
# CRITEST: critest binaries (default: $CRITEST_BINS, space-separated), each run in turn
# against one berthd in one guest. CRITEST_ARGS go to every run (e.g. --ginkgo.focus X).
# --timeout: the whole guest run (default 14400 s; emulation makes critest ~20x slower).
# --cgroup-driver: berthd's cgroup.driver, cgroupfs (default) or systemd.
# Needs the conformance kit's loopback registry on the host's 127.0.0.1:5000 with the
# suite's images (../shared/conformance/images.sh, then
# integration/conformance/extra-images.sh): the guest reaches it as 10.0.2.2:5000 through
# QEMU's user network. berthd runs with integration/conformance/berthd.toml, its mirrors
# pointed there. The whole output is kept in target/vm/critest-lane.log; the exit status
# is 0 when every spec that ran passed and no pod left anything behind. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout=14400
driver=cgroupfs
bins=()
while [ $# -gt 0 ]; do
  case $1 in
    --timeout) timeout=$2; shift 2 ;;
    --cgroup-driver) driver=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "critest-lane.sh: unknown option $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
# shellcheck disable=SC2206 # CRITEST_BINS is a space-separated list of paths
[ ${#bins[@]} -gt 0 ] || bins=(${CRITEST_BINS:-})
[ ${#bins[@]} -gt 0 ] || {
  echo "critest-lane.sh: name critest binaries (arguments or CRITEST_BINS)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "critest-lane.sh: run as root" >&2; exit 1; }

registry=127.0.0.1:5000
for ref in e2e-test-images/busybox/manifests/1.29-2 pause/manifests/3.9; do
  curl -sf -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$registry/v2/$ref" || {
    echo "critest-lane.sh: the conformance registry on $registry lacks $ref: run" \
      "../shared/conformance/images.sh and integration/conformance/extra-images.sh" >&2
    exit 1
  }
done

bash deploy/build-deps.sh >&2
cargo build --release --locked -p berth-cri-server -p berth-runtime --bins >&2
mkdir -p target/vm
# The guest runs copies (under the checkout, which it mounts read-only), so the checkout
# can be rebuilt meanwhile.
stage=target/vm/critest.$$
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"
cp target/release/berthd target/release/berth-shim "$stage/"
i=0
for bin in "${bins[@]}"; do
  i=$((i + 1))
  version=$("$bin" --version 2>/dev/null | sed -n 's/^critest version: //p' | head -1)
  cp "$bin" "$stage/critest-$i"
  echo "${version:-$(basename "$bin")}" > "$stage/critest-$i.label"
done
echo "$driver" > "$stage/driver"
: > "$stage/args"
[ $# -eq 0 ] || printf '%q ' "$@" > "$stage/args"

log=target/vm/critest-lane.log
set +e
integration/vm/lane.sh --timeout "$timeout" -- \
  bash integration/vm/critest-guest.sh "$PWD/$stage" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo
echo "critest-lane.sh: summary (whole output in $log)"
grep -E '^critest-lane:|^lane.sh: done' "$log" || true
exit "$status"
