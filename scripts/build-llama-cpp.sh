#!/usr/bin/env bash
# Builds llama.cpp tools from the sources vendored in the PyPI sdist of
# llama-cpp-python (the version that produced tests/data/reference), with cmake.
#
#   scripts/build-llama-cpp.sh [portable|native] [targets...]
#
#   portable  baseline x86-64 (no -march=native, no AVX/AVX2/AVX-512/AMX), so the
#             binary runs on any CI machine; -O1. Default target: llama-quantize.
#   native    -march=native with AMX switched off (AMX tiles crash llama_decode in
#             VMs that do not grant tile state). Default targets: llama-server,
#             llama-quantize. Used by the benches.
#
# Cached under $HOME/.cache/candlelight/llama.cpp: the sources are extracted once
# (0.3.36-src) and each variant has its own build dir (0.3.36-<variant>). A
# second call finds its stamp and returns at once. Prints the bin directory on
# stdout; everything else goes to stderr.
set -euo pipefail

version=0.3.36
sdist_sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

variant=${1:-portable}
[ $# -gt 0 ] && shift
case "$variant" in
  portable) default_targets=(llama-quantize) ;;
  native) default_targets=(llama-server llama-quantize) ;;
  *) echo "usage: $0 [portable|native] [targets...]" >&2; exit 2 ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${default_targets[@]}")

cache=${CANDLELIGHT_CACHE:-$HOME/.cache/candlelight}/llama.cpp
src=$cache/$version-src
dir=$cache/$version-$variant
build=$dir/build
bin=$build/bin
log=$dir/build.log

# Static, Release, no network at configure or build time (no CURL/OpenSSL, no
# web UI download), no tests or examples, no ccache so timings are honest.
common_args=(
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
  -DGGML_CUDA=OFF -DGGML_CCACHE=OFF -DGGML_BACKEND_DL=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
)
if [ "$variant" = portable ]; then
  # -O1: compiles in 60% of the time of -O3 (CI builds this cold), quantizes as
  # fast here, and writes the same bytes (no FMA, no fast-math: IEEE either way).
  variant_args=(
    "-DCMAKE_C_FLAGS_RELEASE=-O1 -DNDEBUG" "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG"
    -DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF
    -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF
    -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  )
else
  # Explicit -mno-* win over -march=native whatever their order (checked with GCC 12).
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  variant_args=(
    -DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
    "-DCMAKE_C_FLAGS=$no_amx" "-DCMAKE_CXX_FLAGS=$no_amx"
  )
fi
args=("${common_args[@]}" "${variant_args[@]}")
config_key="$version ${args[*]}"

# .config: the configuration of the build dir; .built: targets that finished.
all_built() {
  [ "$(cat "$dir/.config" 2>/dev/null)" = "$config_key" ] || return 1
  local t
  for t in "${targets[@]}"; do
    grep -qx "$t" "$dir/.built" 2>/dev/null && [ -x "$bin/$t" ] || return 1
  done
}

if all_built; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
# One builder at a time per cache (CI steps or agents may call concurrently).
exec 9>"$cache/.lock"
flock 9
if all_built; then echo "$bin"; exit 0; fi

fetch_sources() {
  [ -f "$src/.stamp" ] && [ "$(cat "$src/.stamp")" = "$sdist_sha" ] && return 0
  echo "build-llama-cpp: downloading llama-cpp-python==$version sdist" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
    "llama-cpp-python==$version" -d "$tmp" >&2
  local sdist=$tmp/llama_cpp_python-$version.tar.gz
  if ! echo "$sdist_sha  $sdist" | sha256sum --check --status; then
    echo "build-llama-cpp: sha256 mismatch for $(basename "$sdist")" >&2
    return 1
  fi
  rm -rf "$src" "$src.part"
  mkdir -p "$src.part"
  # vendor/llama.cpp only (gguf-py included), less the test vocabularies, docs
  # and images (113 MB) that no build reads.
  tar -xzf "$sdist" -C "$src.part" --strip-components=2 \
    --exclude=vendor/llama.cpp/models --exclude=vendor/llama.cpp/docs \
    --exclude=vendor/llama.cpp/media "llama_cpp_python-$version/vendor/llama.cpp"
  echo "$sdist_sha" >"$src.part/.stamp"
  mv "$src.part" "$src"
  rm -rf "$tmp"
}

fetch_sources
tree=$src/llama.cpp

if [ "$(cat "$dir/.config" 2>/dev/null)" != "$config_key" ]; then
  rm -rf "$dir"
fi
mkdir -p "$dir"
generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja
jobs=$(nproc)
start=$SECONDS
echo "build-llama-cpp: $variant build of ${targets[*]} in $build ($jobs jobs, log $log)" >&2
fail() {
  tail -n 40 "$log" >&2
  echo "build-llama-cpp: $1 failed, full log in $log" >&2
  exit 1
}
if [ ! -f "$dir/.config" ]; then
  cmake -S "$tree" -B "$build" -G "$generator" "${args[@]}" >>"$log" 2>&1 || fail configure
  echo "$config_key" >"$dir/.config"
fi
cmake --build "$build" --parallel "$jobs" --target "${targets[@]}" >>"$log" 2>&1 || fail build
printf '%s\n' "${targets[@]}" >>"$dir/.built"
echo "build-llama-cpp: built ${targets[*]} in $((SECONDS - start)) s" >&2
echo "$bin"
