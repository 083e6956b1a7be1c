#!/usr/bin/env bash
# Builds the llama.cpp baseline for the benches: llama-cpp-python (which
# compiles llama.cpp from source) in .venv-bench, native CPU flags, no GPU.
# Cached: does nothing when the venv already imports llama_cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-bench
version=0.3.36   # the version that produced ../shared/reference
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import llama_cpp, sys; sys.exit(llama_cpp.__version__ != "'$version'")' 2>/dev/null; then
  echo "bench-setup: llama-cpp-python $version present"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# Server extras for the HTTP comparison (llama_cpp.server).
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DLLAMA_CURL=OFF" \
  "$venv/bin/pip" install --quiet "llama-cpp-python[server]==$version"
echo "bench-setup: built llama-cpp-python $version in $venv"
