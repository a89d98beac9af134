#!/usr/bin/env bash
# stage.sh DIR NAME...: builds the workspace's test binaries and copies those named
# (cargo test target names) with berthd and berth-shim to DIR/<profile>/ (laid out as
# cargo lays them out, where the tests look for the daemons), so the checkout can be
# rebuilt while a guest runs them. Prints `name path` for each. Run from the checkout.
set -euo pipefail
run=$1
shift
rm -rf "$run"
found=$(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
wanted = sys.argv[1:]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["kind"] == ["test"] and m["target"]["name"] in wanted:
        print(m["target"]["name"], m["executable"])
' "$@")
[ "$(echo "$found" | grep -c .)" -eq "$#" ] || {
  echo "stage.sh: wanted test binaries $*, found: $found" >&2; exit 1; }
echo "$found" | while read -r name exe; do
  profile_dir=$(dirname "$(dirname "$exe")")
  dest="$run/$(basename "$profile_dir")"
  mkdir -p "$dest/deps"
  cp "$exe" "$dest/deps/"
  for bin in berthd berth-shim; do
    [ -e "$dest/$bin" ] || cp "$profile_dir/$bin" "$dest/"
  done
  echo "$name $PWD/$dest/deps/$(basename "$exe")"
done
