"""Triton kernels for fastsiren (installed as ``fastsiren.kernels``)."""
