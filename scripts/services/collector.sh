#!/usr/bin/env bash
# Start and stop the candlelight OpenTelemetry Collector for tests and local runs.
#
#   scripts/services/collector.sh start DIR [--config FILE] [--grpc PORT] [--http PORT]
#                                           [--prometheus PORT] [--health PORT]
#                                           [--self-metrics PORT] [--tempo HOST:PORT]
#       Runs otel-collector.yaml (or FILE) with every listener on 127.0.0.1; a port
#       left out is a free one. Waits (CANDLELIGHT_SERVICE_TIMEOUT, default 60 s)
#       for the health check, then prints KEY=VALUE lines: pid, grpc, http,
#       prometheus, health, self_metrics, log.
#   scripts/services/collector.sh start-trace-backend DIR [--grpc PORT] [--health PORT]
#       Runs collector/trace-backend.yaml, the Tempo stand-in: traces received on
#       --grpc are written as OTLP/JSON lines to DIR/traces.jsonl. Prints pid,
#       grpc, health, traces, log.
#   scripts/services/collector.sh stop DIR
#       Stops whatever start/start-trace-backend left running in DIR.
#
# The binary comes from scripts/build-collector.sh (cached) unless
# CANDLELIGHT_OTELCOL names one. State lives in DIR: collector.pid, collector.log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
timeout_s="${CANDLELIGHT_SERVICE_TIMEOUT:-60}"

die() { echo "collector.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

otelcol_bin() {
    if [ -n "${CANDLELIGHT_OTELCOL:-}" ]; then echo "$CANDLELIGHT_OTELCOL"; return; fi
    "$root/scripts/build-collector.sh"
}

# Polls the health_check extension until it answers 200, the process dies, or time runs out.
wait_healthy() {
    local pid="$1" port="$2" log="$3" deadline=$((SECONDS + timeout_s))
    until curl -fs -o /dev/null "http://127.0.0.1:$port/"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2
            die "collector exited before it was healthy (log: $log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill "$pid" 2>/dev/null || true
            tail -n 40 "$log" >&2
            die "collector not healthy after ${timeout_s}s (log: $log)"
        fi
        sleep 0.2
    done
}

launch() { # DIR CONFIG -- runs the binary in the background with the caller's env
    local dir="$1" config="$2" bin
    bin="$(otelcol_bin)"
    [ -f "$dir/collector.pid" ] && kill -0 "$(cat "$dir/collector.pid")" 2>/dev/null &&
        die "a collector already runs from $dir (pid $(cat "$dir/collector.pid"))"
    # setsid: a test's Ctrl-C or process-group kill must not leave it half-stopped.
    setsid "$bin" --config "$config" >"$dir/collector.log" 2>&1 </dev/null &
    echo $! >"$dir/collector.pid"
}

cmd_start() {
    local dir="$1"; shift
    local config="$root/otel-collector.yaml" grpc="" http="" prom="" health="" self="" tempo="127.0.0.1:4317"
    while [ $# -gt 0 ]; do
        case "$1" in
            --config) config="$2" ;;
            --grpc) grpc="$2" ;;
            --http) http="$2" ;;
            --prometheus) prom="$2" ;;
            --health) health="$2" ;;
            --self-metrics) self="$2" ;;
            --tempo) tempo="$2" ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    : "${grpc:=$(free_port)}" "${http:=$(free_port)}" "${prom:=$(free_port)}" \
      "${health:=$(free_port)}" "${self:=$(free_port)}"
    mkdir -p "$dir"
    OTELCOL_OTLP_GRPC_ENDPOINT="127.0.0.1:$grpc" \
    OTELCOL_OTLP_HTTP_ENDPOINT="127.0.0.1:$http" \
    OTELCOL_PROMETHEUS_ENDPOINT="127.0.0.1:$prom" \
    OTELCOL_HEALTH_ENDPOINT="127.0.0.1:$health" \
    OTELCOL_SELF_METRICS_HOST=127.0.0.1 \
    OTELCOL_SELF_METRICS_PORT="$self" \
    TEMPO_OTLP_ENDPOINT="$tempo" \
        launch "$dir" "$config"
    local pid; pid="$(cat "$dir/collector.pid")"
    wait_healthy "$pid" "$health" "$dir/collector.log"
    printf 'pid=%s\ngrpc=%s\nhttp=%s\nprometheus=%s\nhealth=%s\nself_metrics=%s\nlog=%s\n' \
        "$pid" "$grpc" "$http" "$prom" "$health" "$self" "$dir/collector.log"
}

cmd_start_trace_backend() {
    local dir="$1"; shift
    local grpc="" health=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --grpc) grpc="$2" ;;
            --health) health="$2" ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    : "${grpc:=$(free_port)}" "${health:=$(free_port)}"
    mkdir -p "$dir"
    TRACE_BACKEND_OTLP_GRPC_ENDPOINT="127.0.0.1:$grpc" \
    TRACE_BACKEND_HEALTH_ENDPOINT="127.0.0.1:$health" \
    TRACE_BACKEND_FILE="$dir/traces.jsonl" \
        launch "$dir" "$root/collector/trace-backend.yaml"
    local pid; pid="$(cat "$dir/collector.pid")"
    wait_healthy "$pid" "$health" "$dir/collector.log"
    printf 'pid=%s\ngrpc=%s\nhealth=%s\ntraces=%s\nlog=%s\n' \
        "$pid" "$grpc" "$health" "$dir/traces.jsonl" "$dir/collector.log"
}

cmd_stop() {
    local dir="$1" pid
    [ -f "$dir/collector.pid" ] || return 0
    pid="$(cat "$dir/collector.pid")"
    if kill "$pid" 2>/dev/null; then
        # Graceful first (flushes batches and the file exporter), then force.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/collector.pid"
}

[ $# -ge 2 ] || die "usage: $0 start|start-trace-backend|stop DIR [options]"
action="$1"; dir="$2"; shift 2
case "$action" in
    start) cmd_start "$dir" "$@" ;;
    start-trace-backend) cmd_start_trace_backend "$dir" "$@" ;;
    stop) cmd_stop "$dir" ;;
    *) die "unknown action $action" ;;
esac
