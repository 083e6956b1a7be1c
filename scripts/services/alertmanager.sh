#!/usr/bin/env bash
# Start and stop an Alertmanager (Debian's prometheus-alertmanager) for tests
# and local runs, with prometheus/alertmanager.yml.
#
#   scripts/services/alertmanager.sh start DIR [--port PORT]
#       Checks the config with amtool, starts on 127.0.0.1:PORT (a free port if
#       left out) with its state in DIR/data, waits for /-/ready, then prints
#       KEY=VALUE lines: pid, port, url, log.
#   scripts/services/alertmanager.sh stop DIR
set -euo pipefail

SERVICE=alertmanager
# shellcheck source=scripts/services/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bin="${CANDLELIGHT_ALERTMANAGER:-}"
if [ -z "$bin" ]; then
    for candidate in prometheus-alertmanager alertmanager; do
        if command -v "$candidate" >/dev/null 2>&1; then bin="$candidate"; break; fi
    done
fi

cmd_start() {
    local dir="$1"; shift
    local port=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) port="$2" ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    [ -n "$bin" ] || die "no alertmanager binary (scripts/install-deps.sh installs prometheus-alertmanager)"
    command -v amtool >/dev/null 2>&1 && amtool check-config "$root/prometheus/alertmanager.yml" >/dev/null
    : "${port:=$(free_port)}"
    local cluster_port
    cluster_port="$(free_port)"
    mkdir -p "$dir/data"
    setsid "$bin" \
        --config.file="$root/prometheus/alertmanager.yml" \
        --storage.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" \
        --cluster.listen-address="127.0.0.1:$cluster_port" \
        >"$dir/alertmanager.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/alertmanager.pid"
    wait_until "$pid" "$dir/alertmanager.log" http_ok "http://127.0.0.1:$port/-/ready"
    printf 'pid=%s\nport=%s\nurl=%s\nlog=%s\n' "$pid" "$port" "http://127.0.0.1:$port" "$dir/alertmanager.log"
}

service_main "$@"
