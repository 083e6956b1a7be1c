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

SERVICE=collector
# shellcheck source=scripts/services/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

otelcol_bin() {
    if [ -n "${CANDLELIGHT_OTELCOL:-}" ]; then echo "$CANDLELIGHT_OTELCOL"; return; fi
    "$root/scripts/build-collector.sh"
}

# Polls the health_check extension until it answers 200, the process dies, or time runs out.
wait_healthy() {
    local pid="$1" port="$2" log="$3"
    wait_until "$pid" "$log" http_ok "http://127.0.0.1:$port/"
}

launch() { # DIR CONFIG -- runs the binary in the background with the caller's env
    local dir="$1" config="$2" bin
    bin="$(otelcol_bin)"
    refuse_if_running "$dir"
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

service_main "$@"
