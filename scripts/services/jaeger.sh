#!/usr/bin/env bash
# Start and stop Jaeger (in-memory trace store) for tests and local runs.
#
#   scripts/services/jaeger.sh start DIR [--otlp-grpc PORT] [--query PORT]
#                                        [--query-grpc PORT] [--health PORT]
#       Runs jaeger.yaml with every listener on 127.0.0.1; a port left out is a
#       free one. Traces are kept in memory only. Waits
#       (CANDLELIGHT_SERVICE_TIMEOUT, default 60 s) until the health check
#       reports every component started and the query API answers, then prints
#       KEY=VALUE lines: pid, otlp_grpc, query, query_url, query_grpc, health, log.
#       Point the collector at it: scripts/services/collector.sh start D --tempo 127.0.0.1:<otlp_grpc>
#   scripts/services/jaeger.sh stop DIR
#
# The binary comes from scripts/build-jaeger.sh (cached) unless CANDLELIGHT_JAEGER
# names one. State lives in DIR: jaeger.pid, jaeger.log.
set -euo pipefail

SERVICE=jaeger
# shellcheck source=scripts/services/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

jaeger_bin() {
    if [ -n "${CANDLELIGHT_JAEGER:-}" ]; then echo "$CANDLELIGHT_JAEGER"; return; fi
    "$root/scripts/build-jaeger.sh"
}

# Ready when the health check says every component started (the OTLP receiver
# starts after the query extension) and the query API answers.
wait_ready() {
    local pid="$1" health="$2" query="$3" log="$4"
    wait_until "$pid" "$log" http_ok "http://127.0.0.1:$health/status" "http://127.0.0.1:$query/api/services"
}

cmd_start() {
    local dir="$1"; shift
    local otlp="" query="" query_grpc="" health=""
    while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || die "option $1 needs a value"
        case "$1" in
            --otlp-grpc) otlp="$2" ;;
            --query) query="$2" ;;
            --query-grpc) query_grpc="$2" ;;
            --health) health="$2" ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    local bin; bin="$(jaeger_bin)"
    : "${otlp:=$(free_port)}" "${query:=$(free_port)}" "${query_grpc:=$(free_port)}" \
      "${health:=$(free_port)}"
    mkdir -p "$dir"
    refuse_if_running "$dir"
    # setsid: a test's Ctrl-C or process-group kill must not leave it half-stopped.
    JAEGER_OTLP_GRPC_ENDPOINT="127.0.0.1:$otlp" \
    JAEGER_QUERY_HTTP_ENDPOINT="127.0.0.1:$query" \
    JAEGER_QUERY_GRPC_ENDPOINT="127.0.0.1:$query_grpc" \
    JAEGER_HEALTH_ENDPOINT="127.0.0.1:$health" \
        setsid "$bin" --config "$root/jaeger.yaml" >"$dir/jaeger.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/jaeger.pid"
    wait_ready "$pid" "$health" "$query" "$dir/jaeger.log"
    printf 'pid=%s\notlp_grpc=%s\nquery=%s\nquery_url=%s\nquery_grpc=%s\nhealth=%s\nlog=%s\n' \
        "$pid" "$otlp" "$query" "http://127.0.0.1:$query" "$query_grpc" "$health" "$dir/jaeger.log"
}

service_main "$@"
