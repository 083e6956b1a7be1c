#!/usr/bin/env bash
# Requantizes the default model (Q4_1) with llama.cpp's own quantize tool to the
# types the backends are tested on: models/SmolLM2-135M-Instruct.<TYPE>.gguf.
#
#   scripts/make-test-models.sh [TYPE...]     (default: Q4_K_M Q4_0 Q8_0)
#
# The tool is the portable build of scripts/build-llama-cpp.sh. Requantizing is
# deterministic (same bytes whatever the thread count or CPU), so each output's
# sha256 is pinned here; a file with the right hash is kept. The llama.cpp
# reference outputs for these files are in tests/data/reference/<TYPE>/.
set -euo pipefail
cd "$(dirname "$0")/.."

base=SmolLM2-135M-Instruct
declare -A sha=(
  [Q4_K_M]=dc0f3a02e821146247a0af6895adf9872124f368682cb110cb9ed09ff2a9f9f1
  [Q4_0]=aa4256f3b46eb4add75ece1c0eeac1c6e4f1ec0c93e6fbe64fe1770f4ad09ae8
  [Q8_0]=7b46609d11703c058397e5cfe4cc6e4b2508cb1eb4c80ddc472a5d421fbdb508
)
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(Q4_K_M Q4_0 Q8_0)

present() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }

missing=()
for t in "${types[@]}"; do
  [ -n "${sha[$t]:-}" ] || { echo "make-test-models: no pinned sha256 for type $t" >&2; exit 2; }
  dest=models/$base.$t.gguf
  if present "$dest" "${sha[$t]}"; then
    echo "model present: $dest"
  else
    missing+=("$t")
  fi
done
[ ${#missing[@]} -gt 0 ] || exit 0

scripts/fetch-model.sh >&2
bin=$(scripts/build-llama-cpp.sh portable llama-quantize)
src=models/$base.Q4_1.gguf
for t in "${missing[@]}"; do
  dest=models/$base.$t.gguf
  rm -f "$dest.part"
  if ! "$bin/llama-quantize" --allow-requantize "$src" "$dest.part" "$t" "$(nproc)" \
      >"$dest.log" 2>&1; then
    tail -n 20 "$dest.log" >&2
    echo "make-test-models: llama-quantize $t failed (log: $dest.log)" >&2
    exit 1
  fi
  if ! present "$dest.part" "${sha[$t]}"; then
    echo "make-test-models: sha256 of $dest is $(sha256sum "$dest.part" | cut -d' ' -f1)," \
      "expected ${sha[$t]}" >&2
    exit 1
  fi
  mv "$dest.part" "$dest"
  rm -f "$dest.log"
  echo "model made: $dest"
done
