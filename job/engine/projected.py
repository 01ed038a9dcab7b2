"""Exact nearest centers through a low-dimensional lower bound: most rows need one distance, not k.

The centers' q principal directions P [p, q] (about their mean m) split every row and center into a part
in that subspace and a residual. For any x and c,

    ||x - c||^2 = ||P'(x - c)||^2 + ||R(x - c)||^2 >= ||z_x - z_c||^2 + (r_x - r_c)^2

(z = P'(x - m), r = ||x - m - P z||, R the projection onto the residual: the triangle inequality), which
is the squared distance between the (q + 1)-vectors [z, r]: one small BLAS product gives a lower bound on
every row-center distance. The center with the lowest bound is measured exactly (a difference per
pixel, in float64), then every center whose bound is below that distance; no other can be nearer. The
centers' own principal directions hold the directions that tell them apart, so the bound is tight: on
MNIST's 60,000 training images at k=256 with q=32, 3.3 centers a row need an exact distance, 1.9 with
q=48 (docs/benchmarks.md, section 19). A row then costs 2pq + 2(q + 1)k multiply-adds instead of 2pk.

The bounds are computed in float32, and a center is passed over only when its bound exceeds the best
distance by more than BOUND_ROUNDING of the squared norms involved (float32 products of a few hundred
terms are within ~1e-6 of that scale), so the labels are the nearest centers by exact float64
distances: those of job.engine.kernels.assign up to its own float32 rounding on near-ties.
May use: numpy, numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from job.engine.kernels import BLOCK_ROWS, as_float, block_buffer

# Relative slack on the float32 bounds (see the module docstring): generous, and costs nothing measurable.
BOUND_ROUNDING = 1e-5
# From this many centers on, the search through the bound takes less time than one BLAS product against
# every center (one thread, MNIST's 60,000 training images, 32 directions: 1.22x the time at k=64, 0.79x
# at 128, 0.58x at 256, 0.36x at 512, 0.31x at 1024; docs/benchmarks.md section 19).
MIN_K = 128


def pays(k: int) -> bool:
    """Whether k centers are enough for the bound's search to beat a product against all of them."""
    return k >= MIN_K


@dataclass(frozen=True)
class Projection:
    """The centers as the bound sees them: `basis` float32 [p, q + 1] (q principal directions, then the
    mean m, so that one product gives P'x and x.m), `offset` P'm [q], `mean_sq` ||m||^2, `hat` [z_c, r_c]
    float32 [k, q + 1] and `hat_sq` their squared norms [k]. The centers themselves are not in it: the
    searches take them beside it (a Lloyd loop ships them to its tasks anyway)."""

    basis: np.ndarray
    offset: np.ndarray
    mean_sq: float
    hat: np.ndarray
    hat_sq: np.ndarray


def dims_for(k: int) -> int:
    """The subspace's dimension for k centers: 32 directions (at k=256 and 1024 on MNIST-style digits, 24
    to 48 measured within 10% of each other, docs/benchmarks.md section 19), fewer than k."""
    return max(1, min(k - 1, 32))


def project(centers: np.ndarray, dims: int | None = None) -> Projection:
    """The Projection of `centers` [k, p] onto their own `dims` (dims_for(k) when None) principal
    directions about their mean."""
    C = np.asarray(centers, dtype=np.float64)
    mean = C.mean(axis=0)
    _, _, vt = np.linalg.svd(C - mean, full_matrices=False)
    q = dims_for(len(C)) if dims is None else max(1, min(int(dims), len(vt)))
    basis = np.hstack([vt[:q].T, mean[:, None]]).astype(np.float32)
    # Everything below from the float32 basis the rows are multiplied with, so that rows and centers are
    # projected alike.
    P, mean = basis[:, :-1].astype(np.float64), basis[:, -1].astype(np.float64)
    centred = C - mean
    z = centred @ P
    r = np.sqrt(np.maximum(np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", z, z), 0.0))
    hat = np.hstack([z, r[:, None]])
    return Projection(
        basis=basis,
        offset=(mean @ P).astype(np.float32),
        mean_sq=float(mean @ mean),
        hat=np.ascontiguousarray(hat, dtype=np.float32),
        hat_sq=np.einsum("ij,ij->i", hat, hat).astype(np.float32),
    )


@numba.njit(nogil=True, fastmath=True, cache=True)
def exact_sq(X, i, C, j):  # pragma: no cover - compiled
    """||X[i] - C[j]||^2 by differences, summed in float64."""
    s = 0.0
    for f in range(X.shape[1]):
        d = np.float64(X[i, f]) - C[j, f]
        s += d * d
    return s


@numba.njit(nogil=True, cache=True)
def _row_hats(X, zx, offset, mean_sq, out, out_sq):  # pragma: no cover - compiled
    """[z, r] of each row of X [b, p] into out [b, q + 1] and its squared norm ||x - m||^2 into out_sq,
    from the row's product with the basis, zx = [P'x, x.m] [b, q + 1]."""
    b, q1 = zx.shape
    q = q1 - 1
    for i in range(b):
        x_sq = 0.0
        for f in range(X.shape[1]):
            v = np.float64(X[i, f])
            x_sq += v * v
        to_mean = x_sq - 2.0 * np.float64(zx[i, q]) + mean_sq
        in_plane = 0.0
        for j in range(q):
            v = np.float64(zx[i, j]) - offset[j]
            out[i, j] = v
            in_plane += v * v
        residual = max(to_mean - in_plane, 0.0)
        out[i, q] = np.sqrt(residual)
        out_sq[i] = in_plane + residual


@numba.njit(nogil=True, cache=True)
def _filtered_nearest(X, bound, first, x_hat_sq, hat_sq_max, C, bounds, best, best_d, lower, seen, found):
    # pragma: no cover - compiled
    """Per row i of the block X [b, p]: the nearest center by exact distance, starting from the center of
    lowest bound (first[i]) and measuring only centers whose lower bound (bound[i] + x_hat_sq[i],
    squared) is below the best distance so far; that distance into best_d (not squared). With groups
    (`bounds` [G + 1] as job.engine.bounds.Groups', the centers in group order), per group the least
    distance (measured) or lower bound of its other centers into lower [b, G]. seen [k] (all -1) and
    found [k]: scratch. Returns the number of exact distances computed."""
    b, k = bound.shape
    G = len(bounds) - 1
    computed = 0
    for i in range(b):
        xs = x_hat_sq[i]
        slack = BOUND_ROUNDING * (xs + hat_sq_max)
        nearest = first[i]
        nearest_d = exact_sq(X, i, C, nearest)
        seen[nearest] = nearest_d
        found[0] = nearest
        n_found = 1
        limit = np.float32(nearest_d - xs + slack)
        for j in range(k):
            if bound[i, j] < limit and j != first[i]:
                d = exact_sq(X, i, C, j)
                seen[j] = d
                found[n_found] = j
                n_found += 1
                if d < nearest_d or (d == nearest_d and j < nearest):
                    nearest, nearest_d = j, d
                    limit = np.float32(nearest_d - xs + slack)
        computed += n_found
        best[i] = nearest
        best_d[i] = np.sqrt(nearest_d)
        for g in range(G):
            m = np.inf
            for j in range(bounds[g], bounds[g + 1]):
                if j != nearest:
                    v = seen[j] if seen[j] >= 0.0 else max(np.float64(bound[i, j]) + xs - slack, 0.0)
                    m = min(m, v)
            lower[i, g] = np.sqrt(m) if m < np.inf else np.inf
        for t in range(n_found):
            seen[found[t]] = -1.0
    return computed


def nearest_blocks(X: np.ndarray, centers: np.ndarray, projection: Projection, bounds=None):
    """(start, the block's rows of X, nearest [b] int64, distance [b] float64, lower [b, G] float32,
    exact distances computed) for each block of BLOCK_ROWS rows of X, against `centers`
    [k, p] (those `projection` was made from, in its order). `bounds` [G + 1]: where each group of centers
    begins, then k, when the centers are in group order (job.engine.bounds.Groups; lower bounds per group
    are then filled in), else no groups. The output arrays are fresh."""
    bounds = np.zeros(1, dtype=np.int64) if bounds is None else np.asarray(bounds, dtype=np.int64)
    P = projection
    C = np.ascontiguousarray(centers, dtype=np.float64)
    k = len(C)
    hat_sq_max = float(P.hat_sq.max())
    offset = P.offset.astype(np.float64)
    buffer = block_buffer(X)
    seen = np.full(k, -1.0)
    found = np.empty(k, dtype=np.int64)
    for start in range(0, len(X), BLOCK_ROWS):
        block = np.ascontiguousarray(X[start : start + BLOCK_ROWS])
        xb = as_float(block, buffer)
        zx = xb @ P.basis
        hats = np.empty_like(zx)
        hats_sq = np.empty(len(xb), dtype=np.float64)
        _row_hats(block, zx, offset, P.mean_sq, hats, hats_sq)
        bound = hats @ P.hat.T
        bound *= -2
        bound += P.hat_sq
        best = np.empty(len(xb), dtype=np.int64)
        best_d = np.empty(len(xb), dtype=np.float64)
        lower = np.empty((len(xb), len(bounds) - 1), dtype=np.float32)
        computed = _filtered_nearest(
            block,
            bound,
            bound.argmin(axis=1),
            hats_sq,
            hat_sq_max,
            C,
            bounds,
            best,
            best_d,
            lower,
            seen,
            found,
        )
        yield start, block, best, best_d, lower, computed


def assign(X: np.ndarray, centers: np.ndarray, projection: Projection | None = None):
    """Nearest center of each row and its squared distance: (labels int32 [m], float64 [m]), as
    job.engine.kernels.assign; through `projection` (of `centers`; made here when None)."""
    projection = project(centers) if projection is None else projection
    labels = np.empty(len(X), dtype=np.int32)
    dist = np.empty(len(X), dtype=np.float64)
    for start, _, best, best_d, _, _ in nearest_blocks(X, centers, projection):
        labels[start : start + len(best)] = best
        dist[start : start + len(best)] = np.square(best_d)
    return labels, dist
