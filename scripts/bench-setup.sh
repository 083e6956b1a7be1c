#!/usr/bin/env bash
# Builds the llama.cpp baselines for the benches, native CPU flags without AMX,
# no GPU:
#  - llama-cpp-python (which compiles llama.cpp from source) in .venv-bench;
#  - llama.cpp's own llama-server (and llama-quantize), with cmake from the same
#    version's sources, by scripts/build-llama-cpp.sh native (cached under
#    $HOME/.cache/candlelight/llama.cpp). The last line printed is its bin dir.
# Cached: each part does nothing when already built.
#
#   scripts/bench-setup.sh           both
#   scripts/bench-setup.sh server    llama-server only (bench-server.sh without
#                                    its optional llama_cpp.server column)
set -euo pipefail
cd "$(dirname "$0")/.."

build_server() {
  local bin
  bin=$(scripts/build-llama-cpp.sh native llama-server llama-quantize)
  echo "bench-setup: llama-server at $bin/llama-server"
  echo "$bin"
}
if [ "${1:-}" = server ]; then
  build_server
  exit 0
fi
venv=.venv-bench
version=0.3.36   # the version that produced tests/data/reference
# AVX-512 with VNNI, no AMX: a native build enables AMX tiles on CPUs that have
# them, and llama_decode then crashes in VMs that do not grant tile state.
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF"
stamp="$venv/.cmake-args"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$cmake_args" ] \
   && "$venv/bin/python" -c 'import llama_cpp, sys; sys.exit(llama_cpp.__version__ != "'$version'")' 2>/dev/null; then
  echo "bench-setup: llama-cpp-python $version present"
  build_server
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# Server extras for the HTTP comparison (llama_cpp.server).
CMAKE_ARGS="$cmake_args" \
  "$venv/bin/pip" install --quiet --force-reinstall --no-cache-dir "llama-cpp-python[server]==$version"
echo "$cmake_args" >"$stamp"
echo "bench-setup: built llama-cpp-python $version in $venv"
build_server
