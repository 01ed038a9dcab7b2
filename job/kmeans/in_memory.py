"""K-Means on one in-memory array inside a single task: greedy k-means++ then Hamerly's Lloyd.

The sampled fit's starts (job.kmeans.sampling) each fit a subsample that fits one task. There, Lloyd's
iterations need no round trip, and Hamerly's bounds (G. Hamerly, "Making k-means even faster", SDM 2010)
skip the distance computations of every row whose nearest center cannot have changed: per row an upper
bound on the distance to its center and a lower bound on the distance to any other, moved by how far the
centers moved. The assignments are those of plain Lloyd (exact float64 distances); only the work differs.
Measured on 50,000 MNIST images, k=10, one thread, to convergence (65 iterations, the same centers to
the last bit): Lloyd with our BLAS kernel 1.8 s, with Hamerly's bounds 0.9 s (docs/benchmarks.md,
section 9). MNIST's clusters overlap, so many rows fail the bounds' test in every iteration.

Single-threaded and seeded: a start's result depends on its seed and rows alone, never on the worker.
May use: job.engine.kernels, numba, numpy.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from job.engine.kernels import nearest_two

# Rows per center that greedy k-means++ seeds from: scikit-learn's kmeans_plusplus on all 50,000 rows of a
# subsample took 1.2-1.5 s in a worker, more than the Lloyd iterations after it; on 1,000 rows per center
# it costs a fifth of that, and its centers are only a start for Lloyd on all the rows.
SEEDING_ROWS_PER_CENTER = 1_000
# ... and at most this many rows: greedy k-means++ costs rows x k x (2 + ln k) distance evaluations, 21 s
# on 60,000 MNIST rows at k=256 (one thread, another job running), 9.6 s on 25,600 (benchmarks/classifier.py
# measures the accuracy this keeps). Below 25 centers the per-center rule is the smaller one.
SEEDING_MAX_ROWS = 25_000
# ... and with many clusters at most SEEDING_MAX_WORK / k rows (rows x k: k <= 32 keep the rules above), but
# never fewer than 4 per center: at k=256 greedy k-means++ on 25,000 rows took 8.2 s of a 50 s budget, while
# Lloyd on the 256,000-row sample (bounded, all workers) then moves the centers far from where they started.
# (These times are of the float64 product the seeding used until 2026-12-06; on uint8 pixels its integer
# distances now take about a third of them, with the same centers: the rules, and so every result, stay.)
SEEDING_MAX_WORK = 800_000
SEEDING_MIN_ROWS_PER_CENTER = 4


@numba.njit(nogil=True, fastmath=True, cache=True)
def _distance(x, c):  # pragma: no cover - compiled
    s = 0.0
    for f in range(x.shape[0]):
        d = np.float64(x[f]) - c[f]
        s += d * d
    return np.sqrt(s)


@numba.njit(nogil=True, cache=True)
def _nearest_two(x, centers, dist):  # pragma: no cover - compiled
    """(nearest center, its distance, the second nearest's distance) of row x; dist [1, k]: scratch."""
    for j in range(centers.shape[0]):
        dist[0, j] = _distance(x, centers[j])
    return nearest_two(dist, 0)


@numba.njit(nogil=True, cache=True)
def hamerly(X, centers, tol, max_iter):  # pragma: no cover - compiled
    """Lloyd from `centers` (float64 [k, p]) until the summed squared center shift is <= tol (absolute,
    scikit-learn's rule) or max_iter center updates. Returns (centers float64 [k, p], iterations)."""
    n, p = X.shape
    k = centers.shape[0]
    C = centers.copy()
    labels = np.empty(n, dtype=np.int64)
    upper = np.empty(n)
    lower = np.empty(n)
    sums = np.zeros((k, p))
    counts = np.zeros(k, dtype=np.int64)
    dist = np.empty((1, k))
    for i in range(n):
        a, b, b2 = _nearest_two(X[i], C, dist)
        labels[i], upper[i], lower[i] = a, b, b2
        counts[a] += 1
        for f in range(p):
            sums[a, f] += X[i, f]
    shift = np.zeros(k)
    half_gap = np.empty(k)
    n_iter = 0
    for it in range(max_iter):
        n_iter = it + 1
        for j in range(k):
            if counts[j] == 0:  # empty: take the row that may be farthest from its center
                far = int(np.argmax(upper))
                old = labels[far]
                if counts[old] > 1:
                    counts[old] -= 1
                    for f in range(p):
                        sums[old, f] -= X[far, f]
                        sums[j, f] = X[far, f]
                    counts[j] = 1
                    labels[far] = j
                    upper[far] = 0.0
                    lower[far] = 0.0
        total = 0.0
        for j in range(k):
            moved = 0.0
            if counts[j] > 0:
                for f in range(p):
                    value = sums[j, f] / counts[j]
                    d = value - C[j, f]
                    moved += d * d
                    C[j, f] = value
            shift[j] = np.sqrt(moved)
            total += moved
        if total <= tol:
            break
        first, second, arg = 0.0, 0.0, 0
        for j in range(k):
            if shift[j] > first:
                second, first, arg = first, shift[j], j
            elif shift[j] > second:
                second = shift[j]
        for j in range(k):
            gap = np.inf
            for j2 in range(k):
                if j2 != j:
                    gap = min(gap, _distance(C[j], C[j2]))
            half_gap[j] = 0.5 * gap
        for i in range(n):
            a = labels[i]
            upper[i] += shift[a]
            lower[i] -= second if a == arg else first
            bound = max(half_gap[a], lower[i])
            if upper[i] <= bound:
                continue
            upper[i] = _distance(X[i], C[a])
            if upper[i] <= bound:
                continue
            new, b, b2 = _nearest_two(X[i], C, dist)
            if new != a:
                counts[a] -= 1
                counts[new] += 1
                for f in range(p):
                    sums[a, f] -= X[i, f]
                    sums[new, f] += X[i, f]
                labels[i] = new
            upper[i], lower[i] = b, b2
    return C, n_iter


# Greedy k-means++ on uint8 pixels computes its distances in integers while every squared distance fits
# an int32 (255^2 per feature: up to 33,025 features).
EXACT_MAX_FEATURES = (2**31 - 1) // 255**2


@numba.njit(nogil=True, fastmath=True, cache=True)
def _squared_distances_uint8(X, rows, out):  # pragma: no cover - compiled
    """out[j, i] = ||X[rows[j]] - X[i]||^2, exact in int32 (uint8 X, at most EXACT_MAX_FEATURES columns)."""
    for i in range(X.shape[0]):
        x = X[i]
        for j in range(rows.shape[0]):
            c = X[rows[j]]
            s = np.int32(0)
            for f in range(X.shape[1]):
                d = np.int32(x[f]) - np.int32(c[f])
                s += d * d
            out[j, i] = s
    return out


def _squared_distances(X: np.ndarray):
    """A function of candidate row indices giving their squared distances to every row of X (float64
    [len(rows), n]). On uint8 pixels the distances are integers, and the integer kernel gives the very
    values of the float64 product below (every term of it is an integer under 2^53, so exact) in a
    quarter of the time: it reads X as bytes, where the product reads an 8-byte copy of X once per
    center (12,500 rows, k=64: 0.15 s against 0.60 s for the 63 steps, one thread)."""
    if X.dtype == np.uint8 and X.shape[1] <= EXACT_MAX_FEATURES:
        return lambda rows: _squared_distances_uint8(X, rows, np.empty((len(rows), len(X)), np.int32)).astype(
            np.float64
        )
    Xf = X.astype(np.float64)
    norms = np.einsum("ij,ij->i", Xf, Xf)
    return lambda rows: np.maximum(norms[rows][:, None] - 2 * Xf[rows] @ Xf.T + norms[None, :], 0.0)


def greedy_kmeans_plusplus(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k centers (float64 [k, p]) chosen among X's rows by greedy k-means++ (Arthur & Vassilvitskii 2007,
    with scikit-learn's 2 + ln k candidates per step, keeping the one that lowers the potential most).

    Ours rather than scikit-learn's kmeans_plusplus: importing scikit-learn costs a fresh worker ~0.8 s
    (its import time here) before its first start, and these are a few passes over at most 1,000 rows
    per center.
    """
    sq_dist = _squared_distances(X)
    trials = 2 + int(np.log(k))
    chosen = [int(rng.integers(len(X)))]
    closest = sq_dist(np.array(chosen))[0]
    for _ in range(1, k):
        potential = closest.sum()
        if potential <= 0:  # every row is a chosen center already: take any row not chosen
            chosen.append(next(i for i in range(len(X)) if i not in chosen))
            continue
        candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * potential)
        candidates = np.minimum(candidates, len(X) - 1)
        options = np.minimum(closest[None, :], sq_dist(candidates))
        best = int(np.argmin(options.sum(axis=1)))
        chosen.append(int(candidates[best]))
        closest = options[best]
    return X[chosen].astype(np.float64)


def seeding_rows(n: int, k: int) -> int:
    """How many of n rows greedy k-means++ seeds k centers from (the rules above)."""
    return min(
        n,
        SEEDING_ROWS_PER_CENTER * k,
        SEEDING_MAX_ROWS,
        max(SEEDING_MIN_ROWS_PER_CENTER * k, SEEDING_MAX_WORK // k),
    )


def local_fit(X: np.ndarray, k: int, seed: int, tol: float, max_iter: int) -> dict:
    """One start on X (an in-memory array, uint8 pixels or floats) in a single task: greedy k-means++
    (as scikit-learn's KMeans seeds itself) on a seeded SEEDING_ROWS_PER_CENTER * k of its rows (at most
    SEEDING_MAX_ROWS), then
    Lloyd on all of them by Hamerly's bounds until the
    squared center shift is <= tol (absolute) or max_iter. Returns centers float64 [k, p], inertia (by
    job.engine.kernels.lloyd_partial, the distributed loop's kernel), n_iter and seconds."""
    from threadpoolctl import threadpool_limits

    from job.engine import kernels

    started = time.perf_counter()
    X = np.ascontiguousarray(X)
    rng = np.random.default_rng(seed % 2**32)
    rows = seeding_rows(len(X), k)
    seeding = X[np.sort(rng.choice(len(X), size=rows, replace=False))] if rows < len(X) else X
    with threadpool_limits(1):
        init = greedy_kmeans_plusplus(seeding, k, rng)
        centers, n_iter = hamerly(X, init, float(tol), int(max_iter)) if max_iter > 0 else (init, 0)
        _, _, inertia = kernels.lloyd_partial(X, centers)
    return {
        "seed": int(seed),
        "centers": centers,
        "inertia": float(inertia),
        "n_iter": int(n_iter),
        "seconds": time.perf_counter() - started,
    }
