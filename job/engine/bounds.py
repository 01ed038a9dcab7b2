"""Yinyang bounds for Lloyd's assignment step, per chunk: most rows skip most distance computations.

Y. Ding, Y. Zhao, X. Shen, M. Musuvathi, T. Mytkowicz, "Yinyang K-Means: a drop-in replacement of the
classic K-Means with consistent speedup", ICML 2015. The centers are split into groups once; each row
keeps an upper bound on the distance to its center and, per group, a lower bound on the distance to every
other center of that group. When the centers move, the upper bound grows by its center's move and each
group's bound shrinks by the largest move in that group; a row whose upper bound stays below every group
bound keeps its center without a single distance computed, and only the groups whose bound fails are
searched. Hamerly's single bound (job.kmeans.in_memory) shrinks by the largest move of all k centers,
which at k=256 fails for half the rows every iteration (docs/benchmarks.md, section 13).

The searches are blocked BLAS products, as job.engine.kernels' (gathered rows against one group's
centers, or against all of them when most groups are open), not scalar loops. A chunk's state is
(labels int32 [m], upper float32 [m], lower float32 [m, groups]); it lives on the worker that holds the
chunk (job.kmeans.bounded). The labels are those of plain Lloyd up to float32 ties.
May use: numpy, numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from job.engine import projected
from job.engine.kernels import BLOCK_ROWS, as_float, block_buffer, compute_dtype, nearest_two, squared_norms

# Bounds are stored in float32; each update is widened by this much of the largest center norm, so that
# rounding never lets a bound cross the true distance.
SLACK = 1e-6
# From GROUP_SEARCH_MIN_K centers on, a row in doubt is searched only in the groups whose bound it fails
# (Ding et al.'s group filter), the groups holding SEARCH_GROUP_CENTERS centers each: one gathered BLAS
# product per group needs ~32 columns to pay for gathering its rows (with ~10 it was slower than searching
# every center). Measured by benchmarks/group_search.py (docs/benchmarks.md, section 17): the steps took
# 0.64x the time of searching every center at k=1024, 0.77x at 512, 0.84-0.94x at 256, 1.05-1.19x at 128.
# A row whose failed groups hold more than GROUP_SEARCH_SHARE of the centers is searched against all.
GROUP_SEARCH_MIN_K = 256
SEARCH_GROUP_CENTERS = 32
GROUP_SEARCH_SHARE = 0.25


@dataclass(frozen=True)
class Groups:
    """The centers' groups: `of` [k] the group of each center, `order` [k] the centers by group,
    `bounds` [G + 1] where each group begins in `order` and, last, k (as scipy.sparse's indptr: group g
    is order[bounds[g] : bounds[g + 1]])."""

    of: np.ndarray
    order: np.ndarray
    bounds: np.ndarray

    @property
    def count(self) -> int:
        return len(self.bounds) - 1

    def members(self, g: int) -> np.ndarray:
        return self.order[self.bounds[g] : self.bounds[g + 1]]


def searches_groups(k: int) -> bool:
    """Whether rows in doubt are searched in their failed groups only (else against every center)."""
    return k >= GROUP_SEARCH_MIN_K


def group_count(k: int, rows: int | None = None, max_bytes: int = 0) -> int:
    """Ding et al.'s k/10 groups (k/32 when rows are searched by group), at least 1; with `rows` and
    `max_bytes`, no more than the float32 lower bounds of that many rows fit in."""
    groups = max(1, k // (SEARCH_GROUP_CENTERS if searches_groups(k) else 10))
    if rows and max_bytes:
        groups = min(groups, max(1, max_bytes // (4 * rows)))
    return groups


def make_groups(centers: np.ndarray, n_groups: int, seed: int = 0, iterations: int = 5) -> Groups:
    """Split the centers into n_groups by a few Lloyd iterations on the centers themselves (Ding et al.:
    close centers in one group keep its bound tight), seeded; no group left empty."""
    k = len(centers)
    n_groups = max(1, min(n_groups, k))
    C = np.asarray(centers, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = C[np.sort(rng.choice(k, n_groups, replace=False))]
    of = np.zeros(k, dtype=np.int64)
    for _ in range(iterations):
        d = squared_norms(C)[:, None] - 2 * C @ means.T + squared_norms(means)[None, :]
        of = d.argmin(axis=1)
        for g in range(n_groups):
            if (of == g).any():
                means[g] = C[of == g].mean(axis=0)
    used = np.unique(of)  # renumber so that every group has a center
    of = np.searchsorted(used, of)
    order = np.argsort(of, kind="stable")
    bounds = np.searchsorted(of[order], np.arange(len(used) + 1))
    return Groups(of=of, order=order, bounds=bounds)


@numba.njit(nogil=True, cache=True)
def _move_rows(X, rows, old, new, sums, counts):  # pragma: no cover - compiled
    """Take each row in `rows` out of its old cluster's sum and count and into its new one's."""
    for r in range(len(rows)):
        i = rows[r]
        a, b = old[r], new[r]
        counts[a] -= 1
        counts[b] += 1
        for f in range(X.shape[1]):
            v = np.float64(X[i, f])
            sums[a, f] -= v
            sums[b, f] += v


@numba.njit(nogil=True, cache=True)
def _add_rows(X, labels, sums, counts):  # pragma: no cover - compiled
    """Each row into its cluster's sum and count; returns the total of the rows' squared norms."""
    sq = 0.0
    for i in range(X.shape[0]):
        a = labels[i]
        counts[a] += 1
        for f in range(X.shape[1]):
            v = np.float64(X[i, f])
            sums[a, f] += v
            sq += v * v
    return sq


@numba.njit(nogil=True, fastmath=True, cache=True)
def _own_distances(X, rows, labels, C, out):  # pragma: no cover - compiled
    """The distance of each row in `rows` to its own center, by differences (no cancellation)."""
    for r in range(len(rows)):
        i = rows[r]
        out[r] = np.sqrt(projected.exact_sq(X, i, C, labels[i]))


@numba.njit(nogil=True, cache=True)
def _search(d, x_sq, bounds, best, best_d, lower):  # pragma: no cover - compiled
    """Per row of d [b, k] (squared distances up to ||x||^2, columns in group order): the nearest column,
    its distance, and per group the distance of the nearest column other than that one; square roots
    only for those G + 1 values."""
    b, k = d.shape
    G = len(bounds) - 1
    for i in range(b):
        arg, low = 0, d[i, 0]
        for j in range(1, k):
            if d[i, j] < low:
                low, arg = d[i, j], j
        best[i] = arg
        best_d[i] = np.sqrt(max(low + x_sq[i], 0.0))
        for g in range(G):
            m = np.inf
            for j in range(bounds[g], bounds[g + 1]):
                if j != arg and d[i, j] < m:
                    m = d[i, j]
            lower[i, g] = np.sqrt(max(m + x_sq[i], 0.0)) if m < np.inf else np.inf


@numba.njit(nogil=True, cache=True)
def _nearest_in_group(d, x_sq, members, at, g, first, second, nearest):  # pragma: no cover - compiled
    """Per row of d [b, m] (squared distances up to ||x||^2 to the centers `members` of group g): the
    nearest member, its distance and the next nearest's distance, into row at[i], column g of
    nearest / first / second [r, G]."""
    for i in range(d.shape[0]):
        a1, m1, m2 = nearest_two(d, i)
        first[at[i], g] = np.sqrt(max(m1 + x_sq[i], 0.0))
        second[at[i], g] = np.sqrt(max(m2 + x_sq[i], 0.0)) if m2 < np.inf else np.inf
        nearest[at[i], g] = members[a1]


@numba.njit(nogil=True, cache=True)
def _merge_groups(rows, opened, first, second, nearest, labels, upper, lower, group_of):  # pragma: no cover
    """Each row's best center over its searched groups (opened [r, G]) and the one it had (at its exact
    upper bound); the searched groups' lower bounds made exact, and the old center's group bounded by its
    distance when the row leaves it. Updates upper and lower in place; returns the new labels."""
    best_of = np.empty(len(rows), dtype=np.int32)
    for r in range(len(rows)):
        i = rows[r]
        old = labels[i]
        best, best_d = old, upper[i]
        for g in range(opened.shape[1]):
            if opened[r, g] and first[r, g] < best_d:
                best, best_d = nearest[r, g], first[r, g]
        for g in range(opened.shape[1]):
            if opened[r, g]:
                lower[i, g] = second[r, g] if nearest[r, g] == best else first[r, g]
        go = group_of[old]
        if best != old and not opened[r, go]:
            lower[i, go] = min(lower[i, go], upper[i])
        best_of[r] = best
        upper[i] = best_d
    return best_of


def _group_search(X, rows, labels, upper, lower, C_ordered, C_sq_ordered, groups: Groups):
    """Ding et al.'s group filter: each row in `rows` (its upper bound exact) searched only in the groups
    whose lower bound is below it, one BLAS product per group over the rows that opened it. Updates upper
    and lower in place; returns (the new labels of `rows`, distances computed).

    Each group's rows are gathered from X itself, BLOCK_ROWS at a time, into one reused float32 buffer:
    gathering every row in doubt as float32 first and then each group's rows from that (4 bytes a pixel,
    twice) spent more time moving memory than multiplying (at k=1024 on 131,072 rows, 80% of a step).
    """
    opened = lower[rows] < upper[rows, None]
    G = groups.count
    first = np.full((len(rows), G), np.inf, dtype=np.float32)
    second = np.full((len(rows), G), np.inf, dtype=np.float32)
    nearest = np.zeros((len(rows), G), dtype=np.int64)
    x_sq = _squared_norms_of(X, rows).astype(C_ordered.dtype, copy=False)
    buffer = block_buffer(X, len(rows))
    computed = 0
    for g in np.flatnonzero(opened.any(axis=0)):
        block = slice(groups.bounds[g], groups.bounds[g + 1])
        C_g, C_sq_g, members = C_ordered[block], C_sq_ordered[block], groups.order[block]
        at_all = np.flatnonzero(opened[:, g])
        for start in range(0, len(at_all), BLOCK_ROWS):
            at = at_all[start : start + BLOCK_ROWS]
            xb = as_float(X[rows[at]], buffer)
            d = xb @ C_g.T
            d *= -2
            d += C_sq_g
            _nearest_in_group(d, x_sq[at], members, at, g, first, second, nearest)
        computed += len(at_all) * (groups.bounds[g + 1] - groups.bounds[g])
    best = _merge_groups(rows, opened, first, second, nearest, labels, upper, lower, groups.of)
    return best, computed


@numba.njit(nogil=True, fastmath=True, cache=True)
def _squared_norms_of(X, rows):  # pragma: no cover - compiled
    """||x||^2 of X's rows `rows`, summed in float64 (exact for integer pixels). fastmath lets the sum be
    vectorized: without it this took 10 ms per step at k=256 on 32,064 rows, a sixth of the step."""
    out = np.empty(len(rows), dtype=np.float64)
    for r in range(len(rows)):
        s = 0.0
        for f in range(X.shape[1]):
            v = np.float64(X[rows[r], f])
            s += v * v
        out[r] = s
    return out


def _dense_search(xb, C_ordered, C_sq_ordered, groups: Groups):
    """All k distances of a block against the centers in group order (C[groups.order]): (nearest
    center, its distance, lower bound per group [b, G])."""
    d = xb @ C_ordered.T
    d *= -2
    d += C_sq_ordered
    best = np.empty(len(xb), dtype=np.int64)
    best_d = np.empty(len(xb), dtype=np.float32)
    lower = np.empty((len(xb), groups.count), dtype=np.float32)
    _search(d, squared_norms(xb), groups.bounds, best, best_d, lower)
    return groups.order[best], best_d, lower


def init_chunk(X: np.ndarray, centers: np.ndarray, groups: Groups, projection=None):
    """The bounds of a chunk against `centers`, from every distance, or through `projection` (of the
    centers in group order: job.engine.projected, every distance bounded, few measured): (state, (sums
    float64 [k, p], counts int64 [k], inertia, total of squared norms))."""
    C = np.asarray(centers).astype(compute_dtype(X.dtype), copy=False)
    m = len(X)
    labels = np.empty(m, dtype=np.int32)
    upper = np.empty(m, dtype=np.float32)
    lower = np.empty((m, groups.count), dtype=np.float32)
    if projection is not None:
        C_ordered = np.asarray(centers, dtype=np.float64)[groups.order]
        blocks = projected.nearest_blocks(X, C_ordered, projection, groups.bounds)
        for start, _, best, best_d, low, _ in blocks:
            stop = start + len(best)
            labels[start:stop], upper[start:stop], lower[start:stop] = groups.order[best], best_d, low
    else:
        C_ordered = np.ascontiguousarray(C[groups.order])
        C_sq_ordered = squared_norms(C_ordered)
        buffer = block_buffer(X)
        for start in range(0, m, BLOCK_ROWS):
            xb = as_float(X[start : start + BLOCK_ROWS], buffer)
            stop = start + len(xb)
            labels[start:stop], upper[start:stop], lower[start:stop] = _dense_search(
                xb, C_ordered, C_sq_ordered, groups
            )
    inertia = float(np.square(upper, dtype=np.float64).sum())
    sums = np.zeros(C.shape, dtype=np.float64)
    counts = np.zeros(len(C), dtype=np.int64)
    sq_total = _add_rows(X, labels, sums, counts)
    return (labels, upper, lower), (sums, counts, inertia, sq_total)


def _exact_upper(X, rows, labels, C) -> np.ndarray:
    """The distance of each row in `rows` to its own center, by differences (no cancellation)."""
    out = np.empty(len(rows), dtype=np.float32)
    _own_distances(np.ascontiguousarray(X), rows, labels, np.ascontiguousarray(C, dtype=np.float64), out)
    return out


def step_chunk(
    X: np.ndarray, state, centers: np.ndarray, moves: np.ndarray, groups: Groups, exact: bool = False
):
    """Reassign a chunk's rows to `centers` (which moved by `moves` [k] since the state's): the bounds
    loosened, rows whose bounds still hold skipped, each of the others' distance to its own center made
    exact, and the rows still in doubt searched: from GROUP_SEARCH_MIN_K centers on in the groups whose
    bound they fail (one gathered product per group), else against every center (one BLAS product per
    block: with Ding's groups of ~10 centers a gathered product per group was slower, measured).

    Returns (the new state, (sum changes float64 [k, p], count changes int64 [k], rows that changed
    center, distances computed, inertia)); the inertia (sum of squared distances to the new centers) is
    computed only with exact=True, which also makes every upper bound exact (one dot product per row),
    else it is nan.
    """
    # Updated in place: each state is stepped once (job.kmeans.bounded drops the previous one), and a copy
    # of the lower bounds would be as large as an eighth of the chunk each pass.
    labels, upper, lower = state
    C = np.asarray(centers).astype(compute_dtype(X.dtype), copy=False)
    C_ordered = np.ascontiguousarray(C[groups.order])
    C_sq_ordered = squared_norms(C_ordered)
    slack = SLACK * float(np.sqrt(C_sq_ordered.max()))
    group_moves = np.maximum.reduceat(moves[groups.order], groups.bounds[:-1]).astype(np.float32)
    upper += (moves[labels] + slack).astype(np.float32)
    lower -= group_moves + slack
    bound = lower.min(axis=1)
    rows = np.arange(len(X)) if exact else np.flatnonzero(upper > bound)
    computed = len(rows)
    if len(rows):
        upper[rows] = _exact_upper(X, rows, labels, C)
    open_rows = rows[upper[rows] > bound[rows]]
    k = len(C)
    sums = np.zeros(C.shape, dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    moved = 0
    if len(open_rows) and searches_groups(k):
        # Rows whose failed groups hold few centers are searched in those groups only, the others below
        # against every center.
        group_sizes = np.diff(groups.bounds)
        centers_in_doubt = (lower[open_rows] < upper[open_rows, None]) @ group_sizes
        few = centers_in_doubt <= GROUP_SEARCH_SHARE * k
        sparse_rows, open_rows = open_rows[few], open_rows[~few]
        if len(sparse_rows):
            old = labels[sparse_rows]
            best, searched = _group_search(
                X, sparse_rows, labels, upper, lower, C_ordered, C_sq_ordered, groups
            )
            computed += searched
            changed = best != old
            if changed.any():
                _move_rows(X, sparse_rows[changed], old[changed], best[changed], sums, counts)
                moved += int(changed.sum())
            labels[sparse_rows] = best
    buffer = block_buffer(X, len(open_rows))  # one for every block: see as_float on fresh pages
    for start in range(0, len(open_rows), BLOCK_ROWS):
        idx = open_rows[start : start + BLOCK_ROWS]
        old = labels[idx]
        best, best_d, lower[idx] = _dense_search(as_float(X[idx], buffer), C_ordered, C_sq_ordered, groups)
        computed += len(idx) * k
        changed = best != old
        if changed.any():
            _move_rows(X, idx[changed], old[changed], best[changed].astype(np.int32), sums, counts)
            moved += int(changed.sum())
        labels[idx] = best
        upper[idx] = best_d
    inertia = float(np.square(upper, dtype=np.float64).sum()) if exact else float("nan")
    return (labels, upper, lower), (sums, counts, moved, computed, inertia)


def warm() -> None:
    """Load the bounded loop's compiled kernels from numba's cache in this process, on a few rows. A
    fresh worker process pays ~0.3 s for its first call of any cached kernel (numba's start) and ~0.02 s
    for each next one (docs/benchmarks.md section 24); a fit calls this on the workers that would
    otherwise pay it on its critical path."""
    X = (np.arange(6 * 8) % 251).astype(np.uint8).reshape(6, 8)
    C = X[:2].astype(np.float64) + 0.5
    groups = make_groups(C, 1)
    state, _ = init_chunk(X, C, groups)
    swapped = C[::-1].copy()  # every row changes center: the step moves rows between sums
    step_chunk(X, state, swapped, np.sqrt(((swapped - C) ** 2).sum(axis=1)), groups)


def add_steps(*parts):
    """Sum step_chunk (or init_chunk) summaries."""
    first = parts[0]
    total = [x.copy() if isinstance(x, np.ndarray) else x for x in first]
    for part in parts[1:]:
        for i, x in enumerate(part):
            total[i] = total[i] + x
    return tuple(total)


def init_chunks(centers, groups: Groups, projection, *chunks):
    """init_chunk over the chunks one worker thread holds: (their states, their summed step sums)."""
    results = [init_chunk(chunk, centers, groups, projection) for chunk in chunks]
    return [r[0] for r in results], add_steps(*(r[1] for r in results))


def step_chunks(states, centers, moves, groups: Groups, exact: bool, *chunks):
    """step_chunk over the chunks one worker thread holds, with their states."""
    results = [
        step_chunk(chunk, state, centers, moves, groups, exact) for chunk, state in zip(chunks, states)
    ]
    return [r[0] for r in results], add_steps(*(r[1] for r in results))


def assign_chunk(X: np.ndarray, centers: np.ndarray, projection) -> tuple[np.ndarray, tuple]:
    """Every row of a chunk assigned to `centers` through their `projection` (job.engine.projected):
    (labels int32 [m], (sums float64 [k, p], counts int64 [k], inertia))."""
    labels = np.empty(len(X), dtype=np.int32)
    sums = np.zeros(np.shape(centers), dtype=np.float64)
    counts = np.zeros(len(centers), dtype=np.int64)
    inertia = 0.0
    for start, block, best, best_d, _, _ in projected.nearest_blocks(X, centers, projection):
        stop = start + len(best)
        labels[start:stop] = best
        inertia += float(np.square(best_d).sum())
        _add_rows(block, labels[start:stop], sums, counts)  # while the block is in cache: one read of X
    return labels, (sums, counts, inertia)


def assign_chunks(centers, projection, *chunks):
    """The plain pass (no bounds) over the chunks one worker thread holds, keeping each row's label: the
    fused kernel (job.engine.kernels.lloyd_partial), or through `projection` when given. Returns (their
    states (labels,), the summed (sums, counts, inertia))."""
    from job.engine.kernels import add_partials, lloyd_partial

    states, parts = [], []
    for chunk in chunks:
        if projection is None:
            labels = np.empty(len(chunk), dtype=np.int32)
            parts.append(lloyd_partial(chunk, centers, labels))
        else:
            labels, part = assign_chunk(chunk, centers, projection)
            parts.append(part)
        states.append((labels,))
    return states, add_partials(*parts)
