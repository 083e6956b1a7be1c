#!/usr/bin/env bash
# The whole test suite, from a clone of this repository alone: checks the
# tools it needs, installs what is missing (Debian packages, the models, and
# the Go and C++ tools the tests run, all cached under ~/.cache/candlelight),
# then runs every check and test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s  (%ss)\n' "$*" "$SECONDS"; }

step "system packages"
scripts/install-deps.sh
scripts/check-tools.sh

step "models"
scripts/fetch-model.sh
# Q4_K_M, Q4_0 and Q8_0 of the same model, made with llama.cpp's quantize tool.
scripts/make-test-models.sh

step "Go tools: OpenTelemetry Collector, Jaeger"
scripts/build-collector.sh
scripts/build-jaeger.sh
export CANDLELIGHT_REQUIRE_JAEGER=1

step "Helm chart: lint, render, strict decoding, collector configs"
scripts/check-chart.sh

step "GPU scripts: the parts that need no GPU (tests/gpu_check_cpu.rs runs the rest on the CPU)"
for s in scripts/build-cuda.sh scripts/gpu-check.sh; do bash -n "$s"; done
scripts/build-cuda.sh --dry-run >/dev/null
scripts/gpu-check.sh --help >/dev/null

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build"
cargo build --workspace --bins
target="${CARGO_TARGET_DIR:-$PWD/target}/debug"
# The tests that start real processes use these binaries.
export CANDLELIGHT_BIN="$target/candlelight" CANDLELIGHT_LOADGEN_BIN="$target/loadgen"

step "tests"
# The integration tests share two cores with the servers under test: test
# binaries run one at a time, at most two tests of one binary at once.
cargo test --workspace --no-fail-fast -- --test-threads=2

step "short soak (no reserved KV left, flat memory, no leaked descriptors)"
scripts/soak.sh --requests 1500

step "done"
