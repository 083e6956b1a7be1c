# Sourced by the bench scripts. Benchmarks build with -C target-cpu=native
# (candle's SIMD kernels are chosen at compile time), in a target dir of their
# own so they and serve.sh's portable release build never rebuild each other.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-cpu=native"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$PWD/target/native}"
BIN="$CARGO_TARGET_DIR/release"
