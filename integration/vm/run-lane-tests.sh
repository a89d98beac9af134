#!/usr/bin/env bash
# Runs the lane's tests inside the guest (systemd as PID 1, cgroup v2 only, AppArmor):
# builds the test binaries here, lists those that touch cgroups, devices, limits, stats,
# OOM, sandboxes, containers and restart recovery, and runs them in a fresh guest with
# integration/vm/guest-tests.sh, those of pods, containers, limits and restarts once more
# with berthd on the systemd cgroup driver. Extra arguments go to lane.sh (before `--`).
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/build-deps.sh >&2
mkdir -p target/vm
list=target/vm/lane-tests.$$.list
# name → arguments for that test binary: what touches cgroups, devices, limits, stats,
# OOM, sandboxes, containers and restart recovery. Left out, as host-neutral and run on
# the host: the runc twins of the container tests (the runc handler test stays), pod
# networking, and the load tests (fifty or a hundred pods, churn), which emulation makes
# too slow for CI. cgroup_v2's tests are #[ignore]d on other hosts (they need a v2-only
# hierarchy) and run here with --ignored; apparmor's need AppArmor (on in the guest) and
# run here with the rest of that file (--include-ignored), as do checkpoint's, which need
# CRIU (this host's kernel fails its check).
declare -A wanted=(
  [device_filter_root]="" [shim_root]="" [cgroup_v2]="--ignored" [security]="" [stats]=""
  [apparmor]="--include-ignored" [checkpoint]="--include-ignored"
  [containers]="--skip runc::"
  [sandbox]="--skip fifty_pods --skip two_pods_reach --skip host_port_reaches"
  [reliability]="--exact a_shim_killed_like_the_oom_killer_gives_exited_containers_and_a_working_node after_a_host_reboot_old_pods_are_notready_containers_exited_and_removable sigkill_at_random_points_of_concurrent_churn_leaves_a_consistent_node"
)
# Run a second time with berthd on the systemd cgroup driver (pods in slices, containers
# in scopes): the pod, container, limit, OOM and restart tests, with these arguments. Of the
# restart tests, the daemon's and the host's (the churn under SIGKILL, the longest, runs
# on cgroupfs only, to keep CI within its time).
declare -A systemd=(
  [sandbox]=${wanted[sandbox]} [containers]=${wanted[containers]} [cgroup_v2]=${wanted[cgroup_v2]}
  [reliability]="--exact a_shim_killed_like_the_oom_killer_gives_exited_containers_and_a_working_node after_a_host_reboot_old_pods_are_notready_containers_exited_and_removable"
  [security]="--exact memory_limit_ends_in_oomkilled"
  [checkpoint]="--ignored"
)
run=target/vm/run.$$
trap 'rm -rf "$run" "$list"' EXIT
bash integration/vm/stage.sh "$run" "${!wanted[@]}" | while read -r name path; do
  echo "$name $path ${wanted[$name]}"
  [ -z "${systemd[$name]+set}" ] || echo "$name@systemd $path ${systemd[$name]}"
done > "$list"
integration/vm/lane.sh "$@" -- bash integration/vm/guest-tests.sh "$list"
