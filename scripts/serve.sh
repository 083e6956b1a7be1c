#!/usr/bin/env bash
# The main job: fetch the default model, build the server, serve on port 3000.
# Extra arguments go to `candlelight serve` (see `candlelight serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --bin candlelight
# Wherever cargo puts its output (CARGO_TARGET_DIR may be set).
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/release/candlelight" serve "$@"
