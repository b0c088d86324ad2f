"""Hand-written Numba kernels, one op family per folder (CPU and CUDA side by side).

Installed as ``convcore.kernels``. Kernels are pure: they take their inputs and a
preallocated output and write it; shape checks and allocation live in ``convcore``.
"""
