#!/usr/bin/env bash
# The 1,000-stream bench: can loadgen drive 1,000 concurrent SSE streams on this
# machine with a send lag under 1 ms at p99? It starts a trivial local SSE server
# (loadgen's examples/sse_server.rs, one worker thread), then runs loadgen
#   1. open loop: RATE req/s of STREAM_S-second streams (Little's law: ~1,000 in flight);
#   2. closed loop: 1,000 virtual users.
# and prints send lag, peak in-flight streams, loadgen CPU, and inter-token gaps.
#
# Environment: RATE (500), TOKENS (40), TOKEN_MS (50), DURATION (20s), WARMUP (5s),
# SCHED: "rt" runs server and loadgen under SCHED_FIFO (chrt), so compilers or
# other tenants of a shared machine do not delay their wake-ups; "normal" uses
# default scheduling. Default: rt where chrt is permitted (root), else normal.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-500}
TOKENS=${TOKENS:-40}
TOKEN_MS=${TOKEN_MS:-50}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ -z "${SCHED:-}" ]; then
  if chrt -f 10 true 2>/dev/null; then SCHED=rt; else SCHED=normal; fi
fi
if [ "$SCHED" = rt ]; then prio=(chrt -f 10); else prio=(); fi
echo "scheduling: $SCHED; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
. scripts/bench-env.sh
cargo build --release -q -p loadgen --bin loadgen --example sse-server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${prio[@]}" "$BIN"/examples/sse-server "$port" "$TOKEN_MS" "$TOKEN_MS" 1 &
server=$!
out=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done

common=(--url "http://127.0.0.1:$port" --api completions --input-len 16 --output-len "$TOKENS"
  --duration "$DURATION" --warmup "$WARMUP" --no-plots --no-progress --sample-interval 0)
"${prio[@]}" "$BIN"/loadgen "${common[@]}" --rate "$RATE" --arrivals constant --output-dir "$out/open" >/dev/null
"${prio[@]}" "$BIN"/loadgen "${common[@]}" --concurrency 1000 --output-dir "$out/closed" >/dev/null

python3 - "$out" <<'PY'
import csv, json, sys
root = sys.argv[1]
print(f"{'shape':<34}{'streams':>8}{'peak':>7}{'req/s':>9}{'lag p50':>10}{'lag p99':>10}{'lag max':>10}{'ITL p50':>10}{'ITL p99':>10}{'CPU mean':>10}{'CPU max':>9}")
for name in ("open", "closed"):
    r = json.load(open(f"{root}/{name}/result.json"))
    s = r["steps"][0]
    rows = list(csv.DictReader(open(f"{root}/{name}/requests.csv")))
    ev = sorted([(float(x["sent_s"]), 1) for x in rows] + [(float(x["end_s"]), -1) for x in rows])
    cur = peak = 0
    for _, d in ev:
        cur += d
        peak = max(peak, cur)
    ms = lambda d, k: f"{d[k]*1e3:.3f}" if d else "n/a"
    c = s["client"]
    print(f"{s['label']:<34}{s['requests']['sent']:>8}{peak:>7}{s['throughput']['requests_per_s']:>9.1f}"
          f"{ms(s['send_lag'],'p50'):>10}{ms(s['send_lag'],'p99'):>10}{ms(s['send_lag'],'max'):>10}"
          f"{ms(s['itl'],'p50'):>10}{ms(s['itl'],'p99'):>10}"
          f"{(c['cpu_mean_pct'] or 0):>9.1f}%{(c['cpu_max_pct'] or 0):>8.1f}%")
    for w in s["warnings"]:
        print("   warning:", w)
print("(latencies in ms; CPU is loadgen's share of all", r["environment"]["cores"], "cores; peak = most streams in flight at once)")
PY
