#!/usr/bin/env bash
# Builds Jaeger (Apache-2.0) from the Go module proxy and prints the binary's path.
#
# The trace store behind the project's collector in tests (tests/trace_store.rs)
# and in local runs without Docker: `cmd/jaeger` is Jaeger's v2 binary, an
# OpenTelemetry Collector distribution with an OTLP receiver, in-memory (or
# other) storage and the query API/UI (scripts/services/jaeger.sh runs it).
#
# Jaeger's go.mod carries a replace directive, so `go install ...@version`
# refuses it; the build goes through a throwaway module that requires Jaeger as
# a tool and repeats its replace directives. The binary is cached under
# $CANDLELIGHT_CACHE_DIR (default $HOME/.cache/candlelight)/jaeger/<version>/
# with a stamp of the version and Go toolchain. A cold build (downloads
# included) costs about 6 CPU-minutes (12 minutes of wall time measured on a
# busy, shared 2-core VM); a cached one returns at once.
#
# Usage: scripts/build-jaeger.sh [--force | --check]
#   --force  rebuild even when cached
#   --check  print the cached binary's path if it is built and current, else
#            exit 1 without building (tests use it to decide whether to skip)
set -euo pipefail

version="${CANDLELIGHT_JAEGER_VERSION:-v1.76.0}"
module="github.com/jaegertracing/jaeger"
cache="${CANDLELIGHT_CACHE_DIR:-$HOME/.cache/candlelight}/jaeger/$version"
bin="$cache/jaeger"
stamp="$cache/.stamp"

die() { echo "build-jaeger: $*" >&2; exit 1; }

if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin /usr/lib/go/bin; do
        if [ -x "$candidate/go" ]; then PATH="$candidate:$PATH"; fi
    done
fi
command -v go >/dev/null 2>&1 || die "no 'go' toolchain on PATH"

want="$module@$version $(go version)"
if [ "${1:-}" != "--force" ] && [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$bin"
    exit 0
fi
[ "${1:-}" != "--check" ] || exit 1

mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "build-jaeger: building $module/cmd/jaeger $version into $bin (minutes the first time)" >&2
cd "$work"
go mod init candlelight.local/jaeger-build >/dev/null 2>&1
# Repeat Jaeger's own replace directives (a dependency's replaces do not apply
# to the main module), so the binary links what upstream tests and releases.
go mod download -json "$module@$version" >"$work/module.json" ||
    { cat "$work/module.json" >&2; die "cannot download $module@$version"; }
gomod="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$work/module.json")"
awk '
    /^replace \($/ { block = 1; next }
    block && /^\)$/ { block = 0; next }
    block { print; next }
    /^replace / { sub(/^replace /, ""); print }
' "$gomod" | while read -r line; do
    [ -n "$line" ] || continue
    old="$(echo "$line" | sed 's/ *=>.*//; s/ /@/')"
    new="$(echo "$line" | sed 's/.*=> *//; s/ /@/')"
    go mod edit -replace "$old=$new"
done
# `go get` lists every module it adds (hundreds of lines): show them only on failure.
go get -tool "$module/cmd/jaeger@$version" >"$work/get.log" 2>&1 || { cat "$work/get.log" >&2; die "go get failed"; }
# The version the binary reports (`jaeger version`, the query API's /api/version...).
ldflags="-s -w -X $module/internal/version.latestVersion=$version"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" "$module/cmd/jaeger"
mv "$bin.tmp" "$bin"
echo "$want" >"$stamp"
echo "$bin"
