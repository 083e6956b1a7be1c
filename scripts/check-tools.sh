#!/usr/bin/env bash
# Checks that every tool the test suite runs is present and new enough, and
# says in one line what to do when one is not. scripts/install-deps.sh
# installs the Debian packages; the toolchains (Rust, Go, Python) are the
# machine's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail=0
missing() { echo "check-tools: $1" >&2; fail=1; }

for tool in cargo rustc python3 curl cmake make g++ taskset promtool amtool psql xz strip; do
    command -v "$tool" >/dev/null 2>&1 || missing "no '$tool' on PATH: run scripts/install-deps.sh (Debian) or install it"
done
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || missing "no haproxy: run scripts/install-deps.sh"

# Go: the collector and Jaeger need the version their go.mod names. Debian's
# golang package is older; the official toolchain goes in /usr/local/go.
for candidate in /usr/local/go/bin /usr/lib/go/bin; do
    [ -x "$candidate/go" ] && PATH="$candidate:$PATH"
done
want="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$root/collector/go.mod")"
if ! command -v go >/dev/null 2>&1; then
    missing "no Go toolchain: install Go >= $want from https://go.dev/dl (Debian's golang is too old) into /usr/local/go"
else
    have="$(go env GOVERSION | sed 's/^go//')"
    if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
        missing "Go $have is older than the $want collector/go.mod needs: install Go >= $want from https://go.dev/dl into /usr/local/go (Debian's golang package is too old)"
    fi
fi

# Rust: the workspace's rust-version.
want_rust="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml")"
have_rust="$(rustc --version | awk '{print $2}')"
if [ "$(printf '%s\n%s\n' "$want_rust" "$have_rust" | sort -V | head -n1)" != "$want_rust" ]; then
    missing "rustc $have_rust is older than the workspace's rust-version $want_rust: rustup update stable"
fi

[ "$fail" -eq 0 ] || exit 1
echo "check-tools: all present"
