#!/usr/bin/env bash
# Tags the conformance kit's registry (127.0.0.1:5000) with the extra names newer critest
# releases pull and the kit (made for v1.26.1) lacks. Each is the kit's own image under
# one more tag, so nothing is downloaded. Needs skopeo; idempotent.
set -euo pipefail
registry=${REGISTRY:-127.0.0.1:5000}
copy() {
    skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
        "docker://$registry/$1" "docker://$registry/$2"
    echo "tag   $1 -> $2"
}
# v1.36: image id consistency across registries (registry.k8s.io and k8s.gcr.io).
copy pause:3.6 pause:3.9
