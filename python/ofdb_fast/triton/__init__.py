"""Triton kernels (one op per file). Run on the CPU with TRITON_INTERPRET=1."""
