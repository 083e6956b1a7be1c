#!/usr/bin/env bash
# The main job: fetch the default model, build the server, serve on port 3000.
# Extra arguments go to `candlelight serve` (see `candlelight serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --bin candlelight
exec target/release/candlelight serve "$@"
