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

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
timeout_s="${CANDLELIGHT_SERVICE_TIMEOUT:-60}"

die() { echo "jaeger.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

jaeger_bin() {
    if [ -n "${CANDLELIGHT_JAEGER:-}" ]; then echo "$CANDLELIGHT_JAEGER"; return; fi
    "$root/scripts/build-jaeger.sh"
}

# Ready when the health check says every component started (the OTLP receiver
# starts after the query extension) and the query API answers.
wait_ready() {
    local pid="$1" health="$2" query="$3" log="$4" deadline=$((SECONDS + timeout_s))
    until curl -fs -o /dev/null "http://127.0.0.1:$health/status" &&
          curl -fs -o /dev/null "http://127.0.0.1:$query/api/services"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2
            die "jaeger exited before it was ready (log: $log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill "$pid" 2>/dev/null || true
            tail -n 40 "$log" >&2
            die "jaeger not ready after ${timeout_s}s (log: $log)"
        fi
        sleep 0.2
    done
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
    if [ -f "$dir/jaeger.pid" ] && kill -0 "$(cat "$dir/jaeger.pid")" 2>/dev/null; then
        die "a Jaeger already runs from $dir (pid $(cat "$dir/jaeger.pid"))"
    fi
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

cmd_stop() {
    local dir="$1" pid
    [ -f "$dir/jaeger.pid" ] || return 0
    pid="$(cat "$dir/jaeger.pid")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/jaeger.pid"
}

[ $# -ge 2 ] || die "usage: $0 start|stop DIR [options]"
action="$1"; dir="$2"; shift 2
case "$action" in
    start) cmd_start "$dir" "$@" ;;
    stop) cmd_stop "$dir" ;;
    *) die "unknown action $action" ;;
esac
