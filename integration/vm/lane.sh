#!/usr/bin/env bash
# The VM lane: runs a command inside a Debian 12 guest (systemd as PID 1, cgroup v2 only,
# AppArmor on) under QEMU, with this checkout mounted at the same path, and returns the
# command's output and exit status.
#
#   integration/vm/lane.sh [options] [-- COMMAND...]
#
# COMMAND runs with bash in the checkout inside the guest (default: the lane's test set,
# integration/vm/guest-tests.sh). Options:
#   --disk FILE      the guest's disk: a qcow2 overlay over the cached image, made if
#                    missing and kept (default: a fresh one, deleted after the run)
#   --kill-on TEXT   cut the guest's power (kill QEMU) once its output shows TEXT (and
#                    --kill-delay SECS more have passed); exits 0 when that happened
#   --timeout SECS   kill the guest after this long (default 3600); exit status 124
# Environment: BERTH_VM_ACCEL=kvm|tcg (default: KVM when a guest boots with it, else
# TCG), BERTH_VM_CPUS (2), BERTH_VM_MEM_MB (3072), BERTH_VM_CACHE (target/vm).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
disk= kill_on= kill_delay=0 timeout=3600
while [ $# -gt 0 ]; do
  case $1 in
    --disk) disk=$2; shift 2 ;;
    --kill-on) kill_on=$2; shift 2 ;;
    --kill-delay) kill_delay=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "lane.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || set -- bash integration/vm/guest-tests.sh
[ "$(id -u)" = 0 ] || { echo "lane.sh: run as root" >&2; exit 1; }
# The host's side: QEMU, qemu-img for the guest's overlay disk, mmdebstrap for the image.
bash "$src/deploy/build-deps.sh" qemu-system-x86 qemu-utils mmdebstrap e2fsprogs >&2
image=$("$here/image.sh" | tail -1)
cache=$(dirname "$image")

lane=$(mktemp -d "$cache/lane.XXXXXX")
qemu_pid=
cleanup() {
  [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  [ -n "${fresh_disk:-}" ] && rm -f "$disk"
  rm -rf "$lane"
}
trap cleanup EXIT
printf '%q ' "$@" > "$lane/cmd"
echo >> "$lane/cmd"
# A throwaway disk need not survive QEMU (cache=unsafe: fastest); one kept across power
# cuts must hold whatever the guest flushed (cache=writeback honours its flushes).
cache_mode=writeback
if [ -z "$disk" ]; then
  disk="$lane/disk.qcow2"
  fresh_disk=1
  cache_mode=unsafe
fi
[ -f "$disk" ] || qemu-img create -q -f qcow2 -b "$image/disk.img" -F raw "$disk"

# Boots the guest with accelerator $1; QEMU's console goes to $lane/console.
boot() {
  local accel=$1 cpus=${BERTH_VM_CPUS:-2}
  local accel_opt=kvm
  [ "$accel" = tcg ] && accel_opt=tcg,thread=multi
  : > "$lane/console"
  rm -f "$lane/rc" "$lane/log"
  qemu-system-x86_64 -accel "$accel_opt" -cpu max -smp "$cpus" -m "${BERTH_VM_MEM_MB:-3072}" \
    -nographic -no-reboot -serial "file:$lane/console" -monitor none \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=LABEL=berth-lane rw console=ttyS0 loglevel=5 systemd.show_status=false panic=-1 berth.src=$src" \
    -drive "file=$disk,if=virtio,format=qcow2,cache=$cache_mode" \
    -virtfs "local,path=$src,mount_tag=src,security_model=none,readonly=on" \
    -virtfs "local,path=$lane,mount_tag=lane,security_model=none" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    </dev/null >"$lane/qemu.out" 2>&1 &
  qemu_pid=$!
}

# Waits until the console shows $1 (true) or QEMU ends or $2 seconds pass (false).
wait_console() {
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -qF -- "$1" "$lane/console" 2>/dev/null && return 0
    kill -0 "$qemu_pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

stop_qemu() {
  kill -9 "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
}

start=$(date +%s)
accel=${BERTH_VM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  # A nested KVM guest can hang in the kernel's early boot on some hosts (seen: after
  # the BIOS, before the kernel prints its banner): KVM is used only when the kernel's
  # banner shows within 20 s with it; the disk is untouched by then.
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    boot kvm
    if wait_console "Linux version" 20; then
      accel=kvm
    else
      echo "lane.sh: the kernel did not start with KVM within 20 s; using TCG (emulation)" >&2
      stop_qemu
    fi
  fi
fi
# A KVM guest that started its kernel could still hang later in its boot: fall back to
# TCG rather than wait for the timeout.
if [ "$accel" = kvm ] && [ -n "$qemu_pid" ] && ! wait_console "berth-lane: guest up" 180; then
  echo "lane.sh: no guest with KVM after 180 s; using TCG (emulation)" >&2
  stop_qemu
  accel=tcg
fi
[ -n "$qemu_pid" ] || boot "$accel"
echo "lane.sh: guest booting with $accel, checkout $src, image $image" >&2

# Follow the console, cut the power on --kill-on, stop at --timeout.
tail -n +1 -f "$lane/console" --pid "$qemu_pid" &
tail_pid=$!
deadline=$(( start + timeout ))
status=
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ -n "$kill_on" ] && grep -qF -- "$kill_on" "$lane/console"; then
    sleep "$kill_delay"
    echo "lane.sh: power cut $kill_delay s after '$kill_on'" >&2
    stop_qemu
    status=0
    break
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "lane.sh: timed out after $timeout s" >&2
    stop_qemu
    status=124
    break
  fi
  sleep 0.2
done
[ -n "$qemu_pid" ] && wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
if [ -z "$status" ]; then
  if [ -f "$lane/rc" ]; then
    status=$(cat "$lane/rc")
  else
    echo "lane.sh: the guest stopped without an exit status; QEMU said:" >&2
    cat "$lane/qemu.out" >&2
    status=1
  fi
fi
echo "lane.sh: done in $(( $(date +%s) - start )) s ($accel), exit status $status" >&2
exit "$status"
