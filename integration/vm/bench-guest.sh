#!/usr/bin/env bash
# Inside the lane's guest (started by bench-lane.sh with the directory it staged: release
# berthd, berth-shim, berth-bench, berth-cri, berth-push-fixtures): pod start latency with the
# cgroupfs and the systemd cgroup drivers, one after the other in the same guest, with
# berth-bench's lifecycle workload on a loopback registry's busybox. Prints berth-bench's
# tables; leaves nothing running.
set -euo pipefail
stage=$(realpath "$1")
runs=${2:-20}
work=$(mktemp -d /var/tmp/bench-lane.XXXXXX)
registry_pid="" berthd_pid=""
cleanup() {
  local rc=$?
  # (A killed process's `wait` status is not the script's.)
  [ -z "$berthd_pid" ] || { kill "$berthd_pid" 2>/dev/null; wait "$berthd_pid" 2>/dev/null || true; }
  [ -z "$registry_pid" ] || { kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null || true; }
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
# What was running when something ended this script.
report() {
  echo "bench-guest: ended by a signal; processes and berthd's log:"
  ps -eo pid,ppid,cgroup:60,args | tail -40
  tail -40 "$work"/*/berthd.log 2>/dev/null
  journalctl -n 40 --no-pager 2>/dev/null
  exit 1
}
trap report TERM INT
cat > "$work/registry.yml" <<EOC
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:5000
EOC
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null && break; sleep 0.2; done
"$stage/berth-push-fixtures" http://127.0.0.1:5000 > /dev/null
for driver in cgroupfs systemd; do
  dir=$work/$driver
  mkdir -p "$dir"
  cat > "$dir/config.toml" <<EOC
root = "$dir/root"
state = "/run/berth-bench-$driver"
socket = "/run/berth-bench-$driver/berth.sock"
[network]
bridge = "berth-bench0"
nft_table = "berth_bench"
[registry.mirrors."docker.io"]
endpoints = ["http://127.0.0.1:5000"]
[cgroup]
driver = "$driver"
EOC
  "$stage/berthd" --config "$dir/config.toml" > "$dir/berthd.log" 2>&1 &
  berthd_pid=$!
  endpoint=unix:///run/berth-bench-$driver/berth.sock
  for _ in $(seq 600); do [ -S "/run/berth-bench-$driver/berth.sock" ] && break; sleep 0.2; done
  "$stage/berth-cri" --endpoint "$endpoint" pull busybox > /dev/null
  echo "=== bench-guest: $driver driver, berth-bench lifecycle --runs $runs"
  "$stage/berth-bench" --endpoint "$endpoint" lifecycle --image busybox --runs "$runs" ||
    { echo "bench-guest: berth-bench failed; berthd's log:"; tail -50 "$dir/berthd.log"; exit 1; }
  kill "$berthd_pid"
  wait "$berthd_pid" || true
  berthd_pid=
  ip link del berth-bench0 2>/dev/null || true
done
