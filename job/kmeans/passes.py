"""K-Means passes over all rows of a dask array: a Lloyd step, the inertia, labels, empty-cluster re-seeding.

Each is one kernel of job.engine.kernels mapped over the chunks and reduced on the cluster
(job.engine.map_reduce); only [k, p]-sized results reach the client. The estimator (job.kmeans.estimator)
and the pipeline's evaluation use them. May use: job.engine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import dask.array as da
import numpy as np

from job.engine import kernels
from job.engine.map_reduce import map_reduce

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopRule:
    """How a Lloyd loop runs and when it stops: scikit-learn's rule (the summed squared shift of the
    centers <= tol) and, with min_gain > 0, also once an iteration lowers the inertia by less than
    min_gain (relative); at most max_iter iterations, counted from done_before (a resumed loop, whose
    previous_inertia is that of the iteration before). label names the rows in the log."""

    tol: float
    max_iter: int
    min_gain: float = 0.0
    done_before: int = 0
    previous_inertia: float | None = None
    label: str = ""


class Iterations:
    """A loop's course under its LoopRule: each iteration's gain, whether it is the last, and its log line,
    at INFO for the first, the last and one a second, else at DEBUG (a hundred would flood the log)."""

    def __init__(self, rule: LoopRule, logger: logging.Logger):
        self.rule, self.log = rule, logger
        self.previous, self.last_report = rule.previous_inertia, time.perf_counter()

    def last(self, n_iter: int, inertia: float, shift: float, extra: str = "") -> bool:
        """Whether iteration n_iter, whose assignment had `inertia` and moved the centers by `shift`, ends
        the loop; logs it."""
        rule, previous = self.rule, self.previous
        gain = None if previous is None or previous <= 0 else (previous - inertia) / previous
        self.previous = inertia
        done = (
            shift <= rule.tol
            or (rule.min_gain > 0 and gain is not None and gain < rule.min_gain)
            or n_iter == rule.max_iter
        )
        now = time.perf_counter()
        info = done or n_iter == rule.done_before + 1 or now - self.last_report >= 1
        self.last_report = now if info else self.last_report
        self.log.log(
            logging.INFO if info else logging.DEBUG,
            "Lloyd iteration %d/%d%s: inertia %.6g, center shift %.3g (stops at <= %.3g%s)%s",
            n_iter,
            rule.max_iter,
            rule.label,
            inertia,
            shift,
            rule.tol,
            f", or a gain below {rule.min_gain:.0e}: {gain:.2e}"
            if rule.min_gain and gain is not None
            else "",
            extra,
        )
        return done


@dataclass(frozen=True)
class Converged:
    """What a Lloyd loop ends with: the centers, the iterations (counting done_before), and the final
    assignment's sums [k, p], counts [k] and inertia at those centers, with its labels when they stay
    on the workers (the bounded loop) or None."""

    centers: np.ndarray
    n_iter: int
    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    labels: da.Array | None = None


def lloyd_step(X: da.Array, centers: np.ndarray, plan=None, weights=None):
    """(sums [k, p], counts [k], inertia) of X against `centers`: one fused pass, reduced on the cluster.
    With sample weights (a dask array [n]): weighted sums, total weights (float64) and the weighted
    inertia."""
    return map_reduce(X, kernels.lloyd_partial, kernels.add_partials, centers, plan=plan, weights=weights)


def predict_labels(X: da.Array, centers: np.ndarray) -> da.Array:
    """Lazy int32 [n] labels: the nearest center of each row."""
    return X.map_blocks(kernels.labels_of, centers, drop_axis=1, dtype=np.int32)  # type: ignore[arg-type]  # dask's @derived_from types Array.map_blocks as da.map_blocks


def relative_tol(tol: float, n: int, col_sum: np.ndarray, col_sumsq: np.ndarray) -> float:
    """scikit-learn's absolute tolerance: tol * mean over features of the variance of X."""
    if tol == 0 or n == 0:
        return 0.0
    mean = col_sum / n
    var = np.maximum(col_sumsq / n - mean**2, 0.0)
    return float(tol * var.mean())


def reseed_empty(X, centers, sums, counts, plan, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Move each empty cluster to one of the points farthest from their centers, as scikit-learn does
    (sklearn/cluster/_k_means_common.pyx, _relocate_empty_clusters): the point leaves its old cluster's
    sum and count, and no two empty clusters get the same point, nor two points of equal value (they
    would split one cluster and leave the other empty again). A point is never taken from a cluster of
    one. With sample weights, a moved point carries its weight (rows of weight 0 are never moved).
    Returns the adjusted (sums, counts)."""
    empty = np.flatnonzero(counts == 0)
    # Twice as many candidates as empty clusters, so that duplicates and singletons can be skipped.
    _, rows, owners, row_weights = map_reduce(
        X, kernels.farthest_rows, kernels.merge_farthest, centers, 2 * len(empty), plan=plan, weights=weights
    )
    # Without weights every row weighs 1 and counts stay integers.
    sums, counts, row_weights = sums.copy(), counts.copy(), row_weights.astype(counts.dtype)
    taken: list[np.ndarray] = []
    for row, owner, weight in zip(rows, owners, row_weights):
        if len(taken) == len(empty):
            break
        if counts[owner] <= weight or any(np.array_equal(row, t) for t in taken):
            continue
        target = empty[len(taken)]
        sums[owner] -= weight * row
        counts[owner] -= weight
        sums[target], counts[target] = weight * row, weight
        taken.append(row)
    log.info(
        "re-seeded %d of %d empty cluster(s) with the points farthest from their centers",
        len(taken),
        len(empty),
    )
    return sums, counts
