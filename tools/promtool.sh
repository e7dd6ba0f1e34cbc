#!/usr/bin/env bash
# Prints the path of `promtool`, building it from its Go module the first time
# (github.com/prometheus/prometheus/cmd/promtool at PROMTOOL_VERSION), cached outside the repo
# under ~/.cache/a3s-power/promtool-<version>/ like the other built tools. Build output goes to
# stderr so that stdout is only the path.
set -euo pipefail
version=${PROMTOOL_VERSION:-v0.316.0}   # Prometheus 3.x; Go module versions are v0.3xx.y
dir=${XDG_CACHE_HOME:-$HOME/.cache}/a3s-power/promtool-$version
if [[ ! -x $dir/promtool ]]; then
    command -v go >/dev/null || { echo "promtool.sh: go is needed to build promtool" >&2; exit 1; }
    echo "building promtool $version (once; cached in $dir)" >&2
    mkdir -p "$dir.tmp"
    GOBIN=$dir.tmp GOFLAGS=-mod=mod CGO_ENABLED=0 \
        go install "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir/promtool"
