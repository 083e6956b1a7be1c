# shellcheck shell=bash disable=SC2034
# Shared by the start/stop scripts in this folder (sourced, never run).
# The sourcing script sets SERVICE (its name: the pid file is DIR/$SERVICE.pid,
# the log DIR/$SERVICE.log) and defines cmd_start (and any other cmd_<action>).

# root and timeout_s are for the sourcing scripts too.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
timeout_s="${CANDLELIGHT_SERVICE_TIMEOUT:-60}"

die() { echo "$SERVICE.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# refuse_if_running DIR: one instance per state directory.
refuse_if_running() {
    local pidfile="$1/$SERVICE.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "a $SERVICE already runs from $1 (pid $(cat "$pidfile"))"
    fi
}

# wait_until PID LOG CHECK...: runs CHECK until it succeeds. Dies with the log's
# tail if the process exits first or CANDLELIGHT_SERVICE_TIMEOUT (60 s) passes.
wait_until() {
    local pid="$1" log="$2" deadline=$((SECONDS + timeout_s))
    shift 2
    until "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2
            die "$SERVICE exited before it was ready (log: $log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill "$pid" 2>/dev/null || true
            tail -n 40 "$log" >&2
            die "$SERVICE not ready after ${timeout_s}s (log: $log)"
        fi
        sleep 0.2
    done
}

# http_ok URL...: every URL answers 2xx.
http_ok() {
    local url
    for url in "$@"; do curl -fs -o /dev/null "$url" || return 1; done
}

# cmd_stop DIR: SIGTERM (a graceful stop flushes what the service buffers),
# up to 10 s to exit, then SIGKILL. Nothing to do without a pid file.
cmd_stop() {
    local pidfile="$1/$SERVICE.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# service_main "$@": ACTION DIR [options] → cmd_<action> DIR [options].
service_main() {
    [ $# -ge 2 ] || die "usage: $0 ACTION DIR [options] (see the header of $0)"
    local action="$1" dir="$2"
    shift 2
    declare -F "cmd_${action//-/_}" >/dev/null || die "unknown action $action"
    "cmd_${action//-/_}" "$dir" "$@"
}
