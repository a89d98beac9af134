#!/usr/bin/env bash
# Inside the lane's guest (started by package-lane.sh with the directory it staged: the
# package berth_*_amd64.deb, berth-cri and berth-push-fixtures): the Debian package used
# as an operator uses it, on a clean guest with no internet.
#
#   1. `apt-get install ./berth_*.deb`: berthd is enabled and running (Type=notify,
#      Delegate=yes, KillMode=process), the config is a conffile;
#   2. the operator points docker.io at the loopback registry and switches to the systemd
#      cgroup driver in /etc/berth/config.toml, as on a kubeadm node, and restarts berthd;
#      a pod with a busybox container runs in its scope in the pod's slice, ExecSync
#      answers;
#   3. `systemctl restart berthd`: the container's process is the same one, still in its
#      scope, still listed running;
#   4. `apt-get remove berth`: berthd is stopped and gone, the container's process (in its
#      scope) and its shim keep running, the config (with the operator's changes) and the
#      state stay;
#   5. installing the package again: berthd comes back and lists the same container
#      running with the same process; the pod is then removed through the CRI, and its
#      scope and slice with it;
#   6. `apt-get purge berth`: /etc/berth, /var/lib/berth, /run/berth, the unit, the
#      bridge, the nftables table and berth's slices are gone;
#   7. purge while a pod still runs (the fresh config: the cgroupfs driver): the config
#      goes, the state is kept (its mounts are live) with a message saying so; the test
#      then kills the pod's processes, unmounts and deletes what is left, as the message
#      tells an operator to.
#
# Prints `package-guest: ...` progress lines and exits non-zero at the first failed
# check, naming it. On any exit it removes what it made: the registry, pods, the package
# and what the package left.
# shellcheck disable=SC2015 # `[ A ] && [ B ] || fail ...`: fails when either check is false
set -euo pipefail
stage=$(realpath "$1")
say() { echo "package-guest: $(date +%T) $*"; }
fail() {
  echo "package-guest: FAIL: $*" >&2
  exit 1
}

[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || fail "not a cgroup v2 host"
[ -d /run/systemd/system ] || fail "systemd is not PID 1"
mapfile -t debs < <(find "$stage" -maxdepth 1 -name 'berth_*_amd64.deb')
[ "${#debs[@]}" = 1 ] || fail "want one berth_*_amd64.deb in $stage, found ${#debs[@]}"
cri=$stage/berth-cri
[ -x "$cri" ] && [ -x "$stage/berth-push-fixtures" ] || fail "berth-cri or berth-push-fixtures missing in $stage"

# apt reads a local package as its unprivileged _apt user: a world-readable copy.
work=$(mktemp -d /var/tmp/package-test.XXXXXX)
chmod 0755 "$work"
deb=$work/$(basename "${debs[0]}")
install -m 0644 "${debs[0]}" "$deb"
registry_pid=
pids=()  # container processes this test started (by pid), for the clean-up

# The leftovers of a failed run: pods through the CRI while berthd answers, then the
# package; any container process or shim still alive is killed by pid, mounts under
# berth's directories are taken away.
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ]; then
    say "diagnostics after the failure:"
    systemctl status berthd --no-pager 2>&1 | tail -n 15
    journalctl -u berthd --no-pager -n 40 2>&1
  fi
  if [ -S /run/berth/berth.sock ]; then
    "$cri" pods 2>/dev/null | while read -r id _; do "$cri" rm-pod "$id"; done
  fi
  if dpkg-query -W -f='${Status}' berth 2>/dev/null | grep -q .; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q berth >/dev/null 2>&1
  fi
  for pid in "${pids[@]}" $(shims); do kill -9 "$pid" 2>/dev/null; done
  for u in $(berth_units); do systemctl stop "$u" 2>/dev/null; done
  unmount_berth
  rm -rf /etc/berth /var/lib/berth /run/berth /var/log/pods/default_package-*
  remove_kernel_leftovers
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
  rm -rf "$work"
  if [ "$rc" = 0 ]; then say "passed"; else say "failed (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT

# Process ids whose command name is $1.
procs() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
  done
  return 0
}
shims() { procs berth-shim; }
# Mount points under /var/lib/berth and /run/berth, deepest first.
berth_mounts() {
  awk '$5 ~ /^\/(var\/lib|run)\/berth(\/|$)/ { print $5 }' /proc/self/mountinfo | sort -r
}
unmount_berth() {
  local m
  for m in $(berth_mounts); do umount -l "$m" 2>/dev/null; done
  return 0
}
# The pod cgroups (cgroupfs driver, no cgroup parent: /sys/fs/cgroup/berth/<pod>), the
# bridge and the nftables table of a pod whose processes were killed.
remove_kernel_leftovers() {
  [ -d /sys/fs/cgroup/berth ] && find /sys/fs/cgroup/berth -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -e /sys/class/net/berth0 ] && ip link delete berth0
  nft delete table ip berth 2>/dev/null
  return 0
}
# berth's loaded systemd units (the systemd driver's pod slices and container scopes).
berth_units() {
  systemctl list-units --all --plain --no-legend 'berth-*.scope' 'berth*.slice' 2>/dev/null | awk '{ print $1 }'
}
# The container process $1 runs in the scope of container $2 in the slice of pod $3 (the
# systemd driver, no cgroup parent: berth-<pod>.slice), and the scope is active.
expect_in_scope() {
  local want="0::/berth.slice/berth-$3.slice/berth-$2.scope" got
  got=$(cat "/proc/$1/cgroup" 2>/dev/null)
  [ "$got" = "$want" ] || fail "the container's process $1 is in cgroup '$got', want '$want'"
  systemctl is-active --quiet "berth-$2.scope" || fail "berth-$2.scope is $(systemctl is-active "berth-$2.scope")"
}
cmdline() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | sed 's/ $//'; }
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 "$@"; }
pkg_status() { dpkg-query -W -f='${Status}' berth 2>/dev/null || true; }
unit() { systemctl show berthd -p "$1" --value; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local deadline=$(( $(date +%s) + $1 ))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
cri_answers() { "$cri" version >/dev/null 2>&1; }
# The container's state line (`running PID`) must be $2.
expect_state() {
  local got
  got=$("$cri" state "$1") || fail "ContainerStatus of $1 failed"
  [ "$got" = "$2" ] || fail "container $1 is '$got', want '$2'"
}
# The container process $1 is alive and is still `sleep 86400`.
expect_sleeping() {
  [ "$(cmdline "$1")" = "sleep 86400" ] || fail "the container's process $1 is gone (cmdline: '$(cmdline "$1")')"
}
expect_no_berthd() {
  [ -z "$(procs berthd)" ] || fail "a berthd process still runs: $(procs berthd)"
}
# The package's state, the unit, the daemon and its socket right after an install.
expect_installed_and_running() {
  [ "$(pkg_status)" = "install ok installed" ] || fail "package status '$(pkg_status)' after install"
  [ "$(systemctl is-enabled berthd 2>&1)" = enabled ] || fail "berthd.service is not enabled: $(systemctl is-enabled berthd 2>&1)"
  systemctl is-active --quiet berthd || fail "berthd.service is not active: $(systemctl is-active berthd)"
  # Type=notify: the package's start returned only once berthd said it is ready.
  [ -S /run/berth/berth.sock ] || fail "no CRI socket at /run/berth/berth.sock once berthd was started"
  cri_answers || fail "berthd does not answer on /run/berth/berth.sock"
}

start=$(date +%s)
say "$(basename "$deb"): $(dpkg-deb -f "$deb" Version), Depends: $(dpkg-deb -f "$deb" Depends)"
[ -z "$(pkg_status)" ] && [ ! -e /etc/berth ] && [ ! -e /var/lib/berth ] && [ ! -e /run/berth ] \
  || fail "the guest is not clean: package '$(pkg_status)', or /etc/berth, /var/lib/berth, /run/berth exist"

# 1. install
say "1. apt-get install $deb (offline: every dependency is in the image)"
apt_get install "$deb"
expect_installed_and_running
for f in /usr/bin/berthd /usr/bin/berth-shim; do [ -x "$f" ] || fail "$f not installed"; done
dpkg-query -W -f='${Conffiles}\n' berth | grep -q '^ /etc/berth/config.toml ' \
  || fail "/etc/berth/config.toml is not a conffile: $(dpkg-query -W -f='${Conffiles}' berth)"
[ "$(unit Type)" = notify ] && [ "$(unit Delegate)" = yes ] && [ "$(unit KillMode)" = process ] \
  || fail "unit: Type=$(unit Type) Delegate=$(unit Delegate) KillMode=$(unit KillMode)"
[ "$(unit ExecMainPID)" = "$(procs berthd)" ] || fail "berthd ($(procs berthd)) is not the unit's main process ($(unit ExecMainPID))"
say "installed: $("$cri" version), berthd pid $(unit MainPID), unit $(unit FragmentPath)"

# 2. a registry, the operator's mirror, a pod
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<EOC
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry/storage
http:
  addr: 127.0.0.1:5000
EOC
docker-registry serve "$work/registry/config.yml" > "$work/registry/log" 2>&1 &
registry_pid=$!
registry_up() { (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null; }
wait_for 60 registry_up || fail "the registry did not start: $(cat "$work/registry/log")"
"$stage/berth-push-fixtures" http://127.0.0.1:5000 > /dev/null
printf '\n[registry.mirrors."docker.io"]\nendpoints = ["http://127.0.0.1:5000"]\n' >> /etc/berth/config.toml
sed -i 's/^driver = "cgroupfs"$/driver = "systemd"/' /etc/berth/config.toml
berthd config show | grep -qx 'driver = "systemd"' || fail "berthd does not read the systemd driver from the edited /etc/berth/config.toml"
systemctl restart berthd
cri_answers || fail "berthd does not answer after the restart with the mirror"
say "2. pulled $("$cri" pull busybox)"
pod=$("$cri" run-pod package-test)
ctr=$("$cri" run "$pod" sleeper busybox -- sleep 86400)
read -r state pid < <("$cri" state "$ctr")
[ "$state" = running ] && [ "$pid" -gt 1 ] || fail "the new container is '$state $pid'"
pids+=("$pid")
expect_sleeping "$pid"
expect_in_scope "$pid" "$ctr" "$pod"
out=$("$cri" exec "$ctr" -- echo exec-works) || fail "ExecSync failed"
[ "$out" = exec-works ] || fail "ExecSync printed '$out'"
say "pod $pod, container $ctr running as pid $pid in berth-$ctr.scope, exec answers"

# 3. restart
old=$(unit MainPID)
systemctl restart berthd
new=$(unit MainPID)
[ "$new" != 0 ] && [ "$new" != "$old" ] || fail "berthd's pid after the restart: $new (before: $old)"
cri_answers || fail "berthd does not answer after systemctl restart"
expect_sleeping "$pid"
expect_in_scope "$pid" "$ctr" "$pod"
expect_state "$ctr" "running $pid"
"$cri" ps | grep -q "^$ctr $pod sleeper running$" || fail "ListContainers after the restart: $("$cri" ps)"
say "3. systemctl restart berthd: berthd $old -> $new, container still pid $pid, listed running"

# 4. remove
shim_pids=$(shims)
[ -n "$shim_pids" ] || fail "no berth-shim process for the pod"
apt_get remove berth
[ "$(pkg_status)" = "deinstall ok config-files" ] || fail "package status '$(pkg_status)' after remove"
! systemctl is-active --quiet berthd || fail "berthd.service still active after remove"
expect_no_berthd
[ ! -e /usr/bin/berthd ] && [ ! -e /usr/bin/berth-shim ] || fail "the binaries outlived apt-get remove"
[ ! -e /run/berth/berth.sock ] || fail "berthd left its socket behind"
expect_sleeping "$pid"
[ "$(shims)" = "$shim_pids" ] || fail "the shims changed across remove: '$shim_pids' -> '$(shims)'"
expect_in_scope "$pid" "$ctr" "$pod"
[ -d /var/lib/berth ] && [ -d /run/berth ] || fail "apt-get remove took berth's state away"
grep -q '^endpoints = \["http://127.0.0.1:5000"\]' /etc/berth/config.toml \
  || fail "apt-get remove did not keep the operator's /etc/berth/config.toml"
say "4. apt-get remove: berthd stopped, container pid $pid and shim $shim_pids running, config and state kept"

# 5. install again: the same pod, then removed through the CRI
apt_get install "$deb"
expect_installed_and_running
grep -q '^endpoints = \["http://127.0.0.1:5000"\]' /etc/berth/config.toml \
  || fail "installing again replaced the operator's /etc/berth/config.toml"
expect_sleeping "$pid"
expect_state "$ctr" "running $pid"
"$cri" pods | grep -q "^$pod package-test ready$" || fail "ListPodSandbox after reinstall: $("$cri" pods)"
"$cri" rm-pod "$pod"
wait_for 60 test ! -e "/proc/$pid" || fail "the container's process outlived its removed pod"
wait_for 60 test -z "$(shims)" || fail "shims outlived the removed pod: $(shims)"
for u in "berth-$ctr.scope" "berth-$pod.slice"; do
  ! systemctl is-active --quiet "$u" || fail "$u outlived the removed pod"
done
say "5. installed again: the container is listed running as pid $pid; pod removed"

# 6. purge
apt_get purge berth
[ -z "$(pkg_status)" ] || [ "$(pkg_status)" = "unknown ok not-installed" ] \
  || fail "package status '$(pkg_status)' after purge"
expect_no_berthd
for d in /etc/berth /var/lib/berth /run/berth; do [ ! -e "$d" ] || fail "$d outlived apt-get purge: $(ls -A "$d")"; done
[ -z "$(berth_mounts)" ] || fail "mounts outlived apt-get purge: $(berth_mounts)"
! systemctl cat berthd >/dev/null 2>&1 || fail "berthd.service outlived apt-get purge"
[ ! -e /etc/systemd/system/multi-user.target.wants/berthd.service ] || fail "the unit's enablement link outlived purge"
[ ! -e /sys/class/net/berth0 ] || fail "the bridge berth0 outlived apt-get purge"
! nft list table ip berth >/dev/null 2>&1 || fail "the nftables table ip berth outlived apt-get purge"
[ ! -e /sys/fs/cgroup/berth ] || fail "cgroups outlived apt-get purge: $(find /sys/fs/cgroup/berth -type d)"
[ -z "$(berth_units)" ] || fail "systemd units outlived apt-get purge: $(berth_units)"
say "6. apt-get purge: config, state, unit, bridge, table and slices gone"

# 7. purge under a running pod
apt_get install "$deb"
expect_installed_and_running
printf '\n[registry.mirrors."docker.io"]\nendpoints = ["http://127.0.0.1:5000"]\n' >> /etc/berth/config.toml
systemctl restart berthd
berthd config show | grep -qx 'driver = "cgroupfs"' || fail "the fresh config after purge is not the default cgroupfs driver"
"$cri" pull busybox > /dev/null
pod=$("$cri" run-pod package-purge)
ctr=$("$cri" run "$pod" sleeper busybox -- sleep 86400)
read -r state pid < <("$cri" state "$ctr")
[ "$state" = running ] || fail "the second container is '$state'"
pids+=("$pid")
apt_get purge berth 2>&1 | tee "$work/purge.log"
expect_no_berthd
[ ! -e /etc/berth ] || fail "/etc/berth outlived apt-get purge under a running pod"
expect_sleeping "$pid"
[ -d /var/lib/berth ] && [ -d /run/berth ] || fail "purge took the state from under a running pod"
[ -n "$(berth_mounts)" ] || fail "no mounts under the state while a pod runs"
grep -q 'pods still run from /var/lib/berth and /run/berth' "$work/purge.log" \
  || fail "purge did not say why it kept the state"
for p in "$pid" $(shims); do kill -9 "$p"; done
wait_for 60 test ! -e "/proc/$pid" || fail "the container's process survived kill -9"
unmount_berth
rm -rf /var/lib/berth /run/berth
remove_kernel_leftovers
say "7. apt-get purge under a running pod: config gone, state kept and said so; cleaned by hand"

say "all steps passed in $(( $(date +%s) - start )) s"
