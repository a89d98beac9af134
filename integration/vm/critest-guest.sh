#!/usr/bin/env bash
# Inside the lane's guest (started by critest-lane.sh with the directory it staged):
# starts berthd with integration/conformance/berthd.toml, its registry mirrors pointed at
# the host's loopback registry (10.0.2.2 under QEMU's user network), runs each staged
# critest (critest-N, labelled by critest-N.label) with the skips run-critest.sh uses,
# checks after each that no pod left anything behind, stops berthd and checks again.
# Lines starting `critest-lane:` are the summary the host prints. The exit status is 0
# when every spec that ran passed and nothing was left.
set -uo pipefail
stage=$1
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || {
  echo "critest-guest.sh: not a cgroup v2 host" >&2; exit 1; }
eval "extra=($(cat "$stage/args"))"

# The config's directories, bridge and table (critest-lane.sh's guest is fresh each run).
config=/etc/berth-critest.toml
sed 's#http://127\.0\.0\.1:5000#http://10.0.2.2:5000#g' integration/conformance/berthd.toml > "$config"
# critest-lane.sh --cgroup-driver systemd: pods in slices (critest's /test.slice),
# containers in scopes.
driver=$(cat "$stage/driver" 2>/dev/null || echo cgroupfs)
printf '\n[cgroup]\ndriver = "%s"\n' "$driver" >> "$config"
root=/var/tmp/berth-critest state=/run/berth-critest bridge=berth-ct0 table=berth_critest
grep -q "$state/berth.sock" "$config" && grep -q "bridge = \"$bridge\"" "$config" \
  && grep -q "nft_table = \"$table\"" "$config" || {
  echo "critest-guest.sh: $config does not name $state, $bridge and $table" >&2; exit 1; }
socket=unix://$state/berth.sock

# The host's registry, as berthd will reach it.
if ! reply=$(timeout 60 bash -c 'exec 3<>/dev/tcp/10.0.2.2/5000 &&
    printf "GET /v2/ HTTP/1.0\r\nHost: 10.0.2.2:5000\r\n\r\n" >&3 && head -1 <&3'); then
  echo "critest-lane: the host's registry (10.0.2.2:5000) is unreachable from the guest"
  exit 1
fi
echo "critest-guest.sh: registry at 10.0.2.2:5000 answers: $reply"

# berthd and its shim from the guest's own disk (the stage is on 9p).
bin=/usr/local/lib/berth-critest
mkdir -p "$bin"
install -m 0755 "$stage/berthd" "$stage/berth-shim" "$bin/"
work=$(mktemp -d /var/tmp/critest-lane.XXXXXX)
cd "$work" || exit 1
"$bin/berthd" --config "$config" > "$work/berthd.log" 2>&1 &
berthd=$!
for _ in $(seq 600); do
  [ -S "$state/berth.sock" ] && break
  kill -0 "$berthd" 2>/dev/null || break
  sleep 0.2
done
[ -S "$state/berth.sock" ] || {
  echo "critest-lane: berthd did not start"; cat "$work/berthd.log"; exit 1; }

# Prints what pods left behind (nothing once every pod is removed): berth-shim processes,
# mounts under berthd's directories but the pods directory itself, veths on the bridge,
# per-pod firewall rules, pod cgroups (cgroupfs driver, critest's empty cgroup parent:
# /sys/fs/cgroup/berth/<pod>; systemd driver: the scopes and critest's test.slice, which
# berth started and stops with the last pod), pod directories.
leftovers() {
  local left
  for _ in $(seq 100); do  # the kernel deletes a veth whose namespace died a bit later
    [ -z "$(ls /sys/class/net/$bridge/brif 2>/dev/null)" ] && break
    sleep 0.2
  done
  left=$(
    pgrep -a -x berth-shim | sed 's/^/process: /'
    awk '{print $5}' /proc/self/mountinfo | grep -E "^($root|$state)(/|$)" |
      grep -vx "$state/pods" | sed 's/^/mount: /'
    ls "/sys/class/net/$bridge/brif" 2>/dev/null | sed 's/^/veth: /'
    nft list table ip "$table" 2>/dev/null | grep 'berth:pod=' | sed 's/^ */rule: /'
    find /sys/fs/cgroup/berth -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sed 's/^/cgroup: /'
    if [ "$driver" = systemd ]; then
      [ ! -d /sys/fs/cgroup/test.slice ] || echo "cgroup: /sys/fs/cgroup/test.slice"
      systemctl list-units --all --plain --no-legend 'berth-*.scope' 'berth-*.slice' | sed 's/^/unit: /'
    fi
    ls "$state/pods" 2>/dev/null | sed 's/^/pod directory: /'
  )
  [ -z "$left" ] || echo "$left"
}

# The JUnit report's specs as `status name`, one a line.
specs() {
  grep -o '<testcase name="[^"]*" classname="[^"]*" status="[^"]*"' "$1" |
    sed -E 's/<testcase name="([^"]*)" classname="[^"]*" status="([^"]*)"/\2 \1/' |
    sed -e 's/&#34;/"/g' -e "s/&#39;/'/g" -e 's/&lt;/</g' -e 's/&gt;/>/g' -e 's/&amp;/\&/g'
}

status=0
i=0
while [ -e "$stage/critest-$((i + 1))" ]; do
  i=$((i + 1))
  label="$(cat "$stage/critest-$i.label") ($driver driver)"
  echo "=== critest $label"
  start=$(date +%s)
  # Generous suite timeout: under emulation the guest is ~20x slower than the host.
  "$stage/critest-$i" --runtime-endpoint "$socket" --image-endpoint "$socket" \
    --ginkgo.skip 'public image with digest' --ginkgo.no-color --ginkgo.timeout=4h \
    --ginkgo.junit-report="$work/critest-$i.xml" "${extra[@]}" 2>&1 | tee "$work/critest-$i.out"
  rc=${PIPESTATUS[0]}
  ran=$(grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$work/critest-$i.out" | tail -1)
  result=$(grep -E '^(SUCCESS|FAIL)! ' "$work/critest-$i.out" | tail -1)
  echo "critest-lane: $label: exit $rc in $(( $(date +%s) - start )) s: $ran $result"
  if [ -f "$work/critest-$i.xml" ]; then
    specs "$work/critest-$i.xml" > "$work/specs"
    # Every spec that did not pass; the specs skipped.
    failed=$(grep -vE '^(passed|skipped) ' "$work/specs")
    grep -vE '^(passed|skipped) ' "$work/specs" | while read -r st name; do
      echo "critest-lane: $label: $st: $name"
    done
    grep '^skipped ' "$work/specs" | cut -d' ' -f2- | sed "s/^/critest-lane: $label: skipped: /"
    if [ -n "$failed" ] || { [ "$rc" != 0 ] && ! grep -qE '^(failed|panicked|interrupted|timedout) ' "$work/specs"; }; then
      status=1
    fi
  else
    echo "critest-lane: $label: no JUnit report"
    status=1
  fi
  left=$(leftovers)
  if [ -n "$left" ]; then
    status=1
    echo "$left" | sed "s/^/critest-lane: $label: left behind: /"
  fi
done

kill -TERM "$berthd"
for _ in $(seq 600); do kill -0 "$berthd" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$berthd" 2>/dev/null; then
  echo "critest-lane: berthd did not stop within 120 s of SIGTERM"
  kill -KILL "$berthd"
  status=1
fi
wait "$berthd"
rc=$?
[ "$rc" = 0 ] || { echo "critest-lane: berthd exited $rc"; status=1; }
left=$(leftovers)
if [ -n "$left" ]; then
  status=1
  echo "$left" | sed "s/^/critest-lane: after berthd stopped: left behind: /"
fi
# What berthd itself keeps across restarts (run-critest.sh removes them the same way).
ip link del "$bridge" 2>/dev/null
nft delete table ip "$table" 2>/dev/null
echo "=== berthd's warnings and errors ($(grep -cE ' (WARN|ERROR) ' "$work/berthd.log") of $(wc -l < "$work/berthd.log") lines)"
grep -E ' (WARN|ERROR) ' "$work/berthd.log" | tail -n 300
echo "critest-lane: berthd stopped; guest exit status $status"
exit "$status"
