#!/usr/bin/env bash
# Builds candlelight's OpenTelemetry Collector distribution (collector/) into
# $CANDLELIGHT_CACHE_DIR (default $HOME/.cache/candlelight)/collector/
# candlelight-otelcol and prints the binary's path. The cache lives outside the
# clone, so a fresh clone (CI) reuses the last build of the same sources.
#
# The build is cached: a stamp file records a hash of the module's sources and
# the Go version, and the binary is rebuilt only when that hash changes. Go's
# own module and build caches ($GOMODCACHE, $GOCACHE) make a rebuild after a
# small change cheap; the first build on a fresh 2-core machine takes several
# minutes and downloads modules from the Go module proxy.
#
# Usage: scripts/build-collector.sh [--force]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/collector"
out_dir="${CANDLELIGHT_CACHE_DIR:-$HOME/.cache/candlelight}/collector"
bin="$out_dir/candlelight-otelcol"
stamp="$out_dir/.source-hash"

if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin /usr/lib/go/bin; do
        if [ -x "$candidate/go" ]; then PATH="$candidate:$PATH"; fi
    done
fi
command -v go >/dev/null 2>&1 || { echo "build-collector: no 'go' toolchain on PATH" >&2; exit 1; }

hash="$(cd "$src" && { go version; cat go.mod go.sum ./*.go; } | sha256sum | cut -d' ' -f1)"

if [ "${1:-}" != "--force" ] && [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$out_dir"
echo "build-collector: building $bin (first build takes minutes)" >&2
# CGO off gives a static binary that also runs in a distroless/scratch image.
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$hash" >"$stamp"
echo "$bin"
