#!/usr/bin/env bash
# The GPU check: candlelight's CUDA build on a machine with an NVIDIA GPU that
# has no network, no model file and no Rust toolchain (see docs/gpu.md).
#
#   scripts/gpu-check.sh bundle DIR [--cpu]     on the build machine
#   scripts/gpu-check.sh run DIR [--device cpu|cuda:N] [--port P] [--seed S]
#                                               on the GPU machine
#
# `bundle` writes DIR (about 16 MiB; it must stay under 56): the CUDA binary
# from scripts/build-cuda.sh, loadgen, the unit-test binary that holds
# `nvml_reports_real_values`, all stripped and xz-compressed, and model.gguf:
# the default model's metadata and tokenizer without tensors (about 2 MB),
# which `--synthetic SEED` serves with seeded random weights of the model's
# shape. `--cpu` bundles a CPU build instead, and no test binary (the NVML step
# needs a GPU), for a dry run on this machine. Prebuilt binaries can be passed
# in CANDLELIGHT_CUDA_BIN, CANDLELIGHT_HOST_BIN (a CPU build; it also writes
# model.gguf), LOADGEN_BIN and CANDLELIGHT_TEST_BIN.
#
# `run` (default --device cuda:0) points LD_LIBRARY_PATH at the CUDA libraries
# of the machine's Python packages (site-packages/nvidia/*/lib), then:
#   1. libraries: every library the binary needs resolves (ldd);
#   2. nvml:      the NVML unit test against the real GPU;
#   3. logits:    `candlelight compare-logits`: GPU against candle-CPU logits on
#                 the same synthetic weights (top-1 >= 95%, max |dlogp| <= 1,
#                 mean KL <= 0.01: compare-logits' defaults; on the CPU, 2
#                 sequences of 16 tokens, since both sides are the CPU there);
#   4. serve:     the server on the device with synthetic weights, loadgen at
#                 concurrency 1, 16 and 64 (1 and 4 on the CPU); tokens/s and
#                 TTFT per level, each with no errors and finished requests;
#   5. metrics:   GPU utilization, memory, power and temperature reach /metrics
#                 with non-zero values during the load;
#   6. shutdown:  SIGTERM drains and the server exits 0.
# Every step has a timeout inside one budget (GPU_CHECK_BUDGET_S, default 450 s);
# the summary comes last and the exit status is non-zero if a check failed.
# With $OUT set (the device machine's output folder), the log and the server's
# and loadgen's files are copied there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
default_model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "gpu-check: $*" >&2; exit 2; }

# ---------------------------------------------------------------- bundle

# Strips $1 into DIR/$2.xz.
pack() {
    local src="$1" name="$2" dir="$3"
    [ -x "$src" ] || die "no executable at $src"
    strip -o "$dir/$name" "$src"
    xz -T0 -6 -f "$dir/$name"
}

# The unit-test binary of the candlelight library (release), built if needed.
test_binary() {
    (cd "$root" && cargo test --release -p candlelight --lib --no-run --message-format=json) |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") \
            and m["target"]["name"] == "candlelight" and m.get("executable"):
        print(m["executable"])'
}

bundle() {
    local dir="" variant=cuda
    while [ $# -gt 0 ]; do
        case "$1" in
            --cpu) variant=cpu ;;
            -*) die "bundle: unknown option $1" ;;
            *) [ -z "$dir" ] || die "bundle: one DIR only"; dir="$1" ;;
        esac
        shift
    done
    [ -n "$dir" ] || die "usage: $0 bundle DIR [--cpu]"
    [ -f "$default_model" ] || die "no $default_model: run scripts/fetch-model.sh"
    local td="${CARGO_TARGET_DIR:-$root/target}"
    local host="${CANDLELIGHT_HOST_BIN:-}" loadgen="${LOADGEN_BIN:-}" tests="${CANDLELIGHT_TEST_BIN:-}"
    if [ -z "$host" ] || [ -z "$loadgen" ]; then
        (cd "$root" && cargo build --release -p candlelight --bin candlelight -p loadgen --bin loadgen)
        host="${host:-$td/release/candlelight}" loadgen="${loadgen:-$td/release/loadgen}"
    fi
    [ -n "$tests" ] || [ "$variant" = cpu ] || tests="$(test_binary | tail -n 1)"
    local server="$host"
    if [ "$variant" = cuda ]; then
        server="${CANDLELIGHT_CUDA_BIN:-}"
        [ -n "$server" ] || server="$("$root/scripts/build-cuda.sh" | tail -n 1)"
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    "$host" extract-metadata "$default_model" "$dir/model.gguf" >/dev/null
    pack "$server" candlelight "$dir"
    pack "$loadgen" loadgen "$dir"
    [ -z "$tests" ] || pack "$tests" candlelight-tests "$dir"
    {
        echo "variant=$variant"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -c . || true)"
        echo "compute_cap=${CUDA_COMPUTE_CAP:-90}"
    } >"$dir/MANIFEST"
    local total
    total=$(du -cb "$dir"/* | tail -n 1 | cut -f1)
    (cd "$dir" && du -b -- * | awk '{printf "  %-24s %6.1f MiB\n", $2, $1 / 1048576}')
    printf 'gpu-check: bundle %s (%s): %s MiB\n' "$dir" "$variant" "$(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }')"
    [ "$total" -lt $((56 * 1048576)) ] || die "bundle is over 56 MiB; it must travel in 64 MiB with the repository"
}

# ---------------------------------------------------------------- run

results=()
record() { results+=("$(printf '%-10s %-5s %s' "$1" "$2" "$3")"); echo "gpu-check: $1: $2 $3"; }
deadline=0
# Seconds for a step: its own cap, or what is left of the budget.
cap() {
    local left=$((deadline - $(date +%s)))
    [ "$left" -gt 5 ] || { echo 0; return; }
    echo $((left < $1 ? left : $1))
}
step() { printf '\n==> %s (%s s left)\n' "$*" $((deadline - $(date +%s))); }

unpack() {
    local dir="$1" work="$2" f name
    for f in "$dir"/*.xz; do
        name="$(basename "$f" .xz)"
        if command -v xz >/dev/null; then
            xz -dc "$f" >"$work/$name"
        else
            python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$work/$name"
        fi
        chmod +x "$work/$name"
    done
    cp "$dir/model.gguf" "$dir/MANIFEST" "$work/"
}

# CUDA libraries from the Python packages (torch's nvidia-* wheels), and the driver's.
cuda_library_path() {
    local dirs=() sp d
    while read -r sp; do
        for d in "$sp"/nvidia/*/lib "$sp"/nvidia/*/lib64; do
            [ -d "$d" ] && dirs+=("$d")
        done
    done < <(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/local/cuda/lib64; do
        [ -d "$d" ] && dirs+=("$d")
    done
    local IFS=:
    echo "${dirs[*]}"
}

# Polls /metrics until $2 exists; writes the largest value of each GPU series to $3.
sampler='
import json, os, re, sys, time, urllib.request
url, stop, out = sys.argv[1:4]
peak, scrapes = {}, 0
line_re = re.compile(r"^((?:hw_gpu|candlelight_gpu)_[a-z_]*)(\{[^}]*\})?\s+(\S+)")
while not os.path.exists(stop):
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        scrapes += 1
        for line in text.splitlines():
            m = line_re.match(line)
            if m:
                key = m.group(1) + (m.group(2) or "")
                peak[key] = max(peak.get(key, 0.0), float(m.group(3)))
    except Exception as e:
        print("sampler:", e, file=sys.stderr)
    time.sleep(0.5)
json.dump({"scrapes": scrapes, "peak": peak}, open(out, "w"), indent=1)
'

# tokens/s and TTFT per concurrency level from loadgen's summary.csv (argv 1),
# one line each; a one-line digest for the summary goes to argv 2. Fails a level
# that had errors, or no request finished inside its measured window.
summarize_load='
import csv, sys
ok, digest = True, []
for r in csv.DictReader(open(sys.argv[1])):
    if r.get("turn"):
        continue
    tps = float(r["output_tokens_per_s"] or 0)
    good = int(r["ok"]) > 0 and int(r["errors"]) == 0 and tps > 0
    ok &= good
    print("concurrency %3s: %4s requests (%s errors), %8.1f output tokens/s, TTFT p50 %7.1f ms, p99 %7.1f ms, TPOT p50 %6.1f ms %s" % (
        r["batch_size"], r["ok"], r["errors"], tps,
        float(r["ttft_p50_ms"] or 0), float(r["ttft_p99_ms"] or 0), float(r["tpot_p50_ms"] or 0),
        "" if good else "FAIL"))
    digest.append("c=%s %.0f tok/s TTFT p50 %.0f ms%s" % (
        r["batch_size"], tps, float(r["ttft_p50_ms"] or 0), "" if good else " FAILED"))
open(sys.argv[2], "w").write("; ".join(digest))
sys.exit(0 if ok else 1)
'

# Non-zero peaks of utilization, memory, power and temperature of gpu0.
check_metrics='
import json, sys
d = json.load(open(sys.argv[1]))
peak = d["peak"]
def first(prefix):
    vals = [v for k, v in peak.items() if k.startswith(prefix) and "gpu0" in k]
    return max(vals) if vals else None
want = {"utilization": "hw_gpu_utilization", "memory": "hw_gpu_memory_usage",
        "power": "hw_gpu_power", "temperature": "hw_gpu_temperature"}
seen = {name: first(p) for name, p in want.items()}
print("%d scrapes; peaks: %s" % (d["scrapes"], ", ".join("%s=%s" % kv for kv in seen.items())))
sys.exit(0 if all(v for v in seen.values()) else 1)
'

run_check() {
    local dir="" device=cuda:0 port=3217 seed=1
    while [ $# -gt 0 ]; do
        case "$1" in
            --device) device="$2"; shift ;;
            --port) port="$2"; shift ;;
            --seed) seed="$2"; shift ;;
            -*) die "run: unknown option $1" ;;
            *) [ -z "$dir" ] || die "run: one DIR only"; dir="$1" ;;
        esac
        shift
    done
    [ -n "$dir" ] || die "usage: $0 run DIR [--device cpu|cuda:N] [--port P] [--seed S]"
    [ -f "$dir/MANIFEST" ] || die "$dir is not a bundle (no MANIFEST); make one with: $0 bundle DIR"
    [[ "$device" =~ ^(cpu|cuda(:[0-9]+)?)$ ]] || die "--device must be cpu, cuda or cuda:N"
    [[ "$seed" =~ ^[0-9]+$ && "$port" =~ ^[0-9]+$ ]] || die "--seed and --port take numbers"
    local gpu=1
    [ "$device" = cpu ] && gpu=0
    if [ "$gpu" = 1 ] && grep -qx 'variant=cpu' "$dir/MANIFEST"; then
        die "$dir holds a CPU build (bundle --cpu); it can only run with --device cpu"
    fi
    deadline=$(($(date +%s) + ${GPU_CHECK_BUDGET_S:-450}))
    local work server_pid="" t
    work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
    # shellcheck disable=SC2064
    trap "[ -n \"\${server_pid:-}\" ] && kill \$server_pid 2>/dev/null; true" EXIT
    step "unpack $dir into $work"
    cat "$dir/MANIFEST"
    unpack "$dir" "$work"
    local bin="$work/candlelight"

    step "libraries"
    if [ "$gpu" = 1 ]; then
        local found
        found="$(cuda_library_path)"
        export LD_LIBRARY_PATH="$found${found:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}"
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
        timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || true
        if ldd "$bin" | grep -E 'cuda|cublas|nvrtc|curand|not found'; then :; fi
        if ldd "$bin" | grep -q 'not found'; then
            record libraries FAIL "a library the binary needs is not found (see ldd above)"
        else
            record libraries PASS "libcuda, libcudart, libcublas(Lt), libnvrtc, libcurand resolve"
        fi
    else
        record libraries SKIP "--device cpu"
    fi

    step "nvml: nvml_reports_real_values"
    if [ "$gpu" = 1 ]; then
        t=$(cap 60)
        if timeout "$t" "$work/candlelight-tests" --ignored --exact \
            telemetry::gpu::tests::nvml_reports_real_values --nocapture --test-threads=1 >"$work/nvml.log" 2>&1; then
            grep -E '^hw_gpu_(utilization|memory_usage|power|temperature)' "$work/nvml.log" || true
            record nvml PASS "NVML test passed"
        else
            tail -n 30 "$work/nvml.log"
            record nvml FAIL "NVML test failed (see above)"
        fi
    else
        record nvml SKIP "--device cpu"
    fi

    step "logits: $device against candle-CPU, synthetic seed $seed"
    t=$(cap 180)
    local plan=()
    [ "$gpu" = 1 ] || plan=(--sequences 2 --tokens 16)
    if timeout "$t" "$bin" compare-logits --model "$work/model.gguf" --synthetic "$seed" \
        --device "$device" --backend candle "${plan[@]}" 2>&1 | tee "$work/compare.log"; then
        record logits PASS "$(grep -E '^(prefill|decode) ' "$work/compare.log" | awk '{printf "%s top-1 %s max|dlogp| %s; ", $1, $3, $4}')"
    else
        record logits FAIL "compare-logits failed or timed out ($t s)"
    fi

    local url="http://127.0.0.1:$port" load_args serve_args
    serve_args=(--model "$work/model.gguf" --synthetic "$seed" --device "$device" --backend candle
        --port "$port" --max-batch-size 64 --shutdown-grace 10s)
    load_args=(--batch-sizes 1,16,64 --input-len 128 --output-len 64 --duration 20s --warmup 2s)
    if [ "$gpu" = 1 ]; then
        serve_args+=(--kv-memory-fraction 0.3 --max-batch-tokens 1024 --max-prefill-tokens 1024)
    else
        # candle on 2 CPU cores: light enough that requests finish inside each window.
        load_args=(--batch-sizes 1,4 --input-len 32 --output-len 8 --duration 10s --warmup 2s)
    fi
    step "serve on $device with synthetic weights; loadgen ${load_args[*]}"
    # No collector here: OTLP export off (the /metrics scrape is what is checked).
    OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none RUST_LOG=info \
        "$bin" serve "${serve_args[@]}" >"$work/server.log" 2>&1 &
    server_pid=$!
    local ready=0
    t=$(cap 120)
    for _ in $(seq 1 "$t"); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url/health" 2>/dev/null; then
            ready=1; break
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 1
    done
    grep -E 'model loaded|weights' "$work/server.log" | tail -n 4 || true
    if [ "$ready" = 1 ]; then
        rm -f "$work/stop"
        python3 -c "$sampler" "$url/metrics" "$work/stop" "$work/gpu-metrics.json" 2>"$work/sampler.log" &
        local sampler_pid=$!
        t=$(cap 240)
        if timeout "$t" "$work/loadgen" --url "$url" "${load_args[@]}" --ignore-eos \
            --seed 1 --timeout 120s --wait 10s --no-plots --no-progress --output-dir "$work/load" \
            >"$work/loadgen.log" 2>&1; then
            # (Not `tee /dev/stderr`: reopening a log file that stderr points
            # at truncates it.)
            if python3 -c "$summarize_load" "$work/load/summary.csv" "$work/load-digest.txt"; then
                record serve PASS "$(cat "$work/load-digest.txt")"
            else
                record serve FAIL "$(cat "$work/load-digest.txt" 2>/dev/null) (see above)"
            fi
        else
            tail -n 30 "$work/loadgen.log"
            record serve FAIL "loadgen failed or timed out ($t s)"
        fi
        touch "$work/stop"
        wait "$sampler_pid" || true
        if [ "$gpu" = 1 ]; then
            if python3 -c "$check_metrics" "$work/gpu-metrics.json" | tee "$work/metrics.txt"; then
                record metrics PASS "$(cat "$work/metrics.txt")"
            else
                record metrics FAIL "$(cat "$work/metrics.txt" 2>/dev/null)"
            fi
        elif python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["scrapes"] > 0 else 1)' "$work/gpu-metrics.json" 2>/dev/null &&
            grep -q 'candlelight_gpu_available' <(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$url/metrics"); then
            record metrics SKIP "--device cpu (/metrics scraped; candlelight_gpu_available exported)"
        else
            record metrics FAIL "/metrics could not be scraped"
        fi

        step "shutdown"
        kill -TERM "$server_pid"
        local status=0
        t=$(cap 30)
        timeout "$t" tail --pid="$server_pid" -f /dev/null || true
        if kill -0 "$server_pid" 2>/dev/null; then
            kill -KILL "$server_pid"; record shutdown FAIL "server still running after SIGTERM"
        else
            wait "$server_pid" || status=$?
            [ "$status" = 0 ] && record shutdown PASS "SIGTERM: drained, exit 0" || record shutdown FAIL "exit status $status"
        fi
        server_pid=""
    else
        tail -n 30 "$work/server.log"
        if kill -0 "$server_pid" 2>/dev/null; then
            record serve FAIL "server not ready within $t s"
        else
            record serve FAIL "server exited before it was ready (its log is above)"
        fi
        record metrics FAIL "no server"
    fi

    printf '\n==> summary (device %s, %s s)\n' "$device" $(( $(date +%s) - deadline + ${GPU_CHECK_BUDGET_S:-450} ))
    printf '%s\n' "${results[@]}" | tee "$work/summary.txt"
    if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
        tar -czf "$OUT/gpu-check-files.tar.gz" -C "$work" --exclude=candlelight --exclude=candlelight-tests \
            --exclude=loadgen --exclude=model.gguf . 2>/dev/null || true
        cp "$work/summary.txt" "$OUT/gpu-check-summary.txt"
    fi
    ! printf '%s\n' "${results[@]}" | grep -q ' FAIL '
}

case "${1:-}" in
    bundle) shift; bundle "$@" ;;
    run) shift; run_check "$@" ;;
    -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
esac
