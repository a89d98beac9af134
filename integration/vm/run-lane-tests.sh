#!/usr/bin/env bash
# Runs the lane's tests inside the guest (systemd as PID 1, cgroup v2 only, AppArmor):
# builds the test binaries here, lists those that touch cgroups, devices, limits, stats,
# OOM, sandboxes, containers and restart recovery, and runs them in a fresh guest with
# integration/vm/guest-tests.sh. Extra arguments go to lane.sh (before `--`). Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/build-deps.sh >&2
mkdir -p target/vm
list=target/vm/lane-tests.list
# name → extra arguments for that test binary. cgroup_v2's tests are #[ignore]d on other
# hosts (they need a v2-only hierarchy) and run here with --ignored.
declare -A wanted=(
  [device_filter_root]="" [shim_root]="" [cgroup_v2]="--ignored" [security]="" [stats]=""
  [containers]="" [sandbox]="" [reliability]=""
)
# The guest runs copies (target/vm/run/<profile>/...), so the checkout can be rebuilt
# while the lane runs; berthd and berth-shim sit beside deps/ as cargo lays them out,
# where the tests look for them.
run=target/vm/run
rm -rf "$run"
cargo test --workspace --locked --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
wanted = sys.argv[1].split()
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["kind"] == ["test"] and m["target"]["name"] in wanted:
        print(m["target"]["name"], m["executable"])
' "${!wanted[*]}" | while read -r name exe; do
  profile_dir=$(dirname "$(dirname "$exe")")
  copy="$run/$(basename "$profile_dir")/deps/$(basename "$exe")"
  mkdir -p "$(dirname "$copy")"
  cp "$exe" "$copy"
  for bin in berthd berth-shim; do
    [ -e "$(dirname "$(dirname "$copy")")/$bin" ] || cp "$profile_dir/$bin" "$(dirname "$(dirname "$copy")")/"
  done
  echo "$name $PWD/$copy ${wanted[$name]}"
done > "$list"
[ "$(wc -l < "$list")" -eq "${#wanted[@]}" ] || {
  echo "run-lane-tests.sh: expected ${#wanted[@]} test binaries, found:" >&2; cat "$list" >&2; exit 1; }
exec integration/vm/lane.sh "$@" -- bash integration/vm/guest-tests.sh "$list"
