#!/usr/bin/env bash
# Inside the lane's guest: runs each test binary of the list run-lane-tests.sh wrote
# (lines of `name path extra-args`; a name ending in @systemd runs with berthd on the
# systemd cgroup driver), as root, and prints one closing line.
set -uo pipefail
list=$1
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "guest-tests.sh: not a cgroup v2 host" >&2; exit 1; }
export RUST_BACKTRACE=1
threads=${BERTH_LANE_TEST_THREADS:-2}
# Deadlines in the tests stretch by this much (the guest may run under emulation).
export BERTH_TEST_TIME_SCALE=${BERTH_TEST_TIME_SCALE:-10}
status=0 passed=0 failed=0
log=$(mktemp)
while read -r name exe extra; do
  start=$(date +%s)
  echo "=== $name"
  # NAME@systemd: the same binary with berthd on the systemd cgroup driver.
  driver=cgroupfs
  case $name in *@systemd) driver=systemd ;; esac
  # shellcheck disable=SC2086 # extra holds separate arguments
  BERTH_TEST_CGROUP_DRIVER=$driver "$exe" --test-threads="$threads" $extra 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || status=1
  read -r p f < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")
  passed=$((passed + p)) failed=$((failed + f))
  echo "=== $name: exit $rc, $p passed, $f failed, $(( $(date +%s) - start )) s"
done < "$list"
rm -f "$log"
echo "lane: $passed passed, $failed failed"
exit "$status"
