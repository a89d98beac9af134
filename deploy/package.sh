#!/usr/bin/env bash
# Builds the Debian package berth_<version>_amd64.deb into target/debian/ (cargo-deb's
# default; under $CARGO_TARGET_DIR when that is set) and prints its path: berthd and
# berth-shim (release), the systemd unit, /etc/berth/config.toml as a conffile and the
# maintainer scripts (metadata: cri-server/Cargo.toml [package.metadata.deb]). Installs
# the build dependencies and the pinned cargo-deb first when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_deb_version=3.8.0
# dpkg-dev: dpkg-shlibdeps works out the package's library dependencies ($auto).
bash deploy/build-deps.sh dpkg-dev >&2
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  cargo install cargo-deb --version "$cargo_deb_version" --locked >&2
fi
# berth-shim comes from another crate of the workspace than berthd, so both are built
# here and cargo-deb only packs them.
cargo build --release --locked -p berth-cri-server -p berth-runtime --bins >&2
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
rm -f "$target"/debian/berth_*.deb
# --strip: the release profile keeps line tables for backtraces; the package does not
# (190 MB installed with them, 27 MB without).
cargo deb --locked --no-build --strip -p berth-cri-server >&2
deb=$(ls "$target"/debian/berth_*_amd64.deb)
[ "$(echo "$deb" | wc -l)" = 1 ] || { echo "package.sh: expected one package, found: $deb" >&2; exit 1; }
echo "$deb"
