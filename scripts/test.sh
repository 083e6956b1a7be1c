#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (apt
# packages, the model, the OpenTelemetry Collector), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
scripts/install-deps.sh
step "model"
scripts/fetch-model.sh
if [ -x scripts/build-collector.sh ]; then
  step "OpenTelemetry Collector"
  scripts/build-collector.sh
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build"
cargo build --workspace --bins
# loadgen's tests start the real server binary.
export CANDLELIGHT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/candlelight"

step "tests"
# The integration tests share two cores with the server under test: run test
# binaries one at a time so timings inside them stay meaningful.
cargo test --workspace --no-fail-fast -- --test-threads=2
