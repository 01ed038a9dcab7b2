"""k-means|| (scalable k-means++; Bahmani et al., VLDB 2012, Algorithm 2) over dask arrays.

What it fixes against dask-ml's `init_scalable` (measured, see docs/benchmarks.md):
- the first center is drawn with the seed (dask-ml always takes row 0);
- each of `rounds` rounds (default 5) samples about l = oversampling * k points, each point x with
  probability min(1, l * d^2(x) / phi), phi the current cost (dask-ml draws ~2 points per round for
  round(ln(phi)) rounds, a number that depends on the data's scale);
- the candidates are weighted by the number of points nearest to each, counted in the last pass, and
  reduced to k centers by weighted k-means++ and weighted Lloyd steps (scikit-learn's KMeans with
  sample_weight, in the client: there are only ~l * rounds candidates);
- every random draw is a function of (seed, round, global row index) (job.engine.rng), so the centers do not
  depend on the chunking or the number of workers.

Reads of X: one pass for the first cost, one per later round to update the costs, one for the weights
(rounds + 1 full passes), plus, each round, the chunks that hold the rows it drew (spread over the data,
that is most chunks: about 2 x rounds + 1 passes in all). info["chunk_reads"] counts them exactly. The
per-point costs live on the cluster (8 bytes a row); only the sampled rows, the candidate weights and a
few farthest points reach the client.
May use: job.engine (kernels, blockwise, rng), scikit-learn (the weighted reduction of the candidates).
"""

from __future__ import annotations

import logging
import time
import warnings

import dask
import dask.array as da
import numpy as np
from dask import delayed
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from job.engine import kernels
from job.engine.blockwise import boxed_pairs, per_chunk, unbox
from job.engine.rng import uniforms

log = logging.getLogger(__name__)

# Weighted k-means++ restarts on the candidates (a few hundred points at most, so restarts cost
# milliseconds); the best of 10 lowers the median final inertia over seeds (docs/benchmarks.md).
CANDIDATE_RESTARTS = 10
# ... as long as they are cheap: each restart costs about candidates x k distance products per Lloyd step.
# At k=256 (~2,560 candidates) 10 restarts took 17.9 s of a 33.8 s k-means|| on MNIST's 60,000 training
# images (2 cores, another job running); the restarts are cut so that restarts x candidates x k stays
# within this budget, at least 1 (k <= 64 keeps all 10).
CANDIDATE_RESTART_WORK = 500_000


def _chunk_costs(X, w, C):
    """Each row's cost: its squared distance to the nearest of C, times its weight (w [m] or None)."""
    dist = kernels.min_sq_distances(X, C)
    return dist if w is None else w * dist


def _chunk_update(X, w, costs, new_points):
    return np.minimum(costs, _chunk_costs(X, w, new_points))


def _chunk_sample(costs, phi, ell, seed, round_, offset):
    """Global indices of the rows drawn in this round: u(seed, round, index) < l * cost / phi."""
    index = offset + np.arange(len(costs))
    return index[uniforms(index, seed, round_) < ell * costs / phi]


def _chunk_weights(X, w, candidates, n_far, offset):
    """Each candidate's weight (the rows nearest to it: their count, or with sample weights w their total
    weight), and the n_far rows farthest from every candidate (distance, index); rows of weight 0 are
    never among the farthest."""
    dist, nearest = kernels.min_sq_distances(X, candidates, with_argmin=True)
    counts = np.bincount(nearest, weights=w, minlength=len(candidates))
    if w is not None:
        dist = np.where(w > 0, dist, 0.0)
    far = np.argsort(-dist, kind="stable")[:n_far]
    return counts, dist[far], offset + far


def _per_row(func, X: da.Array, weights, *args) -> da.Array:
    """func(X chunk, weights chunk or None, *args) for each chunk of X: a float64 array [n], each task
    fused with X's own chain (args: dask arrays [n] chunked like X, or values sent once)."""
    pairs = [a for arg in args for a in ((arg, "i") if isinstance(arg, da.Array) else (delayed(arg), None))]
    w = (weights, "i") if weights is not None else (None, None)
    return da.blockwise(func, "i", X, "ij", *w, *pairs, concatenate=True, dtype=np.float64)


def _first_index(n: int, seed: int, weights) -> int:
    """The first center's row: uniform over the rows, or drawn with probability proportional to its
    weight (weighted k-means++'s first draw), from the same seeded uniform."""
    u = float(uniforms([0], seed, 0)[0])
    if weights is None:
        return int(u * n)
    cumulative = np.cumsum(np.asarray(weights.compute(), dtype=np.float64))
    if not cumulative[-1] > 0:
        raise ValueError("sample_weight sums to zero: there is nothing to cluster")
    return int(min(np.searchsorted(cumulative, u * cumulative[-1], side="right"), n - 1))


def _rows(X: da.Array, index, reads: list) -> np.ndarray:
    """The rows `index` of X (float64), gathered on the cluster; appends how many chunks that read."""
    index = np.asarray(sorted(index), dtype=np.int64)
    if len(index) == 0:
        return np.empty((0, X.shape[1]))
    reads.append(len(np.unique(np.searchsorted(np.cumsum(X.chunks[0]), index, side="right"))))
    return X[index].compute().astype(np.float64)


def kmeans_parallel(X: da.Array, k: int, seed: int, rounds: int = 5, oversampling: float = 2.0, weights=None):
    """k initial centers for X [n, p] by k-means||; returns (centers float64 [k, p], info dict).

    weights: sample weights, a float64 dask array [n] chunked like X, or None. With weights, a row's cost
    is its weight times its squared distance (the objective scikit-learn's weighted k-means++ samples
    by), the first center is drawn in proportion to the weights, and each candidate weighs the total
    weight of the rows nearest to it.

    info: first_index, rounds, candidates, passes (full passes over X), chunk_reads (every chunk read of
    X: the full passes and the row gathers), phi per round, seconds.
    """
    started = time.perf_counter()
    n = int(X.shape[0])
    if n < k:
        raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
    ell = oversampling * k

    first = _first_index(n, seed, weights)
    chosen = {first}
    gathers: list[int] = []
    candidates = [_rows(X, [first], gathers)]
    # Per-point costs stay on the cluster as a persisted dask array chunked like X; each pass over X runs
    # in the tasks that read X's chunks (job.engine.blockwise: fused, so streamed chunks never travel).
    costs = _per_row(_chunk_costs, X, weights, candidates[0]).persist()
    phi = float(costs.sum().compute())
    passes, phis = 1, [phi]
    log.info("k-means|| seed %d: first center row %d, cost %.6g", seed, first, phi)

    for round_ in range(1, rounds + 1):
        if phi <= 0:
            break  # every point coincides with a candidate
        drawn = dask.compute(*per_chunk(costs, _chunk_sample, phi, ell, seed, round_, with_offset=True))
        picked = sorted(set(np.concatenate([unbox(d) for d in drawn]).tolist()) - chosen)
        chosen.update(picked)
        new = _rows(X, picked, gathers)
        candidates.append(new)
        if round_ < rounds and len(new):
            costs = _per_row(_chunk_update, X, weights, costs, new).persist()
            phi = float(costs.sum().compute())
            passes += 1
            phis.append(phi)
        log.info(
            "k-means|| round %d/%d: %d new candidates, %d in all%s",
            round_,
            rounds,
            len(new),
            len(chosen),
            f", cost {phi:.6g}" if round_ < rounds else "",
        )
    del costs

    cand = np.vstack(candidates)
    if weights is None:
        tasks = per_chunk(X, _chunk_weights, None, cand, k, with_offset=True)
    else:
        tasks = list(boxed_pairs(X, weights, _chunk_weights, cand, k, with_offset=True).to_delayed().ravel())
    parts = [unbox(p) for p in dask.compute(*tasks)]
    passes += 1
    weights = np.sum([p[0] for p in parts], axis=0).astype(np.float64)
    cand, weights = _add_farthest(X, cand, weights, parts, k, gathers)
    centers = _reduce_candidates(cand, weights, k, seed)
    info = {
        "first_index": first,
        "rounds": rounds,
        "candidates": len(cand),
        "passes": passes,
        "chunk_reads": passes * X.numblocks[0] + sum(gathers),
        "phi": phis,
        "seconds": time.perf_counter() - started,
    }
    log.info(
        "k-means|| done: %d candidates -> %d centers, %d passes over X, %.2f s",
        len(cand),
        k,
        passes,
        info["seconds"],
    )
    return centers, info


def _add_farthest(X, cand, weights, parts, k, gathers):
    """Top up to k distinct candidates with the points farthest from all candidates (rare: tiny or
    highly duplicated data). Their weight is 1. With fewer than k distinct points in X, a
    ConvergenceWarning and repeated candidates."""
    distinct = len(np.unique(cand, axis=0))
    if distinct >= k:
        return cand, weights
    dist = np.concatenate([p[1] for p in parts])
    index = np.concatenate([p[2] for p in parts])
    order = np.lexsort((index, -dist))
    far = [int(index[i]) for i in order if dist[i] > 0][: k - distinct]
    if far:
        cand = np.vstack([cand, _rows(X, far, gathers)])
        weights = np.concatenate([weights, np.ones(len(far))])
    distinct = len(np.unique(cand, axis=0))
    if distinct < k:
        # As scikit-learn's KMeans: a warning, and some centers coincide (their clusters stay empty).
        warnings.warn(
            f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
            "Possibly due to duplicate points in X.",
            ConvergenceWarning,
            stacklevel=3,
        )
        if len(cand) < k:
            extra = np.resize(np.arange(len(cand)), k - len(cand))
            cand, weights = (
                np.vstack([cand, cand[extra]]),
                np.concatenate([weights, np.full(len(extra), 1e-12)]),
            )
    return cand, weights


def _reduce_candidates(cand: np.ndarray, weights: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Weighted k-means++ then weighted Lloyd on the candidates (step 8 of the paper), best of
    CANDIDATE_RESTARTS seeded starts (fewer for many candidates and clusters: CANDIDATE_RESTART_WORK)."""
    if len(cand) == k:
        return cand.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer distinct clusters than k" is handled above
        restarts = int(np.clip(CANDIDATE_RESTART_WORK // (len(cand) * k), 1, CANDIDATE_RESTARTS))
        model = KMeans(n_clusters=k, init="k-means++", n_init=restarts, random_state=seed % 2**32)
        model.fit(cand, sample_weight=np.maximum(weights, 1e-12))
    return model.cluster_centers_.astype(np.float64)
