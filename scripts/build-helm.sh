#!/usr/bin/env bash
# Builds Helm (the version pinned below) from the Go module proxy and prints the
# binary's path. The project's machines cannot download release tarballs, so
# `go install` compiles it from source; the first build on a 2-core machine
# takes a few minutes, later calls return the cached binary at once.
#
# Cache: $HOME/.cache/candlelight/helm/<version>/helm, plus a stamp recording
# the version and the Go toolchain that built it (a different Go rebuilds).
#
# Usage: scripts/build-helm.sh [--force]
set -euo pipefail

version="v3.22.0"
cache_root="${CANDLELIGHT_CACHE_DIR:-$HOME/.cache/candlelight}"
dir="$cache_root/helm/$version"
bin="$dir/helm"
stamp="$dir/.stamp"

if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin /usr/lib/go/bin; do
        if [ -x "$candidate/go" ]; then PATH="$candidate:$PATH"; fi
    done
fi
command -v go >/dev/null 2>&1 || {
    echo "build-helm: no 'go' toolchain on PATH (Helm $version needs Go >= 1.26; install it from https://go.dev/dl)" >&2
    exit 1
}

want="helm.sh/helm/v3@$version $(go version) kube-version-stamped"
if [ "${1:-}" != "--force" ] && [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$dir"
echo "build-helm: building Helm $version from the Go module proxy (first build takes minutes)" >&2
tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# `go install pkg@version` builds in module mode with Helm's own go.mod and
# go.sum, i.e. exactly the dependency set of the release. Helm's Makefile
# stamps, through -X ldflags, its version and the Kubernetes version it
# assumes (`helm template` capabilities, `helm lint` deprecation checks),
# derived from its client-go module (v0.37.x -> Kubernetes 1.37). Without them
# helm says "v3.22+unreleased" and assumes Kubernetes 1.20. Do the same here.
gomod="$(go mod download -json "helm.sh/helm/v3@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod")"
case "$client_go" in
    v0.*.*) ;;
    *) echo "build-helm: cannot read k8s.io/client-go's version from $gomod" >&2; exit 1 ;;
esac
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
ldflags="$ldflags -X helm.sh/helm/v3/internal/version.metadata="
ldflags="$ldflags -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags="$ldflags -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
done
GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version"
mv "$tmp/helm" "$bin"
echo "$want" >"$stamp"
echo "$bin"
