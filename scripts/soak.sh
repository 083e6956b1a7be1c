#!/usr/bin/env bash
# Soak test: starts the server (the model, a KV pool of 2,048 positions so the
# pool's touched part levels off during warm-up), sends it requests of mixed
# shapes with scripts/soak.py (cancellations and bad input included), checks
# what must be left after them (no reserved KV, flat memory after warm-up, no
# leaked file descriptors, no unexpected error), then stops it with SIGTERM,
# which must drain and exit 0.
#
#   scripts/soak.sh [--requests N] [--threads T] [-- SERVER-FLAGS...]
#
# 10,000 requests (the default) take about 10 minutes on 2 cores; CI runs a
# shorter soak (`--requests 1500`). The server binary is CANDLELIGHT_BIN, else
# the release build, else the debug build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requests=10000 threads=8 server_flags=()
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --) shift; server_flags=("$@"); break ;;
        *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
target="${CARGO_TARGET_DIR:-$root/target}"
bin="${CANDLELIGHT_BIN:-}"
[ -n "$bin" ] || { [ -x "$target/release/candlelight" ] && bin="$target/release/candlelight"; } || bin="$target/debug/candlelight"
[ -x "$bin" ] || { echo "soak.sh: no server binary at $bin: cargo build -p candlelight" >&2; exit 1; }
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp -t candlelight-soak.XXXXXX.log)"
OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none "$bin" serve \
    --model "$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" --host 127.0.0.1 --port "$port" \
    --threads 2 --max-total-tokens 2048 "${server_flags[@]}" >"$log" 2>&1 &
pid=$!
trap 'kill -9 "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/health" && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; echo "soak.sh: the server died" >&2; exit 1; }
    sleep 0.2
done
status=0
python3 "$root/scripts/soak.py" "http://127.0.0.1:$port" "$pid" --requests "$requests" --threads "$threads" || status=$?
kill -TERM "$pid"
if wait "$pid"; then
    echo "soak: the server drained and exited 0 on SIGTERM"
else
    echo "soak: FAIL: the server exited $? on SIGTERM (log: $log)" >&2
    status=1
fi
trap - EXIT
[ "$status" -eq 0 ] && rm -f "$log"
exit "$status"
