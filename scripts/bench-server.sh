#!/usr/bin/env bash
# Server-level bench: candlelight vs llama.cpp's OpenAI server (llama-cpp-python's
# llama_cpp.server from .venv-bench), same GGUF, 2 threads each, driven by loadgen
# over /v1/completions (streamed) at closed-loop concurrency 1, 8 and 16.
# One server runs at a time. Prints one markdown table (output tokens/s, TTFT p50,
# requests/s, E2E p50, with ratios), then the peak RSS (VmHWM) of each server
# process while serving 16 concurrent ~1k-token sequences, and the caveats.
#
# The workload is a fixed prompt file (loadgen --dataset), made once with
# candlelight's /tokenize so every prompt is exactly INPUT_LEN tokens on both
# servers (llama_cpp.server has no /tokenize for loadgen to calibrate against),
# then filtered to prompts whose greedy continuation on llama.cpp does not reach
# EOS within OUTPUT_LEN tokens: llama_cpp.server ignores `ignore_eos`, so this
# keeps output lengths equal (candlelight honours ignore_eos). Both servers decode
# greedily (loadgen's temperature 0).
#
# llama_cpp.server: one model, one context, requests served one at a time
# (a lock; it has no parallel slots), so N concurrent requests queue; it runs
# with --interrupt_requests False (otherwise a waiting request cuts the running
# stream short), --n_ctx 2048 (one ~1k-token sequence at a time; the RSS step is
# repeated with an n_ctx of 16 such sequences) and --logits_all False (we ask
# for no prompt logprobs; True computes and copies logits for every prompt
# token). Its streams
# carry no usage, so its output tokens are counted as streamed chunks (one per
# token in llama-cpp-python; marked `~`). If a one-token probe decode crashes
# (e.g. a venv built with AMX, before bench-setup.sh turned it off, in a VM that
# reports AMX but grants no tile state), llama.cpp is loaded with
# use_extra_bufts = false (no AMX/repacked weight buffers) and the report says so.
#
# Environment: CONCURRENCY (1,8,16), REQUESTS ("16,32,32", per level), INPUT_LEN
# (128), OUTPUT_LEN (64), MEM_INPUT_LEN (960), MEM_REQUESTS (16), THREADS (2),
# BENCH_NICE (-10: servers and loadgen run at this nice level where permitted, so
# other tenants' compilers steal less; "" for none), OUT (results/bench-server/<time>),
# LLAMA_EXTRA_BUFTS (auto | on | off).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
CONCURRENCY=${CONCURRENCY:-1,8,16}
REQUESTS=${REQUESTS:-16,32,32}
INPUT_LEN=${INPUT_LEN:-128}
OUTPUT_LEN=${OUTPUT_LEN:-64}
MEM_INPUT_LEN=${MEM_INPUT_LEN:-960}
MEM_REQUESTS=${MEM_REQUESTS:-16}
MEM_CONC=16
THREADS=${THREADS:-2}
BENCH_NICE=${BENCH_NICE--10}
LLAMA_EXTRA_BUFTS=${LLAMA_EXTRA_BUFTS:-auto}
OUT=${OUT:-results/bench-server/$(date +%Y%m%d-%H%M%S)}
READY_TIMEOUT=120
HELPER=benches/bench_server.py
VPY=.venv-bench/bin/python
IFS=, read -r -a levels <<<"$CONCURRENCY"
IFS=, read -r -a counts <<<"$REQUESTS"
[ "${#levels[@]}" = "${#counts[@]}" ] || { echo "REQUESTS needs one count per CONCURRENCY level" >&2; exit 1; }

scripts/fetch-model.sh
scripts/bench-setup.sh
. scripts/bench-env.sh
cargo build --release -q --bin candlelight
cargo build --release -q -p loadgen
mkdir -p "$OUT/candlelight" "$OUT/llamacpp"

prio=()
if [ -n "$BENCH_NICE" ] && nice -n "$BENCH_NICE" true 2>/dev/null; then prio=(nice -n "$BENCH_NICE"); fi

server=""
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# start_server NAME LOG [LLAMA_N_CTX]: starts NAME on a free port, sets $server and $url.
start_server() {
  local name=$1 log=$2 llama_ctx=${3:-2048} port
  port=$(python3 "$HELPER" free-port)
  url="http://127.0.0.1:$port"
  case $name in
    candlelight)
      "${prio[@]}" "$BIN"/candlelight serve --model "$MODEL" --port "$port" \
        --threads "$THREADS" --max-batch-size 16 --no-telemetry >"$log" 2>&1 &
      ;;
    llamacpp)
      "${prio[@]}" "$VPY" "$HELPER" llama-server "${llama_flags[@]}" -- --model "$MODEL" \
        --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx "$llama_ctx" \
        --logits_all False --interrupt_requests False --verbose False --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
      ;;
  esac
  server=$!
  if ! python3 "$HELPER" wait "$url" "$server" "$READY_TIMEOUT"; then
    tail -20 "$log" >&2
    exit 1
  fi
}

# run_loadgen DATASET CONCURRENCY REQUESTS DIR
run_loadgen() {
  local rc=0
  "${prio[@]}" "$BIN"/loadgen --url "$url" --api completions --dataset "$1" \
    --concurrency "$2" --requests "$3" --ignore-eos --temperature 0 --seed 0 \
    --timeout 1800s --wait 30s --sample-interval 0 --no-progress --no-plots \
    --output-dir "$4" >"$4.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "loadgen exited $rc (see $4.log):" >&2
    tail -5 "$4.log" >&2
  fi
}

echo "bench-server: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), nice ${BENCH_NICE:-0}, results in $OUT"

# llama.cpp's extra buffer types (AMX, repacked weights): keep them where they work.
llama_flags=()
case $LLAMA_EXTRA_BUFTS in
  on) ;;
  off) llama_flags=(--no-extra-bufts) ;;
  *) if ! "$VPY" "$HELPER" llama-probe "$MODEL"; then llama_flags=(--no-extra-bufts); fi ;;
esac

# The prompt files: exact lengths from candlelight's tokenizer, then only prompts
# whose greedy output on llama.cpp (which ignores ignore_eos) runs the full length.
start_server candlelight "$OUT/candlelight/server-prompts.log"
max_req=0
for n in "${counts[@]}"; do [ "$n" -gt "$max_req" ] && max_req=$n; done
python3 "$HELPER" prompts "$url" "$OUT/candidates.jsonl" --input-len "$INPUT_LEN" \
  --count $((max_req * 3 + 8)) --seed 1
python3 "$HELPER" prompts "$url" "$OUT/candidates-mem.jsonl" --input-len "$MEM_INPUT_LEN" \
  --count $((MEM_REQUESTS * 3 + 8)) --seed 2
stop_server
start_server llamacpp "$OUT/llamacpp/server-prompts.log"
python3 "$HELPER" filter "$url" "$OUT/candidates.jsonl" "$OUT/prompts.jsonl" \
  --output-len "$OUTPUT_LEN" --count "$max_req"
python3 "$HELPER" filter "$url" "$OUT/candidates-mem.jsonl" "$OUT/prompts-mem.jsonl" \
  --output-len "$OUTPUT_LEN" --count "$MEM_REQUESTS"
stop_server

for name in candlelight llamacpp; do
  echo "== $name: throughput steps (concurrency $CONCURRENCY)"
  start_server "$name" "$OUT/$name/server.log"
  for i in "${!levels[@]}"; do
    c=${levels[$i]}
    echo "   concurrency $c, ${counts[$i]} requests ($(cut -d' ' -f1 /proc/loadavg) load)"
    run_loadgen "$OUT/prompts.jsonl" "$c" "${counts[$i]}" "$OUT/$name/c$c"
  done
  stop_server
  # A fresh process, so VmHWM is the peak of this load alone.
  echo "== $name: peak RSS, $MEM_CONC concurrent x ($MEM_INPUT_LEN + $OUTPUT_LEN) tokens"
  start_server "$name" "$OUT/$name/server-mem.log"
  run_loadgen "$OUT/prompts-mem.jsonl" "$MEM_CONC" "$MEM_REQUESTS" "$OUT/$name/mem"
  read -r hwm rss < <(python3 "$HELPER" rss "$server")
  echo "$hwm $rss" >"$OUT/$name/peak_rss_kb"
  stop_server
done

# llama.cpp sized to hold 16 sequences' context (still serving one at a time):
# the RSS its KV cache would need for the same capacity.
ctx16=$((MEM_CONC * (MEM_INPUT_LEN + OUTPUT_LEN)))
echo "== llamacpp: peak RSS with --n_ctx $ctx16, 2 requests"
start_server llamacpp "$OUT/llamacpp/server-mem-ctx.log" "$ctx16"
run_loadgen "$OUT/prompts-mem.jsonl" 1 2 "$OUT/llamacpp/mem-ctx"
read -r hwm rss < <(python3 "$HELPER" rss "$server")
echo "$hwm $rss $ctx16" >"$OUT/llamacpp/peak_rss_ctx_kb"
stop_server

echo
python3 "$HELPER" report "$OUT" --concurrency "$CONCURRENCY" \
  --mem-desc "$MEM_CONC concurrent sequences of $MEM_INPUT_LEN + $OUTPUT_LEN tokens" | tee "$OUT/report.md"
{
  echo "- Workload: $INPUT_LEN-token prompts, $OUTPUT_LEN output tokens (prompts whose greedy output on llama.cpp reaches EOS first were dropped), greedy, streamed /v1/completions; requests per level: $REQUESTS; $THREADS threads each; one server at a time."
  echo "- llama_cpp.server serves one request at a time (no parallel slots): at concurrency N, requests queue behind each other, so its throughput stays flat and its TTFT grows with N. It runs with --n_ctx 2048 (one sequence) and --logits_all False (its default True computes and copies logits for every prompt token); candlelight with --max-batch-size 16."
  if [ "${#llama_flags[@]}" -gt 0 ]; then
    echo "- llama.cpp crashed here in its AMX/repacked weight path (probe decode failed), so it ran with use_extra_bufts = false (plain CPU buffers, AVX-512/AVX2 kernels)."
  fi
  echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores: other tenants' work inflates both servers' times."
} | tee -a "$OUT/report.md"
