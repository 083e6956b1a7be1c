#!/usr/bin/env bash
# Builds the llama.cpp baseline for the benches: llama-cpp-python (which
# compiles llama.cpp from source) in .venv-bench, native CPU flags, no GPU.
# Cached: does nothing when the venv already imports llama_cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-bench
version=0.3.36   # the version that produced tests/data/reference
# AVX-512 with VNNI, no AMX: a native build enables AMX tiles on CPUs that have
# them, and llama_decode then crashes in VMs that do not grant tile state.
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF"
stamp="$venv/.cmake-args"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$cmake_args" ] \
   && "$venv/bin/python" -c 'import llama_cpp, sys; sys.exit(llama_cpp.__version__ != "'$version'")' 2>/dev/null; then
  echo "bench-setup: llama-cpp-python $version present"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# Server extras for the HTTP comparison (llama_cpp.server).
CMAKE_ARGS="$cmake_args" \
  "$venv/bin/pip" install --quiet --force-reinstall --no-cache-dir "llama-cpp-python[server]==$version"
echo "$cmake_args" >"$stamp"
echo "bench-setup: built llama-cpp-python $version in $venv"
