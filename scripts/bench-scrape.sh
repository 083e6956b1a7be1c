#!/usr/bin/env bash
# What one `/metrics` scrape costs the server: the inference gateway's endpoint
# picker polls every replica every 50 ms (docs/scale-out.md), so the render must
# stay cheap. Starts the release server (-C target-cpu=native, as the other
# benches), serves a few requests so every series exists, then scrapes
# /metrics SCRAPES times over one kept-alive connection and reports the
# latency, the body size and the server's CPU time per scrape (from
# /proc/PID/stat), and what 20 scrapes a second would take of one core.
#
#   scripts/bench-scrape.sh            SCRAPES (2000), THREADS (2)
# The CPU per scrape is all of the server's CPU time over the run divided by
# the scrapes: an upper bound (the idle engine and samplers count too).
set -euo pipefail
cd "$(dirname "$0")/.."
SCRAPES=${SCRAPES:-2000}
THREADS=${THREADS:-2}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
scripts/fetch-model.sh >/dev/null
# shellcheck source=scripts/bench-env.sh
. scripts/bench-env.sh
cargo build --release -q --bin candlelight
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/candlelight" serve --model "$MODEL" --host 127.0.0.1 --port "$port" \
    --threads "$THREADS" >"${TMPDIR:-/tmp}/bench-scrape-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
python3 - "$port" "$server" "$SCRAPES" <<'EOF'
import http.client, json, os, statistics, sys, time
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tick = os.sysconf("SC_CLK_TCK")

def cpu_seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

def get(conn, path, body=None):
    conn.request("POST" if body else "GET", path, body=body,
                 headers={"Content-Type": "application/json"} if body else {})
    r = conn.getresponse()
    return r.status, r.read()

deadline = time.time() + 120
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if get(conn, "/health")[0] == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("server not ready in 120 s")
    time.sleep(0.3)
for i in range(8):  # every request, token and step series exists
    body = json.dumps({"inputs": f"Request {i}: say something.",
                       "parameters": {"max_new_tokens": 8}})
    get(conn, "/generate", body)
time.sleep(1.5)
get(conn, "/metrics")
cpu0, lat, size = cpu_seconds(), [], 0
for _ in range(n):
    t = time.perf_counter()
    status, text = get(conn, "/metrics")
    lat.append(time.perf_counter() - t)
    assert status == 200, status
    size = len(text)
cpu = (cpu_seconds() - cpu0) / n
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3
series = sum(1 for l in text.decode().splitlines() if l and not l.startswith("#"))
print(f"/metrics: {n} scrapes, {size / 1024:.1f} KiB and {series} samples each")
print(f"  latency p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms (client side, loopback)")
print(f"  server CPU {cpu * 1e3:.3f} ms per scrape "
      f"(/proc/{pid}/stat, {tick} ticks/s, averaged over the run)")
print(f"  at 20 scrapes/s (the endpoint picker's 50 ms): {cpu * 20 * 100:.2f}% of one core")
EOF
