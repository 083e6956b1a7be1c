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

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
timeout_s="${CANDLELIGHT_SERVICE_TIMEOUT:-60}"
bin="${CANDLELIGHT_ALERTMANAGER:-}"
if [ -z "$bin" ]; then
    for candidate in prometheus-alertmanager alertmanager; do
        if command -v "$candidate" >/dev/null 2>&1; then bin="$candidate"; break; fi
    done
fi

die() { echo "alertmanager.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

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
    local deadline=$((SECONDS + timeout_s))
    until curl -fs -o /dev/null "http://127.0.0.1:$port/-/ready"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$dir/alertmanager.log" >&2
            die "alertmanager exited before it was ready (log: $dir/alertmanager.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill "$pid" 2>/dev/null || true
            die "alertmanager not ready after ${timeout_s}s"
        fi
        sleep 0.2
    done
    printf 'pid=%s\nport=%s\nurl=%s\nlog=%s\n' "$pid" "$port" "http://127.0.0.1:$port" "$dir/alertmanager.log"
}

cmd_stop() {
    local dir="$1" pid
    [ -f "$dir/alertmanager.pid" ] || return 0
    pid="$(cat "$dir/alertmanager.pid")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/alertmanager.pid"
}

[ $# -ge 2 ] || die "usage: $0 start|stop DIR [options]"
action="$1"; dir="$2"; shift 2
case "$action" in
    start) cmd_start "$dir" "$@" ;;
    stop) cmd_stop "$dir" ;;
    *) die "unknown action $action" ;;
esac
