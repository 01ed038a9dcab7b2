"""Per-chunk numerical kernels: numpy and numba-compiled functions that run inside one Dask task each.

All of them work on one chunk of samples X [m, p] against the centers C [k, p]. Squared distances use
||x||^2 - 2 x.c + ||c||^2 so that the heavy part is one BLAS matrix product; rows are processed in
blocks small enough to stay in cache, so each block is read from memory once for both the distances and
the per-cluster sums.

X may be compact integers (the job keeps MNIST's pixels as uint8: 1 byte a pixel in the workers' memory
and on the wire, 4x less than float32): each block is converted to float32 as it is used, so no chunk is
ever held as floats. K-Means is equivariant to scaling, so clustering raw 0-255 pixels and dividing the
centers by 255 gives the clustering of pixels scaled to [0, 1] (up to rounding; tested).
May use: numpy and numba only: it runs inside worker tasks.
"""

from __future__ import annotations

import numba
import numpy as np

# Rows per inner block: 1,024 rows of 784 float32 = 3.2 MB, which stays in cache between the distance
# product and the pass that sums the rows (measured in benchmarks/lloyd_kernel.py).
BLOCK_ROWS = 1024
SEEDING_BLOCK_ROWS = 2048  # min_sq_distances' float64 blocks


def squared_norms(X: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", X, X)


def compute_dtype(dtype) -> np.dtype:
    """The float type arithmetic on X runs in: X's own when it is float, float32 for compact integers
    (uint8 pixels are exact in float32)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float32)


def as_float(block: np.ndarray, buffer: np.ndarray | None = None) -> np.ndarray:
    """A block of rows as floats: a no-op for float input; for integers a copy into `buffer` (float32,
    at least as many rows) when given, else a new array.

    Reusing one buffer per call matters on a worker: distributed starts workers with
    MALLOC_TRIM_THRESHOLD_=65536, so every fresh 3 MB block is new pages from the kernel, page-faulted in
    and returned at once (measured: a Lloyd step over 70,000 uint8 rows took 120 ms on 2 workers with a
    new float32 block each time, 62 ms with one buffer per task).
    """
    if block.dtype.kind == "f":
        return block
    if buffer is None:
        return block.astype(np.float32)
    out = buffer[: len(block)]
    np.copyto(out, block, casting="unsafe")
    return out


def block_buffer(X: np.ndarray, rows: int | None = None) -> np.ndarray | None:
    """The float32 block buffer as_float fills for integer X (None for float X), for blocks of X's rows
    or of `rows` rows gathered from it."""
    if X.dtype.kind == "f":
        return None
    return np.empty((min(BLOCK_ROWS, len(X) if rows is None else rows), X.shape[1]), dtype=np.float32)


def _block_distances(
    xb: np.ndarray, centers: np.ndarray, centers_sq: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Squared distances up to the per-row constant ||x||^2 (enough for the argmin), into `out` [>= b, k]
    when given (a reused buffer: see as_float on fresh pages)."""
    d = np.matmul(xb, centers.T, out=None if out is None else out[: len(xb)])
    d *= -2
    d += centers_sq
    return d


def distance_blocks(X: np.ndarray, centers: np.ndarray):
    """(start, block of rows as floats, its distances up to ||x||^2 [b, k]) for each block of
    BLOCK_ROWS rows of X, against `centers` in X's compute type. The float block and the distance
    block are reused buffers (see as_float): use them before asking for the next."""
    centers = centers.astype(compute_dtype(X.dtype), copy=False)
    centers_sq = squared_norms(centers)
    buffer = block_buffer(X)
    dbuf = np.empty((min(BLOCK_ROWS, len(X)), len(centers)), dtype=centers.dtype)
    for start in range(0, len(X), BLOCK_ROWS):
        xb = as_float(X[start : start + BLOCK_ROWS], buffer)
        yield start, xb, _block_distances(xb, centers, centers_sq, dbuf)


def assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of each row and its squared distance (float64, clipped at 0).

    Returns labels int32 [m] and min_sq_dist float64 [m].
    """
    labels = np.empty(len(X), dtype=np.int32)
    dist = np.empty(len(X), dtype=np.float64)
    for start, xb, d in distance_blocks(X, centers):
        lab = d.argmin(axis=1)
        labels[start : start + len(xb)] = lab
        dmin = d[np.arange(len(xb)), lab].astype(np.float64) + squared_norms(xb)
        dist[start : start + len(xb)] = np.maximum(dmin, 0.0)
    return labels, dist


def center_distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distances [m, k] of the rows to every center, block by block."""
    out = np.empty((len(X), len(centers)), dtype=compute_dtype(X.dtype))
    for start, xb, d in distance_blocks(X, centers):
        out[start : start + len(xb)] = np.sqrt(np.maximum(d + squared_norms(xb)[:, None], 0))
    return out


def labels_of(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return assign(X, centers)[0]


@numba.njit(nogil=True, cache=True, inline="always")
def _nearest(d, i):  # pragma: no cover - compiled
    """(index, value) of the smallest of d[i] (the first on ties, as np.argmin)."""
    best = 0
    best_d = d[i, 0]
    for j in range(1, d.shape[1]):
        if d[i, j] < best_d:
            best_d = d[i, j]
            best = j
    return best, best_d


@numba.njit(nogil=True, cache=True, inline="always")
def nearest_two(d, i):  # pragma: no cover - compiled
    """(index of the smallest of d[i] (the first on ties), the smallest, the second smallest: inf when d
    has one column): a row's nearest center, and the bound on its others that Hamerly keeps."""
    first, second, arg = np.inf, np.inf, 0
    for j in range(d.shape[1]):
        v = d[i, j]
        if v < first:
            second, first, arg = first, v, j
        elif v < second:
            second = v
    return arg, first, second


@numba.njit(nogil=True, fastmath=True, cache=True)
def _accumulate(xb, wb, d, sums, counts, labels):  # pragma: no cover - compiled
    """For each row: argmin of its distances (into labels [b]), then add the row times its weight (wb [b],
    or None for a weight of 1) to that cluster's sum (float64) and its weight to counts. Returns the
    block's weighted inertia: sum of w * (min(d) + ||x||^2), each distance clipped at 0.

    Without weights numba compiles the None branch away (w is the integer 1, counts stay integers), so
    the unweighted case pays nothing for the weighted one.
    """
    b, p = xb.shape
    inertia = 0.0
    for i in range(b):
        best, best_d = _nearest(d, i)
        w = 1 if wb is None else wb[i]
        labels[i] = best
        counts[best] += w
        norm = 0.0
        for f in range(p):
            v = xb[i, f]
            sums[best, f] += w * v
            norm += v * v
        dist = best_d + norm
        if dist > 0.0:
            inertia += w * dist
    return inertia


def lloyd_partial(
    X: np.ndarray, centers: np.ndarray, labels: np.ndarray | None = None, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """One Lloyd step's contribution of a chunk, in a single pass over it.

    Returns (sums float64 [k, p], counts [k], inertia float): the per-cluster sums and sizes of the rows
    nearest to each center, and the sum of their squared distances to `centers`; each row's nearest center
    goes into `labels` (int32 [m]) when given. With sample weights w [m]: weighted sums, the total weight
    per cluster (float64) and the weighted inertia, as scikit-learn's Lloyd step with sample_weight;
    without, counts are int64.

    Per block of rows: distances by one BLAS product, then a compiled loop that picks the nearest center
    and adds the row to its sum while the block is still in cache. A one-hot matrix product for the sums
    took 27 ms per 35,000 MNIST rows on one core; this takes 16 ms (benchmarks/lloyd_kernel.py).
    """
    k, p = centers.shape
    sums = np.zeros((k, p), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64 if w is None else np.float64)
    w = None if w is None else np.ascontiguousarray(w, dtype=np.float64)
    inertia = 0.0
    labels = np.empty(min(BLOCK_ROWS, len(X)), dtype=np.int32) if labels is None else labels
    scratch = len(labels) < len(X)  # no labels asked for: one block's worth, overwritten
    for start, xb, d in distance_blocks(X, centers):
        stop = start + len(xb)
        inertia += _accumulate(
            xb,
            None if w is None else w[start:stop],
            d,
            sums,
            counts,
            labels[: len(xb)] if scratch else labels[start:stop],
        )
    return sums, counts, inertia


@numba.njit(nogil=True, fastmath=True, cache=True, inline="always")
def _norm_and_distance(x, mean):  # pragma: no cover - compiled
    """(squared norm of the row x, its squared distance to mean), in one pass over x."""
    norm = 0.0
    to_mean = 0.0
    for f in range(len(x)):
        v = x[f]
        norm += v * v
        diff = v - mean[f]
        to_mean += diff * diff
    return norm, to_mean


@numba.njit(nogil=True, fastmath=True, cache=True)
def _label_block(xb, d, means, labels, dist, spread):  # pragma: no cover - compiled
    """For each row: the nearest center (argmin of d) and its squared distance (clipped at 0) into labels
    [b] and dist [b], and the row's (unsquared) distance to the mean of that cluster added to spread [k].
    Returns the block's total of squared norms (exact for integer pixels)."""
    sq_total = 0.0
    for i in range(len(xb)):
        best, best_d = _nearest(d, i)
        norm, to_mean = _norm_and_distance(xb[i], means[best])
        labels[i] = best
        dist[i] = max(best_d + norm, 0.0)
        spread[best] += np.sqrt(to_mean)
        sq_total += norm
    return sq_total


def assign_with_means(X: np.ndarray, centers: np.ndarray, means: np.ndarray):
    """assign() plus, for the same labelling, each cluster's sum of the distances of its rows to its
    mean `means` [k, p] (float64; the Davies-Bouldin spread) and the total of the rows' squared norms.

    Returns labels int32 [m], squared distances float64 [m], spread float64 [k], squared-norm total.
    """
    means = np.ascontiguousarray(means, dtype=np.float64)
    labels = np.empty(len(X), dtype=np.int32)
    dist = np.empty(len(X), dtype=np.float64)
    spread = np.zeros(len(centers), dtype=np.float64)
    sq_total = 0.0
    for start, xb, d in distance_blocks(X, centers):
        stop = start + len(xb)
        sq_total += _label_block(xb, d, means, labels[start:stop], dist[start:stop], spread)
    return labels, dist, spread, sq_total


@numba.njit(nogil=True, fastmath=True, cache=True)
def _known_label_pass(X, labels, centers, means, dist, spread):  # pragma: no cover - compiled
    """assign_with_means' per-row work for rows whose labels are known: each row's squared distance to
    its center into dist, its distance to its cluster's mean added to spread; returns the total of
    squared norms."""
    m, p = X.shape
    sq_total = 0.0
    for i in range(m):
        c = labels[i]
        norm = 0.0
        to_center = 0.0
        to_mean = 0.0
        for f in range(p):
            v = np.float64(X[i, f])
            norm += v * v
            a = v - centers[c, f]
            to_center += a * a
            b = v - means[c, f]
            to_mean += b * b
        dist[i] = to_center
        spread[c] += np.sqrt(to_mean)
        sq_total += norm
    return sq_total


def with_known_labels(X: np.ndarray, labels: np.ndarray, centers: np.ndarray, means: np.ndarray):
    """What assign_with_means returns, for rows whose nearest centers `labels` are already known (the
    bounded Lloyd loop's last pass): no distance product, two differences per pixel."""
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    dist = np.empty(len(X), dtype=np.float64)
    spread = np.zeros(len(centers), dtype=np.float64)
    sq_total = _known_label_pass(
        np.ascontiguousarray(X),
        labels,
        np.ascontiguousarray(centers, dtype=np.float64),
        np.ascontiguousarray(means, dtype=np.float64),
        dist,
        spread,
    )
    return labels, dist, spread, sq_total


def min_sq_distances(X: np.ndarray, C: np.ndarray, with_argmin: bool = False):
    """Squared distance (float64) of each row to its nearest row of C, optionally with the argmin: the
    seeding's distances (job.kmeans.kmeans_parallel).

    Float64 throughout, so that a point's cost does not depend on which other rows share its chunk
    (float32 BLAS may round a row differently in different blocks).
    """
    C = np.asarray(C, dtype=np.float64)
    c_sq = np.einsum("ij,ij->i", C, C)
    dist = np.empty(len(X))
    arg = np.empty(len(X), dtype=np.int64) if with_argmin else None
    for start in range(0, len(X), SEEDING_BLOCK_ROWS):
        xb = X[start : start + SEEDING_BLOCK_ROWS].astype(np.float64)
        d = np.einsum("ij,ij->i", xb, xb)[:, None] - 2 * xb @ C.T + c_sq[None, :]
        j = d.argmin(axis=1)
        dist[start : start + len(xb)] = np.maximum(d[np.arange(len(xb)), j], 0.0)
        if arg is not None:
            arg[start : start + len(xb)] = j
    return (dist, arg) if with_argmin else dist


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


def farthest_rows(X: np.ndarray, centers: np.ndarray, m: int, w: np.ndarray | None = None):
    """The m rows farthest from their nearest center (rows of weight 0 excluded): (squared distances
    [m'], rows float64 [m', p], their nearest centers int64 [m'], their weights float64 [m']), m' <= m,
    farthest first."""
    labels, dist = assign(X, centers)
    w = np.ones(len(X)) if w is None else np.asarray(w, dtype=np.float64)
    eligible = np.flatnonzero(w > 0)
    far = eligible[np.argsort(-dist[eligible], kind="stable")[:m]]
    return dist[far], X[far].astype(np.float64), labels[far].astype(np.int64), w[far]


def merge_farthest(*parts):
    dist, rows, owners, weights = (np.concatenate([p[i] for p in parts]) for i in range(4))
    m = max(len(p[0]) for p in parts)
    keep = np.argsort(-dist, kind="stable")[:m]
    return dist[keep], rows[keep], owners[keep], weights[keep]


def chunk_moments(X: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, bool]:
    """Row count, per-feature sum and sum of squares (float64), and whether every value is finite;
    block by block, so that no float64 copy of the whole chunk is made."""
    finite = X.dtype.kind != "f" or bool(np.isfinite(X).all())
    s = np.zeros(X.shape[1])
    ss = np.zeros(X.shape[1])
    for start in range(0, len(X), BLOCK_ROWS):
        xb = X[start : start + BLOCK_ROWS].astype(np.float64)
        s += xb.sum(axis=0)
        ss += np.einsum("ij,ij->j", xb, xb)
    return len(X), s, ss, finite


def add_moments(*parts):
    n, s, ss, finite = parts[0]
    s, ss = s.copy(), ss.copy()
    for n2, s2, ss2, f2 in parts[1:]:
        n += n2
        s += s2
        ss += ss2
        finite = finite and f2
    return n, s, ss, finite
