//! Quantized matmul kernels (being written).
