"""Distributed, out-of-core K-Means for MNIST-style images on Dask."""

__version__ = "0.1.0"
