#!/usr/bin/env bash
# Telemetry overhead bench: throughput and TTFT at 8 concurrent streams with
# everything on (OTLP traces and metrics to a real collector, host and GPU
# samplers, /metrics) versus `--no-telemetry`, in one run.
#
# Each round starts a fresh release server per mode and drives it with loadgen
# (closed loop). Modes alternate order from round to round so drift on a shared
# machine (thermal, neighbours) falls on both. Prints per-round numbers, the
# medians, and the ratios on/off. The goal is under 1% throughput loss.
# Wall-clock throughput moves with whatever else runs on the machine, so the
# server's own CPU time per generated token (from /proc, robust to neighbours)
# is reported too: it is the cost telemetry adds. So is the CPU time of the two
# local collectors (the pipeline and the stand-in trace backend), which on a
# 2-core machine compete with the engine for the same cores.
#
# AA=1 runs the same bench with telemetry off in both arms: the ratios it
# prints are the machine's noise floor, to read the real ratios against.
#
# Environment: ROUNDS (6), DURATION (20s), WARMUP (5s), AA (0), CONCURRENCY (8),
# INPUT_LEN (128), OUTPUT_LEN (64), THREADS (all cores), METRIC_INTERVAL_MS
# (5000: export far more often than the OTel default of 60 s, to be demanding).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
AA=${AA:-0}
CONCURRENCY=${CONCURRENCY:-8}
INPUT_LEN=${INPUT_LEN:-128}
OUTPUT_LEN=${OUTPUT_LEN:-64}
THREADS=${THREADS:-$(nproc)}
METRIC_INTERVAL_MS=${METRIC_INTERVAL_MS:-5000}
MODEL=${CANDLELIGHT_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}

scripts/fetch-model.sh >/dev/null
. scripts/bench-env.sh
cargo build --release -q -p candlelight --bin candlelight
cargo build --release -q -p loadgen --bin loadgen

work=$(mktemp -d)
server=""
declare -A pid port
cleanup() {
    for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/services/collector.sh stop "$work/collector" || true
    scripts/services/collector.sh stop "$work/backend" || true
    rm -rf "$work"
}
trap cleanup EXIT

value() { grep "^$1=" "$2" | cut -d= -f2-; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The collector forwards traces to a second collector standing in for Tempo.
scripts/services/collector.sh start-trace-backend "$work/backend" >"$work/backend.env"
scripts/services/collector.sh start "$work/collector" \
    --tempo "127.0.0.1:$(value grpc "$work/backend.env")" >"$work/collector.env"
otlp="http://127.0.0.1:$(value grpc "$work/collector.env")"

start_server() { # MODE ROUND
    local mode=$1 round=$2 flags=()
    if [ "$mode" = on ] && [ "$AA" != 1 ]; then
        flags=(--otlp-endpoint "$otlp" --otlp-protocol grpc --metric-export-interval-ms "$METRIC_INTERVAL_MS")
    else
        flags=(--no-telemetry)
    fi
    port[$mode]=$(free_port)
    RUST_LOG=warn "$BIN"/candlelight serve --model "$MODEL" --port "${port[$mode]}" \
        --threads "$THREADS" "${flags[@]}" >"$work/server-$mode-$round.log" 2>&1 &
    pid[$mode]=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:${port[$mode]}/health" >/dev/null && return
        kill -0 "${pid[$mode]}" 2>/dev/null || { cat "$work/server-$mode-$round.log" >&2; exit 1; }
        sleep 0.1
    done
}

# CPU ticks of both collectors: on this box they share the cores with the server.
collector_ticks() {
    echo $(($(cpu_ticks "$(cat "$work/collector/collector.pid")") + $(cpu_ticks "$(cat "$work/backend/collector.pid")")))
}

drive() { # MODE ROUND: loadgen against the mode's server; records its and the collectors' CPU time
    local mode=$1 round=$2 before coll_before
    before=$(cpu_ticks "${pid[$mode]}")
    coll_before=$(collector_ticks)
    # --sample-interval 0: loadgen must not scrape /metrics in one mode only.
    "$BIN"/loadgen --url "http://127.0.0.1:${port[$mode]}" --api completions \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
        --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN" --ignore-eos \
        --no-plots --no-progress --sample-interval 0 \
        --output-dir "$work/$mode-$round" >/dev/null
    echo $(($(cpu_ticks "${pid[$mode]}") - before)) >"$work/$mode-$round/cpu_ticks"
    echo $(($(collector_ticks) - coll_before)) >"$work/$mode-$round/collector_ticks"
}

stop_server() { # MODE
    kill "${pid[$1]}"
    wait "${pid[$1]}" 2>/dev/null || true
    unset "pid[$1]"
}

for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
    for mode in $order; do
        echo "round $round: telemetry $mode" >&2
        start_server "$mode" "$round"
        drive "$mode" "$round"
        stop_server "$mode"
    done
done

python3 - "$work" "$ROUNDS" "$CONCURRENCY" "$(getconf CLK_TCK)" <<'PY'
import csv, json, statistics, sys
work, rounds, conc, tck = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows = {"off": [], "on": []}
print(f"{'mode':<6}{'round':>6}{'req/s':>8}{'out tok/s':>11}{'TTFT p50 ms':>13}{'TTFT p95 ms':>13}"
      f"{'CPU ms/tok':>12}{'coll. ms/tok':>14}{'errors':>8}")
for r in range(1, rounds + 1):
    for mode in ("off", "on"):
        d = f"{work}/{mode}-{r}"
        s = json.load(open(f"{d}/result.json"))["steps"][0]
        tokens = sum(int(x["output_tokens"] or 0) for x in csv.DictReader(open(f"{d}/requests.csv")))
        cpu_ms = int(open(f"{d}/cpu_ticks").read()) * 1000 / tck
        coll_ms = int(open(f"{d}/collector_ticks").read()) * 1000 / tck
        ttft = s["ttft"] or {"p50": float("nan"), "p95": float("nan")}  # no request completed
        row = (s["throughput"]["requests_per_s"], s["throughput"]["output_tokens_per_s"] or 0.0,
               ttft["p50"] * 1e3, ttft["p95"] * 1e3, cpu_ms / max(tokens, 1),
               coll_ms / max(tokens, 1), s["requests"]["errors"])
        rows[mode].append(row)
        print(f"{mode:<6}{r:>6}{row[0]:>8.2f}{row[1]:>11.1f}{row[2]:>13.1f}{row[3]:>13.1f}"
              f"{row[4]:>12.2f}{row[5]:>14.2f}{row[6]:>8}")
med = {m: [statistics.median(col) for col in zip(*rows[m])] for m in rows}
for m in ("off", "on"):
    v = med[m]
    print(f"{m + ' median':<12}{v[0]:>8.2f}{v[1]:>11.1f}{v[2]:>13.1f}{v[3]:>13.1f}{v[4]:>12.2f}{v[5]:>14.2f}")
ratio = lambda i: med["on"][i] / med["off"][i] if med["off"][i] else float("nan")
tput, ttft, cpu = ratio(1), ratio(2), ratio(4)
print(f"\ntelemetry on/off at {conc} concurrent streams (medians of {rounds} rounds):")
print(f"  throughput ratio {tput:.4f} ({(1 - tput) * 100:+.2f}% loss)")
print(f"  TTFT p50 ratio   {ttft:.4f}")
print(f"  server CPU per output token ratio {cpu:.4f} ({(cpu - 1) * 100:+.2f}% cost)")
coll, total = med["on"][5], med["on"][4] + med["on"][5]
print(f"  collectors' CPU per output token with telemetry on: {coll:.2f} ms "
      f"({coll / total * 100:.1f}% of server + collectors, on the same cores)")
PY
