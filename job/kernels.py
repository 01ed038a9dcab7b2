"""Per-chunk numerical kernels: pure numpy functions that run inside one Dask task each.

All of them work on one chunk of samples X [m, p] against the centers C [k, p]. Squared distances use
||x||^2 - 2 x.c + ||c||^2 so that the heavy part is one BLAS matrix product; rows are processed in
blocks small enough to stay in cache, so each block is read from memory once for both the distances and
the per-cluster sums.
"""

from __future__ import annotations

import numba
import numpy as np

# Rows per inner block: 1,024 rows of 784 float32 = 3.2 MB, which stays in cache between the distance
# product and the pass that sums the rows (measured in benchmarks/lloyd_kernel.py).
BLOCK_ROWS = 1024


def squared_norms(X: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", X, X)


def _block_distances(xb: np.ndarray, centers: np.ndarray, centers_sq: np.ndarray) -> np.ndarray:
    """Squared distances up to the per-row constant ||x||^2 (enough for the argmin)."""
    d = xb @ centers.T
    d *= -2
    d += centers_sq
    return d


def assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of each row and its squared distance (float64, clipped at 0).

    Returns labels int32 [m] and min_sq_dist float64 [m].
    """
    centers = centers.astype(X.dtype, copy=False)
    centers_sq = squared_norms(centers)
    labels = np.empty(len(X), dtype=np.int32)
    dist = np.empty(len(X), dtype=np.float64)
    for start in range(0, len(X), BLOCK_ROWS):
        xb = X[start : start + BLOCK_ROWS]
        d = _block_distances(xb, centers, centers_sq)
        lab = d.argmin(axis=1)
        labels[start : start + len(xb)] = lab
        dmin = d[np.arange(len(xb)), lab].astype(np.float64) + squared_norms(xb)
        dist[start : start + len(xb)] = np.maximum(dmin, 0.0)
    return labels, dist


def labels_of(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return assign(X, centers)[0]


@numba.njit(nogil=True, fastmath=True, cache=True)
def _accumulate(xb, d, sums, counts):  # pragma: no cover - compiled
    """For each row: argmin of its distances, then add the row to that cluster's sum (float64).

    Returns the block's inertia: sum of min(d) + ||x||^2, each clipped at 0.
    """
    b, p = xb.shape
    k = d.shape[1]
    inertia = 0.0
    for i in range(b):
        best = 0
        best_d = d[i, 0]
        for j in range(1, k):
            if d[i, j] < best_d:
                best_d = d[i, j]
                best = j
        counts[best] += 1
        norm = 0.0
        for f in range(p):
            v = xb[i, f]
            sums[best, f] += v
            norm += v * v
        dist = best_d + norm
        if dist > 0.0:
            inertia += dist
    return inertia


def lloyd_partial(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One Lloyd step's contribution of a chunk, in a single pass over it.

    Returns (sums float64 [k, p], counts int64 [k], inertia float): the per-cluster sums and sizes of
    the rows nearest to each center, and the sum of their squared distances to `centers`.

    Per block of rows: distances by one BLAS product, then a compiled loop that picks the nearest center
    and adds the row to its sum while the block is still in cache. A one-hot matrix product for the sums
    took 27 ms per 35,000 MNIST rows on one core; this takes 16 ms (benchmarks/lloyd_kernel.py).
    """
    k, p = centers.shape
    centers = centers.astype(X.dtype, copy=False)
    centers_sq = squared_norms(centers)
    sums = np.zeros((k, p), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    inertia = 0.0
    for start in range(0, len(X), BLOCK_ROWS):
        xb = X[start : start + BLOCK_ROWS]
        d = _block_distances(xb, centers, centers_sq)
        inertia += _accumulate(xb, d, sums, counts)
    return sums, counts, inertia


def over_chunks(kernel, combine, args: tuple, *chunks: np.ndarray):
    """combine(kernel(chunk, *args) for each chunk): one task for all the chunks a worker thread holds."""
    return combine(*(kernel(chunk, *args) for chunk in chunks))


def add_partials(*partials):
    """Sum any number of lloyd_partial results (a node of the tree reduction)."""
    sums, counts, inertia = partials[0]
    sums, counts = sums.copy(), counts.copy()
    for s, c, i in partials[1:]:
        sums += s
        counts += c
        inertia += i
    return sums, counts, inertia


def farthest_rows(X: np.ndarray, centers: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The m rows farthest from their nearest center: (squared distances [m'], rows [m', p]), m' <= m."""
    _, dist = assign(X, centers)
    far = np.argsort(-dist, kind="stable")[:m]
    return dist[far], X[far].astype(np.float64)


def merge_farthest(*parts):
    dist = np.concatenate([p[0] for p in parts])
    rows = np.concatenate([p[1] for p in parts])
    m = max(len(p[0]) for p in parts)
    keep = np.argsort(-dist, kind="stable")[:m]
    return dist[keep], rows[keep]


def chunk_moments(X: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, bool]:
    """Row count, per-feature sum and sum of squares (float64), and whether every value is finite."""
    finite = bool(np.isfinite(X).all())
    X64 = X.astype(np.float64, copy=False)
    return len(X), X64.sum(axis=0), np.einsum("ij,ij->j", X64, X64), finite


def add_moments(*parts):
    n, s, ss, finite = parts[0]
    s, ss = s.copy(), ss.copy()
    for n2, s2, ss2, f2 in parts[1:]:
        n += n2
        s += s2
        ss += ss2
        finite = finite and f2
    return n, s, ss, finite
