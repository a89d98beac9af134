#!/usr/bin/env bash
# Power cuts in the VM lane: boots a guest that pulls images and starts pods and
# containers (integration/tests/powercut.rs), kills QEMU while that is under way, boots
# the same disk again and checks that everything berthd lists works and that removing it
# all leaves nothing behind. BERTH_POWERCUT_ROUNDS rounds (default 1), each cutting at a
# random moment (printed, with BERTH_POWERCUT_SEED to repeat it). Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/build-deps.sh >&2
mkdir -p target/vm
run=target/vm/run.$$
disk=target/vm/powercut.$$.qcow2
trap 'rm -rf "$run" "$disk"' EXIT
exe=$(bash integration/vm/stage.sh "$run" powercut | cut -d' ' -f2)
RANDOM=${BERTH_POWERCUT_SEED:-$$}
test_in_guest() {
  echo "BERTH_POWERCUT_DIR=/var/lib/bpc BERTH_TEST_TIME_SCALE=10 RUST_BACKTRACE=1 $exe --ignored --exact --nocapture --test-threads=1 $1"
}
for round in $(seq "${BERTH_POWERCUT_ROUNDS:-1}"); do
  # Under emulation a big pull takes seconds: cut anywhere in the first half minute.
  delay=$((RANDOM % 30))
  echo "powercut.sh: round $round, power cut ${delay} s into the work" >&2
  integration/vm/lane.sh --disk "$disk" --kill-on "powercut: work under way" \
    --kill-delay "$delay" -- bash -c "$(test_in_guest work_until_the_power_is_cut)"
  integration/vm/lane.sh --disk "$disk" -- bash -c "$(test_in_guest after_the_power_cut_everything_listed_works)"
done
echo "powercut.sh: $round rounds passed" >&2
