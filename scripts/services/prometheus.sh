#!/usr/bin/env bash
# Start and stop a Prometheus (Debian's /usr/bin/prometheus) for tests and local runs.
#
#   scripts/services/prometheus.sh start DIR [--port PORT] [--collector HOST:PORT]
#                                            [--server HOST:PORT] [--scrape-interval DUR]
#                                            [--alertmanager HOST:PORT]
#       Writes DIR/prometheus.yml from prometheus/prometheus.yml with the compose
#       targets replaced: --collector for job otel-collector (the collector's
#       Prometheus exporter), --server for job candlelight (the server's /metrics).
#       --alertmanager for the alerts (prometheus/rules/ is copied beside the
#       config and loaded). A target left out keeps its compose host name and
#       is simply down.
#       Starts on 127.0.0.1:PORT (a free port if left out) with a fresh TSDB in
#       DIR/data, remote-write receiver and exemplar storage on, waits
#       (CANDLELIGHT_SERVICE_TIMEOUT, default 60 s) for /-/ready, then prints
#       KEY=VALUE lines: pid, port, url, config, log.
#   scripts/services/prometheus.sh stop DIR
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
timeout_s="${CANDLELIGHT_SERVICE_TIMEOUT:-60}"
prometheus_bin="${CANDLELIGHT_PROMETHEUS:-prometheus}"

die() { echo "prometheus.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_start() {
    local dir="$1"; shift
    local port="" collector="" server="" interval="" alertmanager=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) port="$2" ;;
            --collector) collector="$2" ;;
            --server) server="$2" ;;
            --scrape-interval) interval="$2" ;;
            --alertmanager) alertmanager="$2" ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    command -v "$prometheus_bin" >/dev/null 2>&1 || die "no $prometheus_bin (scripts/install-deps.sh installs it)"
    : "${port:=$(free_port)}"
    mkdir -p "$dir"
    if [ -f "$dir/prometheus.pid" ] && kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null; then
        die "a Prometheus already runs from $dir (pid $(cat "$dir/prometheus.pid"))"
    fi

    local config="$dir/prometheus.yml"
    rm -rf "$dir/rules" && cp -r "$root/prometheus/rules" "$dir/rules"
    sed -e "s#\"otel-collector:8889\"#\"${collector:-otel-collector:8889}\"#" \
        -e "s#\"alertmanager:9093\"#\"${alertmanager:-alertmanager:9093}\"#" \
        -e "s#\"candlelight:3000\"#\"${server:-candlelight:3000}\"#" \
        -e "s#^\(  scrape_interval:\) 15s#\1 ${interval:-15s}#" \
        -e "s#^\(  evaluation_interval:\) 15s#\1 ${interval:-15s}#" \
        "$root/prometheus/prometheus.yml" >"$config"

    rm -rf "$dir/data"
    setsid "$prometheus_bin" \
        --config.file="$config" \
        --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" \
        --web.enable-remote-write-receiver \
        --web.enable-lifecycle \
        --enable-feature=exemplar-storage \
        >"$dir/prometheus.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/prometheus.pid"

    local deadline=$((SECONDS + timeout_s))
    until curl -fs -o /dev/null "http://127.0.0.1:$port/-/ready"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$dir/prometheus.log" >&2
            die "prometheus exited before it was ready (log: $dir/prometheus.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill "$pid" 2>/dev/null || true
            tail -n 40 "$dir/prometheus.log" >&2
            die "prometheus not ready after ${timeout_s}s"
        fi
        sleep 0.2
    done
    printf 'pid=%s\nport=%s\nurl=%s\nconfig=%s\nlog=%s\n' \
        "$pid" "$port" "http://127.0.0.1:$port" "$config" "$dir/prometheus.log"
}

cmd_stop() {
    local dir="$1" pid
    [ -f "$dir/prometheus.pid" ] || return 0
    pid="$(cat "$dir/prometheus.pid")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/prometheus.pid"
}

[ $# -ge 2 ] || die "usage: $0 start|stop DIR [options]"
action="$1"; dir="$2"; shift 2
case "$action" in
    start) cmd_start "$dir" "$@" ;;
    stop) cmd_stop "$dir" ;;
    *) die "unknown action $action" ;;
esac
