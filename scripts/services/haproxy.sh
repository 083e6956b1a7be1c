#!/usr/bin/env bash
# Start and stop an HAProxy (Debian's) in front of candlelight replicas, for the
# local cluster (scripts/cluster.sh) and tests.
#
#   scripts/services/haproxy.sh start DIR --server NAME=HOST:PORT [--server ...]
#                                         [--port PORT] [--stats-port PORT]
#                                         [--balance leastconn|roundrobin]
#       Writes DIR/haproxy.cfg: one HTTP frontend on 127.0.0.1:PORT balancing over
#       the servers (leastconn by default: generation streams last seconds, so the
#       count of open streams is the load), each health-checked with GET /health
#       (readiness: a draining or loading replica answers 503 and leaves the
#       rotation). A second listener on 127.0.0.1:STATS-PORT serves the stats page
#       (/stats, /stats;csv) and HAProxy's Prometheus exporter (/metrics).
#       Ports left out are free ones. Waits (CANDLELIGHT_SERVICE_TIMEOUT, default
#       60 s) until every server is UP, then prints KEY=VALUE lines: pid, port,
#       url, stats_port, stats_url, metrics, config, log.
#   scripts/services/haproxy.sh stop DIR
#
# Retries: only a failed connection (nothing was sent; the replica is gone) is
# redispatched to another server. Requests that reached a replica are never
# replayed (no layer-7 retry-on): a generation is not idempotent, and replaying
# it would double its cost and hide the failure from the client.
set -euo pipefail

SERVICE=haproxy
# shellcheck source=scripts/services/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
haproxy_bin="${CANDLELIGHT_HAPROXY:-}"
if [ -z "$haproxy_bin" ]; then
    haproxy_bin="$(command -v haproxy || true)"
    [ -n "$haproxy_bin" ] || haproxy_bin=/usr/sbin/haproxy
fi

write_config() { # FILE PORT STATS_PORT BALANCE SERVER...
    local file="$1" port="$2" stats="$3" balance="$4"; shift 4
    {
        cat <<EOF
# Written by scripts/services/haproxy.sh; regenerated on every start.
global
    log stdout format raw local0 info
    nbthread 1
    maxconn 2048

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    # Streams send a token every few tens of ms; these bound silence, not length.
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    timeout queue 30s
    timeout check 3s
    # Connection failures only (the default made explicit), then another server.
    retries 2
    retry-on conn-failure
    option redispatch 1

frontend candlelight
    bind 127.0.0.1:$port
    default_backend replicas

backend replicas
    balance $balance
    option httpchk
    http-check send meth GET uri /health
    http-check expect status 200
    # Down after 3 failed checks (about 3 s); up again after 2 good ones.
    default-server check inter 1s fastinter 500ms downinter 1s fall 3 rise 2
EOF
        local s
        for s in "$@"; do
            printf '    server %s %s\n' "${s%%=*}" "${s#*=}"
        done
        cat <<EOF

frontend stats
    bind 127.0.0.1:$stats
    http-request set-log-level silent
    http-request use-service prometheus-exporter if { path /metrics }
    stats enable
    stats uri /stats
    stats refresh 5s
EOF
    } >"$file"
}

# Polls the CSV stats until every server of the backend reports UP.
wait_all_up() {
    local pid="$1" stats="$2" log="$3" want="$4"
    wait_until "$pid" "$log" all_up "$stats" "$want"
}

# all_up STATS_PORT WANT: at least WANT servers of backend `replicas` are UP.
all_up() {
    local up
    up="$({ curl -fs "http://127.0.0.1:$1/stats;csv" 2>/dev/null || true; } |
        awk -F, '$1 == "replicas" && $2 != "BACKEND" && $18 ~ /^UP/ { n++ } END { print n + 0 }')"
    [ "$up" -ge "$2" ]
}

cmd_start() {
    local dir="$1"; shift
    local port="" stats="" balance="leastconn" servers=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) port="$2" ;;
            --stats-port) stats="$2" ;;
            --balance) balance="$2" ;;
            --server) [[ "$2" == *=*:* ]] || die "--server wants NAME=HOST:PORT, got $2"; servers+=("$2") ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    [ -x "$haproxy_bin" ] || die "no haproxy (scripts/install-deps.sh installs it)"
    [ ${#servers[@]} -gt 0 ] || die "no --server given"
    case "$balance" in leastconn|roundrobin) ;; *) die "--balance: leastconn or roundrobin" ;; esac
    : "${port:=$(free_port)}" "${stats:=$(free_port)}"
    mkdir -p "$dir"
    refuse_if_running "$dir"
    local config="$dir/haproxy.cfg"
    write_config "$config" "$port" "$stats" "$balance" "${servers[@]}"
    "$haproxy_bin" -c -q -f "$config" || die "invalid config $config"
    # -db: foreground, logs on stdout; setsid: out of the caller's process group.
    setsid "$haproxy_bin" -db -f "$config" >"$dir/haproxy.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/haproxy.pid"
    wait_all_up "$pid" "$stats" "$dir/haproxy.log" "${#servers[@]}"
    printf 'pid=%s\nport=%s\nurl=%s\nstats_port=%s\nstats_url=%s\nmetrics=%s\nconfig=%s\nlog=%s\n' \
        "$pid" "$port" "http://127.0.0.1:$port" "$stats" "http://127.0.0.1:$stats/stats" \
        "127.0.0.1:$stats" "$config" "$dir/haproxy.log"
}

service_main "$@"
