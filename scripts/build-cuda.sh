#!/usr/bin/env bash
# Builds `candlelight --features cuda` on a machine with no GPU and no CUDA
# toolkit, and prints the binary's path.
#
# - The CUDA 13.0 compiler comes from PyPI wheels in a venv. nvidia-nvvm is
#   pinned: the newest (13.5) emits PTX 9.5, which the 13.0 ptxas refuses.
#   Driver 580 (the GPU machines here) is CUDA 13.0.
# - The binary links against empty stub libraries that carry the real sonames;
#   the GPU machine supplies the real libraries at run time. Unresolved symbols
#   are allowed at link time, and --no-as-needed on the final link keeps every
#   CUDA library in the binary's NEEDED list, so the loader finds them.
# - venv and stubs are cached under $HOME/.cache/candlelight/cuda; the build
#   has its own target dir there too, since its RUSTFLAGS differ; clones share it.
#
# Usage: scripts/build-cuda.sh [--dry-run]
#   CUDA_COMPUTE_CAP  GPU architecture to compile for (default 90: H100/H200)
#   CUDA_TARGET_DIR   cargo target dir (default $HOME/.cache/candlelight/cuda/target)
#   CUDA_CACHE_DIR    venv and stubs (default $HOME/.cache/candlelight/cuda)
# - After the build it checks the binary: every CUDA library is NEEDED, no other
#   symbol is left undefined, and it starts against stand-in libraries that
#   answer "no device" (see step 5).
# The first build took 454 s on 2 cores (2026-11-30: every dependency plus
# candle's CUDA kernels, with the wheels already installed); later ones rebuild
# only what changed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${CUDA_CACHE_DIR:-$HOME/.cache/candlelight/cuda}"
target_dir="${CUDA_TARGET_DIR:-$cache/target}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
venv="$cache/venv"
stubs="$cache/stubs"
bin="$target_dir/release/candlelight"

# Versions of the CUDA 13.0 toolchain wheels (nvcc, cudart headers, CCCL, CRT, NVVM).
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
    nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88)
# Library:soname pairs the binary needs at run time (cudarc's dynamic linking
# plus candle-kernels' cudart).
libs=(cuda:libcuda.so.1 nvrtc:libnvrtc.so.13 curand:libcurand.so.10
    cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 cudart:libcudart.so.13)

case "${1:-}" in
    "") dry_run=0 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-cuda: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac
[[ "$CUDA_COMPUTE_CAP" =~ ^[0-9]+$ ]] || { echo "build-cuda: CUDA_COMPUTE_CAP must be a number like 90" >&2; exit 2; }

link_args=(-C link-arg=-Wl,--no-as-needed)
for p in "${libs[@]}"; do link_args+=(-C "link-arg=-l${p%%:*}"); done
rustflags="-L $stubs -C link-arg=-Wl,--unresolved-symbols=ignore-all"
cargo_cmd=(cargo rustc --release --features cuda --bin candlelight -- "${link_args[@]}")

if [ "$dry_run" = 1 ]; then
    echo "cache:     $cache"
    echo "wheels:    ${wheels[*]}"
    echo "stubs:     ${libs[*]}"
    echo "RUSTFLAGS: $rustflags"
    echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$target_dir"
    echo "build:     ${cargo_cmd[*]}"
    echo "binary:    $bin"
    exit 0
fi

# 1. The toolchain, once.
stamp="$venv/.candlelight-wheels"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${wheels[*]}" ]; then
    echo "build-cuda: installing the CUDA 13.0 toolchain wheels into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${wheels[@]}"
    echo "${wheels[*]}" >"$stamp"
fi
cuda_root="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
[ -x "$cuda_root/bin/nvcc" ] || { echo "build-cuda: no nvcc in $cuda_root" >&2; exit 1; }

# 2. Empty libraries with the real sonames, to link against.
mkdir -p "$stubs"
echo >"$stubs/empty.c"
for p in "${libs[@]}"; do
    so="$stubs/lib${p%%:*}.so"
    [ -f "$so" ] || gcc -shared -fPIC -o "$so" -Wl,-soname,"${p#*:}" "$stubs/empty.c"
done

# 3. Build.
export CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root" CUDA_HOME="$cuda_root"
export PATH="$cuda_root/bin:$PATH" CARGO_TARGET_DIR="$target_dir" RUSTFLAGS="$rustflags"
echo "build-cuda: $(nvcc --version | tail -n 2 | head -n 1); sm_$CUDA_COMPUTE_CAP; target $target_dir" >&2
start=$(date +%s)
(cd "$root" && "${cargo_cmd[@]}")
echo "build-cuda: built in $(($(date +%s) - start)) s" >&2

# 4. Check: every CUDA library is NEEDED, and nothing else is left unresolved.
needed="$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
for p in "${libs[@]}"; do
    grep -qx "${p#*:}" <<<"$needed" || { echo "build-cuda: $bin does not list ${p#*:} as NEEDED" >&2; exit 1; }
done
# Symbols from the system libraries carry a version (`memcpy@GLIBC_2.14`); the
# ones the stubs left open carry none and must all be CUDA's. Anything else (a
# missing system library, say) would fail only on the GPU machine.
stray="$(nm -D --undefined-only "$bin" | awk '$1 == "U" && $2 !~ /@/ {print $2}' |
    grep -Ev '^(cu|nvrtc|curand|cublas|__cuda)' || true)"
[ -z "$stray" ] || { echo "build-cuda: unexpected undefined symbols: $stray" >&2; exit 1; }
echo "build-cuda: NEEDED: $(tr '\n' ' ' <<<"$needed")" >&2

# 5. The binary starts. Stand-ins for the CUDA libraries define every symbol it
# takes from them, each answering "no device" (100 in both the driver's and the
# runtime's enum): the loader resolves everything (the binary binds at load
# time), nvcc's static constructors run, `--version` prints, and `serve --device
# cuda` fails with CUDA_ERROR_NO_DEVICE instead of crashing.
fake="$cache/no-device"
rm -rf "$fake" && mkdir -p "$fake"
nm -D --undefined-only "$bin" | awk '$1 == "U" && $2 !~ /@/ {print $2}' | while read -r sym; do
    case "$sym" in
        cuGetErrorString) echo "int $sym(int e, const char **s) { if (s) *s = \"no device (stand-in)\"; return 0; }" ;;
        cudaGetErrorString | cudaGetErrorName) echo "const char *$sym(int e) { return \"no device (stand-in)\"; }" ;;
        *) echo "long $sym(void) { return 100; }" ;;
    esac
done >"$fake/no-device.c"
gcc -shared -fPIC -o "$fake/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$fake/no-device.c"
for p in "${libs[@]:1}"; do
    gcc -shared -fPIC -o "$fake/${p#*:}" -Wl,-soname,"${p#*:}" "$stubs/empty.c"
done
LD_LIBRARY_PATH="$fake" "$bin" --version >/dev/null ||
    { echo "build-cuda: $bin does not start, even with every CUDA symbol defined" >&2; exit 1; }
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$model" ]; then
    if out="$(LD_LIBRARY_PATH="$fake" timeout 120 "$bin" serve --model "$model" --device cuda:0 \
        --port 0 --no-telemetry 2>&1)" || ! grep -q CUDA_ERROR_NO_DEVICE <<<"$out"; then
        echo "build-cuda: with no device, serve --device cuda should fail with CUDA_ERROR_NO_DEVICE:" >&2
        tail -n 5 <<<"$out" >&2
        exit 1
    fi
    echo "build-cuda: starts; with no device, serve --device cuda:0 fails cleanly" >&2
else
    echo "build-cuda: starts (no $model, so serve --device cuda was not tried)" >&2
fi
echo "build-cuda: $(du -h "$bin" | cut -f1) $bin" >&2
echo "$bin"
