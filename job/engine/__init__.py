"""The engine: run a kernel over the chunks of a dask array, persisted or streamed, and reduce.

kernels (numba/BLAS functions on one block of rows: distances, assignment, fused Lloyd partials, moments),
blockwise (a kernel per chunk in the task that reads it; tree reduction; rows by index), map_reduce (one
task per worker thread when X is persisted), persist (whether X fits the cluster, and spreading its chunks
evenly), rng (counter-based random numbers independent of chunking).
May use: numpy, numba, dask, distributed; nothing else of job (everything else may use it).
"""
