#!/usr/bin/env bash
# Engine bench: candlelight vs llama.cpp vs candle's stock quantized llama, same
# GGUF, 2 threads, one run. Builds with -C target-cpu=native.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
scripts/bench-setup.sh
. scripts/bench-env.sh
BENCH_THREADS="${BENCH_THREADS:-2}" cargo bench --features bench-candle --bench engine
