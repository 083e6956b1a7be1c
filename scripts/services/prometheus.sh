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

SERVICE=prometheus
# shellcheck source=scripts/services/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
prometheus_bin="${CANDLELIGHT_PROMETHEUS:-prometheus}"

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
    refuse_if_running "$dir"

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

    wait_until "$pid" "$dir/prometheus.log" http_ok "http://127.0.0.1:$port/-/ready"
    printf 'pid=%s\nport=%s\nurl=%s\nconfig=%s\nlog=%s\n' \
        "$pid" "$port" "http://127.0.0.1:$port" "$config" "$dir/prometheus.log"
}

service_main "$@"
