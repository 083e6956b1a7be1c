#!/usr/bin/env bash
# Server bench: candlelight against llama.cpp's own C++ server, llama-server (the
# peer to beat), through loadgen, on the same GGUF. Optionally a third column,
# llama-cpp-python's llama_cpp.server (WITH_LLAMA_CPP_PYTHON=1; it serves one
# request at a time), on the plain workload.
#
# Workloads (WORKLOADS, comma-separated; default all, in this order):
#   plain          128-token prompts, 64 output tokens, closed loop at concurrency
#                  1, 8, 16, 32; prefix caching off on both
#   mixed          the same mix at concurrency 16 with more requests: ITL tail and
#                  throughput (issue 13: ITL p99 <= llama-server's, throughput >= 3x)
#   multi-turn     8 users x 6 turns, 200-token system prompt, 64-token user
#                  messages and replies, chat API: candlelight, candlelight
#                  --no-prefix-cache, llama-server with its prompt cache
#   shared-prefix  4 prefixes of 512 tokens + 64-token suffixes, concurrency 8
#   long-context   one stream, 64 output tokens after 1k, 2k, 4k and ~8k prompts
#   rss            peak RSS (VmHWM) at equal KV capacity (16 x 1024 tokens)
#   sweep          candlelight alone on the mixed load at each --max-batch-tokens
#                  of SWEEP_MAX_BATCH_TOKENS
# Each workload writes $OUT/<workload>/ (loadgen results, server logs, the exact
# server command per run, table.md); $OUT/report.md gathers every table there,
# so OUT=<an earlier run> WORKLOADS=<some> reruns parts of it.
#
# Fairness choices:
# - One server at a time, a fresh process per configuration, THREADS (2)
#   compute threads each (llama-server -t and -tb), same GGUF, greedy
#   (temperature 0), streamed, the same loadgen flags. Both honour ignore_eos
#   (llama-server reads it from the request body), so every request decodes
#   exactly its max_tokens; the tables flag any run whose mean differs.
# - Slots: llama-server gets -np = the concurrency and -c = np x (what one
#   sequence needs + margin): with -np given, its KV is split evenly per slot
#   (-kvu is off unless -np is auto). Continuous batching on (--cont-batching).
#   candlelight gets --max-batch-size = the concurrency.
# - Prompt caching is off on both where the workload measures compute (plain,
#   mixed, long-context, sweep; loadgen's seeded prompts repeat across runs):
#   candlelight --no-prefix-cache; llama-server --no-cache-prompt --cache-reuse 0
#   --cache-ram 0 (no slot prompt reuse, no KV shifting, no host-RAM prompt
#   cache). It is on where users have it (multi-turn, shared-prefix): both with
#   their defaults, plus candlelight --no-prefix-cache as the reference.
# - The same prompt text on both. Fixed-prompt workloads read a JSONL dataset
#   whose prompts have exact lengths by candlelight's /tokenize (one tokenizer:
#   the GGUF's). loadgen's synthetic multi-turn and shared-prefix texts are sized
#   through the server's /tokenize; where loadgen cannot use it (llama-server
#   answers another request shape) it assumes a default words-per-token, so the
#   lengths given to it are set from a calibration run against candlelight
#   (prompts/calibration) so that it draws the intended number of words, the
#   same words for both servers (bench_server.py synthetic-len). The tables show
#   the prompt tokens each server counted.
# - Telemetry off on both (candlelight --no-telemetry, llama-server without
#   --metrics). Servers and loadgen run at nice BENCH_NICE where permitted.
# - The machine may be shared: the load average is printed (and stored in the
#   tables) at the start and end of each workload, with a warning above 2.5 at
#   the start (the bench itself adds about 2 while it runs).
#
# Environment: WORKLOADS (all), CONCURRENCY (1,8,16,32), REQUESTS (16,32,32,64,
# per level), INPUT_LEN (128), OUTPUT_LEN (64), MIXED_REQUESTS (64),
# MT_USERS (8), MT_TURNS (6), MT_SYSTEM_LEN (200), MT_USER_LEN (64),
# MT_CONVERSATIONS (8), SP_PREFIX_LEN (512), SP_PREFIXES (4), SP_SUFFIX_LEN (64),
# SP_CONCURRENCY (8), SP_REQUESTS (48), LONG_CONTEXTS (1024,2048,4096,8064: 8064 +
# 64 output + margin fits the model's 8192-token context), LONG_REQUESTS (3),
# MEM_INPUT_LEN (960), MEM_CONC (16), MEM_SLOT (1024), SWEEP_MAX_BATCH_TOKENS
# (32,64,128,256), THREADS (2), BENCH_NICE (-10; "" for none), OUT
# (results/bench-server/<time>), WITH_LLAMA_CPP_PYTHON (0), LLAMA_EXTRA_BUFTS
# (auto | on | off: llama_cpp.server's AMX/repacked weight buffers), BENCH_BUILD
# (1; 0 runs the release binaries already built, as they are).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_CTX=8192
ALL_WORKLOADS=plain,mixed,multi-turn,shared-prefix,long-context,rss,sweep
WORKLOADS=${WORKLOADS:-$ALL_WORKLOADS}
CONCURRENCY=${CONCURRENCY:-1,8,16,32}
REQUESTS=${REQUESTS:-16,32,32,64}
INPUT_LEN=${INPUT_LEN:-128}
OUTPUT_LEN=${OUTPUT_LEN:-64}
MIXED_CONC=16
MIXED_REQUESTS=${MIXED_REQUESTS:-64}
MT_USERS=${MT_USERS:-8}
MT_TURNS=${MT_TURNS:-6}
MT_SYSTEM_LEN=${MT_SYSTEM_LEN:-200}
MT_USER_LEN=${MT_USER_LEN:-64}
MT_CONVERSATIONS=${MT_CONVERSATIONS:-8}
SP_PREFIX_LEN=${SP_PREFIX_LEN:-512}
SP_PREFIXES=${SP_PREFIXES:-4}
SP_SUFFIX_LEN=${SP_SUFFIX_LEN:-64}
SP_CONCURRENCY=${SP_CONCURRENCY:-8}
SP_REQUESTS=${SP_REQUESTS:-48}
LONG_CONTEXTS=${LONG_CONTEXTS:-1024,2048,4096,8064}
LONG_REQUESTS=${LONG_REQUESTS:-3}
MEM_INPUT_LEN=${MEM_INPUT_LEN:-960}
MEM_CONC=${MEM_CONC:-16}
MEM_SLOT=${MEM_SLOT:-1024}
SWEEP_MAX_BATCH_TOKENS=${SWEEP_MAX_BATCH_TOKENS:-32,64,128,256}
THREADS=${THREADS:-2}
BENCH_NICE=${BENCH_NICE--10}
WITH_LLAMA_CPP_PYTHON=${WITH_LLAMA_CPP_PYTHON:-0}
BENCH_BUILD=${BENCH_BUILD:-1}
LLAMA_EXTRA_BUFTS=${LLAMA_EXTRA_BUFTS:-auto}
OUT=${OUT:-results/bench-server/$(date +%Y%m%d-%H%M%S)}
LOAD_WARN=2.5
READY_TIMEOUT=180
MARGIN=64   # KV positions per llama-server slot beyond prompt + output
HELPER=benches/bench_server.py
VPY=.venv-bench/bin/python
# llama-server without any prompt reuse (see the header).
LLAMA_NO_CACHE=(--no-cache-prompt --cache-reuse 0 --cache-ram 0)

IFS=, read -r -a levels <<<"$CONCURRENCY"
IFS=, read -r -a counts <<<"$REQUESTS"
IFS=, read -r -a long_lens <<<"$LONG_CONTEXTS"
IFS=, read -r -a sweep_values <<<"$SWEEP_MAX_BATCH_TOKENS"
[ "${#levels[@]}" = "${#counts[@]}" ] || { echo "REQUESTS needs one count per CONCURRENCY level" >&2; exit 1; }

selected() { [[ ",$WORKLOADS," == *",$1,"* ]]; }

for w in ${WORKLOADS//,/ }; do
  [[ ",$ALL_WORKLOADS," == *",$w,"* ]] || { echo "unknown workload '$w' (known: $ALL_WORKLOADS)" >&2; exit 1; }
done

setup() {
  scripts/fetch-model.sh
  if [ "$WITH_LLAMA_CPP_PYTHON" = 1 ]; then
    LLAMA_BIN=$(scripts/bench-setup.sh | tail -n 1)
  else
    LLAMA_BIN=$(scripts/bench-setup.sh server | tail -n 1)
  fi
  # shellcheck source=scripts/bench-env.sh
  . scripts/bench-env.sh
  if [ "$BENCH_BUILD" = 1 ]; then
    cargo build --release -q --bin candlelight
    cargo build --release -q -p loadgen
  fi
  mkdir -p "$OUT/prompts"
  prio=()
  if [ -n "$BENCH_NICE" ] && nice -n "$BENCH_NICE" true 2>/dev/null; then prio=(nice -n "$BENCH_NICE"); fi
  llama_py_flags=()
  if [ "$WITH_LLAMA_CPP_PYTHON" = 1 ]; then
    case $LLAMA_EXTRA_BUFTS in
      on) ;;
      off) llama_py_flags=(--no-extra-bufts) ;;
      *) "$VPY" "$HELPER" llama-probe "$MODEL" || llama_py_flags=(--no-extra-bufts) ;;
    esac
  fi
}

# ---- servers -------------------------------------------------------------

server=""
server_desc=""
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# start_server KIND LOG [FLAGS...]: a fresh KIND (candlelight | llama-server |
# llama-cpp-python) on a free port with FLAGS after the common ones; sets
# $server (pid), $url and $server_desc (the command, for the tables).
start_server() {
  local kind=$1 log=$2 port
  shift 2
  port=$(python3 "$HELPER" free-port)
  url="http://127.0.0.1:$port"
  local common
  case $kind in
    candlelight)
      common=(serve --model "$MODEL" --threads "$THREADS" --no-telemetry)
      server_desc="candlelight ${common[*]} $*"
      "${prio[@]}" "$BIN/candlelight" "${common[@]}" --host 127.0.0.1 --port "$port" "$@" >"$log" 2>&1 &
      ;;
    llama-server)
      common=(-m "$MODEL" -t "$THREADS" -tb "$THREADS" --cont-batching --no-webui)
      server_desc="llama-server ${common[*]} $*"
      "${prio[@]}" "$LLAMA_BIN/llama-server" "${common[@]}" --host 127.0.0.1 --port "$port" "$@" >"$log" 2>&1 &
      ;;
    llama-cpp-python)
      # --interrupt_requests False: else a waiting request cuts the running
      # stream short; --logits_all False: no logits for every prompt token.
      common=(--model "$MODEL" --n_threads "$THREADS" --n_threads_batch "$THREADS"
        --logits_all False --interrupt_requests False --verbose False)
      server_desc="python -m llama_cpp.server ${common[*]} $* ${llama_py_flags[*]}"
      "${prio[@]}" "$VPY" "$HELPER" llama-cpp-python "${llama_py_flags[@]}" -- "${common[@]}" \
        --host 127.0.0.1 --port "$port" "$@" >"$log" 2>&1 &
      ;;
  esac
  server=$!
  if ! python3 "$HELPER" wait "$url" "$server" "$READY_TIMEOUT"; then
    tail -20 "$log" >&2
    exit 1
  fi
}

# run_loadgen DIR [FLAGS...]: one loadgen step against $url into DIR; keeps the
# server's command beside it (DIR.cmd). A failed run is reported, not fatal.
run_loadgen() {
  local dir=$1 rc=0
  shift
  echo "$server_desc" >"$dir.cmd"
  "${prio[@]}" "$BIN/loadgen" --url "$url" --ignore-eos --temperature 0 --seed 0 \
    --timeout 1800s --wait 30s --sample-interval 0 --no-progress --no-plots \
    --output-dir "$dir" "$@" >"$dir.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "   loadgen exited $rc (see $dir.log):" >&2
    tail -5 "$dir.log" >&2
  fi
}

rss_of_server() {
  python3 "$HELPER" rss "$server" >"$1/peak_rss_kb"
}

# ---- bookkeeping ---------------------------------------------------------

# mark_load DIR start|end: print and store the load average.
mark_load() {
  local now rc=0
  now=$(python3 "$HELPER" loadavg --warn "$LOAD_WARN") || rc=$?
  echo "$2: $now" >>"$1/loadavg.txt"
  echo "   load average $now ($2)"
  if [ "$2" = start ] && [ "$rc" != 0 ]; then
    echo "   WARNING: load average above $LOAD_WARN before the run: other work shares the cores, figures are noisy" >&2
  fi
}

begin() {
  echo "== $1"
  rm -rf "${OUT:?}/$1"
  mkdir -p "$OUT/$1"
  mark_load "$OUT/$1" start
}

# finish WORKLOAD TITLE [REPORT FLAGS...]: the workload's table, printed and kept.
finish() {
  local w=$1 title=$2
  shift 2
  mark_load "$OUT/$w" end
  python3 "$HELPER" report "$w" "$OUT/$w" --title "$title" --output-len "$OUTPUT_LEN" "$@" | tee "$OUT/$w/table.md"
}

ctx_for() { # ctx_for SLOTS TOKENS_PER_SEQUENCE: llama-server's -c
  echo $(($1 * ($2 + MARGIN)))
}

max_of() {
  local m=0 x
  for x in "$@"; do [ "$x" -gt "$m" ] && m=$x; done
  echo "$m"
}

# ---- prompts -------------------------------------------------------------

# Exact-length prompt files, made once per OUT with candlelight's /tokenize.
make_prompts() {
  local want=() n
  need() { [ -s "$OUT/prompts/$1.jsonl" ] || want+=("$1 $2 $3 $4"); }
  if selected plain || selected mixed || selected sweep; then
    need plain "$INPUT_LEN" "$(max_of "${counts[@]}" "$MIXED_REQUESTS")" 1
  fi
  if selected long-context; then
    for n in "${long_lens[@]}"; do need "long-$n" "$n" "$LONG_REQUESTS" "$((100 + n))"; done
  fi
  selected rss && need mem "$MEM_INPUT_LEN" "$MEM_CONC" 2
  local calibrate=0
  if { selected multi-turn || selected shared-prefix; } && [ ! -s "$OUT/prompts/calibration/result.json" ]; then
    calibrate=1
  fi
  [ "${#want[@]}" -gt 0 ] || [ "$calibrate" = 1 ] || return 0
  echo "== prompts (exact lengths by candlelight's /tokenize)"
  start_server candlelight "$OUT/prompts/candlelight.log"
  local spec name len count seed
  for spec in "${want[@]}"; do
    read -r name len count seed <<<"$spec"
    python3 "$HELPER" prompts "$url" "$OUT/prompts/$name.jsonl" --input-len "$len" --count "$count" --seed "$seed"
  done
  if [ "$calibrate" = 1 ]; then
    # Server tokens per word of loadgen's synthetic text (see synthetic_len).
    run_loadgen "$OUT/prompts/calibration" --api completions --input-len 1300 --output-len 1 \
      --concurrency 1 --requests 4
    [ -s "$OUT/prompts/calibration/result.json" ] || { echo "calibration run failed" >&2; exit 1; }
  fi
  stop_server
}

# plain_prompts: sets $plain_file. llama_cpp.server ignores ignore_eos: with it
# in the plain table, every server gets only prompts whose greedy output (on
# llama-server, the same llama.cpp) runs the full OUTPUT_LEN.
plain_prompts() {
  plain_file=$OUT/prompts/plain.jsonl
  [ "$WITH_LLAMA_CPP_PYTHON" = 1 ] || return 0
  plain_file=$OUT/prompts/plain-full-length.jsonl
  [ -s "$plain_file" ] && return 0
  start_server llama-server "$OUT/prompts/llama-server-filter.log" -np 1 -c "$(ctx_for 1 $((INPUT_LEN + OUTPUT_LEN)))"
  python3 "$HELPER" filter "$url" "$OUT/prompts/plain.jsonl" "$plain_file" --output-len "$OUTPUT_LEN" \
    --count "$(max_of "${counts[@]}")"
  stop_server
}

# ---- workloads -----------------------------------------------------------

wl_plain() {
  local d=$OUT/plain i c n
  plain_prompts
  begin plain
  for i in "${!levels[@]}"; do
    c=${levels[$i]} n=${counts[$i]}
    echo "   concurrency $c, $n requests"
    local load=(--api completions --dataset "$plain_file" --output-len "$OUTPUT_LEN" --concurrency "$c" --requests "$n")
    start_server candlelight "$d/candlelight-c$c.server.log" --max-batch-size "$c" --no-prefix-cache
    run_loadgen "$d/candlelight-c$c" "${load[@]}"
    stop_server
    start_server llama-server "$d/llama-server-c$c.server.log" -np "$c" \
      -c "$(ctx_for "$c" $((INPUT_LEN + OUTPUT_LEN)))" "${LLAMA_NO_CACHE[@]}"
    run_loadgen "$d/llama-server-c$c" "${load[@]}"
    stop_server
    if [ "$WITH_LLAMA_CPP_PYTHON" = 1 ]; then
      start_server llama-cpp-python "$d/llama-cpp-python-c$c.server.log" \
        --n_ctx "$((INPUT_LEN + OUTPUT_LEN + MARGIN))"
      run_loadgen "$d/llama-cpp-python-c$c" "${load[@]}"
      stop_server
    fi
  done
  finish plain "Plain load: $INPUT_LEN-token prompts, $OUTPUT_LEN output tokens, concurrency $CONCURRENCY, prefix caching off" \
    --levels "$CONCURRENCY"
}

# mixed_load: sets the caller's `load` to the mixed workload's loadgen flags.
mixed_load() {
  load=(--api completions --dataset "$OUT/prompts/plain.jsonl" --output-len "$OUTPUT_LEN"
    --concurrency "$MIXED_CONC" --requests "$MIXED_REQUESTS")
}

wl_mixed() {
  local d=$OUT/mixed load
  mixed_load
  begin mixed
  start_server candlelight "$d/candlelight.server.log" --max-batch-size "$MIXED_CONC" --no-prefix-cache
  run_loadgen "$d/candlelight" "${load[@]}"
  stop_server
  start_server llama-server "$d/llama-server.server.log" -np "$MIXED_CONC" \
    -c "$(ctx_for "$MIXED_CONC" $((INPUT_LEN + OUTPUT_LEN)))" "${LLAMA_NO_CACHE[@]}"
  run_loadgen "$d/llama-server" "${load[@]}"
  stop_server
  finish mixed "Tail under mixed load: $INPUT_LEN-token prompts, $OUTPUT_LEN output tokens, concurrency $MIXED_CONC, $MIXED_REQUESTS requests, prefix caching off"
}

wl_sweep() {
  local d=$OUT/sweep v load
  mixed_load
  begin sweep
  for v in "${sweep_values[@]}"; do
    echo "   --max-batch-tokens $v"
    start_server candlelight "$d/mbt-$v.server.log" --max-batch-size "$MIXED_CONC" --no-prefix-cache \
      --max-batch-tokens "$v"
    run_loadgen "$d/mbt-$v" "${load[@]}"
    stop_server
  done
  finish sweep "candlelight --max-batch-tokens sweep, on the mixed load ($INPUT_LEN-token prompts, $OUTPUT_LEN output tokens, concurrency $MIXED_CONC, prefix caching off)" \
    --levels "$SWEEP_MAX_BATCH_TOKENS"
}

# sized LEN: the length to give loadgen against the running server for a
# synthetic text of LEN tokens (see the header).
sized() {
  python3 "$HELPER" synthetic-len "$OUT/prompts/calibration" "$url" "$1"
}

# multi_turn_run NAME: loadgen's conversations against the running server.
multi_turn_run() {
  local system user
  system=$(sized "$MT_SYSTEM_LEN")
  user=$(sized "$MT_USER_LEN")
  run_loadgen "$OUT/multi-turn/$1" --api chat --multi-turn "$MT_TURNS" --concurrency "$MT_USERS" \
    --requests $((MT_CONVERSATIONS * MT_TURNS)) --output-len "$OUTPUT_LEN" \
    --system-prompt-len "$system" --input-len "$user"
}

wl_multi_turn() {
  local d=$OUT/multi-turn
  # Longest prompt: the system prompt, every turn's message and reply, template tokens.
  local seq=$((MT_SYSTEM_LEN + MT_TURNS * (MT_USER_LEN + OUTPUT_LEN + 32)))
  begin multi-turn
  start_server candlelight "$d/candlelight.server.log" --max-batch-size "$MT_USERS"
  multi_turn_run candlelight
  stop_server
  start_server candlelight "$d/candlelight-no-cache.server.log" --max-batch-size "$MT_USERS" --no-prefix-cache
  multi_turn_run candlelight-no-cache
  stop_server
  start_server llama-server "$d/llama-server.server.log" -np "$MT_USERS" -c "$(ctx_for "$MT_USERS" "$seq")"
  multi_turn_run llama-server
  stop_server
  finish multi-turn "Multi-turn chat: $MT_USERS users × $MT_TURNS turns ($MT_CONVERSATIONS conversations), $MT_SYSTEM_LEN-token system prompt, $MT_USER_LEN-token user messages, $OUTPUT_LEN-token replies, chat API" \
    --turns "$MT_TURNS"
}

# shared_prefix_run NAME: loadgen's shared-prefix load against the running server.
shared_prefix_run() {
  local prefix suffix
  prefix=$(sized "$SP_PREFIX_LEN")
  suffix=$(sized "$SP_SUFFIX_LEN")
  run_loadgen "$OUT/shared-prefix/$1" --api completions --prefixes "$SP_PREFIXES" --output-len "$OUTPUT_LEN" \
    --concurrency "$SP_CONCURRENCY" --requests "$SP_REQUESTS" --shared-prefix "$prefix" --input-len "$suffix"
}

wl_shared_prefix() {
  local d=$OUT/shared-prefix
  begin shared-prefix
  start_server candlelight "$d/candlelight.server.log" --max-batch-size "$SP_CONCURRENCY"
  shared_prefix_run candlelight
  stop_server
  start_server candlelight "$d/candlelight-no-cache.server.log" --max-batch-size "$SP_CONCURRENCY" --no-prefix-cache
  shared_prefix_run candlelight-no-cache
  stop_server
  start_server llama-server "$d/llama-server.server.log" -np "$SP_CONCURRENCY" \
    -c "$(ctx_for "$SP_CONCURRENCY" $((SP_PREFIX_LEN + SP_SUFFIX_LEN + OUTPUT_LEN)))"
  shared_prefix_run llama-server
  stop_server
  finish shared-prefix "Shared prefix: $SP_PREFIXES prefixes of $SP_PREFIX_LEN tokens, $SP_SUFFIX_LEN-token suffixes, concurrency $SP_CONCURRENCY, $OUTPUT_LEN output tokens, $SP_REQUESTS requests"
}

wl_long_context() {
  local d=$OUT/long-context n ctx
  begin long-context
  for n in "${long_lens[@]}"; do
    echo "   $n-token prompts, $LONG_REQUESTS requests"
    local load=(--api completions --dataset "$OUT/prompts/long-$n.jsonl" --output-len "$OUTPUT_LEN"
      --concurrency 1 --requests "$LONG_REQUESTS")
    start_server candlelight "$d/candlelight-$n.server.log" --max-batch-size 1 --no-prefix-cache
    run_loadgen "$d/candlelight-$n" "${load[@]}"
    stop_server
    ctx=$(ctx_for 1 $((n + OUTPUT_LEN)))
    [ "$ctx" -le "$MODEL_CTX" ] || ctx=$MODEL_CTX
    start_server llama-server "$d/llama-server-$n.server.log" -np 1 -c "$ctx" "${LLAMA_NO_CACHE[@]}"
    run_loadgen "$d/llama-server-$n" "${load[@]}"
    stop_server
  done
  finish long-context "Long context: one stream, $OUTPUT_LEN output tokens after a prompt of each length ($LONG_REQUESTS requests each), prefix caching off" \
    --levels "$LONG_CONTEXTS"
}

wl_rss() {
  local d=$OUT/rss cap=$((MEM_CONC * MEM_SLOT))
  local load=(--api completions --dataset "$OUT/prompts/mem.jsonl" --output-len "$OUTPUT_LEN"
    --concurrency "$MEM_CONC" --requests "$MEM_CONC")
  begin rss
  mkdir -p "$d/candlelight" "$d/llama-server"
  start_server candlelight "$d/candlelight.server.log" --max-batch-size "$MEM_CONC" --max-total-tokens "$cap"
  run_loadgen "$d/candlelight" "${load[@]}"
  rss_of_server "$d/candlelight"
  stop_server
  # --cache-ram 0: no host-RAM prompt cache beside the KV (equal KV capacity).
  start_server llama-server "$d/llama-server.server.log" -np "$MEM_CONC" -c "$cap" --cache-ram 0
  run_loadgen "$d/llama-server" "${load[@]}"
  rss_of_server "$d/llama-server"
  stop_server
  finish rss "Peak RSS at equal KV capacity" --capacity "$MEM_CONC slots × $MEM_SLOT tokens = $cap KV positions; $MEM_CONC concurrent requests of $MEM_INPUT_LEN + $OUTPUT_LEN tokens"
}

report() {
  local w
  {
    echo "## Server bench ($(date -u +%Y-%m-%d), $(nproc) cores, $THREADS threads per server)"
    echo
    echo "candlelight vs llama-server (llama.cpp from llama-cpp-python 0.3.36), $MODEL, greedy, streamed, driven by loadgen; one server at a time. Ratios are candlelight / the other server. Server commands are listed under each table."
    echo
    for w in ${ALL_WORKLOADS//,/ }; do
      [ -s "$OUT/$w/table.md" ] && { cat "$OUT/$w/table.md"; echo; }
    done
  } >"$OUT/report.md"
  echo "report: $OUT/report.md"
}

main() {
  setup
  echo "bench-server: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), nice ${BENCH_NICE:-0}, workloads $WORKLOADS, results in $OUT"
  make_prompts
  local w
  for w in ${WORKLOADS//,/ }; do
    case $w in
      plain) wl_plain ;;
      mixed) wl_mixed ;;
      multi-turn) wl_multi_turn ;;
      shared-prefix) wl_shared_prefix ;;
      long-context) wl_long_context ;;
      rss) wl_rss ;;
      sweep) wl_sweep ;;
    esac
  done
  report
}

main "$@"; exit
