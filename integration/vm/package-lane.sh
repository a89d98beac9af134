#!/usr/bin/env bash
# The Debian package in the VM lane: builds berth_*_amd64.deb with deploy/package.sh and
# the CRI client and registry fixtures the test drives it with, stages them, and runs
# integration/vm/package-guest.sh in a fresh guest (install, a pod, restart, remove,
# install again, purge; offline: the package's dependencies are in the guest image).
# Extra arguments go to lane.sh (before `--`). Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/build-deps.sh >&2
start=$(date +%s)
deb=$(bash deploy/package.sh)
echo "package-lane.sh: built $deb in $(( $(date +%s) - start )) s" >&2
cargo build --locked -p berth-integration --bin berth-cri --bin berth-push-fixtures >&2
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p target/vm
run=target/vm/package.$$
trap 'rm -rf "$run"' EXIT
mkdir -p "$run"
# Copies: the checkout can be rebuilt while the guest runs.
cp "$deb" "$target/debug/berth-cri" "$target/debug/berth-push-fixtures" "$run/"
integration/vm/lane.sh "$@" -- bash integration/vm/package-guest.sh "$PWD/$run"
