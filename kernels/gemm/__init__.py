"""Matrix products: a float32 GEMM for the CPU backend (the conv and linear kernels use it)."""
