#!/usr/bin/env bash
# Builds berth in release mode and installs it as a systemd service:
#   /usr/local/bin/berthd and berth-shim, /etc/systemd/system/berthd.service,
#   /etc/berth/config.toml (only if absent), /etc/crictl.yaml (only if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
runtime=()
# berth's default AppArmor profile is loaded with apparmor_parser where AppArmor is on.
if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ]; then runtime+=(apparmor); fi
bash deploy/build-deps.sh "${runtime[@]}"
cargo build --release --locked -p berth-cri-server -p berth-runtime --bins
install -m 0755 target/release/berthd /usr/local/bin/berthd
# berthd starts the per-pod shim from its own directory.
install -m 0755 target/release/berth-shim /usr/local/bin/berth-shim
# The unit names the packaged path (/usr/bin/berthd); this install's is /usr/local/bin.
sed 's#^ExecStart=/usr/bin/berthd#ExecStart=/usr/local/bin/berthd#' deploy/berthd.service \
  > /etc/systemd/system/berthd.service
chmod 0644 /etc/systemd/system/berthd.service
grep -q '^ExecStart=/usr/local/bin/berthd' /etc/systemd/system/berthd.service
install -d -m 0755 /etc/berth
[ -e /etc/berth/config.toml ] || /usr/local/bin/berthd config default > /etc/berth/config.toml
[ -e /etc/crictl.yaml ] || install -m 0644 deploy/crictl.yaml /etc/crictl.yaml
echo "installed; start with: systemctl daemon-reload && systemctl enable --now berthd"
