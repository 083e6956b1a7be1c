#!/usr/bin/env bash
# A multi-replica candlelight cluster on one machine: the chart's topology
# (docs/scale-out.md) with processes instead of pods, everything on 127.0.0.1.
#
#   scripts/cluster.sh up DIR [--replicas 3] [--model PATH] [--threads 1]
#                             [--balance leastconn|roundrobin] [--scrape-interval 1s]
#                             [--metric-export-interval-ms 1000] [-- SERVER-FLAGS...]
#   scripts/cluster.sh down DIR
#
#              clients ──HTTP──▶ HAProxy (leastconn, GET /health checks)
#                                  │         │         │
#                              replica-1  replica-2  replica-3   candlelight serve --threads 1,
#                                  │ OTLP    │         │ OTLP     service.instance.id=replica-N
#                                agent A ◀───┘       agent B      collector agents (node-a, node-b)
#                                  └──── OTLP ──▶ gateway ◀─┘     collector gateway
#                                                   │ :prometheus exporter   (traces: DIR/gateway/traces.jsonl)
#             Prometheus ◀── scrape ────────────────┘ job="otel-collector" (exported_instance=replica-N)
#                        ◀── scrape each replica's /metrics: job="candlelight", instance=replica-N
#                        ◀── scrape HAProxy's exporter: job="haproxy"
#
# The last third of the replicas (replica-3 of 3) report to agent B, the others
# to agent A. All replicas load the same model file. `up` waits for every part
# to be ready (CANDLELIGHT_SERVICE_TIMEOUT, default 120 s, per wait), stops what
# it started if anything fails, and prints KEY=VALUE lines (also written to
# DIR/cluster.env): balancer_url, balancer_stats_url, prometheus_url,
# gateway_prometheus, agent_a_otlp, agent_b_otlp, traces_file, replicas, the
# pids (balancer_pid, prometheus_pid, gateway_pid, agent_a_pid, agent_b_pid),
# replica_N_url, replica_N_pid, replica_N_instance, replica_N_agent, up_seconds.
# `down` stops everything started from DIR (replicas get SIGTERM, then SIGKILL
# after 15 s) and keeps the logs.
#
# The server binary is CANDLELIGHT_BIN, else the newer of target/release and
# target/debug (under CARGO_TARGET_DIR if set); the model defaults to
# CANDLELIGHT_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf. The collector
# comes from scripts/build-collector.sh (or CANDLELIGHT_OTELCOL), Prometheus and
# HAProxy from Debian (scripts/install-deps.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
services="$root/scripts/services"
export CANDLELIGHT_SERVICE_TIMEOUT="${CANDLELIGHT_SERVICE_TIMEOUT:-120}"
timeout_s="$CANDLELIGHT_SERVICE_TIMEOUT"

die() { echo "cluster.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The value of KEY in KEY=VALUE text.
kv() { sed -n "s/^$1=//p" <<<"$2" | head -n1; }

server_bin() {
    if [ -n "${CANDLELIGHT_BIN:-}" ]; then echo "$CANDLELIGHT_BIN"; return; fi
    local target="${CARGO_TARGET_DIR:-$root/target}" best=""
    for b in "$target/release/candlelight" "$target/debug/candlelight"; do
        if [ -x "$b" ] && { [ -z "$best" ] || [ "$b" -nt "$best" ]; }; then best="$b"; fi
    done
    [ -n "$best" ] || die "no server binary: cargo build --release (or set CANDLELIGHT_BIN)"
    echo "$best"
}

# Stops the process in PIDFILE if its command line still names WHAT (a pid
# reused by another program is left alone): SIGTERM, then SIGKILL after GRACE s.
stop_pidfile() {
    local pidfile="$1" what="$2" grace="$3" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "$what"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

cmd_down() {
    local dir="$1" d
    [ -d "$dir" ] || return 0
    "$services/haproxy.sh" stop "$dir/haproxy"
    # SIGTERM all replicas at once (each drains and flushes its telemetry), then wait.
    for d in "$dir"/replica-*; do
        [ -f "$d/pid" ] && stop_pidfile "$d/pid" candlelight 15 &
    done
    wait
    # Agents before the gateway, so what they hold still reaches it.
    for d in agent-a agent-b; do "$services/collector.sh" stop "$dir/$d" & done
    wait
    "$services/collector.sh" stop "$dir/gateway" &
    "$services/prometheus.sh" stop "$dir/prometheus" &
    wait
    rm -f "$dir/cluster.env"
}

start_replica() { # N PORT AGENT_GRPC_PORT
    local n="$1" port="$2" agent="$3" d="$dir/replica-$1"
    mkdir -p "$d"
    # setsid: a test's Ctrl-C or process-group kill must not leave it half-stopped.
    OTEL_RESOURCE_ATTRIBUTES="service.instance.id=replica-$n" \
        setsid "$bin" serve --model "$model" --host 127.0.0.1 --port "$port" \
        --threads "$threads" --otlp-endpoint "http://127.0.0.1:$agent" --otlp-protocol grpc \
        --metric-export-interval-ms "$export_ms" ${server_flags[@]+"${server_flags[@]}"} \
        >"$d/replica.log" 2>&1 </dev/null &
    echo $! >"$d/pid"
    echo "$port" >"$d/port"
}

wait_ready() { # N -- until /health answers 200
    local d="$dir/replica-$1" deadline=$((SECONDS + timeout_s)) pid port
    pid="$(cat "$d/pid")" port="$(cat "$d/port")"
    until curl -fs -o /dev/null "http://127.0.0.1:$port/health"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$d/replica.log" >&2
            die "replica-$1 exited before it was ready (log: $d/replica.log)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "replica-$1 not ready after ${timeout_s}s (log: $d/replica.log)"
        sleep 0.2
    done
}

write_prometheus_config() { # FILE GATEWAY_PROM HAPROXY_METRICS
    local n
    cat <<EOF
# Written by scripts/cluster.sh. Jobs as in prometheus/prometheus.yml and the
# chart's PodMonitors: each replica twice (direct and through the collectors).
global:
  scrape_interval: $interval
  evaluation_interval: $interval
rule_files:
  - $root/prometheus/rules/candlelight-alerts.yml
scrape_configs:
  - job_name: otel-collector
    static_configs:
      - targets: ["$2"]
  - job_name: haproxy
    static_configs:
      - targets: ["$3"]
  - job_name: candlelight
    metrics_path: /metrics
    static_configs:
EOF
    for n in $(seq 1 "$replicas"); do
        printf '      - targets: ["127.0.0.1:%s"]\n        labels: {instance: replica-%s}\n' \
            "$(cat "$dir/replica-$n/port")" "$n"
    done
} >"$1"

start_prometheus() { # GATEWAY_PROM HAPROXY_METRICS -> prints its URL
    local d="$dir/prometheus" port pid deadline=$((SECONDS + timeout_s))
    command -v "${CANDLELIGHT_PROMETHEUS:-prometheus}" >/dev/null 2>&1 ||
        die "no prometheus (scripts/install-deps.sh installs it)"
    mkdir -p "$d" && rm -rf "$d/data"
    write_prometheus_config "$d/prometheus.yml" "$1" "$2"
    port="$(free_port)"
    setsid "${CANDLELIGHT_PROMETHEUS:-prometheus}" --config.file="$d/prometheus.yml" \
        --storage.tsdb.path="$d/data" --web.listen-address="127.0.0.1:$port" \
        --web.enable-lifecycle >"$d/prometheus.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$d/prometheus.pid"
    until curl -fs -o /dev/null "http://127.0.0.1:$port/-/ready"; do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$d/prometheus.log" >&2; die "prometheus exited"; }
        [ "$SECONDS" -lt "$deadline" ] || die "prometheus not ready after ${timeout_s}s"
        sleep 0.2
    done
    echo "http://127.0.0.1:$port"
}

start_collectors() { # sets gateway_out, agent_a_out, agent_b_out
    gateway_out="$(CANDLELIGHT_TRACES_FILE="$dir/gateway/traces.jsonl" \
        "$services/collector.sh" start "$dir/gateway" --config "$root/deploy/local/otel-gateway.yaml")"
    local upstream="127.0.0.1:$(kv grpc "$gateway_out")"
    agent_a_out="$(CANDLELIGHT_GATEWAY_OTLP_ENDPOINT="$upstream" CANDLELIGHT_AGENT_NODE=node-a \
        "$services/collector.sh" start "$dir/agent-a" --config "$root/deploy/local/otel-agent.yaml")"
    agent_b_out="$(CANDLELIGHT_GATEWAY_OTLP_ENDPOINT="$upstream" CANDLELIGHT_AGENT_NODE=node-b \
        "$services/collector.sh" start "$dir/agent-b" --config "$root/deploy/local/otel-agent.yaml")"
}

parse_up_flags() {
    replicas=3 model="${CANDLELIGHT_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
    threads=1 balance=leastconn interval=1s export_ms=1000 server_flags=()
    while [ $# -gt 0 ]; do
        [ "$1" = -- ] || [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
            --replicas) replicas="$2" ;;
            --model) model="$2" ;;
            --threads) threads="$2" ;;
            --balance) balance="$2" ;;
            --scrape-interval) interval="$2" ;;
            --metric-export-interval-ms) export_ms="$2" ;;
            --) shift; server_flags=("$@"); break ;;
            *) die "unknown option $1" ;;
        esac
        shift 2
    done
    [[ "$replicas" =~ ^[1-9][0-9]*$ ]] || die "--replicas wants a positive number"
    [ -f "$model" ] || die "model $model missing: run scripts/fetch-model.sh (or pass --model)"
    model="$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"
}

# The agent replica N reports to: the last third go to b, the others to a.
agent_of() { if [ "$1" -le $((replicas - replicas / 3)) ]; then echo a; else echo b; fi; }

cmd_up() {
    parse_up_flags "$@"
    local started=$SECONDS n agent port servers=() env
    bin="$(server_bin)"
    [ -x "$bin" ] || die "server binary $bin is not executable"
    if [ -f "$dir/cluster.env" ]; then die "$dir holds a running cluster: scripts/cluster.sh down $dir"; fi
    mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
    trap 'rc=$?; if [ $rc -ne 0 ]; then echo "cluster.sh: up failed; stopping what started" >&2; cmd_down "$dir" >/dev/null 2>&1 || true; fi' EXIT
    start_collectors
    # Replicas load the model while the rest starts.
    for n in $(seq 1 "$replicas"); do
        if [ "$(agent_of "$n")" = a ]; then agent="$(kv grpc "$agent_a_out")"; else agent="$(kv grpc "$agent_b_out")"; fi
        start_replica "$n" "$(free_port)" "$agent"
    done
    local stats_port; stats_port="$(free_port)"
    local prometheus_url; prometheus_url="$(start_prometheus "127.0.0.1:$(kv prometheus "$gateway_out")" "127.0.0.1:$stats_port")"
    for n in $(seq 1 "$replicas"); do
        wait_ready "$n"
        servers+=(--server "replica-$n=127.0.0.1:$(cat "$dir/replica-$n/port")")
    done
    local haproxy_out; haproxy_out="$("$services/haproxy.sh" start "$dir/haproxy" --stats-port "$stats_port" --balance "$balance" "${servers[@]}")"
    env="$(
        printf 'dir=%s\nbalancer_url=%s\nbalancer_stats_url=%s\nprometheus_url=%s\n' \
            "$dir" "$(kv url "$haproxy_out")" "$(kv stats_url "$haproxy_out")" "$prometheus_url"
        printf 'gateway_prometheus=127.0.0.1:%s\nagent_a_otlp=127.0.0.1:%s\nagent_b_otlp=127.0.0.1:%s\n' \
            "$(kv prometheus "$gateway_out")" "$(kv grpc "$agent_a_out")" "$(kv grpc "$agent_b_out")"
        printf 'traces_file=%s\nreplicas=%s\n' "$dir/gateway/traces.jsonl" "$replicas"
        printf 'balancer_pid=%s\nprometheus_pid=%s\ngateway_pid=%s\nagent_a_pid=%s\nagent_b_pid=%s\n' \
            "$(kv pid "$haproxy_out")" "$(cat "$dir/prometheus/prometheus.pid")" "$(kv pid "$gateway_out")" \
            "$(kv pid "$agent_a_out")" "$(kv pid "$agent_b_out")"
        for n in $(seq 1 "$replicas"); do
            port="$(cat "$dir/replica-$n/port")"
            agent="$(agent_of "$n")"
            printf 'replica_%s_url=http://127.0.0.1:%s\nreplica_%s_pid=%s\nreplica_%s_instance=replica-%s\nreplica_%s_agent=%s\n' \
                "$n" "$port" "$n" "$(cat "$dir/replica-$n/pid")" "$n" "$n" "$n" "$agent"
        done
        printf 'up_seconds=%s\n' "$((SECONDS - started))"
    )"
    echo "$env" >"$dir/cluster.env"
    echo "$env"
}

[ $# -ge 2 ] || die "usage: $0 up DIR [options] | down DIR"
action="$1"; dir="$2"; shift 2
case "$action" in
    up) cmd_up "$@" ;;
    down) [ $# -eq 0 ] || die "down takes only DIR"; cmd_down "$dir" ;;
    *) die "unknown action $action (up or down)" ;;
esac
